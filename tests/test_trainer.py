"""trainer.py: what a step updates, text re-encoding, gradient accumulation, optimizer and schedule, the
on_step callbacks, the training loop's memory peak, and losses that are not finite."""
from __future__ import annotations

import pytest
import torch

import main
import trainer
from datasets import build_dataset
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.interface import load_adapted
from qlora_clip.training.checkpointing import read_checkpoint
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_run

CPU = torch.device("cpu")


def setup_run(*flags: str, root):
    """(the run's TrainConfig, its Adapted, class prompts, train stream)."""
    spec = parse_run(["--backbone", "tiny", "--dataset", "folder", "--root_path", str(root),
                      "--shots", "4", "--batch_size", "8", *flags])
    data = build_dataset(spec.dataset, spec.data.root_path, spec.shots, spec.seed)
    torch.manual_seed(spec.seed)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    prompts = ClassPrompts(adapted.bundle.tokenizer, data.prompts(), CPU)
    stream = main.build_train_stream(data, adapted.bundle, spec.train, spec, Distributed(rank=0, world=1, device=CPU),
                                     num_workers=0)
    return spec.train, adapted, prompts, stream


def adapter_weights(model, tower: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and tower in n}


@pytest.mark.parametrize("mode", ["lora", "qlora", "dora", "qdora"])
def test_one_step_trains_both_text_and_vision_adapters(mode, color_folder):
    args, adapted, prompts, loader = setup_run("--mode", mode, "--n_iters", "1", "--shots", "1", root=color_folder)
    assert args.n_iters * args.shots == 1
    model = adapted.model
    before = {tower: adapter_weights(model, tower) for tower in ("text_model", "vision_model")}
    trainer.train(adapted, loader, prompts, args, resolve_precision("fp32", CPU))
    for tower, weights in before.items():
        after = adapter_weights(model, tower)
        changed = [n for n in weights if not torch.equal(weights[n], after[n])]
        assert len(weights) > 0, tower
        # every adapter matrix of the tower moved, not just some of them
        assert len(changed) == len(weights), f"{tower}: {len(changed)}/{len(weights)} changed"


def count_text_passes(model) -> list[int]:
    calls = [0]
    model.base_model.model.text_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_text_is_reencoded_every_step_when_it_has_adapters(color_folder):
    args, adapted, prompts, loader = setup_run("--n_iters", "1", "--shots", "3",
                                               "--gradient_accumulation_steps", "2", root=color_folder)
    calls = count_text_passes(adapted.model)
    trainer.train(adapted, loader, prompts, args, resolve_precision("fp32", CPU))
    assert calls[0] == 3  # once per step, not per micro-step (qlora_clip/training/text_pass.py)


def test_frozen_text_is_encoded_once(color_folder):
    args, adapted, prompts, loader = setup_run("--encoder", "vision", "--n_iters", "1", "--shots", "3",
                                               root=color_folder)
    calls = count_text_passes(adapted.model)
    result = trainer.train(adapted, loader, prompts, args, resolve_precision("fp32", CPU))
    assert result.steps == 3
    assert calls[0] == 1


@pytest.mark.parametrize("shots, batch, accum", [
    (2, 8, 2),    # two micro-batches of 4 vs one batch of 8
    (3, 8, 8),    # 12 images: steps of 8 and a short 4, split into single images and empty micro-batches
    (3, 14, 7),   # a train set smaller than one batch, used whole: 12 images in micro-batches of 2 and 1
    (1, 8, 4),    # 4 images, smaller than the batch: one step of 4 single-image micro-batches
])
def test_gradient_accumulation_gives_the_same_update_as_one_big_batch(shots, batch, accum, color_folder,
                                                                      monkeypatch):
    """Micro-batches weigh by their image counts: every step's gradient equals the one without accumulation."""
    grads = []
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *a, **k):
        grads.append(torch.cat([p.grad.flatten() for g in self.param_groups for p in g["params"]]))
        return adamw_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    runs = []
    for steps_accum in ("1", str(accum)):
        grads.clear()
        config, adapted, prompts, loader = setup_run("--gradient_accumulation_steps", steps_accum, "--dropout_rate",
                                                     "0", "--n_iters", "1", "--shots", str(shots), "--batch_size",
                                                     str(batch), root=color_folder)
        assert len(loader.sampler.micro_batches(0)) == int(steps_accum)
        assert len(loader.dataset) == 4 * shots
        for name, p in adapted.model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(len(name)))
        result = trainer.train(adapted, loader, prompts, config, resolve_precision("fp32", CPU))
        runs.append((list(grads), result))
    (plain, plain_result), (accumulated, accumulated_result) = runs
    assert len(plain) == shots
    assert len(accumulated) == shots
    assert plain[0].abs().sum() > 0
    for a, b in zip(plain, accumulated):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    assert accumulated_result.images_seen == plain_result.images_seen
    torch.testing.assert_close(accumulated_result.losses, plain_result.losses, rtol=1e-5, atol=1e-6)


def test_learning_rate_sets_the_first_step_size(color_folder):
    """AdamW's first step moves each weight by about lr, whatever the gradient's size."""
    for lr in (1e-3, 1e-2):
        args, adapted, prompts, loader = setup_run("--lr", lr and str(lr), "--n_iters", "1", "--shots", "1",
                                                   root=color_folder)
        before = adapter_weights(adapted.model, "lora_B")
        trainer.train(adapted, loader, prompts, args, resolve_precision("fp32", CPU))
        after = adapter_weights(adapted.model, "lora_B")
        largest = max((after[n] - before[n]).abs().max().item() for n in before)
        assert largest == pytest.approx(lr, rel=0.05)


def test_schedule_anneals_to_min_lr_over_n_iters_times_shots(color_folder, monkeypatch):
    seen = []
    original = torch.optim.lr_scheduler.CosineAnnealingLR

    def spy(optimizer, **kwargs):
        scheduler = original(optimizer, **kwargs)
        seen.append((kwargs["T_max"], kwargs["eta_min"], optimizer))
        return scheduler
    monkeypatch.setattr(torch.optim.lr_scheduler, "CosineAnnealingLR", spy)
    args, adapted, prompts, loader = setup_run("--n_iters", "2", "--shots", "2", root=color_folder)
    result = trainer.train(adapted, loader, prompts, args, resolve_precision("fp32", CPU))
    t_max, eta_min, optimizer = seen[0]
    assert result.steps == 4
    assert t_max == 4
    assert eta_min == 1e-6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-2
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_on_step_callbacks_see_every_optimizer_step(color_folder):
    config, adapted, prompts, loader = setup_run("--n_iters", "2", "--shots", "2", root=color_folder)
    seen = []
    result = trainer.train(adapted, loader, prompts, config, resolve_precision("fp32", CPU), on_step=[seen.append])
    assert [r.step for r in seen] == [1, 2, 3, 4]
    assert [r.total_steps for r in seen] == [4] * 4
    assert [r.loss for r in seen] == result.losses
    assert seen[0].lr == pytest.approx(2e-4)
    assert seen[-1].lr < seen[0].lr
    assert [r.images for r in seen] == [8] * 4
    assert all(r.seconds > 0 for r in seen)
    assert [r.grad_scale for r in seen] == [None] * 4


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
    assert record["peak_memory_mb"] == 100.0
    assert record["memory_kind"] == "fake"
    # The evaluations' peak is measured around the zero-shot and the test pass, and reported apart.
    assert record["eval_peak_memory_mb"] > 0
    assert record["eval_memory_kind"] == "cpu_rss"


def poison_logits(monkeypatch, at_call: int) -> None:
    """Make the training logits NaN on the `at_call`-th training micro-step (1-based), where the step's loss
    takes them: the method's `logits` also serves the evaluator, whose calls must not count."""
    calls = [0]
    real_summed_loss = trainer.summed_loss

    def summed_loss(loss, logits, labels):
        calls[0] += 1
        return real_summed_loss(loss, logits * float("nan") if calls[0] == at_call else logits, labels)

    monkeypatch.setattr(trainer, "summed_loss", summed_loss)


def test_a_nan_loss_stops_an_fp32_run_naming_the_step_and_keeps_the_checkpoint(tiny_argv, tmp_path, monkeypatch):
    poison_logits(monkeypatch, at_call=3)
    argv = tiny_argv("--n_iters", "1", "--checkpoint_every", "2", "--checkpoint_dir", str(tmp_path / "ck"))
    with pytest.raises(trainer.NonFiniteLoss, match=r"step 3 of 4: the training loss is nan.* lower --lr than 0.0002"):
        main.main(argv)
    assert not (tmp_path / "results.jsonl").exists()
    [state_file] = (tmp_path / "ck").rglob("train_state.pt")
    state = read_checkpoint(state_file)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["adapter"].values())


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
    assert halvings[0] == 1
    assert 18 in halvings
    assert record["skipped_steps"] == len(halvings)
    assert record["total_steps"] == 20
    assert main.main(tiny_argv("--n_iters", "1"))["skipped_steps"] is None  # fp32 has no scaler
