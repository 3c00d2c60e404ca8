"""Every family through the real entry point: LoRA, QLoRA and DoRA train, save, reload (--eval_only gives the
same accuracies) and merge (the merged model, of the family's own class, gives the adapter's logits); the
model card's snippet reproduces our logits; SigLIP trains on its sigmoid loss; base-to-novel and
--eval_datasets run on a SigLIP backbone with its own prompt."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import dataset_trees as trees
import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from PIL import Image

import main
from datasets import build_dataset
from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.backbones.families import Family
from qlora_clip.backbones.loading import open_checkpoint
from qlora_clip.evaluation.evaluator import EvalSettings, build_eval_set
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.training.distributed import Distributed
from run_utils import parse_run

CPU = torch.device("cpu")
FAMILY_OF = {"tiny": "clip", "tiny-siglip": "siglip", "tiny-siglip2": "siglip2", "tiny-metaclip2": "metaclip_2"}


def saved(argv: list[str], adapter_dir: Path) -> Adapted:
    """The adapter as --eval_only loads it."""
    spec = parse_run([*argv, "--eval_only"])
    return load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=adapter_dir)


def first_test_batch(argv: list[str], adapter_dir: Path) -> tuple[Adapted, ClassPrompts, torch.Tensor]:
    """The adapter as --eval_only loads it, its class prompts and the first batch of its test images."""
    spec = parse_run([*argv, "--eval_only"])
    data = build_dataset(spec.dataset, spec.data.root_path, spec.shots, spec.seed)
    adapted = saved(argv, adapter_dir)
    bundle = adapted.bundle
    prompts = ClassPrompts(bundle.tokenizer, [p for p in data.prompts()], CPU, text=bundle.text)
    settings = EvalSettings(bundle.image, 64, None, 0, Distributed(rank=0, world=1, device=CPU), text=bundle.text)
    images = next(iter(build_eval_set("folder", data.test, data.load_image, prompts, settings).loader))[0]
    return adapted, prompts, images


def logits_of(model, family: Family, prompts: ClassPrompts, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return family.logits(model)(image_features(model, images), prompts.features(model))


@pytest.mark.parametrize("mode", ["lora", "qlora", "dora"])
@pytest.mark.parametrize("backbone", ["tiny-siglip", "tiny-siglip2", "tiny-metaclip2"])
def test_each_method_trains_saves_reloads_and_merges_on_each_family(backbone, mode, tiny_argv, tmp_path):
    argv = tiny_argv("--backbone", backbone, "--mode", mode, "--lr", "2e-2", "--n_iters", "2",
                     "--save_path", str(tmp_path / "adapters"))
    record = main.main([*argv, "--merge_export", str(tmp_path / "merged")])
    assert record["family"] == FAMILY_OF[backbone]
    assert record["trainable_params"] > 0
    assert math.isfinite(record["final_loss"])  # neither NaN nor infinite
    subset = json.loads(Path(record["subset_file"]).read_text())
    assert subset["template"] == open_checkpoint(backbone).family.template

    again = main.main([*argv, "--eval_only"])
    assert again["test_acc"] == record["test_acc"]
    assert again["zero_shot_acc"] == record["zero_shot_acc"]

    class_name = {"siglip": "SiglipModel", "siglip2": "SiglipModel", "metaclip_2": "MetaClip2Model"}[record["family"]]
    merged = getattr(transformers, class_name).from_pretrained(tmp_path / "merged")  # nothing but transformers
    assert not any("lora" in name for name, _ in merged.named_parameters())
    adapted, prompts, images = first_test_batch(argv, Path(record["adapter_dir"]))
    family = adapted.bundle.family
    with_adapter = logits_of(adapted.model, family, prompts, images)
    with adapted.zero_shot_view():
        zero_shot = logits_of(adapted.model, family, prompts, images)
    assert not torch.allclose(with_adapter, zero_shot, atol=1e-3)  # the adapter acts
    torch.testing.assert_close(logits_of(merged, family, prompts, images), with_adapter, rtol=1e-4, atol=1e-4)


def run_snippet(card: ModelCard, classnames: list[str], images: list) -> dict:
    code = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    code = code.replace("classnames = [...]", f"classnames = {classnames!r}")
    code = code.replace("images = [...]", "images = IMAGES")
    namespace = {"IMAGES": images}
    exec(compile(code, "<model card>", "exec"), namespace)  # noqa: S102 - our own card's snippet
    return namespace


@pytest.mark.parametrize("backbone, mode", [("tiny-siglip", "lora"), ("tiny-siglip2", "qlora"),
                                            ("tiny-metaclip2", "lora")])
def test_the_model_cards_snippet_gives_our_logits_on_each_family(backbone, mode, tiny_argv, tmp_path, color_folder):
    argv = tiny_argv("--backbone", backbone, "--mode", mode, "--lr", "2e-2", "--n_iters", "1",
                     "--save_path", str(tmp_path / "adapters"))
    record = main.main([*argv, "--merge_export", str(tmp_path / "merged")])
    card = ModelCard.load(Path(record["adapter_dir"]) / "README.md")
    assert card.data.family == record["family"]
    assert record["family"] in card.data.tags
    classnames = sorted(p.name for p in color_folder.iterdir() if p.is_dir())
    images = [Image.open(path).convert("RGB") for path in sorted(color_folder.glob("*/00[0-2].png"))]
    plain = run_snippet(card, classnames, images)

    adapted = saved(argv, Path(record["adapter_dir"]))
    bundle = adapted.bundle
    template = bundle.family.template
    prompts = ClassPrompts(bundle.tokenizer, [template.format(name) for name in classnames], CPU, text=bundle.text)
    assert torch.equal(prompts.input_ids, plain["inputs"]["input_ids"])
    ours = logits_of(adapted.model, bundle.family, prompts, plain["inputs"]["pixel_values"])
    torch.testing.assert_close(plain["logits"], ours, rtol=1e-4, atol=1e-4)
    merged = run_snippet(ModelCard.load(tmp_path / "merged" / "README.md"), classnames, images)
    torch.testing.assert_close(merged["logits"], ours, rtol=1e-4, atol=1e-4)


def test_siglip_trains_on_its_sigmoid_loss_and_reloads(tiny_argv, tmp_path):
    argv = tiny_argv("--backbone", "tiny-siglip2", "--loss", "sigmoid", "--lr", "2e-2", "--n_iters", "2",
                     "--save_path", str(tmp_path / "adapters"))
    record = main.main(argv)
    assert record["config"]["loss"] == "sigmoid"
    assert "losssigmoid" in record["adapter_dir"]
    again = main.main([*argv, "--eval_only"])
    assert again["test_acc"] == record["test_acc"]
    # The CE run of the same settings is another run, in another folder.
    with pytest.raises(main.UserError, match="--loss sigmoid \\(flags: ce\\)"):
        main.main([*tiny_argv("--backbone", "tiny-siglip2", "--lr", "2e-2", "--n_iters", "2",
                              "--save_path", str(tmp_path / "adapters")), "--eval_only"])


def test_base2new_and_eval_datasets_run_on_siglip_with_its_prompt(tmp_path):
    root = tmp_path / "data"
    trees.build("dtd", root)
    trees.build("eurosat", root)
    record = main.main(["--backbone", "tiny-siglip", "--dataset", "dtd", "--root_path", str(root), "--shots", "2",
                        "--batch_size", "4", "--n_iters", "1", "--protocol", "base2new", "--eval_datasets", "eurosat",
                        "--results_file", str(tmp_path / "results.jsonl")])
    assert record["family"] == "siglip"
    assert record["protocol"] == "base2new"
    assert {"base_acc", "new_acc", "hm_acc", "zero_shot_new_acc"} <= record.keys()
    assert set(record["eval_datasets"]) == {"eurosat"}
    assert json.loads(Path(record["subset_file"]).read_text())["template"] == "This is a photo of {}."
