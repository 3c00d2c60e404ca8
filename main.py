"""Entry point: one few-shot experiment (zero-shot eval, adapter training, test eval, report).

Base-to-novel and evaluation on other datasets are added by protocols.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

import torch

from datasets import FewShotDataset, build_dataset, write_subset
from qlora_clip.checkpointing import TrainCheckpoint
from qlora_clip.distributed import Distributed, init_distributed
from qlora_clip.encode import ClassPrompts
from qlora_clip.errors import UserError
from qlora_clip.evaluator import EvalSettings, Evaluator, build_eval_set, eval_batch_size
from qlora_clip.export import export_merged
from qlora_clip.extra_evals import ProtocolEvaluation
from qlora_clip.inputs.loaders import TrainStream, default_num_workers
from qlora_clip.inputs.sampler import TrainBatchSampler
from qlora_clip.inputs.train_images import decode_all
from qlora_clip.memory import PeakMemory
from qlora_clip.methods import METHODS
from qlora_clip.model import ClipBundle, adapter_parameter_count, load_clip, resolve_backbone, trainable_parameter_count
from qlora_clip.modelcard import write_model_card
from qlora_clip.precision import allow_tf32, resolve_precision
from qlora_clip.results import append_jsonl, comparable_config, library_versions, timestamp
from qlora_clip.tracking import start_tracking
from run_utils import (
    adapter_dir,
    checkpoint_path,
    parse_args,
    run_config,
    seed_everything,
    setup_logging,
    subset_path,
    tracking_config,
)
from trainer import TrainResult, train

log = logging.getLogger("qlora-clip")


def main(argv: list[str] | None = None) -> dict | None:
    """Run one experiment; return the results record appended to --results_file (None off the main process)."""
    started_at = timestamp()
    args = parse_args(argv)
    setup_logging()
    run = run_config(args)
    dist = init_distributed(args.device)
    precision = resolve_precision(args.compute_dtype, dist.device)
    allow_tf32(dist.device)

    data = build_dataset(args.dataset, args.root_path, args.shots, args.seed, args.template, args.protocol)
    log.info("%s: %d classes, %d train / %d val / %d test images", args.dataset, len(data.classnames),
             len(data.train), len(data.val), len(data.test))
    subset_file = subset_path(args)

    seed_everything(args.seed)
    bundle = load_clip(run.model, dist.device, precision.dtype,
                       saved_adapter=adapter_dir(args) if args.eval_only else None)
    model = bundle.model
    prompts = ClassPrompts(bundle.tokenizer, data.prompts(), dist.device)
    num_workers = default_num_workers(dist.device) if args.num_workers is None else args.num_workers
    eval_settings = EvalSettings(bundle.image, eval_batch_size(args.batch_size), args.eval_cache_dir, num_workers,
                                 dist)
    test = build_eval_set(args.dataset, data.test, data.load_image, prompts, eval_settings)
    evaluator = Evaluator(model, precision, dist)
    extra = ProtocolEvaluation(args, data, bundle.tokenizer, eval_settings)  # new classes, --eval_datasets
    eval_memory = PeakMemory(dist.device)
    tracker = start_tracking(tracking_config(args), vars(args), main_process=dist.is_main)

    if dist.is_main:
        write_subset(data, subset_file)
    eval_start = time.perf_counter()
    with eval_memory.measure():
        zero_shot_acc = evaluator.zero_shot(test)
    eval_seconds = time.perf_counter() - eval_start
    log.info("zero-shot accuracy %.2f%%", zero_shot_acc)
    tracker.log_eval({"zero_shot_accuracy": zero_shot_acc}, step=0)

    if args.eval_only:
        result = TrainResult(steps=0, seconds=0.0)
    else:
        stream = build_train_stream(data, bundle, args, dist, num_workers)
        checkpoint = TrainCheckpoint(checkpoint_path(args), args.checkpoint_every,
                                     comparable_config(vars(args)), dist.device)
        result = train(model, stream, prompts, run.train, precision, dist, checkpoint, resume=args.resume,
                       desc=f"train {args.mode}", on_step=tracker.step_callbacks())
    eval_start = time.perf_counter()
    with eval_memory.measure():
        test_acc = evaluator.accuracy(test)
    eval_seconds += time.perf_counter() - eval_start
    test_shards = dist.gather_count(test.loader.images)
    protocol_fields = extra.results(evaluator, test_acc, zero_shot_acc)
    if not dist.is_main:
        return None
    tracker.log_eval({"accuracy": test_acc}, step=result.steps)

    record = results_record(args, model, dist, precision.name, zero_shot_acc, test_acc, result, started_at)
    record.update(eval_memory.read(prefix="eval_"), test_images_per_process=test_shards,
                  eval_seconds=eval_seconds, subset_file=str(subset_file))
    record.update(protocol_fields)
    record.update(tracker.fields())
    base_model = resolve_backbone(args.backbone)
    if args.save_path and not args.eval_only:
        save_adapter(model, record, adapter_dir(args), base_model)
    if args.merge_export:
        record["merge_export"] = str(export_merged(model, bundle.tokenizer, base_model, Path(args.merge_export),
                                                   record, overwrite=args.overwrite_export))
    append_jsonl(args.results_file, record)
    tracker.finish(record)
    log.info("%s %s %d-shot seed %d: zero-shot %.2f%% -> test %.2f%% | train %.1fs | training peak %s",
             args.mode, args.dataset, args.shots, args.seed, zero_shot_acc, test_acc, result.seconds,
             f"{record['peak_memory_mb']:.0f} MB ({record['memory_kind']})" if result.peak_memory else "-")
    return record


def build_train_stream(data: FewShotDataset, bundle: ClipBundle, args: argparse.Namespace, dist: Distributed,
                       num_workers: int) -> TrainStream:
    """The train images decoded once (or per step above --decode_budget_gb), augmented per image."""
    images = decode_all([item.source for item in data.train], data.load_image, args.decode_budget_gb)
    sampler = TrainBatchSampler(len(data.train), args.batch_size, args.gradient_accumulation_steps, args.seed,
                                dist.rank, dist.world)
    return TrainStream(images, [item.label for item in data.train], bundle.image, sampler, num_workers, dist.device)


def results_record(args: argparse.Namespace, model: torch.nn.Module, dist: Distributed, compute_dtype: str,
                   zero_shot_acc: float, test_acc: float, result: TrainResult, started_at: str) -> dict:
    """One results line: the run's identity and full config, accuracy, time, memory, size, where and when, versions.

    peak_memory_mb is the training loop's peak (docs/protocol.md, "What a results line reports"); the
    evaluations' peak is added as eval_peak_memory_mb.
    """
    device = dist.device
    return {
        "mode": args.mode, "dataset": args.dataset, "shots": args.shots, "seed": args.seed,
        "backbone": args.backbone, "config": vars(args),
        "zero_shot_acc": zero_shot_acc, "test_acc": test_acc,
        "train_seconds": result.seconds, "total_steps": result.steps,
        "train_images_seen": result.images_seen, "skipped_steps": result.skipped_steps,
        "input_wait_seconds": result.input_wait_seconds,
        "final_loss": result.losses[-1] if result.losses else None,
        **result.peak_memory,
        "model_footprint_mb": model.get_memory_footprint() / 2**20,
        "trainable_params": trainable_parameter_count(model),
        "adapter_params": adapter_parameter_count(model),
        "quantized": METHODS[args.mode].quantized,
        "compute_dtype": compute_dtype, "device": str(device), "processes": dist.world,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        # Where and when it ran: concurrent sweeps on several GPUs or machines share one results file.
        "host": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "started_at": started_at, "finished_at": timestamp(),
        "versions": library_versions(),
    }


def save_adapter(model: torch.nn.Module, record: dict, folder: Path, base_model: str) -> None:
    model.save_pretrained(folder)
    # The run that produced the adapter, so a later --eval_only can be checked against it.
    (folder / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    write_model_card(folder, record, "adapter", base_model)
    log.info("adapter saved to %s", folder)


def cli() -> int:
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
