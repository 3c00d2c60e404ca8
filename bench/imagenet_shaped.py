"""Study `imagenet`: ImageNet-shaped text passes, the earlier path against the new one, per way of splitting a step.

1,000 classes with ImageNet's prompt-length spread (bench/prompts.py: mean 9.2 tokens, median 9,
longest 18), the backbone's shapes with random weights (ViT-B/16 in the `imagenet` preset), LoRA
on both towers with adapter dropout 0 (so both paths compute the same update), the settings'
first batch size and dtype, random images. Three settings, each timed on two paths:

    today  the trainer's own step with the per-micro-batch text pass (bench/text_reference.py) and prompts padded to the longest
           (18 tokens): every micro-batch re-encodes all 1,000 prompts, on every process. This is
           the earlier text pass, kept in bench/ as this reference; the rest of the step is TrainStep's own.
    new    the step every run now takes: the prompts encoded once per optimizer step, in length
           buckets (text_buckets.py), and under several processes each rank encodes its share.

    1 process       one micro-batch: the only difference is the buckets
    accumulation 4  four micro-batches per step: four text passes against one
    2 processes     (CPU only) two processes started with torch.multiprocessing, joined in a gloo
                    group, one torch thread each, so the two ranks share this machine's cores as
                    two GPUs would not share one; each takes half of every micro-batch's images.
                    Both paths run in the same two processes, so the comparison between them is
                    fair; it is not a comparison with one process (two one-thread processes on two
                    cores against one two-thread process), and it says nothing about the
                    all-gather's cost over a real interconnect. With one GPU it is skipped.

Within a setting the two paths' steps alternate (today, new, today, new, ...), so a machine
shared with other jobs loads both alike; each step is timed from a barrier to the end of its
optimizer step (the step ends in an all-reduce, so every rank finishes it together). The summary
gives each setting's step-time ratio with the issue's target, the logits of the two paddings at
these shapes, and the FLOP model's per-rank cost of a batch-32 step (today vs new, accumulation
1 and 4, 1, 2 and 8 processes).
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
from pathlib import Path

import torch
from transformers import CLIPConfig

from bench.flops import image_pass_flops, text_pass_flops
from bench.harness import checkpoint_dir, load_model, random_batch, release_memory
from bench.prompts import imagenet_prompt_lengths, prompts_of_lengths
from bench.settings import BenchSettings
from bench.step_time import StepTimer
from qlora_clip.training.distributed import Distributed
from bench.text_reference import PerMicroBatchText
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.training.text_pass import PerUpdateText
from qlora_clip.training.memory import PeakMemory
from qlora_clip.backbones.text_buckets import BUCKETS, plan_buckets
from qlora_clip.training.text_pass import shard_rows

log = logging.getLogger("bench")

ACCUMULATION = 4
PROCESSES = 2
# The targets: new over today's step time, per setting.
TARGETS = {"1 process": 1.25, f"accumulation {ACCUMULATION}": 2.0, f"{PROCESSES} processes": 1.5}
COST_MODEL_BATCH = 32  # the protocol's batch, for the FLOP model's table


def paths(tokenizer, device: torch.device) -> dict[str, tuple[ClassPrompts, bool]]:
    """Each path's prompts and whether its step encodes them once per update."""
    prompts = prompts_of_lengths(tokenizer, imagenet_prompt_lengths())
    return {"today": (ClassPrompts(tokenizer, prompts, device), False),
            "new": (ClassPrompts(tokenizer, prompts, device, buckets=BUCKETS), True)}


def time_alternating(timers: dict[str, StepTimer], images: torch.Tensor, labels: torch.Tensor, micro_batches: int,
                     steps: int, warmup: int) -> dict[str, dict]:
    """Each timer's steps, taken in turn; per timer the timed steps' records and its peak memory."""
    device = images.device
    dist = next(iter(timers.values())).dist
    records: dict[str, list[dict]] = {name: [] for name in timers}
    peaks = dict.fromkeys(timers, 0.0)
    memory = PeakMemory(device)
    for i in range(warmup + steps):
        for name, timer in timers.items():
            release_memory(device)  # each step's peak starts from the same baseline
            memory.reset()
            if dist.world > 1:
                torch.distributed.barrier()
            record = timer.step(images, labels, micro_batches)
            peaks[name] = max(peaks[name], memory.read()["peak_memory_mb"])
            if i >= warmup:
                records[name].append(record)
    kind = memory.read()["memory_kind"]
    return {name: {"records": records[name], "peak_memory_mb": peaks[name], "memory_kind": kind} for name in timers}


def summarise(setting: str, path: str, measured: dict, bench: BenchSettings, prompts: ClassPrompts,
              processes: int, accumulation: int, flops: float, peak_flops: float) -> dict:
    """One row: the setting, the path, its median step time, tower shares, tokens, FLOPs, memory."""
    records = measured["records"]
    step_s = statistics.median(r["step_s"] for r in records)
    return {
        "setting": setting, "path": path, "backbone": bench.backbone, "batch": bench.batch_sizes[0],
        "dtype": bench.compute_dtypes[0], "num_classes": len(prompts.prompts), "processes": processes,
        "accumulation": accumulation, "text_per_update": path == "new", "text_buckets": prompts.buckets.count,
        "text_tokens": prompts.buckets.tokens, "step_s": step_s, "step_s_all": [r["step_s"] for r in records],
        "text_share": statistics.median(r["text_s"] / r["step_s"] for r in records),
        "image_share": statistics.median(r["image_s"] / r["step_s"] for r in records),
        "step_gflop": flops / 1e9, "utilization": flops / step_s / peak_flops,
        "peak_memory_mb": measured["peak_memory_mb"], "memory_kind": measured["memory_kind"]}


def rank_flops(config: CLIPConfig, batch: int, lengths: list[int], accumulation: int, processes: int, rank: int,
               per_update: bool) -> float:
    """FLOPs of one rank's step: its text passes (per micro-batch and unbucketed, or once on its
    bucketed share) and its share of the images, from the formula of bench/flops.py."""
    images = len(range(rank, batch, processes))
    image = image_pass_flops(config, images, len(lengths))
    if not per_update:
        return accumulation * text_pass_flops(config, len(lengths), max(lengths)) + image
    rows = shard_rows(lengths, rank, processes)[0] if processes > 1 else list(range(len(lengths)))
    share = [lengths[i] for i in rows]
    return sum(text_pass_flops(config, len(b), max(share[i] for i in b)) for b in plan_buckets(share)) + image


def timed_flops(config: CLIPConfig, bench: BenchSettings) -> float:
    """FLOPs of every step the study takes with these settings (one process; the FLOP model's count)."""
    batch, lengths = bench.batch_sizes[0], imagenet_prompt_lengths()
    steps = bench.warmup + bench.steps
    per_step = [rank_flops(config, batch, lengths, accumulation, 1, 0, per_update)
                for accumulation in (1, ACCUMULATION) for per_update in (False, True)]
    if bench.device == "cpu":
        per_step += [sum(rank_flops(config, batch, lengths, 1, PROCESSES, r, per_update) for r in range(PROCESSES))
                     for per_update in (False, True)]
    return steps * sum(per_step)


def estimated_seconds(config: CLIPConfig, bench: BenchSettings, flops_per_second: float,
                      load_seconds: float = 30.0) -> float:
    """The study's wall time at an assumed sustained rate, plus loading the model (an estimate)."""
    return timed_flops(config, bench) / flops_per_second + load_seconds


def cost_model(config: CLIPConfig) -> dict:
    """Per-rank GFLOP of a batch-32 ImageNet-shaped step (rank 0, the busiest), today vs new."""
    lengths = imagenet_prompt_lengths()
    table = {}
    for processes in (1, 2, 8):
        for accumulation in (1, ACCUMULATION):
            today = rank_flops(config, COST_MODEL_BATCH, lengths, accumulation, processes, 0, False)
            new = rank_flops(config, COST_MODEL_BATCH, lengths, accumulation, processes, 0, True)
            table[f"{processes}p_accum{accumulation}"] = {"today_gflop": today / 1e9, "new_gflop": new / 1e9,
                                                         "ratio": today / new}
    image = image_pass_flops(config, COST_MODEL_BATCH, len(lengths)) / 1e9
    return {"batch": COST_MODEL_BATCH, "image_gflop_per_step": image, "per_rank": table}


@torch.no_grad()
def logits_max_diff(adapted, pair: dict, image_size: int, device: torch.device) -> float:
    """Largest |logit| difference between the bucketed and the unbucketed prompts, in eval mode."""
    adapted.model.eval()
    images, _ = random_batch(4, image_size, 2, device, seed=3)
    image = adapted.image_embeddings(images)
    diff = (adapted.logits(image, adapted.text_features(pair["new"][0]))
            - adapted.logits(image, adapted.text_features(pair["today"][0])))
    adapted.model.train()
    return diff.abs().max().item()


def text_pass(per_update: bool):
    """The step's text pass: production's once per update, or the per-micro-batch reference."""
    return PerUpdateText if per_update else PerMicroBatchText


def one_process(bench: BenchSettings, peak_flops: dict[str, float]) -> tuple[list[dict], float]:
    """The 1-process and accumulation settings' rows, and the two paddings' largest logit difference."""
    device = torch.device(bench.device)
    batch, dtype = bench.batch_sizes[0], bench.compute_dtypes[0]
    _, precision, adapted = load_model(bench.backbone, dtype, device, dropout=0.0)
    bundle, model = adapted.bundle, adapted.model
    with torch.no_grad():  # adapters that change the features, as after some training
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    pair = paths(bundle.tokenizer, device)
    lengths = pair["today"][0].lengths
    images, labels = random_batch(batch, bundle.image.image_size, len(lengths), device)
    rows = []
    for setting, accumulation in (("1 process", 1), (f"accumulation {ACCUMULATION}", ACCUMULATION)):
        timers = {path: StepTimer(adapted, prompts, precision, total_steps=bench.warmup + bench.steps,
                                  text_pass=text_pass(per_update)) for path, (prompts, per_update) in pair.items()}
        measured = time_alternating(timers, images, labels, accumulation, bench.steps, bench.warmup)
        for path, (prompts, per_update) in pair.items():
            flops = rank_flops(model.config, batch, lengths, accumulation, 1, 0, per_update)
            rows.append(summarise(setting, path, measured[path], bench, prompts, 1, accumulation, flops,
                                  peak_flops[dtype]))
            log.info("imagenet %s %s: %.2f s per step", setting, path, rows[-1]["step_s"])
        del timers
    diff = logits_max_diff(adapted, pair, bundle.image.image_size, device)
    del model, bundle, pair, adapted
    release_memory(device)
    return rows, diff


def _rank_worker(rank: int, port: int, bench: BenchSettings, peak_flops: dict[str, float], out: str) -> None:
    """One of the PROCESSES ranks: both paths' steps, alternating; rank 0 writes the rows."""
    torch.set_num_threads(max(1, (os.cpu_count() or PROCESSES) // PROCESSES))
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=PROCESSES)
    try:
        device = torch.device("cpu")
        dist = Distributed(rank=rank, world=PROCESSES, device=device)
        batch, dtype = bench.batch_sizes[0], bench.compute_dtypes[0]
        _, precision, adapted = load_model(bench.backbone, dtype, device, dropout=0.0)
        bundle = adapted.bundle
        pair = paths(bundle.tokenizer, device)
        lengths = pair["today"][0].lengths
        images, labels = random_batch(batch, bundle.image.image_size, len(lengths), device)
        timers = {path: StepTimer(adapted, prompts, precision, total_steps=bench.warmup + bench.steps,
                                  dist=dist, text_pass=text_pass(per_update)) for path, (prompts, per_update) in pair.items()}
        measured = time_alternating(timers, images, labels, 1, bench.steps, bench.warmup)
        rows = []
        for path, (prompts, per_update) in pair.items():
            flops = sum(rank_flops(bundle.model.config, batch, lengths, 1, PROCESSES, r, per_update)
                        for r in range(PROCESSES))
            row = summarise(f"{PROCESSES} processes", path, measured[path], bench, prompts, PROCESSES, 1, flops,
                            peak_flops[dtype])
            row["text_tokens_per_rank"] = timers[path].step_fn.text.share.buckets.tokens if per_update else \
                prompts.buckets.tokens
            row["torch_threads_per_process"] = torch.get_num_threads()
            rows.append(row)
        gathered = [None] * PROCESSES
        torch.distributed.all_gather_object(gathered, rows)
        if rank == 0:
            # The step time of a rank is the step's (it ends in an all-reduce); keep the slower rank's.
            for i, row in enumerate(rows):
                other = gathered[1][i]
                row["step_s_all_ranks"] = [r[i]["step_s_all"] for r in gathered]
                row["step_s"] = max(row["step_s"], other["step_s"])
                row["peak_memory_mb_per_rank"] = [r[i]["peak_memory_mb"] for r in gathered]
            Path(out).write_text(json.dumps(rows))
    finally:
        torch.distributed.destroy_process_group()


def two_processes(bench: BenchSettings, peak_flops: dict[str, float]) -> list[dict]:
    """The 2-process setting's rows, measured in PROCESSES spawned gloo processes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rows.json")
        torch.multiprocessing.spawn(_rank_worker, args=(port, bench, peak_flops, out), nprocs=PROCESSES)
        return json.loads(Path(out).read_text())


def run(bench: BenchSettings, peak_flops: dict[str, float]) -> tuple[dict, list[dict]]:
    """The three settings' rows; the summary: per setting today / new step time against its target."""
    rows, diff = one_process(bench, peak_flops)
    if bench.device == "cpu":
        rows += two_processes(bench, peak_flops)
    by = {(row["setting"], row["path"]): row for row in rows}
    speedups = {}
    for setting, target in TARGETS.items():
        if (setting, "today") in by:
            today, new = by[setting, "today"], by[setting, "new"]
            ratio = today["step_s"] / new["step_s"]
            speedups[setting] = {"today_s": today["step_s"], "new_s": new["step_s"], "speedup": ratio,
                                 "target": target, "met": ratio >= target,
                                 "peak_memory_mb": {"today": today["peak_memory_mb"], "new": new["peak_memory_mb"]}}
        else:
            speedups[setting] = {"skipped": f"{PROCESSES} processes are measured on the CPU only (one GPU)"}
    lengths = imagenet_prompt_lengths()
    new_prompts = by["1 process", "new"]
    summary = {
        "num_classes": len(lengths), "prompt_tokens_mean": sum(lengths) / len(lengths), "longest": max(lengths),
        "text_tokens_longest_padding": len(lengths) * max(lengths), "text_tokens_bucketed": new_prompts["text_tokens"],
        "buckets": new_prompts["text_buckets"], "batch": bench.batch_sizes[0], "steps": bench.steps,
        "warmup": bench.warmup, "speedups": speedups, "logits_max_abs_diff_buckets": diff,
        "cost_model": cost_model(CLIPConfig.from_pretrained(checkpoint_dir(bench.backbone)))}
    return summary, rows
