"""The text pass once per optimizer step (qlora_clip/training/text_pass.py): with adapter dropout 0, gradient
accumulation and several processes give the weights of the path that re-encodes the prompts at every
micro-batch (bench/text_reference.py), and of one process without accumulation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import main
from bench.text_reference import PerMicroBatchText
from datasets import build_dataset
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.interface import load_adapted
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import resolve_precision
from qlora_clip.training.text_pass import PerUpdateText, shard_rows
from run_utils import parse_run
from trainer import TrainStep

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", CPU)


def trained_weights(root: Path, *flags: str, text_pass=PerUpdateText, steps: int = 3,
                    grads: list | None = None) -> dict:
    """Adapter weights after `steps` steps of TrainStep on the colour folder (dropout 0, B made non-zero);
    each step's summed gradients are appended to `grads` when given.

    At the protocol's learning rate: AdamW's first steps move a weight by about lr whatever its
    gradient's size, so where a gradient is nearly zero its last bits (which differ between any
    two ways of summing it) move the weight by a sizeable part of lr. The weights of two exact
    computations therefore agree to about lr x 1e-1 in the worst entry, 2e-5 at --lr 1e-2. AdamW
    also hides a gradient's scale, so the gradients are compared too.
    """
    spec = parse_run(["--backbone", "tiny", "--dataset", "folder", "--root_path", str(root), "--shots", "3",
                      "--dropout_rate", "0", *flags])
    data = build_dataset(spec.dataset, spec.data.root_path, spec.shots, spec.seed)
    torch.manual_seed(spec.seed)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    model = adapted.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero, which would hide the text gradients' first step
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    prompts = ClassPrompts(adapted.bundle.tokenizer, data.prompts(), CPU)
    dist = Distributed(rank=0, world=1, device=CPU)
    stream = main.build_train_stream(data, adapted.bundle, spec.train, spec, dist, num_workers=0)
    step = TrainStep(adapted, prompts, spec.train, FP32, dist, text_pass=text_pass)
    if grads is not None:
        record_gradients(step, grads)
    batches = iter(stream)
    for s in range(steps):
        micro = [next(batches) for _ in range(stream.sampler.micro_batches_per_step)]
        step(micro, stream.sampler.step_images(s))
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def record_gradients(step: TrainStep, grads: list) -> None:
    """Append every optimizer step's gradients (as the optimizer sees them), per tower, to `grads`."""
    optimizer_step = step.optimizer.step
    names = {p: n for n, p in step.model.named_parameters()}

    def recording(*args, **kwargs):
        grads.append({tower: torch.cat([p.grad.flatten() for p in step.params if tower in names[p]])
                      for tower in ("text_model", "vision_model")})
        return optimizer_step(*args, **kwargs)
    step.optimizer.step = recording


def assert_same_weights(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=1e-5, msg=name)


def assert_same_gradients(ours: list, reference: list) -> None:
    assert len(reference) > 0
    assert len(ours) == len(reference)
    for step_ours, step_reference in zip(ours, reference):
        for tower, b in step_reference.items():
            # Relative to each tower's gradient: a wrong factor on either would show as 1e-1 or more.
            a = step_ours[tower]
            assert b.norm() > 0, tower
            assert (a - b).norm() <= 1e-5 * b.norm(), (tower, ((a - b).norm() / b.norm()).item())


def count_text_passes(model) -> list[int]:
    calls = [0]
    model.base_model.model.text_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("batch, accum", [(8, 4), (5, 5)])  # 12 images: steps 8, 4, 8; 5, 5, 2 (empty micro-batches)
def test_accumulation_with_one_text_pass_gives_the_per_micro_batch_and_the_unaccumulated_weights(batch, accum,
                                                                                                  color_folder):
    run = ("--batch_size", str(batch))
    accumulate = ("--gradient_accumulation_steps", str(accum))
    grads = {"plain": [], "per_micro_batch": [], "once": []}
    start = trained_weights(color_folder, *run, steps=0)
    plain = trained_weights(color_folder, *run, grads=grads["plain"])
    per_micro_batch = trained_weights(color_folder, *run, *accumulate, text_pass=PerMicroBatchText,
                                      grads=grads["per_micro_batch"])
    once = trained_weights(color_folder, *run, *accumulate, grads=grads["once"])
    moved = max((once[n] - start[n]).abs().max().item() for n in once if "text_model" in n)
    assert moved > 4e-4  # three steps of about lr = 2e-4 each: the text adapters trained
    assert any(not torch.equal(once[n], per_micro_batch[n]) for n in once)  # really two computations
    assert_same_weights(once, per_micro_batch)
    assert_same_weights(once, plain)
    assert_same_gradients(grads["once"], grads["per_micro_batch"])
    assert_same_gradients(grads["once"], grads["plain"])


def test_one_step_encodes_the_prompts_once_whatever_the_accumulation(color_folder):
    spec = parse_run(["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder), "--shots", "2",
                      "--batch_size", "8", "--gradient_accumulation_steps", "4"])
    data = build_dataset(spec.dataset, spec.data.root_path, spec.shots, spec.seed)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    dist = Distributed(rank=0, world=1, device=CPU)
    stream = main.build_train_stream(data, adapted.bundle, spec.train, spec, dist, num_workers=0)
    prompts = ClassPrompts(adapted.bundle.tokenizer, data.prompts(), CPU)
    batches = iter(stream)
    for text_pass, passes in ((PerUpdateText, 1), (PerMicroBatchText, 4)):
        calls = count_text_passes(adapted.model)
        step = TrainStep(adapted, prompts, spec.train, FP32, dist, text_pass=text_pass)
        step([next(batches) for _ in range(4)], 8)
        assert calls[0] == passes


def test_shards_are_equal_in_size_cover_every_prompt_and_spread_the_lengths():
    lengths = [9, 8, 18, 8, 10, 9, 8]
    shares = [shard_rows(lengths, rank, 3) for rank in range(3)]
    # Sorted by length, dealt round-robin, each share ceil(7 / 3) = 3 rows (equal shapes for the
    # all-gather), a short one padded with its first row.
    assert [rows for rows, _ in shares] == [[1, 0, 2], [3, 5, 3], [6, 4, 6]]
    gathered = [row for rows, _ in shares for row in rows]
    positions = shares[0][1]
    assert all(gathered[positions[i]] == i for i in range(len(lengths)))  # every prompt read back from its owner
    one = shard_rows([8, 9], 1, 4)  # more ranks than prompts: an empty share is padded with row 0
    assert one[0] == [1]
    assert shard_rows([8, 9], 3, 4)[0] == [0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adapters(folder: Path) -> dict[str, torch.Tensor]:
    [path] = list(folder.rglob("adapter_model.safetensors"))
    return load_file(path)


@pytest.mark.slow
def test_two_processes_with_sharded_text_give_the_one_process_unaccumulated_weights(tiny_argv, tmp_path):
    # 12 images at batch 5 (steps of 5, 5, 2), accumulation 5: micro-batches of one image, which
    # rank 0 always takes, so rank 1 has no image in any step and still joins every collective.
    run = tiny_argv("--shots", "3", "--batch_size", "5", "--n_iters", "1", "--dropout_rate", "0",
                    "--device", "cpu", "--eval_cache_dir", str(tmp_path / "cache"))
    single = main.main([*run, "--save_path", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
         str(free_port()), "main.py", *run, "--gradient_accumulation_steps", "5", "--save_path", str(tmp_path / "two"),
         "--results_file", str(tmp_path / "two.jsonl")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    double = json.loads((tmp_path / "two.jsonl").read_text())
    assert double["processes"] == 2
    assert single["total_steps"] == 3
    assert double["total_steps"] == 3
    assert double["text_once_per_update"]
    assert double["text_shards"] == 2
    assert single["text_shards"] == 1
    ours, reference = adapters(tmp_path / "two"), adapters(tmp_path / "one")
    assert ours.keys() == reference.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=1e-5, msg=name)
    assert double["final_loss"] == pytest.approx(single["final_loss"], rel=1e-5)
    # Both processes read the zero-shot accuracy the 1-process run stored.
    assert not single["zero_shot_cached"]
    assert double["zero_shot_cached"]
    assert double["zero_shot_acc"] == single["zero_shot_acc"]


# --- several processes, in process: each rank's summed gradients against one process's ----------

# Prompts of mixed lengths (one token per character), so each rank's share is bucketed too.
MIXED = [f"a photo of a {'x' * n}." for n in (1, 9, 2, 14, 3, 1, 22, 5, 2, 30, 4, 1, 7)]


def step_gradients(dist: Distributed, accum: int, steps: int = 2) -> list[dict]:
    """Each step's summed gradients (per tower) of TrainStep on 5 fixed images split into `accum`
    micro-batches and over `dist`'s ranks as the sampler splits them (None for an empty share)."""
    from qlora_clip.backbones.text_buckets import BUCKETS
    from qlora_clip.inputs.sampler import split_sizes
    from qlora_clip.methods.settings import AdapterConfig
    from qlora_clip.paper import LR
    from qlora_clip.training.settings import TrainConfig

    torch.manual_seed(0)
    adapted = load_adapted("tiny", AdapterConfig(dropout_rate=0.0), CPU, torch.float32)
    bundle = adapted.bundle
    with torch.no_grad():
        for name, p in adapted.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    prompts = ClassPrompts(bundle.tokenizer, MIXED, CPU, buckets=BUCKETS)
    assert prompts.buckets.count > 1
    g = torch.Generator().manual_seed(1)
    size = bundle.image.image_size
    images, labels = torch.randn(5, 3, size, size, generator=g), torch.randint(0, len(MIXED), (5,), generator=g)
    step = TrainStep(adapted, prompts, TrainConfig(lr=LR, shots=1, n_iters=steps), FP32, dist)
    grads: list[dict] = []
    record_gradients(step, grads)
    for _ in range(steps):
        micro, start = [], 0
        for n in split_sizes(5, accum):
            rows = list(range(start, start + n))[dist.rank::dist.world]
            micro.append((images[rows], labels[rows]) if rows else None)
            start += n
        step(micro, 5)
    return grads


ACCUMULATIONS = (1, 5)  # 5: micro-batches of one image, which rank 0 takes: rank 1 never has one


def _sharded_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    try:
        dist = Distributed(rank=rank, world=world, device=CPU)
        torch.save({accum: step_gradients(dist, accum) for accum in ACCUMULATIONS}, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_sharded_text_gives_every_rank_the_one_process_gradients(tmp_path):
    # 13 prompts over 2 ranks: shares of 7, one padded; the gather's backward sums both ranks'
    # gradients into each share's owner, and sum_gradients adds the shares up, factor 1.
    world = 2
    torch.multiprocessing.spawn(_sharded_worker, args=(world, free_port(), str(tmp_path)), nprocs=world)
    reference = step_gradients(Distributed(rank=0, world=1, device=CPU), accum=1)
    for rank in range(world):
        by_accumulation = torch.load(tmp_path / f"rank{rank}.pt")
        for accum in ACCUMULATIONS:
            assert_same_gradients(by_accumulation[accum], reference)
