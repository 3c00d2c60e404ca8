"""Entry point: one few-shot experiment (zero-shot eval, adapter training, test eval, report).

Base-to-novel and evaluation on other datasets are added by protocols.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from batching import TrainBatchSampler
from checkpointing import TrainCheckpoint
from datasets import FewShotDataset, build_dataset, write_subset
from distributed import Distributed, init_distributed
from errors import UserError
from evaluation import Evaluator, EvalSet, eval_batch_size
from export import export_merged
from features import ClassPrompts
from loaders import eval_loader, train_loader
from memory import PeakMemory
from methods import METHODS
from model import ClipBundle, adapter_parameter_count, load_clip, resolve_backbone, trainable_parameter_count
from precision import resolve_precision
from protocols import ProtocolEvaluation
from results import append_jsonl, comparable_config, library_versions
from run_utils import (adapter_dir, checkpoint_path, parse_args, run_config, seed_everything, setup_logging,
                       subset_path)
from trainer import TrainResult, train

log = logging.getLogger("qlora-clip")


def main(argv: list[str] | None = None) -> dict | None:
    """Run one experiment; return the results record appended to --results_file (None off the main process)."""
    args = parse_args(argv)
    setup_logging()
    run = run_config(args)
    dist = init_distributed(args.device)
    precision = resolve_precision(args.compute_dtype, dist.device)

    data = build_dataset(args.dataset, args.root_path, args.shots, args.seed, args.template, args.protocol)
    log.info("%s: %d classes, %d train / %d val / %d test images", args.dataset, len(data.classnames),
             len(data.train), len(data.val), len(data.test))
    subset_file = subset_path(args)

    seed_everything(args.seed)
    bundle = load_clip(run.model, dist.device, precision.dtype,
                       saved_adapter=adapter_dir(args) if args.eval_only else None)
    model = bundle.model
    prompts = ClassPrompts(bundle.tokenizer, data.prompts(), dist.device)
    test = EvalSet(args.dataset, eval_loader(data.test, data.load_image, bundle.image,
                                             eval_batch_size(args.batch_size), args.num_workers, dist.device),
                   prompts)
    evaluator = Evaluator(model, precision)
    extra = ProtocolEvaluation(args, data, bundle, dist.device)  # new classes, --eval_datasets

    if dist.is_main:
        write_subset(data, subset_file)
        zero_shot_acc = evaluator.zero_shot(test)
        log.info("zero-shot accuracy %.2f%%", zero_shot_acc)

    memory = PeakMemory(dist.device)
    memory.reset()
    if args.eval_only:
        result = TrainResult(steps=0, seconds=0.0)
    else:
        loader = build_train_loader(data, bundle, args, dist)
        checkpoint = TrainCheckpoint(checkpoint_path(args), args.checkpoint_every,
                                     comparable_config(vars(args)), dist.device)
        result = train(model, loader, prompts, run.train, precision, dist, checkpoint, resume=args.resume,
                       desc=f"train {args.mode}")
    if not dist.is_main:
        return None
    test_acc = evaluator.accuracy(test)
    peak = memory.read()

    record = results_record(args, model, dist, precision.name, zero_shot_acc, test_acc, result, peak)
    record.update(extra.results(evaluator, test_acc, zero_shot_acc))
    record["subset_file"] = str(subset_file)
    if args.save_path and not args.eval_only:
        save_adapter(model, record, adapter_dir(args))
    if args.merge_export:
        record["merge_export"] = str(export_merged(model, bundle.tokenizer, resolve_backbone(args.backbone),
                                                   Path(args.merge_export)))
    append_jsonl(args.results_file, record)
    log.info("%s %s %d-shot seed %d: zero-shot %.2f%% -> test %.2f%% | train %.1fs | peak %.0f MB (%s)",
             args.mode, args.dataset, args.shots, args.seed, zero_shot_acc, test_acc,
             result.seconds, peak["peak_memory_mb"], peak["memory_kind"])
    return record


def build_train_loader(data: FewShotDataset, bundle: ClipBundle, args: argparse.Namespace, dist: Distributed):
    sampler = TrainBatchSampler(len(data.train), args.batch_size, args.gradient_accumulation_steps, args.seed,
                                dist.rank, dist.world)
    return train_loader(data.train, data.load_image, bundle.image, sampler, args.num_workers, dist.device)


def results_record(args: argparse.Namespace, model: torch.nn.Module, dist: Distributed, compute_dtype: str,
                   zero_shot_acc: float, test_acc: float, result: TrainResult, peak: dict) -> dict:
    """One results line: the run's identity and full config, accuracy, time, memory, size, versions."""
    device = dist.device
    return {
        "mode": args.mode, "dataset": args.dataset, "shots": args.shots, "seed": args.seed,
        "backbone": args.backbone, "config": vars(args),
        "zero_shot_acc": zero_shot_acc, "test_acc": test_acc,
        "train_seconds": result.seconds, "total_steps": result.steps,
        "final_loss": result.losses[-1] if result.losses else None,
        **peak,
        "model_footprint_mb": model.get_memory_footprint() / 2**20,
        "trainable_params": trainable_parameter_count(model),
        "adapter_params": adapter_parameter_count(model),
        "quantized": METHODS[args.mode].quantized,
        "compute_dtype": compute_dtype, "device": str(device), "processes": dist.world,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "versions": library_versions(),
    }


def save_adapter(model: torch.nn.Module, record: dict, folder: Path) -> None:
    model.save_pretrained(folder)
    # The run that produced the adapter, so a later --eval_only can be checked against it.
    (folder / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True))
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
