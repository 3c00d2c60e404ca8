"""Model cards of saved adapters and merged exports; loading an adapter with plain PEFT, as its card says."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

import main
from qlora_clip.backbones.encode import ClassPrompts, image_features, logits
from qlora_clip.backbones.loading import load_clip
from qlora_clip.run.modelcard import prompt_template, reproduce_command
from run_utils import build_parser, parse_args, run_spec

CPU = torch.device("cpu")


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
    assert words[:2] == ["python", "main.py"] and "--resume" not in words and "--eval_only" not in words
    assert vars(parse_args(words[2:])) == {**vars(args), "resume": False}
    assert shlex.split(reproduce_command(vars(args), processes=4))[:5] == [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "4"]


def test_card_prompt_is_the_one_the_run_trained_with():
    assert prompt_template({"config": {"template": "clip-lora"}, "dataset": "dtd"}) == "a photo of a {}."
    assert prompt_template({"config": {"template": "dataset"}, "dataset": "dtd"}) == "{} texture."
    assert prompt_template({"config": {"template": "dataset"}, "dataset": "folder"}) == "a photo of a {}."


@pytest.mark.parametrize("mode", ["lora", "qdora"])
def test_saved_adapter_has_a_card_and_plain_peft_reproduces_our_logits(mode, tiny_argv, tmp_path, color_folder):
    argv = tiny_argv("--mode", mode, "--lr", "2e-2", "--n_iters", "1", "--save_path", str(tmp_path / "ckpt"),
                     "--merge_export", str(tmp_path / "merged"))
    args = parse_args(argv)  # before the run: once it has exported, --merge_export's folder is taken
    record = main.main(argv)
    folder = run_spec(args).adapter_dir
    card = ModelCard.load(folder / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "peft" and meta["base_model_relation"] == "adapter"
    assert Path(meta["base_model"]).name.startswith("tiny-clip")
    assert (meta["method"], meta["dataset"], meta["shots"], meta["seed"]) == (mode, "folder", 4, 1)
    assert mode in meta["tags"] and ("4-bit" in meta["tags"]) == (mode == "qdora")
    assert meta["test_accuracy"] == record["test_acc"] and meta["zero_shot_accuracy"] == record["zero_shot_acc"]
    assert meta["trainable_parameters"] == record["trainable_params"] > 0
    assert meta["training_seconds"] == round(record["train_seconds"], 1)
    assert meta["peak_memory_mb"] == round(record["peak_memory_mb"], 1) and meta["optimizer_steps"] == 4
    assert meta["versions"]["peft"] == record["versions"]["peft"]
    results = meta["model-index"][0]["results"][0]
    assert results["metrics"][0] == {"type": "accuracy", "value": round(record["test_acc"], 2), "name": "test accuracy"}
    assert vars(build_parser().parse_args(shlex.split(meta["command"])[2:])) == vars(args)
    assert meta["command"] in card.text and "## Load it" in card.text

    # The card's snippet, run as is: plain transformers + PEFT, nothing of this repository.
    classnames = sorted(p.name for p in color_folder.iterdir() if p.is_dir())
    images = [Image.open(path).convert("RGB") for path in sorted(color_folder.glob("*/00[0-2].png"))]
    plain = run_snippet(card, classnames, images)
    assert type(plain["model"]).__name__ == "PeftModel"

    # Our model, loaded from the same folder the way --eval_only loads it, on the same inputs.
    bundle = load_clip(run_spec(args).model, CPU, torch.float32, saved_adapter=folder)
    bundle.model.eval()
    pixels = plain["inputs"]["pixel_values"]
    prompts = ClassPrompts(bundle.tokenizer, [f"a photo of a {name}." for name in classnames], CPU)
    assert torch.equal(prompts.input_ids, plain["inputs"]["input_ids"])
    with torch.no_grad():
        ours = logits(image_features(bundle.model, pixels), prompts.features(bundle.model))
        with plain["model"].disable_adapter():
            base = plain["model"](**plain["inputs"])
    torch.testing.assert_close(plain["logits"], ours, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(100 * base.image_embeds @ base.text_embeds.T, ours, atol=1e-3)  # the adapter acts

    merged = ModelCard.load(tmp_path / "merged" / "README.md")
    assert merged.data.library_name == "transformers" and merged.data.base_model_relation == "merge"
    assert merged.data.test_accuracy == record["test_acc"]
    exported = run_snippet(merged, classnames, images)
    torch.testing.assert_close(exported["logits"], ours, rtol=1e-4, atol=1e-4)
