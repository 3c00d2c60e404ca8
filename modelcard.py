"""Model cards: a README.md in Hugging Face's format for every saved adapter and merged export.

The YAML header carries what a model hub and a reader filter on (base model, library, method,
dataset, shots, seed, both accuracies, trainable parameters, training time, peak memory, the
command that reproduces the run, library versions); the body says the same in prose and shows how
to load the model with plain PEFT / transformers, without this repository.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from methods import METHODS
from protocol import CLIP_LORA_TEMPLATE, LOGIT_SCALE

KINDS = ("adapter", "merged")
TORCH_DTYPES = {"fp16": "torch.float16", "bf16": "torch.bfloat16", "fp32": "torch.float32"}
ENCODERS = {"both": "the text and vision encoders", "text": "the text encoder", "vision": "the vision encoder"}
# Flags left out of the reproducing command: continuing an interrupted run computes the same result.
NOT_REPRODUCED = frozenset({"resume"})


def reproduce_command(config: dict, processes: int = 1) -> str:
    """The command line that runs `config` (a results line's "config") again, every flag spelled out.

    Spelling out defaults too keeps the command exact when a later version changes a default.
    """
    words = ["python", "main.py"]
    if processes > 1:
        words = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(processes), "main.py"]
    for flag, value in config.items():
        if flag in NOT_REPRODUCED or value is None or value is False:
            continue
        words.append(f"--{flag}")
        if isinstance(value, (list, tuple)):
            words += [str(v) for v in value]
        elif value is not True:
            words.append(str(value))
    return shlex.join(words)


def card_metadata(record: dict, kind: str, base_model: str) -> ModelCardData:
    method = METHODS[record["mode"]]
    name = record.get("run_name") or f"{record['mode']}-{record['dataset']}-{record['shots']}shot-seed{record['seed']}"
    tags = ["clip", "few-shot", "qlora-clip", "dora" if method.dora else "lora", record["mode"]]
    if method.quantized:
        tags.append("4-bit")
    accuracies = [("test accuracy", record["test_acc"]), ("zero-shot accuracy", record["zero_shot_acc"])]
    return ModelCardData(
        base_model=base_model,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=list(dict.fromkeys(tags)),
        model_name=name,
        eval_results=[EvalResult(task_type="zero-shot-image-classification", dataset_type=record["dataset"],
                                 dataset_name=record["dataset"], dataset_split="test", metric_type="accuracy",
                                 metric_name=label, metric_value=round(value, 2))
                      for label, value in accuracies],
        # Hugging Face's names for how this model derives from the base.
        base_model_relation="adapter" if kind == "adapter" else "merge",
        method=record["mode"],
        dataset=record["dataset"],
        shots=record["shots"],
        seed=record["seed"],
        backbone=record["backbone"],
        zero_shot_accuracy=record["zero_shot_acc"],
        test_accuracy=record["test_acc"],
        trainable_parameters=record["trainable_params"],
        adapter_parameters=record["adapter_params"],
        training_seconds=round(record["train_seconds"], 1),
        optimizer_steps=record["total_steps"],
        peak_memory_mb=round(record["peak_memory_mb"], 1),
        memory_kind=record["memory_kind"],
        compute_dtype=record["compute_dtype"],
        device=record["device_name"],
        command=reproduce_command(record["config"], record.get("processes", 1)),
        versions=record["versions"],
    )


def _base_link(base_model: str) -> str:
    """A hub id as a link to its page; a local folder as code."""
    if Path(base_model).expanduser().is_dir():
        return f"`{base_model}`"
    return f"[{base_model}](https://huggingface.co/{base_model})"


def _load_snippet(record: dict, kind: str, base_model: str, folder: Path) -> str:
    quantized = METHODS[record["mode"]].quantized
    if kind == "merged":
        load = (f"from transformers import CLIPModel, CLIPProcessor\n\n"
                f"model = CLIPModel.from_pretrained({str(folder)!r}).eval()  # this folder\n"
                f"processor = CLIPProcessor.from_pretrained({str(folder)!r})\n")
    else:
        if quantized:
            base = (f"from transformers import BitsAndBytesConfig\n\n"
                    f"# The adapter was trained on the 4-bit NF4 base: load it the same way.\n"
                    f"quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\",\n"
                    f"                                  bnb_4bit_use_double_quant=True,\n"
                    f"                                  bnb_4bit_compute_dtype="
                    f"{TORCH_DTYPES.get(record['compute_dtype'], 'torch.float16')})\n"
                    f"base = CLIPModel.from_pretrained({base_model!r}, quantization_config=quantization)\n")
        else:
            base = f"base = CLIPModel.from_pretrained({base_model!r})\n"
        load = (f"from peft import PeftModel\nfrom transformers import CLIPModel, CLIPProcessor\n\n{base}"
                f"model = PeftModel.from_pretrained(base, {str(folder)!r}).eval()  # this folder\n"
                f"processor = CLIPProcessor.from_pretrained({base_model!r})\n")
    return (f"```python\nimport torch\n{load}\n"
            f"classnames = [...]  # the {record['dataset']} class names, in label order\n"
            f"images = [...]      # PIL images\n"
            f"inputs = processor(text=[{CLIP_LORA_TEMPLATE!r}.format(c) for c in classnames], images=images,\n"
            f"                   return_tensors=\"pt\", padding=True)\n"
            f"with torch.no_grad():\n"
            f"    out = model(**inputs)\n"
            f"# Cosine similarities times {LOGIT_SCALE:g}, the temperature the adapter was trained with.\n"
            f"logits = {LOGIT_SCALE:g} * out.image_embeds @ out.text_embeds.T\n"
            f"predicted = logits.argmax(dim=-1)\n```\n")


def model_card(record: dict, kind: str, base_model: str, folder: Path) -> ModelCard:
    """The card of the adapter (kind 'adapter') or merged model ('merged') a run wrote to `folder`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    data = card_metadata(record, kind, base_model)
    method = METHODS[record["mode"]]
    config = record["config"]
    base = _base_link(base_model)
    what = (f"A {method.label} adapter (PEFT) for {base}" if kind == "adapter"
            else f"{base} with a {method.label} adapter merged into its weights (a plain `CLIPModel`)")
    base_note = " on the 4-bit NF4 base" if method.quantized else ""
    versions = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
    body = f"""
# {data.model_name}

{what}, trained for few-shot image classification on **{record['dataset']}** with {record['shots']} images
per class (seed {record['seed']}) by qlora-clip's `main.py`, which follows the CLIP-LoRA protocol
(Zanella & Ben Ayed, 2024): prompts "{CLIP_LORA_TEMPLATE}", logits = {LOGIT_SCALE:g} x cosine similarity.

| | |
|---|---|
| test accuracy | {record['test_acc']:.2f}% (zero-shot{base_note}: {record['zero_shot_acc']:.2f}%) |
| adapter | rank {config.get('r')}, alpha {config.get('alpha')}, {config.get('lora_scaling')} scaling, dropout {config.get('dropout_rate')}; on the {' '.join(config.get('params', []))} projections of {ENCODERS.get(config.get('encoder'), config.get('encoder'))}, {config.get('position')} layers |
| trainable parameters | {record['trainable_params']:,} |
| training | {record['total_steps']:,} optimizer steps in {record['train_seconds']:.1f} s on {record['device_name']} ({record['compute_dtype']}) |
| peak memory | {record['peak_memory_mb']:,.0f} MB ({record['memory_kind']}) |

## Load it

{_load_snippet(record, kind, base_model, folder)}
## Reproduce it

```bash
{data.command}
```

with {versions}.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_model_card(folder: Path, record: dict, kind: str, base_model: str) -> Path:
    """Write (or overwrite: PEFT writes a blank template) `folder`/README.md."""
    path = folder / "README.md"
    path.write_text(str(model_card(record, kind, base_model, folder)))
    return path
