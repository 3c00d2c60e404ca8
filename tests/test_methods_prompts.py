"""The prompt learners (qlora_clip/methods/prompts/), each on the frozen and the 4-bit base: a step trains only
their tokens (the base stays bit for bit), zero-shot is the base's with the tokens off; through main.py each
runs base-to-novel and reloads to the identical accuracies (one few-shot run covers that protocol), and the model
card's snippet gives our logits; their entries take Dassl's recipe as the defaults of --n_iters and --batch_size and refuse the adapters'
placement flags. (Each method's own mechanism: tests/test_methods_<name>.py.)"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import COLORS
from huggingface_hub import ModelCard
from PIL import Image
from test_methods_training import clip_logits, tiny_batch
from test_modelcard import our_logits, run_snippet

import main
from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.backbones.loading import load_base_model, open_checkpoint
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.prompts.learner import PromptLearning
from qlora_clip.methods.table import METHODS, PROMPT_MODES
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_args, run_spec
from trainer import TrainStep

CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", CPU)
NAMES = ["red", "green thing", "blue", "yellow"]
FULL_PRECISION = [mode for mode in PROMPT_MODES if not METHODS[mode].quantized]


def class_prompts(adapted) -> ClassPrompts:
    """The run's prompts for NAMES (the template the zero-shot row uses), naming their classes."""
    return ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {name}." for name in NAMES], CPU,
                        text=adapted.bundle.text, classes=SimpleNamespace(classnames=NAMES))


def trained_one_step(mode: str, backbone: str = "tiny") -> tuple[PromptLearning, ClassPrompts, dict]:
    """(the method after one optimizer step of the trainer's own step, its prompts, the parameters before)."""
    spec = run_spec(parse_args(["--backbone", backbone, "--mode", mode, "--shots", "1", "--n_iters", "1"]))
    torch.manual_seed(0)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    prompts = class_prompts(adapted)
    images, labels = tiny_batch()
    adapted.initialize([images], prompts)  # KgCoOp's and PromptSRC's frozen references
    before = {n: p.detach().clone() for n, p in adapted.model.named_parameters()}
    step = TrainStep(adapted, prompts, spec.train, FP32, Distributed(rank=0, world=1, device=CPU), steps_per_epoch=1)
    step([(images, labels)], len(labels))
    return adapted, prompts, before


def method_logits(adapted, prompts: ClassPrompts, images: torch.Tensor) -> torch.Tensor:
    adapted.model.eval()
    with torch.no_grad():
        return adapted.logits(adapted.image_embeddings(images), adapted.text_features(prompts))


@pytest.mark.parametrize("mode", PROMPT_MODES)
def test_a_step_trains_only_the_tokens_and_zero_shot_is_the_bases(mode):
    adapted, prompts, before = trained_one_step(mode)
    model = adapted.model
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    tokens = {f"prompt_learner.{n}" for n, _ in adapted.learner.named_parameters()}
    assert changed
    assert changed <= tokens  # the frozen base did not move, bit for bit
    assert {n for n, p in model.named_parameters() if p.requires_grad} == tokens
    fields = adapted.fields()
    assert adapted.trainable_parameters() == fields["trainable_params"] == fields["adapter_params"] > 0
    assert all(p.dtype == torch.float32 for p in adapted.learner.parameters())  # also on the 4-bit base

    base = load_base_model(open_checkpoint("tiny"), METHODS[mode].quantized, CPU, torch.float32)
    images = tiny_batch(1)[0]
    with adapted.zero_shot_view():
        zero_shot = method_logits(adapted, prompts, images)
    torch.testing.assert_close(zero_shot, clip_logits(base, prompts, images), rtol=0, atol=1e-5)
    assert not torch.allclose(method_logits(adapted, prompts, images), zero_shot)  # the view is undone afterwards
    # Its image embeddings are the base's unless its prompts reach the vision tower (then the evaluator re-encodes).
    vision_changed = not torch.allclose(adapted.image_embeddings(images), base.get_image_features(pixel_values=images)
                                        .pooler_output, atol=1e-5)
    assert vision_changed == adapted.tower_is_adapted("vision_model")


@pytest.mark.parametrize("backbone", ["tiny-metaclip2", "tiny-siglip", "tiny-siglip2"])
@pytest.mark.parametrize("mode", ["cocoop", "promptsrc"])
def test_they_carry_over_to_the_other_families(mode, backbone):
    """Per family (MetaCLIP 2's tokenizer; SigLIP's context at position 0, its logit bias, its pooling head): the
    context prompts (CoCoOp's per image) and the deep prompts of both towers (PromptSRC's) train, the base stays
    bit for bit, and with the tokens off the logits are the base's through the family's own logits."""
    adapted, prompts, before = trained_one_step(mode, backbone)
    changed = {n for n, p in adapted.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= {f"prompt_learner.{n}" for n, _ in adapted.learner.named_parameters()}
    base = load_base_model(open_checkpoint(backbone), False, CPU, torch.float32).eval()
    images = torch.randn(2, 3, adapted.bundle.image.image_size, adapted.bundle.image.image_size)
    with adapted.zero_shot_view():
        zero_shot = method_logits(adapted, prompts, images)
    with torch.no_grad():
        expected = adapted.bundle.family.logits(base)(image_features(base, images), prompts.features(base))
    torch.testing.assert_close(zero_shot, expected, rtol=0, atol=1e-4)
    assert not torch.allclose(method_logits(adapted, prompts, images), zero_shot, atol=1e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, color_folder) -> dict:
    """Per method: a base-to-novel run saved and its --eval_only; one few-shot run (tiny model, colour folder). The
    two protocols differ only in the draw and the classes scored, so one method's few-shot run covers that path."""
    tmp = tmp_path_factory.mktemp("prompts")

    def argv(mode: str, *extra: str) -> list[str]:
        return ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder), "--shots", "2",
                "--n_iters", "2", "--mode", mode, "--results_file", str(tmp / "results.jsonl"), "--eval_cache_dir", "",
                "--save_path", str(tmp / "saved"), *extra]

    out = {}
    for mode in FULL_PRECISION:
        base2new = argv(mode, "--protocol", "base2new")
        out[mode] = {"base2new": main.main(base2new), "eval_only": main.main([*base2new, "--eval_only"]),
                     "argv": base2new}
    out["fewshot"] = main.main(argv("kgcoop"))
    return out


@pytest.mark.parametrize("mode", FULL_PRECISION)
def test_each_runs_base_to_novel_and_reloads_to_the_same_accuracy(runs, mode):
    base2new, again = runs[mode]["base2new"], runs[mode]["eval_only"]
    optimization = METHODS[mode].optimization
    assert base2new["config"]["batch_size"] == optimization.batch_size  # the method's batch, not CLIP-LoRA's 32
    # 2 epochs of the base classes' full batches: 2 shots of 2 of the 4 colours (Dassl drops a short last batch;
    # fewer images than a batch are one batch).
    assert base2new["total_steps"] == 2 * max(2 * len(COLORS) // 2 // optimization.batch_size, 1)
    assert base2new["protocol"] == again["protocol"] == "base2new"
    assert 0 <= base2new["new_acc"] <= 100
    assert base2new["config"]["n_iters"] == 2
    for field in ("test_acc", "base_acc", "new_acc", "hm_acc", "zero_shot_acc", "zero_shot_new_acc"):
        assert again[field] == base2new[field], field
    assert again["trainable_params"] == 0
    assert again["adapter_params"] == base2new["adapter_params"] > 0
    assert base2new["peft_config"]["qlora_clip_prompts"] == mode


def test_few_shot_trains_the_methods_epochs_of_full_batches(runs):
    fewshot = runs["fewshot"]
    optimization = METHODS["kgcoop"].optimization
    assert fewshot["protocol"] == "fewshot"
    assert fewshot["config"]["batch_size"] == 128
    # 2 epochs of the 8 images (fewer than a batch: one batch an epoch).
    assert fewshot["total_steps"] == 2 * max(2 * len(COLORS) // optimization.batch_size, 1) == 2
    assert 0 <= fewshot["test_acc"] <= 100


def test_the_model_card_snippet_gives_our_logits(runs, color_folder):
    """MaPLe's tokens reach both towers: the card's code (this repository's loader) computes what we evaluate."""
    argv = runs["maple"]["argv"]
    spec = run_spec(parse_args(argv))
    card = ModelCard.load(spec.adapter_dir / "README.md")
    assert card.data.method == "maple"
    assert "MaPLe" in card.text
    classnames = sorted(p.name for p in color_folder.iterdir() if p.is_dir())
    images = [Image.open(path).convert("RGB") for path in sorted(color_folder.glob("*/00[0-2].png"))]
    plain = run_snippet(card, classnames, images)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=spec.adapter_dir)
    prompts = ClassPrompts(adapted.bundle.tokenizer, classnames, CPU, classes=SimpleNamespace(classnames=classnames))
    torch.testing.assert_close(plain["logits"], our_logits(adapted, plain["inputs"]["pixel_values"], prompts))


def test_their_defaults_are_dassls_recipe_per_method_and_protocol():
    assert (parse_args(["--mode", "cocoop"]).batch_size, parse_args(["--mode", "cocoop"]).n_iters) == (1, 10)
    assert (parse_args(["--mode", "kgcoop"]).batch_size, parse_args(["--mode", "kgcoop"]).n_iters) == (128, 100)
    assert (parse_args(["--mode", "maple"]).batch_size, parse_args(["--mode", "maple"]).lr) == (4, 0.0035)
    assert parse_args(["--mode", "promptsrc"]).n_iters == 50  # few-shot config
    assert parse_args(["--mode", "promptsrc", "--protocol", "base2new"]).n_iters == 20
    assert parse_args(["--mode", "promptsrc", "--n_iters", "3"]).n_iters == 3  # the user's override
    assert parse_args(["--mode", "maple", "--quantize", "4bit"]).mode == "maple-4bit"
    # A run at the method's batch is the same run as one that spells it out; each protocol's epochs are its default.
    assert run_spec(parse_args(["--mode", "kgcoop", "--batch_size", "128"])).variant == "kgcoop"
    assert run_spec(parse_args(["--mode", "promptsrc", "--protocol", "base2new"])).variant == "promptsrc"
    assert run_spec(parse_args(["--mode", "promptsrc", "--n_iters", "20"])).variant.startswith("promptsrc-n_iters20-")


@pytest.mark.parametrize("flags, named", [(["--mode", "maple", "--encoder", "vision"], "--encoder vision: --mode maple"),
                                          (["--mode", "cocoop", "--params", "q"], "--params q: --mode cocoop"),
                                          (["--mode", "promptsrc", "--resume"], "--resume True: --mode promptsrc"),
                                          (["--mode", "kgcoop", "--r", "4"], "--r 4: kgcoop has no such"),
                                          (["--mode", "cocoop", "--merge_export", "out"], "cannot be merged")])
def test_flags_they_cannot_take_are_refused_before_anything_loads(flags, named, capsys):
    with pytest.raises(SystemExit):
        parse_args(flags)
    assert named in capsys.readouterr().err
