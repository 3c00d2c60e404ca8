"""Entry point: one few-shot experiment (zero-shot eval, adapter training, test eval, report).

`main()` reads as the run's table of contents; each step is a function of the module that owns
it, and takes the part of the run's spec (qlora_clip/spec.py) it uses. Base-to-novel and the
evaluation on other datasets are qlora_clip/extra_evals.py's.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import sys
import time

import torch

from datasets import FewShotDataset, build_dataset, write_subset
from qlora_clip.methods import adapters
from qlora_clip.methods import baselines
from qlora_clip.methods import step_rules as method_training
from qlora_clip.run import saved_adapter
from qlora_clip.run import schema
from qlora_clip.training.checkpointing import TrainCheckpoint
from qlora_clip.backbones.compat import quiet_library_logs
from qlora_clip.config import DataConfig, TrainConfig
from qlora_clip.training.distributed import Distributed, init_distributed
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.errors import UserError
from qlora_clip.evaluation.evaluator import EvalSettings, Evaluator, ZeroShotReuse, build_eval_set, eval_batch_size
from qlora_clip.run.export import export_merged
from qlora_clip.evaluation.extra_evals import ExtraEvaluations
from qlora_clip.backbones.families import CLIP, check_loss, family_of
from qlora_clip.inputs.loaders import TrainStream, default_num_workers
from qlora_clip.inputs.sampler import TrainBatchSampler
from qlora_clip.inputs.train_images import decode_all
from qlora_clip.training.memory import PeakMemory
from qlora_clip.methods.table import METHODS
from qlora_clip.backbones.loading import ClipBundle, load_clip, resolve_backbone
from qlora_clip.training.precision import Precision, allow_tf32, resolve_precision
from qlora_clip.run.results import append_jsonl, library_versions, timestamp
from qlora_clip.run.spec import RunSpec
from qlora_clip.backbones.text_buckets import bucket_limit
from qlora_clip.training.text_pass import speedup_fields
from qlora_clip.run.tracking import start_tracking
from qlora_clip.evaluation.zero_shot_key import base_key
from run_utils import parse_args, run_spec, seed_everything, setup_logging
from trainer import TrainResult, train

log = logging.getLogger("qlora-clip")


def main(argv: list[str] | None = None) -> dict | None:
    """Run one experiment; return the results record appended to --results_file (None off the main process)."""
    started_at = timestamp()
    spec = run_spec(parse_args(argv))
    setup_logging()
    quiet_library_logs()
    dist = init_distributed(spec.device)
    precision = resolve_precision(spec.compute_dtype, dist.device)
    allow_tf32(dist.device)
    if METHODS[spec.method].kind == "baseline":
        return record_baseline(spec, dist, precision, started_at)

    # The backbone's family first (config.json only): an unsupported checkpoint or a loss it does not
    # allow stops the run before any data or weights load, and the family chooses the prompt.
    base_model = resolve_backbone(spec.backbone)
    family = family_of(base_model, spec.backbone)
    check_loss(family, spec.train.loss, spec.backbone)
    data = build_dataset(spec.dataset, spec.data.root_path, spec.shots, spec.seed, spec.data.template, spec.protocol,
                         family.template)
    log.info("%s: %d classes, %d train / %d val / %d test images", spec.dataset, len(data.classnames),
             len(data.train), len(data.val), len(data.test))

    if spec.evaluation.eval_only:
        # Refused unless it matches the flags and the base, so the line records what was trained.
        saved_adapter.check_saved_run(spec, base_model)
    seed_everything(spec.seed)
    bundle = load_clip(spec.model, dist.device, precision.dtype,
                       saved_adapter=spec.adapter_dir if spec.evaluation.eval_only else None)
    model = bundle.model
    buckets, buckets_off = bucket_limit(model, len(data.classnames))
    prompts = ClassPrompts(bundle.tokenizer, data.prompts(), dist.device, text=bundle.text, buckets=buckets)
    num_workers = default_num_workers(dist.device) if spec.data.num_workers is None else spec.data.num_workers
    eval_settings = EvalSettings(bundle.image, eval_batch_size(spec.train.batch_size), spec.evaluation.cache_dir,
                                 num_workers, dist, text_buckets=buckets, text=bundle.text)
    test = build_eval_set(spec.dataset, data.test, data.load_image, prompts, eval_settings)
    evaluator = Evaluator(model, precision, dist, zero_shot_reuse(spec, bundle, precision.name, dist.device, buckets))
    extra = ExtraEvaluations(spec.data, spec.evaluation, data, bundle.tokenizer, eval_settings, family.template)
    eval_memory = PeakMemory(dist.device)
    tracker = start_tracking(spec.tracking, dict(spec.flags), main_process=dist.is_main)

    if dist.is_main:
        write_subset(data, spec.subset_path)
    eval_start = time.perf_counter()
    with eval_memory.measure():
        zero_shot_acc = evaluator.zero_shot(test)
    eval_seconds = time.perf_counter() - eval_start
    log.info("zero-shot accuracy %.2f%%%s", zero_shot_acc, " (stored by an earlier run)" if test.zero_shot_cached else "")
    tracker.log_eval({"zero_shot_accuracy": zero_shot_acc}, step=0)

    if spec.evaluation.eval_only:
        result = TrainResult(steps=0, seconds=0.0)
    else:
        stream = build_train_stream(data, bundle, spec.train, spec.data, dist, num_workers)
        initialize_from_train_images(model, spec, data, bundle, prompts, num_workers)
        checkpoint = TrainCheckpoint(spec.checkpoint_path, spec.outputs.checkpoint_every, spec.trained_identity,
                                     dist.device)
        result = train(model, stream, prompts, spec.train, precision, dist, checkpoint, resume=spec.outputs.resume,
                       desc=f"train {spec.method}", on_step=tracker.step_callbacks())
    eval_start = time.perf_counter()
    with eval_memory.measure():
        test_acc = evaluator.accuracy(test)
    eval_seconds += time.perf_counter() - eval_start
    test_shards = dist.gather_count(test.loader.images)
    extra_fields = extra.results(evaluator, test_acc, zero_shot_acc)
    if not dist.is_main:
        return None
    tracker.log_eval({"accuracy": test_acc}, step=result.steps)

    record = {
        **run_fields(spec, model, dist, precision.name, result, started_at),
        **adapter_fields(spec, model),
        **schema.fields(family=bundle.family.name),
        **schema.fields(zero_shot_acc=zero_shot_acc, zero_shot_cached=test.zero_shot_cached, test_acc=test_acc,
                        eval_seconds=eval_seconds, test_images_per_process=test_shards,
                        subset_file=str(spec.subset_path)),
        **speedup_fields(result.text_speedups, prompts, buckets_off),
        **eval_memory.read(prefix="eval_"),
        **extra_fields,
        **tracker.fields(),
    }
    export_errors = write_exports(spec, model, bundle, record)
    schema.check(record)
    append_jsonl(spec.outputs.results_file, record)
    tracker.finish(record)
    log.info("%s %s %d-shot seed %d: zero-shot %.2f%% -> test %.2f%% | train %.1fs | training peak %s",
             spec.method, spec.dataset, spec.shots, spec.seed, zero_shot_acc, test_acc, result.seconds,
             f"{record['peak_memory_mb']:.0f} MB ({record['memory_kind']})" if result.peak_memory else "-")
    if export_errors:
        raise UserError("; ".join(export_errors) + f" (the results line is in {spec.outputs.results_file})")
    return record


def record_baseline(spec: RunSpec, dist: Distributed, precision: Precision, started_at: str) -> dict:
    """A baseline of the field's tables (qlora_clip/baselines/) on the frozen base: the same results line."""
    outcome = baselines.run(spec, dist, precision)
    fitted = outcome.fitted
    result = TrainResult(steps=fitted.steps, seconds=outcome.train_seconds, losses=fitted.losses,
                         images_seen=fitted.images_seen, peak_memory=outcome.train_memory)
    tracker = start_tracking(spec.tracking, dict(spec.flags), main_process=True)
    record = {
        **run_fields(spec, outcome.model, dist, precision.name, result, started_at),
        **schema.fields(zero_shot_acc=outcome.zero_shot_acc, test_acc=outcome.test_acc,
                        eval_seconds=outcome.eval_seconds, test_images_per_process=[outcome.test_images],
                        subset_file=str(spec.subset_path), trainable_params=fitted.trainable_params,
                        adapter_params=fitted.added_params, adapter_size_mb=None, peft_config=None, method_args={},
                        model_footprint_mb=outcome.footprint_mb,
                        baseline_params=fitted.params, baseline_features=outcome.features,
                        family=CLIP.name,  # the baselines run on CLIP-format checkpoints only
                        protocol=spec.protocol, adapter_dir=None, merge_export=None),
        **outcome.eval_memory,
        **tracker.fields(),
    }
    schema.check(record)
    append_jsonl(spec.outputs.results_file, record)
    tracker.finish(record)
    log.info("%s %s %d-shot seed %d: zero-shot %.2f%% -> test %.2f%% | fit %.1fs | eval %.1fs", spec.method,
             spec.dataset, spec.shots, spec.seed, outcome.zero_shot_acc, outcome.test_acc, outcome.train_seconds,
             outcome.eval_seconds)
    return record


def build_train_stream(data: FewShotDataset, bundle: ClipBundle, train_config: TrainConfig, data_config: DataConfig,
                       dist: Distributed, num_workers: int) -> TrainStream:
    """The train images decoded once (or per step above --decode_budget_gb), augmented per image."""
    images = decode_all([item.source for item in data.train], data.load_image, data_config.decode_budget_gb)
    sampler = TrainBatchSampler(len(data.train), train_config.batch_size, train_config.gradient_accumulation_steps,
                                train_config.seed, dist.rank, dist.world)
    return TrainStream(images, [item.label for item in data.train], bundle.image, sampler, num_workers, dist.device)


def initialize_from_train_images(model: torch.nn.Module, spec: RunSpec, data: FewShotDataset, bundle: ClipBundle,
                                 prompts: ClassPrompts, num_workers: int) -> None:
    """EVA's data pass: one epoch of the run's own augmented train batches, as one process draws them (so
    every process initialises the same adapter), before the first step; also on --resume, where it gives
    the adapter the ranks the training state was saved with. Other methods have none."""
    if spec.model.adapter.method.step != "eva":
        return
    one_process = Distributed(rank=0, world=1, device=next(model.parameters()).device)
    train_config = dataclasses.replace(spec.train, gradient_accumulation_steps=1)
    stream = build_train_stream(data, bundle, train_config, spec.data, one_process, num_workers)
    steps = max(1, math.ceil(len(data.train) / train_config.batch_size))
    batches = [images for _, (images, _labels) in zip(range(steps), stream)]
    method_training.eva_initialize(model, batches, prompts)


def zero_shot_reuse(spec: RunSpec, bundle: ClipBundle, compute_dtype: str, device: torch.device,
                    text_buckets: int) -> ZeroShotReuse | None:
    """The zero-shot store under --eval_cache_dir and this run's base model's part of its keys
    (None with --no_zero_shot_cache or without a cache folder)."""
    folder = spec.evaluation.zero_shot_dir
    if folder is None:
        return None
    base = base_key(resolve_backbone(spec.backbone), compute_dtype, METHODS[spec.method].quantized, bundle.image,
                    device.type, text_buckets)
    return ZeroShotReuse(folder, base)


def run_fields(spec: RunSpec, model: torch.nn.Module, dist: Distributed, compute_dtype: str,
               result: TrainResult, started_at: str) -> dict:
    """The results fields of the run itself: identity and config, training, memory, size, where and when."""
    device = dist.device
    peak = result.peak_memory or {"peak_memory_mb": None, "memory_kind": None, "peak_memory_reserved_mb": None}
    return schema.fields(
        mode=spec.method, dataset=spec.dataset, shots=spec.shots, seed=spec.seed, backbone=spec.backbone,
        config=dict(spec.flags),
        train_seconds=result.seconds, total_steps=result.steps, train_images_seen=result.images_seen,
        skipped_steps=result.skipped_steps, input_wait_seconds=result.input_wait_seconds,
        final_loss=result.losses[-1] if result.losses else None,
        **peak,
        model_footprint_mb=model.get_memory_footprint() / 2**20,
        quantized=METHODS[spec.method].quantized,
        compute_dtype=compute_dtype, device=str(device), processes=dist.world,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        # Where and when it ran: concurrent sweeps on several GPUs or machines share one results file.
        host=socket.gethostname(), cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        started_at=started_at, finished_at=timestamp(), versions=library_versions(),
    )


def adapter_fields(spec: RunSpec, model: torch.nn.Module) -> dict:
    """The results fields of the method's adapter: its weights, size on disk and complete effective config."""
    return schema.fields(
        trainable_params=adapters.trainable_parameter_count(model),
        adapter_params=adapters.adapter_parameter_count(model),
        adapter_size_mb=adapters.adapter_size_bytes(model) / 2**20,
        peft_config=adapters.effective_config(model), method_args=adapters.method_args(spec.model.adapter),
    )


def write_exports(spec: RunSpec, model: torch.nn.Module, bundle: ClipBundle, record: dict) -> list[str]:
    """Save the adapter (--save_path) and the merged model (--merge_export), recording where in `record`.

    A failure here (a full disk, say) must not lose the run: it is logged, its field stays null,
    and the message comes back to be raised after the results line is written.
    """
    errors = []
    record.update(schema.fields(adapter_dir=None, merge_export=None))
    base_model = resolve_backbone(spec.backbone)
    if spec.adapter_dir is not None and not spec.evaluation.eval_only:
        try:
            saved_adapter.save(model, record, spec.adapter_dir, base_model)
            record["adapter_dir"] = str(spec.adapter_dir)
        except OSError as err:
            errors.append(f"--save_path: could not save the adapter to {spec.adapter_dir} ({err})")
    if spec.outputs.merge_export is not None:
        try:
            record["merge_export"] = str(export_merged(model, bundle.tokenizer, base_model, spec.outputs.merge_export,
                                                       record, overwrite=spec.outputs.overwrite_export))
        except OSError as err:
            errors.append(f"--merge_export: could not write {spec.outputs.merge_export} ({err})")
    for message in errors:
        log.error("%s", message)
    return errors


def cli() -> int:
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
