"""Step time: the trainer's own step (trainer.TrainStep), timed per tower, for every setting of the grid.

For every backbone x mode x encoder setting x batch size x dtype x checkpointing the grid reports the step
time (median of `steps` after `warmup`), images/s, the share of the step spent in the text and in
the image pass, peak memory, weight footprint, evaluation images/s and the step's achieved FLOP/s
(bench/flops.py) against the matrix-multiply peak measured in the same run. Ratios between methods
are always taken within one run, so machine load shared with other jobs affects both sides alike.
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from bench.flops import train_step_flops
from bench.harness import current_rss_mb, gemm_rate, load_model, random_batch, release_memory, sync, train_config
from bench.prompts import synthetic_prompts
from bench.settings import BenchSettings
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.inputs.sampler import split_sizes
from qlora_clip.methods.interface import Adapted
from qlora_clip.methods.table import METHODS
from qlora_clip.paper import LR, N_ITERS, PAPER_SHOTS
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.memory import MB, PeakMemory
from qlora_clip.training.precision import Precision
from qlora_clip.training.settings import TrainConfig
from qlora_clip.training.text_pass import PerUpdateText, TextPass
from trainer import TrainStep

log = logging.getLogger("bench")


class StepTimer:
    """trainer.TrainStep, the step every run takes (optimizer, loss, text rule), timed by phase.

    The step reports its phases through `mark`; here each mark waits for the device, so the wall
    time between two marks is that phase's. The text pass is the prompts' forward and backward,
    the image pass the images' forward and backward. `dist` and `text_pass` are the step's own (the
    ImageNet-shaped study times several processes, and the per-micro-batch reference,
    bench/text_reference.py).
    """

    def __init__(self, adapted: Adapted, prompts: ClassPrompts, precision: Precision, total_steps: int = 1000,
                 config: TrainConfig | None = None, dist: Distributed | None = None,
                 text_pass: Callable[[ClassPrompts, Distributed], TextPass] = PerUpdateText):
        config = config or TrainConfig(shots=1, lr=LR, n_iters=total_steps)
        self.dist = dist or Distributed(rank=0, world=1, device=precision.device)
        self.step_fn = TrainStep(adapted, prompts, config, precision, self.dist, text_pass=text_pass)
        self.device = precision.device

    def split(self, images: torch.Tensor, labels: torch.Tensor,
              micro_batches: int) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """This rank's share of each of `micro_batches` contiguous micro-batches, as the sampler cuts a step."""
        shares, start = [], 0
        for size in split_sizes(len(labels), micro_batches):
            rows = list(range(start, start + size))[self.dist.rank::self.dist.world]
            shares.append((images[rows], labels[rows]) if rows else None)
            start += size
        return shares

    def step(self, images: torch.Tensor, labels: torch.Tensor, micro_batches: int = 1) -> dict:
        """Train on one batch (all ranks' images) cut into `micro_batches`; return its wall time, the
        text and image passes' times, and the loss."""
        shares = [(images, labels)] if micro_batches == 1 and self.dist.world == 1 else \
            self.split(images, labels, micro_batches)
        phases: dict[str, float] = {}
        last = [time.perf_counter()]

        def mark(phase: str) -> None:
            sync(self.device)
            now = time.perf_counter()
            phases[phase] = phases.get(phase, 0.0) + now - last[0]
            last[0] = now

        start = last[0]
        loss, _ = self.step_fn(shares, len(labels), mark)
        return {"step_s": last[0] - start, "text_s": phases.get("text", 0.0) + phases.get("text_backward", 0.0),
                "image_s": phases.get("image", 0.0) + phases.get("image_backward", 0.0), "loss": loss.item()}


def time_training(adapted: Adapted, prompts: ClassPrompts, precision: Precision, batch: int,
                  image_size: int, steps: int, warmup: int, config: TrainConfig | None = None) -> dict:
    """Median step time and tower shares over `steps` steps after `warmup`, on one random batch."""
    timer = StepTimer(adapted, prompts, precision, total_steps=warmup + steps, config=config)
    images, labels = random_batch(batch, image_size, len(prompts), precision.device)
    records = [timer.step(images, labels) for _ in range(warmup + steps)][warmup:]
    step_s = statistics.median(r["step_s"] for r in records)
    return {
        "step_s": step_s, "step_s_all": [r["step_s"] for r in records],
        "images_per_s": batch / step_s,
        "text_share": statistics.median(r["text_s"] / r["step_s"] for r in records),
        "image_share": statistics.median(r["image_s"] / r["step_s"] for r in records),
        "finite_loss": all(math.isfinite(r["loss"]) for r in records),
    }


@torch.no_grad()
def eval_images_per_s(adapted: Adapted, precision: Precision, batch: int, image_size: int,
                      reps: int) -> float:
    """Images/s of the evaluation's image pass (eval mode, no gradients), median of `reps` after one."""
    model = adapted.model
    model.eval()
    images, _ = random_batch(batch, image_size, 2, precision.device, seed=1)
    times = []
    with precision.autocast():
        for i in range(reps + 1):
            sync(precision.device)
            start = time.perf_counter()
            adapted.image_embeddings(images)
            sync(precision.device)
            if i:  # the first pass is warm-up
                times.append(time.perf_counter() - start)
    model.train()
    return batch / statistics.median(times)


@dataclass(frozen=True)
class Setting:
    """One measured configuration: what model is trained on what batch against which prompts."""
    mode: str
    encoder: str
    batch: int
    dtype: str
    checkpointing: bool
    num_classes: int
    dropout: float | None = None  # None: the method's
    padding: str | None = None  # None: the family's rule; 'max_length': every prompt padded to the full context
    backbone: str | None = None  # None: the run's first backbone (BenchSettings.backbone)


def measure_setting(bench: BenchSettings, peak_flops: dict[str, float], setting: Setting,
                    with_eval: bool = False,
                    prepare_model: Callable[[torch.nn.Module], None] | None = None) -> dict:
    """Load the model of `setting`, time its training steps and memory; one row of the report.

    `prepare_model`, when given, changes the loaded model before it is measured (a variant under study).
    """
    device = torch.device(bench.device)
    backbone = setting.backbone or bench.backbone
    release_memory(device)
    total_steps = bench.warmup + bench.steps
    settings, precision, adapted = load_model(backbone, setting.dtype, device, setting.mode, setting.encoder,
                                              setting.dropout, setting.checkpointing, total_steps)
    bundle = adapted.bundle
    # As in main.py, the peak covers training with the model loaded, not the load itself (on the
    # CPU a 4-bit load passes through the full-precision weights).
    release_memory(device)
    rss_before = current_rss_mb()
    memory = PeakMemory(device)
    memory.reset()
    model = adapted.model
    if prepare_model is not None:
        prepare_model(model)
    # SigLIP's prompts are padded to its fixed length whatever they hold; CLIP-like ones to the longest.
    prompts = ClassPrompts(bundle.tokenizer, synthetic_prompts(bundle.tokenizer, setting.num_classes,
                                                               bench.prompt_tokens,
                                                               exact=bundle.text.pooled_at_end_of_text),
                           device, padding=setting.padding, text=bundle.text)
    prompt_len = prompts.input_ids.shape[1]
    method = METHODS[setting.mode]
    # A data-driven initialisation (EVA's), on random images (a run uses its train images); most methods have none.
    adapted.initialize([random_batch(setting.batch, bundle.image.image_size, 2, device, seed=3)[0]], prompts)
    fields = adapted.fields()
    row = {**asdict(setting), "backbone": backbone, "family": bundle.family.name, "dropout": settings.dropout_rate,
           "padding": setting.padding or bundle.text.padding, "prompt_len": prompt_len,
           "footprint_mb": adapted.footprint_bytes() / MB,
           "trainable_params": fields["trainable_params"], "adapter_size_mb": fields["adapter_size_mb"]}
    rate_before = gemm_rate(device, precision.dtype)
    row.update(time_training(adapted, prompts, precision, setting.batch, bundle.image.image_size,
                             bench.steps, bench.warmup, train_config(setting.mode, total_steps)))
    row["gemm_rate_around"] = (rate_before + gemm_rate(device, precision.dtype)) / 2
    peak = memory.read()
    row["peak_memory_mb"] = peak["peak_memory_mb"]
    row["memory_kind"] = peak["memory_kind"]
    if device.type == "cuda":
        row["peak_reserved_mb"] = peak["peak_memory_reserved_mb"]
    else:
        row["peak_rss_above_loaded_mb"] = peak["peak_memory_mb"] - rss_before
    # Adapter FLOPs are LoRA's formula (rank r); other methods' adapters are counted as none (a small share).
    rank = settings.r if method.peft_class == "LoraConfig" else 0
    flops = train_step_flops(model.config, setting.batch, setting.num_classes, prompt_len, setting.encoder,
                             r=rank, n_params=len(settings.params))
    row["step_gflop"] = flops / 1e9
    row["achieved_gflops"] = flops / row["step_s"] / 1e9
    row["utilization"] = flops / row["step_s"] / peak_flops[setting.dtype]
    row["utilization_vs_gemm_around"] = flops / row["step_s"] / row["gemm_rate_around"]
    if with_eval:
        row["eval_images_per_s"] = eval_images_per_s(adapted, precision, setting.batch, bundle.image.image_size,
                                                     reps=2)
    log.info("%s %s b%d %s ckpt=%s C=%d L=%d: step %.3fs (%.1f img/s, text %.0f%%, image %.0f%%), "
             "peak %.0f MB, util %.0f%%", setting.mode, setting.encoder, setting.batch, setting.dtype,
             setting.checkpointing, setting.num_classes, prompt_len, row["step_s"], row["images_per_s"],
             100 * row["text_share"], 100 * row["image_share"], row["peak_memory_mb"], 100 * row["utilization"])
    del model, bundle, prompts, adapted
    release_memory(device)
    return row


def first_setting(bench: BenchSettings, mode: str = "lora", **changes) -> Setting:
    """The studies' base setting: both encoders, the first batch size and dtype, no checkpointing."""
    base = dict(mode=mode, encoder="both", batch=bench.batch_sizes[0], dtype=bench.compute_dtypes[0],
                checkpointing=False, num_classes=bench.num_classes)
    return Setting(**{**base, **changes})


def measure_grid(bench: BenchSettings, peak_flops: dict[str, float]) -> list[dict]:
    """One row per backbone x dtype x checkpointing x batch x encoder x mode; the eval_encoder rows also time
    evaluation."""
    rows = []
    for backbone in bench.backbones:
        for dtype in bench.compute_dtypes:
            for checkpointing in bench.checkpointing:
                for batch in bench.batch_sizes:
                    for encoder in bench.encoders:
                        for mode in bench.modes:
                            setting = Setting(mode, encoder, batch, dtype, checkpointing == "on", bench.num_classes,
                                              backbone=backbone)
                            rows.append(measure_setting(bench, peak_flops, setting,
                                                        with_eval=encoder == bench.eval_encoder))
    return rows


def grid_rows(rows: list[dict]) -> list[dict]:
    """The rows of the main grid, without those the studies added."""
    return [row for row in rows if not row.get("study")]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _find(rows: list[dict], **keys) -> dict | None:
    return next((row for row in rows if all(row.get(k) == v for k, v in keys.items())), None)


def compute_ratios(rows: list[dict], footprint: dict | None) -> dict:
    """Per grid setting, each from this run's rows: QLoRA/LoRA memory and time, DoRA/LoRA and QDoRA/QLoRA
    time, and every other method's time, peak memory, footprint and trainable parameters over LoRA's."""
    grid = grid_rows(rows)
    first = grid[0]["backbone"] if grid else None
    out = {}
    for base in rows:
        if base["mode"] != "lora" or base.get("study") not in (None, "methods"):
            continue
        key = f"{base['encoder']}_b{base['batch']}_{base['dtype']}_ckpt{'on' if base['checkpointing'] else 'off'}"
        if base["backbone"] != first:  # the first backbone's keys stay as a one-backbone run names them
            key = f"{base['backbone']}_{key}"
        same = {k: base[k] for k in ("encoder", "batch", "dtype", "checkpointing", "backbone")}
        peers = [row for row in rows if row.get("study") in (None, "methods")
                 and all(row.get(k) == v for k, v in same.items())]
        q, d, qd = (_find(peers, mode=m) for m in ("qlora", "dora", "qdora"))
        out[key] = {
            "qlora_over_lora_memory": _ratio(q and q["peak_memory_mb"], base["peak_memory_mb"]),
            "qlora_over_lora_time": _ratio(q and q["step_s"], base["step_s"]),
            "dora_over_lora_time": _ratio(d and d["step_s"], base["step_s"]),
            "qdora_over_qlora_time": _ratio(qd and qd["step_s"], q and q["step_s"]),
        }
        if base["checkpointing"] is False:
            with_checkpointing = _find(grid_rows(rows), mode="qlora", **{**same, "checkpointing": True})
            if with_checkpointing:
                out[key]["qlora_ckpt_on_over_lora_ckpt_off_memory"] = (
                    with_checkpointing["peak_memory_mb"] / base["peak_memory_mb"])
        out[key]["vs_lora"] = {row["mode"]: method_ratios(row, base) for row in peers if row["mode"] != "lora"}
    if footprint:
        out["footprint"] = {"qlora_over_lora_fp32": footprint["qlora_fp32"] / footprint["lora_fp32"],
                            "qlora_over_lora_fp16": footprint["qlora_fp16"] / footprint["lora_fp16"]}
    return out


def method_ratios(row: dict, lora: dict) -> dict:
    """A method's row over LoRA's at the same setting: step time, peak memory, weight footprint and trainable
    parameters."""
    return {"time": _ratio(row["step_s"], lora["step_s"]),
            "peak_memory": _ratio(row["peak_memory_mb"], lora["peak_memory_mb"]),
            "footprint": _ratio(row["footprint_mb"], lora["footprint_mb"]),
            "trainable_params": _ratio(row.get("trainable_params"), lora.get("trainable_params"))}


def shots_projection(rows: list[dict]) -> dict:
    """Hours of the protocol's training (N_ITERS x shots steps) from each measured LoRA step time."""
    grid = grid_rows(rows)
    first = grid[0]["backbone"] if grid else None
    return {f"{'' if r['backbone'] == first else r['backbone'] + '_'}{r['encoder']}_b{r['batch']}_{r['dtype']}":
            {s: N_ITERS * s * r["step_s"] / 3600 for s in PAPER_SHOTS}
            for r in grid if r["mode"] == "lora"}


def compare_backbones(rows: list[dict]) -> dict:
    """Per further backbone and grid setting: its step time, peak memory and weights over the first backbone's
    (the run's reference, e.g. CLIP ViT-B/16), from rows of the same run."""
    grid = grid_rows(rows)
    first = grid[0]["backbone"] if grid else None
    out = {}
    for row in grid:
        if row["backbone"] == first:
            continue
        same = {k: row[k] for k in ("mode", "encoder", "batch", "dtype", "checkpointing")}
        reference = _find(grid, backbone=first, **same)
        key = f"{row['backbone']}_{row['mode']}_{row['encoder']}_b{row['batch']}_{row['dtype']}"
        out[key] = {"family": row["family"], "step_s": row["step_s"], "peak_memory_mb": row["peak_memory_mb"],
                    "footprint_mb": row["footprint_mb"],
                    "step_time_over_first": _ratio(row["step_s"], reference and reference["step_s"]),
                    "peak_memory_over_first": _ratio(row["peak_memory_mb"], reference and reference["peak_memory_mb"]),
                    "footprint_over_first": _ratio(row["footprint_mb"], reference and reference["footprint_mb"])}
    return out
