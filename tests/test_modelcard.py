"""Model cards of saved adapters and merged exports; loading an adapter with plain PEFT, as its card says."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import dataset_trees
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

import main
from datasets import build_dataset, use_template
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.families import CLIP
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.run.modelcard import model_card, reproduce_command
from run_utils import build_parser, parse_args, run_spec

CPU = torch.device("cpu")


def our_logits(adapted: Adapted, pixels: torch.Tensor, prompts: ClassPrompts) -> torch.Tensor:
    """The logits our evaluator computes: the method's image embeddings and text features, and its logits."""
    adapted.model.eval()
    with torch.no_grad():
        return adapted.logits(adapted.image_embeddings(pixels), adapted.text_features(prompts))


def python_block(card: ModelCard) -> str:
    return re.search(r"```python\n(.*?)```", card.text, re.S).group(1)


def run_snippet(card: ModelCard, classnames: list[str], images: list) -> dict:
    """Execute the card's "Load it" code as a user would, with real class names and images."""
    code = python_block(card)
    code = code.replace("classnames = [...]", f"classnames = {classnames!r}")
    code = code.replace("images = [...]", "images = IMAGES")
    namespace = {"IMAGES": images}
    exec(compile(code, "<model card>", "exec"), namespace)  # noqa: S102 - our own card's snippet
    return namespace


def test_reproduce_command_parses_back_to_the_same_flags():
    args = parse_args(["--dataset", "dtd", "--mode", "qdora", "--params", "q", "v", "--gradient_checkpointing",
                       "--save_path", "out dir/with space", "--resume", "--report_to", "tensorboard"])
    command = reproduce_command(vars(args))
    words = shlex.split(command)
    assert words[:2] == ["python", "main.py"]
    assert "--resume" not in words
    assert "--eval_only" not in words
    assert vars(parse_args(words[2:])) == {**vars(args), "resume": False}
    assert shlex.split(reproduce_command(vars(args), processes=4))[:5] == [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "4"]


def card_record(dataset: str, template: str) -> dict:
    """A results line with what a model card reads."""
    args = parse_args(["--dataset", dataset, "--template", template])
    return {"mode": "lora", "dataset": dataset, "shots": 1, "seed": 1, "backbone": "ViT-B/16", "config": vars(args),
            "run_name": f"lora-{dataset}-1shot-seed1", "test_acc": 61.5, "zero_shot_acc": 40.0,
            "trainable_params": 184_320, "adapter_params": 184_320, "adapter_size_mb": 0.7, "train_seconds": 1.0,
            "total_steps": 1, "peak_memory_mb": 1.0, "memory_kind": "rss", "compute_dtype": "fp32",
            "device_name": "cpu", "versions": {"peft": "0.21.2"}}


def card_prompt(card: ModelCard) -> str:
    return re.search(r"prompts = \[(.*?)\.format\(", python_block(card)).group(1)


def test_card_prompt_is_the_one_the_run_trained_with(tmp_path, color_folder):
    """The card shows the template of the run's data (main.py hands the card data.template): the family's own
    with --template clip-lora, the dataset's with --template dataset, CLIP-LoRA's for your own images."""
    dataset_trees.build("dtd", tmp_path / "data")
    for dataset, root, template, expected in [("dtd", tmp_path / "data", "clip-lora", "a photo of a {}."),
                                              ("dtd", tmp_path / "data", "dataset", "{} texture."),
                                              ("folder", color_folder, "dataset", "a photo of a {}.")]:
        data = use_template(build_dataset(dataset, root, 1, 1, template), template, CLIP.template)
        assert data.template == expected, (dataset, template)
        card = model_card(card_record(dataset, template), "adapter", "openai/clip-vit-base-patch16", tmp_path,
                          data.template)
        assert card_prompt(card) == repr(expected), (dataset, template)


@pytest.mark.parametrize("mode", ["lora", "qdora"])
def test_saved_adapter_has_a_card_and_plain_peft_reproduces_our_logits(mode, tiny_argv, tmp_path, color_folder):
    argv = tiny_argv("--mode", mode, "--lr", "2e-2", "--n_iters", "1", "--save_path", str(tmp_path / "ckpt"),
                     "--merge_export", str(tmp_path / "merged"))
    args = parse_args(argv)  # before the run: once it has exported, --merge_export's folder is taken
    record = main.main(argv)
    folder = run_spec(args).adapter_dir
    card = ModelCard.load(folder / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "peft"
    assert meta["base_model_relation"] == "adapter"
    assert Path(meta["base_model"]).name.startswith("tiny-clip")
    assert (meta["method"], meta["dataset"], meta["shots"], meta["seed"]) == (mode, "folder", 4, 1)
    assert mode in meta["tags"]
    assert ("4-bit" in meta["tags"]) == (mode == "qdora")
    assert meta["test_accuracy"] == record["test_acc"]
    assert meta["zero_shot_accuracy"] == record["zero_shot_acc"]
    assert meta["trainable_parameters"] == record["trainable_params"] > 0
    assert meta["training_seconds"] == round(record["train_seconds"], 1)
    assert meta["peak_memory_mb"] == round(record["peak_memory_mb"], 1)
    assert meta["optimizer_steps"] == 4
    assert meta["versions"]["peft"] == record["versions"]["peft"]
    results = meta["model-index"][0]["results"][0]
    assert results["metrics"][0] == {"type": "accuracy", "value": round(record["test_acc"], 2), "name": "test accuracy"}
    assert vars(build_parser().parse_args(shlex.split(meta["command"])[2:])) == vars(args)
    assert meta["command"] in card.text
    assert "## Load it" in card.text

    # The card's snippet, run as is: plain transformers + PEFT, nothing of this repository.
    classnames = sorted(p.name for p in color_folder.iterdir() if p.is_dir())
    images = [Image.open(path).convert("RGB") for path in sorted(color_folder.glob("*/00[0-2].png"))]
    plain = run_snippet(card, classnames, images)
    assert type(plain["model"]).__name__ == "PeftModel"

    # Our model, loaded from the same folder the way --eval_only loads it, on the same inputs.
    spec = run_spec(args)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=folder)
    pixels = plain["inputs"]["pixel_values"]
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {name}." for name in classnames], CPU)
    assert torch.equal(prompts.input_ids, plain["inputs"]["input_ids"])
    with torch.no_grad():
        ours = our_logits(adapted, pixels, prompts)
        with plain["model"].disable_adapter():
            base = plain["model"](**plain["inputs"])
    torch.testing.assert_close(plain["logits"], ours, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(100 * base.image_embeds @ base.text_embeds.T, ours, atol=1e-3)  # the adapter acts

    merged = ModelCard.load(tmp_path / "merged" / "README.md")
    assert merged.data.library_name == "transformers"
    assert merged.data.base_model_relation == "merge"
    assert merged.data.test_accuracy == record["test_acc"]
    exported = run_snippet(merged, classnames, images)
    torch.testing.assert_close(exported["logits"], ours, rtol=1e-4, atol=1e-4)
