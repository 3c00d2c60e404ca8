"""Every method of the table, on the tiny model and the CPU: it trains only its own weights (in both
towers), zero-shot is the pretrained base's, --eval_only reproduces the accuracy, and --merge_export
keeps the logits (or is refused before anything loads where PEFT cannot merge)."""
from __future__ import annotations

import pytest
import torch
from transformers import CLIPModel

import main
from datasets import build_dataset
from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.backbones.families import CLIP
from qlora_clip.backbones.loading import resolve_backbone
from qlora_clip.methods.interface import Adapted, load_adapted, runtime_class
from qlora_clip.methods.own_tuners import CONFIG_FILE, WEIGHTS_FILE, TunedParameters
from qlora_clip.methods.peft_tuners import ADAPTER_FILES, PeftAdapter
from qlora_clip.methods.table import FULL_PRECISION_MODES, METHODS, PROMPT_MODES, Method
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_args, run_spec
from trainer import TrainStep

CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", CPU)
PROMPTS = ["a photo of a red.", "a photo of a green thing.", "a blue.", "yellow"]
# The methods that put adapters (or tuned weights) in both towers; the prompt learners, whose tokens go into the
# towers' inputs, have these checks in their own terms (tests/test_methods_prompts.py).
ADAPTERS = [mode for mode in FULL_PRECISION_MODES if mode not in PROMPT_MODES]


def tiny_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, len(PROMPTS), (8,), generator=g)


def clip_logits(model: torch.nn.Module, prompts: ClassPrompts, images: torch.Tensor) -> torch.Tensor:
    """The tiny CLIP's logits (the protocol's 100 x cosine) of any model that computes like a CLIPModel."""
    model.eval()
    with torch.no_grad():
        return CLIP.logits(model)(image_features(model, images), prompts.features(model))


def saved_files(method: Method) -> tuple[str, ...]:
    """The files --save_path writes for `method`: our own tuners' tensors and config, PEFT's adapter, or the files
    a method of our own names (CLIP-SVD's singular values); the tensors' file second."""
    cls = runtime_class(method)
    if issubclass(cls, TunedParameters):
        return CONFIG_FILE, WEIGHTS_FILE
    if issubclass(cls, PeftAdapter):
        return ADAPTER_FILES
    return cls.saved_files


def one_step(mode: str, *flags: str) -> tuple[Adapted, ClassPrompts, dict[str, torch.Tensor]]:
    """The method on the tiny model after one optimizer step of the trainer's own step; (adapted, prompts, before)."""
    spec = run_spec(parse_args(["--backbone", "tiny", "--mode", mode, "--shots", "1", "--n_iters", "1", *flags]))
    torch.manual_seed(0)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    prompts = ClassPrompts(adapted.bundle.tokenizer, PROMPTS, CPU)
    images, labels = tiny_batch()
    adapted.initialize([images], prompts)  # EVA's data pass; nothing for the other methods
    before = {n: p.detach().clone() for n, p in adapted.model.named_parameters()}
    step = TrainStep(adapted, prompts, spec.train, FP32, Distributed(rank=0, world=1, device=CPU))
    step([(images, labels)], len(labels))
    return adapted, prompts, before


@pytest.mark.parametrize("mode", ADAPTERS)
def test_a_step_trains_only_the_methods_weights_in_both_towers_and_zero_shot_stays_the_base(mode):
    adapted, prompts, before = one_step(mode)
    model = adapted.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed
    assert changed <= trainable, sorted(changed - trainable)[:3]
    # The base is frozen: whatever trains is the method's weights, and nothing else moved.
    fields = adapted.fields()
    assert adapted.trainable_parameters() == fields["trainable_params"] == fields["adapter_params"] > 0
    for tower in ("text_model", "vision_model"):
        assert adapted.tower_is_adapted(tower)
        assert any(f".{tower}." in f".{n}" for n in changed), f"{mode}: nothing trained in {tower}"

    # PiSSA and OLoRA rewrite the base at init, BitFit and full fine-tuning train it: zero-shot is still the
    # pretrained model's, bit for bit, after the step.
    base = CLIPModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)
    images, _ = tiny_batch(1)
    with adapted.zero_shot_view():
        zero_shot = clip_logits(model, prompts, images)
    assert torch.equal(zero_shot, clip_logits(base, prompts, images))
    assert not torch.equal(clip_logits(model, prompts, images), zero_shot)  # the view is undone afterwards


@pytest.mark.parametrize("mode", ADAPTERS)
def test_a_frozen_text_tower_is_not_adapted_and_its_prompts_are_encoded_once(mode):
    spec = run_spec(parse_args(["--backbone", "tiny", "--mode", mode, "--encoder", "vision", "--shots", "1"]))
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    assert adapted.tower_is_adapted("vision_model")
    assert not adapted.tower_is_adapted("text_model")
    assert not any(p.requires_grad for n, p in adapted.model.named_parameters() if ".text_model." in f".{n}")
    step = TrainStep(adapted, ClassPrompts(adapted.bundle.tokenizer, PROMPTS, CPU), spec.train, FP32,
                     Distributed(rank=0, world=1, device=CPU))
    assert step.cached_text is not None


@pytest.mark.parametrize("mode", ADAPTERS)
def test_eval_only_reproduces_the_run_and_the_merged_export_keeps_its_logits(mode, tiny_argv, tmp_path, color_folder):
    method = METHODS[mode]
    run = ("--mode", mode, "--save_path", str(tmp_path / "saved"))
    export = ["--merge_export", str(tmp_path / "merged")] if method.mergeable else []
    record = main.main(tiny_argv(*run, *export))
    again = main.main(tiny_argv(*run, "--eval_only"))
    assert again["test_acc"] == record["test_acc"]
    assert again["zero_shot_acc"] == record["zero_shot_acc"]
    assert record["peft_config"]
    assert record["adapter_params"] > 0

    args = parse_args(tiny_argv(*run))
    spec = run_spec(args)
    folder = spec.adapter_dir
    files = saved_files(method)
    assert all((folder / name).exists() for name in files)
    # The size the results line records is the saved tensors' (the safetensors header aside).
    assert 0 <= (folder / files[1]).stat().st_size - record["adapter_size_mb"] * 2**20 < 64 * 1024

    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=folder)
    loaded = adapted.model
    assert adapted.tower_is_adapted("text_model")
    assert adapted.tower_is_adapted("vision_model")
    if not method.mergeable:
        assert record["merge_export"] is None
        return
    merged = CLIPModel.from_pretrained(tmp_path / "merged")  # nothing but transformers
    data = build_dataset(args.dataset, args.root_path, args.shots, args.seed)
    prompts = ClassPrompts(adapted.bundle.tokenizer, data.prompts(), CPU)
    images = tiny_batch(2)[0]
    # Logits are 100 x cosine: 1e-3 is a cosine difference of 1e-5 (FourierFT's inverse FFT rounds that much).
    torch.testing.assert_close(clip_logits(merged, prompts, images), clip_logits(loaded, prompts, images),
                               rtol=1e-4, atol=1e-3)


def test_merge_export_of_a_method_peft_cannot_merge_is_refused_before_loading(capsys):
    refused = [m for m, method in METHODS.items() if not method.mergeable and method.trains_on == "images"]
    assert refused  # Lily and its 4-bit entry
    for mode in refused:
        with pytest.raises(SystemExit):
            parse_args(["--mode", mode, "--merge_export", "out"])
        assert f"--merge_export: {mode} cannot be merged into the weights" in capsys.readouterr().err
