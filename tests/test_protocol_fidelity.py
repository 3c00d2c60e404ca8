"""Step for step with CLIP-LoRA's protocol, and correct where the hardware differs (docs/protocol.md).

Short last batches, augmentation that touches no device RNG, one precision rule for the two
projections, training and evaluation peaks apart, non-finite losses, zero-shot rows apart.
"""
from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch

import main
import trainer
from qlora_clip.checkpointing import read_checkpoint
from qlora_clip.config import AdapterConfig, ModelConfig
from qlora_clip.inputs.sampler import TrainBatchSampler
from qlora_clip.model import FULL_PRECISION_MODULES, load_clip
from qlora_clip.results import append_jsonl
from run_utils import build_parser
from summarize import main as summarize_main

CPU = torch.device("cpu")


# --- 1. the short last batch of each epoch ------------------------------------------------------

def test_epochs_keep_their_short_last_batch():
    sampler = TrainBatchSampler(37, 32, 1, seed=1)  # 1-shot Oxford Pets at batch 32
    assert [sampler.step_images(s) for s in range(5)] == [32, 5, 32, 5, 32]
    assert sampler.images_seen(4) == 74 and sampler.images_seen(0) == 0
    for epoch in range(3):
        first, second = sampler.step_batch(2 * epoch), sampler.step_batch(2 * epoch + 1)
        assert sorted(i for i, _ in first + second) == list(range(37))  # each image once per epoch
    assert sampler.step_batch(0) != sampler.step_batch(2)  # a fresh shuffle each epoch


def test_a_train_set_smaller_than_a_batch_is_one_batch_every_step():
    sampler = TrainBatchSampler(12, 32, 1, seed=3)
    assert [sampler.step_images(s) for s in range(3)] == [12, 12, 12] and sampler.images_seen(3) == 36
    assert sorted(i for i, _ in sampler.step_batch(1)) == list(range(12))


def test_the_stream_is_a_pure_function_of_seed_and_step():
    fresh = iter(TrainBatchSampler(37, 32, 2, seed=5))
    stream = [next(fresh) for _ in range(10)]  # 5 steps x 2 micro-batches
    resumed = TrainBatchSampler(37, 32, 2, seed=5)
    resumed.start_at_step(3)
    assert [next(iter(resumed)) for _ in range(1)] == stream[6:7]
    seeds = [seed for micro in stream for _, seed in micro]
    assert len(set(seeds)) == len(seeds) == 32 + 5 + 32 + 5 + 32  # one augmentation seed per image drawn


def test_ranks_share_each_micro_batch_without_overlap_even_when_short():
    one = TrainBatchSampler(37, 32, 2, seed=1)
    ranks = [TrainBatchSampler(37, 32, 2, seed=1, rank=r, world=3) for r in range(3)]
    for step in range(4):
        for m, whole in enumerate(one.micro_batches(step)):
            shares = [r.micro_batches(step)[m] for r in ranks]
            assert sorted(x for share in shares for x in share) == sorted(whole)
    assert [len(r.micro_batches(1)[1]) for r in ranks] == [1, 1, 0]  # 5 images: micro-batches of 3 and 2


def test_results_line_counts_the_images_trained_on(tiny_argv):
    # 4 classes x 3 shots = 12 images at batch 8: steps of 8, 4, 8 (CLIP-LoRA's DataLoader, drop_last=False)
    record = main.main(tiny_argv("--shots", "3", "--n_iters", "1"))
    assert record["total_steps"] == 3 and record["train_images_seen"] == 20


# --- 2. augmentation touches no device RNG ------------------------------------------------------

def test_augmentation_seeds_no_device_generator_and_leaves_the_global_one_alone(monkeypatch):
    from qlora_clip.inputs.loaders import AugmentedImages
    from qlora_clip.inputs.train_images import DecodedImages

    device_seeds = []
    for name in ("manual_seed", "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda seed, name=name: device_seeds.append((name, seed)))
    pixels = torch.randint(0, 256, (30 * 40 * 3,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images = DecodedImages(pixels, torch.tensor([0]), torch.tensor([[30, 40]]))
    augmented = AugmentedImages(images, [7], size=16)
    before = torch.get_rng_state()
    first, label = augmented[(0, 123)]
    again, _ = augmented[(0, 123)]
    other, _ = augmented[(0, 124)]
    assert device_seeds == [] and label == 7
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, again) and not torch.equal(first, other)


# --- 3. one rule for the 4-bit base --------------------------------------------------------------

@pytest.mark.parametrize("mode", ["qlora", "qdora"])
def test_both_projections_stay_in_full_precision_in_the_4bit_modes(mode):
    model = load_clip(ModelConfig("tiny", AdapterConfig(mode)), CPU, torch.float32).model.base_model.model
    assert FULL_PRECISION_MODULES == ["visual_projection", "text_projection"]
    for name in FULL_PRECISION_MODULES:
        layer = getattr(model, name)
        assert type(layer) is torch.nn.Linear and layer.weight.dtype == torch.float32, name
    assert isinstance(model.vision_model.encoder.layers[0].mlp.fc1, bnb.nn.Linear4bit)


# --- 4. the training peak, apart from the evaluation peak ----------------------------------------

class _FakeMemory:
    """Stands in for memory.PeakMemory: logs when it is reset and read, reports a set value."""

    def __init__(self, events: list, value: float):
        self.events, self.value = events, value

    def reset(self):
        self.events.append("reset")

    def read(self, prefix: str = "") -> dict:
        self.events.append("read")
        return {f"{prefix}peak_memory_mb": self.value, f"{prefix}memory_kind": "fake",
                f"{prefix}peak_memory_reserved_mb": None}


def test_training_peak_spans_exactly_the_steps_and_evaluation_has_its_own(tiny_argv, monkeypatch):
    events: list = []
    monkeypatch.setattr(trainer, "PeakMemory", lambda device: _FakeMemory(events, 100.0))
    real_train = main.train

    def train_logging_steps(*args, **kwargs):
        kwargs["on_step"] = [lambda record: events.append("step")]
        return real_train(*args, **kwargs)

    monkeypatch.setattr(main, "train", train_logging_steps)
    record = main.main(tiny_argv("--n_iters", "1"))
    assert events == ["reset"] + ["step"] * 4 + ["read"]
    assert record["peak_memory_mb"] == 100.0 and record["memory_kind"] == "fake"
    # The evaluations' peak is measured around the zero-shot and the test pass, and reported apart.
    assert record["eval_peak_memory_mb"] > 0 and record["eval_memory_kind"] == "cpu_rss"


# --- 6. a loss that is not finite ---------------------------------------------------------------

def poison_logits(monkeypatch, at_call: int) -> None:
    """Make the training logits NaN on the `at_call`-th training micro-step (1-based)."""
    calls = [0]
    real_logits = trainer.logits

    def logits(image, text):
        calls[0] += 1
        out = real_logits(image, text)
        return out * float("nan") if calls[0] == at_call else out

    monkeypatch.setattr(trainer, "logits", logits)


def test_a_nan_loss_stops_an_fp32_run_naming_the_step_and_keeps_the_checkpoint(tiny_argv, tmp_path, monkeypatch):
    poison_logits(monkeypatch, at_call=3)
    argv = tiny_argv("--n_iters", "1", "--checkpoint_every", "2", "--checkpoint_dir", str(tmp_path / "ck"))
    with pytest.raises(trainer.NonFiniteLoss, match=r"step 3 of 4: the training loss is nan.* lower --lr than 0.0002"):
        main.main(argv)
    assert not (tmp_path / "results.jsonl").exists()
    [state_file] = (tmp_path / "ck").rglob("train_state.pt")
    state = read_checkpoint(state_file)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["adapter"].values())


def test_fp16_counts_the_steps_its_gradient_scaler_skipped(tiny_argv, monkeypatch):
    """GradScaler halves its scale at every step it skips: the count reported is the count of halvings."""
    scales = []
    real_train = main.train

    def train_recording_scales(*args, **kwargs):
        kwargs["on_step"] = [lambda record: scales.append(record.grad_scale)]
        return real_train(*args, **kwargs)

    monkeypatch.setattr(main, "train", train_recording_scales)
    poison_logits(monkeypatch, at_call=18)  # a NaN loss at step 18 of 20 is a skipped step, not an error
    record = main.main(tiny_argv("--n_iters", "5", "--compute_dtype", "fp16"))
    halvings = [step for step, (before, after) in enumerate(zip([2.0 ** 16] + scales, scales), start=1)
                if after < before]
    # As in CLIP-LoRA, the first steps overflow at GradScaler's initial scale of 2**16 and are skipped.
    assert halvings[0] == 1 and 18 in halvings
    assert record["skipped_steps"] == len(halvings) and record["total_steps"] == 20
    assert main.main(tiny_argv("--n_iters", "1"))["skipped_steps"] is None  # fp32 has no scaler


# --- 7. zero-shot rows that do not overwrite each other ------------------------------------------

def test_zero_shot_rows_are_kept_apart_by_template_and_compute_dtype(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    settings = [("clip-lora", "fp16", 60.0), ("dataset", "fp16", 62.0), ("clip-lora", "fp32", 61.0)]
    for template, dtype, zero_shot in settings:
        config = vars(build_parser().parse_args(["--dataset", "dtd", "--template", template, "--shots", "4",
                                                 "--compute_dtype", dtype]))
        append_jsonl(results, {"mode": "lora", "dataset": "dtd", "shots": 4, "seed": 1, "backbone": "ViT-B/16",
                               "config": config, "zero_shot_acc": zero_shot, "test_acc": 70.0,
                               "compute_dtype": dtype, "quantized": False})
    assert summarize_main([str(results), "--out", str(tmp_path / "out"), "--tables", "paper"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| zero-shot")]
    cells = sorted(row.split("|")[3].strip() for row in rows)
    assert len(rows) == 3 and cells == ["60.00 (n=1)", "61.00 (n=1)", "62.00 (n=1)"]
    assert any("template=dataset" in row for row in rows) and any("fp32" in row for row in rows)
