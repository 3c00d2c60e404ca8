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

from qlora_clip.backbones.families import CLIP, FAMILIES, Family
from qlora_clip.methods.interface import runtime_class
from qlora_clip.methods.own_tuners import WEIGHTS_FILE as OWN_WEIGHTS_FILE
from qlora_clip.methods.table import METHODS

KINDS = ("adapter", "merged")
TORCH_DTYPES = {"fp16": "torch.float16", "bf16": "torch.bfloat16", "fp32": "torch.float32"}
ENCODERS = {"both": "the text and vision encoders", "text": "the text encoder", "vision": "the vision encoder"}
# What a method sits on, by its entry's `targets`, where --params does not say it.
TARGETS = {"layer_norms": "LayerNorms", "linears": "q, k, v, o, fc1 and fc2 Linears"}
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
        if flag in NOT_REPRODUCED or value is None or value is False or value == []:
            continue
        words.append(f"--{flag}")
        if isinstance(value, (list, tuple)):
            words += [str(v) for v in value]
        elif value is not True:
            words.append(str(value))
    return shlex.join(words)


def record_family(record: dict) -> Family:
    """The family of the run's backbone (a line written before families existed is CLIP's)."""
    return FAMILIES[record.get("family", CLIP.name)]


def logits_formula(family: Family) -> str:
    """The logits the adapter was trained and evaluated with, in words."""
    return family.logit_rule.formula


def card_metadata(record: dict, kind: str, base_model: str) -> ModelCardData:
    method = METHODS[record["mode"]]
    family = record_family(record)
    tags = [family.name, "few-shot", "qlora-clip", method.full_precision_name or method.name, record["mode"]]
    if method.quantized:
        tags.append("4-bit")
    accuracies = [("test accuracy", record["test_acc"]), ("zero-shot accuracy", record["zero_shot_acc"])]
    return ModelCardData(
        base_model=base_model,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=list(dict.fromkeys(tags)),
        model_name=record["run_name"],
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
        family=family.name,
        zero_shot_accuracy=record["zero_shot_acc"],
        test_accuracy=record["test_acc"],
        trainable_parameters=record["trainable_params"],
        adapter_parameters=record["adapter_params"],
        training_seconds=round(record["train_seconds"], 1),
        optimizer_steps=record["total_steps"],
        peak_memory_mb=_rounded(record["peak_memory_mb"]),
        memory_kind=record["memory_kind"],
        compute_dtype=record["compute_dtype"],
        device=record["device_name"],
        command=reproduce_command(record["config"], record.get("processes", 1)),
        versions=record["versions"],
    )


def _rounded(value: float | None) -> float | None:
    """A measurement to one decimal; None stays None (an --eval_only run trains nothing, so has no training peak)."""
    return None if value is None else round(value, 1)


def _peak_memory(record: dict) -> str:
    if record["peak_memory_mb"] is None:
        return "not measured (no training: --eval_only)"
    return f"{record['peak_memory_mb']:,.0f} MB ({record['memory_kind']})"


def _base_link(base_model: str) -> str:
    """A hub id as a link to its page; a local folder as code."""
    if Path(base_model).expanduser().is_dir():
        return f"`{base_model}`"
    return f"[{base_model}](https://huggingface.co/{base_model})"


def _load_lines(record: dict, kind: str, base_model: str, folder: Path, family: Family) -> str:
    """Python that loads the model with plain transformers (+ PEFT for an adapter) and its processor."""
    model, processor = family.model_class, family.processor_class
    if kind == "merged":
        return (f"from transformers import {model}, {processor}\n\n"
                f"model = {model}.from_pretrained({str(folder)!r}).eval()  # this folder\n"
                f"processor = {processor}.from_pretrained({str(folder)!r})\n")
    method = METHODS[record["mode"]]
    imports = f"BitsAndBytesConfig, {model}, {processor}" if method.quantized else f"{model}, {processor}"
    base = (_quantized_base(record, base_model, family) if method.quantized
            else f"base = {model}.from_pretrained({base_model!r})\n")
    if method.peft_class is None:
        # Not a PEFT adapter (our own tuner): the tuned tensors replace the base's under their own names.
        load = (f"from safetensors.torch import load_file\nfrom transformers import {imports}\n\n{base}"
                f"tuned = load_file({str(folder / OWN_WEIGHTS_FILE)!r})  # this folder: {method.trains}\n"
                f"base.load_state_dict(tuned, strict=False)\nmodel = base.eval()\n")
    else:
        load = (f"from peft import PeftModel\nfrom transformers import {imports}\n\n{base}"
                f"model = PeftModel.from_pretrained(base, {str(folder)!r}).eval()  # this folder\n")
    if method.quantized:
        load += _KEEP_4BIT_LAYOUT
    return load + f"processor = {processor}.from_pretrained({base_model!r})\n"


def _quantized_base(record: dict, base_model: str, family: Family) -> str:
    return (f"# The adapter was trained on the 4-bit NF4 base: load it the same way.\n"
            f"quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=\"nf4\",\n"
            f"                                  bnb_4bit_use_double_quant=True,\n"
            f"                                  bnb_4bit_compute_dtype="
            f"{TORCH_DTYPES.get(record['compute_dtype'], 'torch.float16')},\n"
            f"                                  # these stayed in full precision in training\n"
            f"                                  llm_int8_skip_modules={list(family.full_precision)!r})\n"
            f"base = {family.model_class}.from_pretrained({base_model!r}, quantization_config=quantization)\n")


# On CPUs with AVX512-BF16, bitsandbytes >= 0.49 repacks 4-bit weights for inference, a layout PEFT's
# DoRA then dequantizes wrongly: the snippet keeps the standard one (no effect on GPUs).
_KEEP_4BIT_LAYOUT = ("# On CPUs with AVX512-BF16, bitsandbytes >= 0.49 repacks 4-bit weights for inference,\n"
                     "# a layout PEFT's DoRA then dequantizes wrongly: keep the standard one (no effect on GPUs).\n"
                     "for module in model.modules():\n"
                     "    if hasattr(module, \"support_avx512bf16_for_cpu\"):\n"
                     "        module.support_avx512bf16_for_cpu = False\n")


def _classify_lines(family: Family) -> str:
    """Python that tokenises the prompts as the run did and computes the family's logits."""
    return family.logit_rule.card_lines(family)


def _library_snippet(base_model: str, folder: Path, family: Family, template: str) -> str:
    """Python that loads an adapter whose saved form needs this library (Adapted.plain_load False: tensors that are
    neither PEFT's nor the base's own) with its loader, and classifies images with the method's own logits."""
    return ("```python\nimport json\nfrom pathlib import Path\n\nimport torch\n"
            f"from transformers import {family.processor_class}\n\n"
            "from qlora_clip.backbones.encode import ClassPrompts\nfrom qlora_clip.methods.interface import load_adapted\n"
            "from qlora_clip.run.spec import RunSpec\n\n"
            "# qlora-clip's own loader (its repository on the Python path): the method's weights are its own code's\n"
            f"config = json.load(open({str(folder / 'run.json')!r}))[\"config\"]\n"
            f"model = load_adapted({base_model!r}, RunSpec.from_flags(config).adapter, torch.device(\"cpu\"), "
            f"torch.float32,\n                    saved=Path({str(folder)!r}))  # this folder\n"
            f"processor = {family.processor_class}.from_pretrained({base_model!r})\n\n"
            f"classnames = [...]  # the class names, in label order\n"
            f"images = [...]      # PIL images\n"
            f"prompts = [{template!r}.format(name.replace(\"_\", \" \")) for name in classnames]\n"
            "inputs = processor(images=images, return_tensors=\"pt\")\n"
            "with torch.no_grad():\n"
            "    text = model.text_features(ClassPrompts(model.bundle.tokenizer, prompts, torch.device(\"cpu\"),\n"
            "                                            text=model.bundle.text))\n"
            "    logits = model.logits(model.image_embeddings(inputs[\"pixel_values\"]), text)\n"
            "predicted = logits.argmax(dim=-1)\n```\n")


def _load_snippet(record: dict, kind: str, base_model: str, folder: Path, template: str) -> str:
    """Python that loads the model with plain transformers (+ PEFT for an adapter) and classifies images; a method
    whose saved weights only its own code can use (a prompt learner's tokens) gives its own."""
    own = runtime_class(METHODS[record["mode"]]).card_snippet(record, base_model, folder) if kind == "adapter" else None
    if own is not None:
        return own
    family = record_family(record)
    if kind == "adapter" and not runtime_class(METHODS[record["mode"]]).plain_load:
        return _library_snippet(base_model, folder, family, template)
    return (f"```python\nimport torch\n{_load_lines(record, kind, base_model, folder, family)}\n"
            f"classnames = [...]  # the {record['dataset']} class names, in label order\n"
            f"images = [...]      # PIL images\n"
            f"prompts = [{template!r}.format(name.replace(\"_\", \" \")) for name in classnames]\n"
            f"{_classify_lines(family)}"
            f"predicted = logits.argmax(dim=-1)\n```\n")


def _hyperparameters(record: dict) -> str:
    """The method's settings in words: its PEFT class, the generic flags it has, --peft_args, and where it sits."""
    config, method = record["config"], METHODS[record["mode"]]
    parts = [f"{field} {config[flag]}" for flag, field in method.fields.items()]
    if method.scaling_flag:
        parts.append(f"{config['lora_scaling']} scaling")
    parts += list(config.get("peft_args") or [])
    built = f"PEFT `{method.peft_class}`" if method.peft_class else "our own code (not a PEFT adapter)"
    if method.trains_on == "features":  # fitted beside the frozen base with its paper's hyperparameters
        return f"{method.label}, {built}; fitted on the frozen base's image features: {method.trains}"
    modules = TARGETS.get(method.targets) or f"{' '.join(config['params'])} projections"
    where = f"the {modules} of {ENCODERS[config['encoder']]}, {config['position']} layers"
    settings = f": {', '.join(parts)}" if parts else ""
    if "encoder" in method.refuses:  # placed by its own design (a prompt learner's tokens), not by these flags
        return f"{method.label}, {built}{settings}; {method.trains}; lr {config['lr']:g}"
    return f"{method.label}, {built}{settings}; on {where}; lr {config['lr']:g}"


def _summary_table(record: dict) -> str:
    zero_shot = "zero-shot on the 4-bit NF4 base" if METHODS[record["mode"]].quantized else "zero-shot"
    rows = [
        ("test accuracy", f"{record['test_acc']:.2f}% ({zero_shot}: {record['zero_shot_acc']:.2f}%)"),
        ("method", _hyperparameters(record)),
        ("trainable parameters", f"{record['trainable_params']:,} ({record.get('adapter_size_mb', 0) * 1024:,.1f} KB "
                                 "saved)"),
        ("training", f"{record['total_steps']:,} optimizer steps in {record['train_seconds']:.1f} s on "
                     f"{record['device_name']} ({record['compute_dtype']})"),
        ("peak memory", _peak_memory(record)),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def model_card(record: dict, kind: str, base_model: str, folder: Path, template: str) -> ModelCard:
    """The card of the adapter (kind 'adapter') or merged model ('merged') a run wrote to `folder`; its prompts
    were `template`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    data = card_metadata(record, kind, base_model)
    method = METHODS[record["mode"]]
    base = _base_link(base_model)
    family = record_family(record)
    if kind == "adapter":
        what = (f"{method.label} weights ({method.trains}) for {base}, a {family.label} model"
                if method.peft_class is None
                else f"A {method.label} adapter (PEFT) for {base}, a {family.label} model")
    else:
        what = f"{base} with a {method.label} adapter merged into its weights (a plain `{family.model_class}`)"
    versions = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
    body = f"""
# {data.model_name}

{what}, trained for few-shot image classification on **{record['dataset']}** with {record['shots']} images
per class (seed {record['seed']}) by qlora-clip's `main.py`, which follows the CLIP-LoRA protocol
(Zanella & Ben Ayed, 2024): prompts "{template}", logits = {logits_formula(family)}.

{_summary_table(record)}

## Load it

{_load_snippet(record, kind, base_model, folder, template)}
## Reproduce it

```bash
{data.command}
```

with {versions}.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_model_card(folder: Path, record: dict, kind: str, base_model: str, template: str) -> Path:
    """Write (or overwrite: PEFT writes a blank template) `folder`/README.md."""
    path = folder / "README.md"
    path.write_text(str(model_card(record, kind, base_model, folder, template)))
    return path
