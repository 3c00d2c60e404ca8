"""Benchmark harness: what a training step, an evaluation and the weights cost, per adapter method.

Runs on the CPU or CUDA with no download: the backbones are random checkpoints in the real
shapes (tiny_clip.random_checkpoint_dir), loaded through model.load_clip exactly like a run, and
fed random images. For every mode x encoder setting x batch size x dtype x checkpointing it reports
the training step time (median of --steps after --warmup), images/s, the share of the step spent in
the text and in the image pass, peak memory, weight footprint, evaluation images/s and the step's
achieved FLOP/s against the matrix-multiply peak measured in the same run. Ratios between methods
are always taken within one run, so machine load shared with other jobs affects both sides alike.

FLOP count of one training step (`train_step_flops`, multiply-add = 2 FLOPs). For an encoder of
width d, MLP width m, L layers, and N sequences of S tokens (T = N*S):
  forward  linear    = 2*T*(4*d^2 + 2*d*m)*L           (q, k, v, out projections + two MLP layers)
           attention = 2*2*N*S^2*d*L                    (Q K^T and P V)
           + patch embedding 2*B*P*(3*p^2)*d (vision) and the output projection 2*N*d*proj
  backward, base frozen: input gradients only, one more forward's worth of linear FLOPs (less layer
           0's q, k, v, whose input needs no gradient), twice the attention matmuls, the projection
           again; the patch embedding needs none.
  adapters: 2*T*r*(d_in+d_out) per adapted projection forward, three times that per step.
The text pass counts only when the text tower has adapters (otherwise prompts are encoded once,
outside the step, as trainer.train does). Recomputation (gradient checkpointing, DoRA's second
base matmul) is not counted: utilization is useful FLOPs over time, so overheads lower it.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from peft.tuners.lora.variants import DoraLinearVariant

from config import AdapterConfig, ModelConfig
from features import ClassPrompts, image_features
from memory import MB, PeakMemory
from methods import MODES
from model import load_clip
from precision import Precision, resolve_precision
from protocol import DROPOUT, LOGIT_SCALE
from results import library_versions
from tiny_clip import REAL_SHAPES, random_checkpoint_dir, tiny_checkpoint_dir

log = logging.getLogger("bench")

CLIP_CONTEXT = 77  # CLIP-LoRA pads every prompt to the full context

# Defaults sized for where they run. `default`: ViT-B/16 on this project's 2-core CPU in under
# 10 minutes (a B/16 step at batch 8 takes seconds there, so few steps); `quick`: the tiny model
# for the smoke test; `gpu`: the prepared H200 script (protocol batch 32, fp16 and bf16,
# checkpointing off and on); `scaling`: how step cost grows with batch size and class count.
PRESETS = {
    "default": dict(backbone="ViT-B/16", device="cpu", modes=list(MODES), encoders=["both", "vision"],
                    batch_sizes=[8], compute_dtypes=["fp32"], checkpointing=["off"], steps=2, warmup=1,
                    num_classes=10, prompt_tokens=16, eval_encoder="both", studies=["padding", "dequant"]),
    "quick": dict(backbone="tiny", device="cpu", modes=list(MODES), encoders=["both"],
                  batch_sizes=[4], compute_dtypes=["fp32"], checkpointing=["off"], steps=1, warmup=1,
                  num_classes=10, prompt_tokens=16, eval_encoder="both", studies=["padding", "dequant"]),
    "gpu": dict(backbone="ViT-B/16", device="cuda", modes=list(MODES), encoders=["both", "vision"],
                batch_sizes=[32], compute_dtypes=["fp16", "bf16"], checkpointing=["off", "on"], steps=10,
                warmup=3, num_classes=100, prompt_tokens=16, eval_encoder="both",
                studies=["padding", "dequant", "dora_dropout"]),
    "scaling": dict(backbone="ViT-B/16", device="cpu", modes=["lora"], encoders=["both"],
                    batch_sizes=[4, 2, 8], compute_dtypes=["fp32"], checkpointing=["off"], steps=2,
                    warmup=1, num_classes=10, prompt_tokens=16, eval_encoder=None,
                    studies=["classes", "dora_dropout"]),
}
SHORTEST_PROMPT = 8  # tokens: BOS + 'a photo of a' + a one-token name + '.' + EOS
PADDING_CLASSES = 100  # the padding study: Caltech101's class count, where the seed reports its numbers
CLASS_COUNTS = [10, 50, 100, 200]  # the `classes` study (Fashion-MNIST ... SUN397-scale text passes)
SHOTS = [1, 2, 4, 8, 16]
N_ITERS = 500


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="a set of defaults; the flags below override it")
    p.add_argument("--backbone", choices=["tiny", *REAL_SHAPES], help="shapes of the random checkpoint")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--modes", nargs="+", choices=MODES)
    p.add_argument("--encoders", nargs="+", choices=["both", "vision", "text"])
    p.add_argument("--batch_sizes", nargs="+", type=int)
    p.add_argument("--compute_dtypes", nargs="+", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--checkpointing", nargs="+", choices=["off", "on"], help="gradient checkpointing")
    p.add_argument("--steps", type=int, help="timed training steps per setting (median reported)")
    p.add_argument("--warmup", type=int, help="untimed steps before them")
    p.add_argument("--num_classes", type=int,
                   help="class prompts encoded per step (the padding study always uses 100, Caltech101's)")
    p.add_argument("--prompt_tokens", type=int,
                   help="longest prompt in tokens (BOS and EOS included); prompts spread from 8 to it")
    p.add_argument("--studies", nargs="*", choices=["padding", "dequant", "dora_dropout", "classes"],
                   help="extra measurements: 77-token vs longest padding, 4-bit dequantization cost, "
                        "DoRA with and without adapter dropout, step time vs number of classes")
    p.add_argument("--out_dir", default="bench_results", help="where the JSON and Markdown go")
    return p


def parse_bench_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible; use --device cpu (or --preset default)")
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0 (got {args.steps}, {args.warmup})")
    if not SHORTEST_PROMPT <= args.prompt_tokens <= CLIP_CONTEXT:
        parser.error(f"--prompt_tokens must be in [{SHORTEST_PROMPT}, {CLIP_CONTEXT}] (got {args.prompt_tokens})")
    if args.num_classes < 2 or min(args.batch_sizes) < 1:
        parser.error("--num_classes must be >= 2 and every --batch_sizes value >= 1")
    return args


# ---------------------------------------------------------------- machine and measurement helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def release_memory(device: torch.device) -> None:
    """Return freed memory to the OS so the next setting's peak RSS starts from a clean baseline."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "load_average_1_5_15min": os.getloadavg(), "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "versions": library_versions()}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        info["device_name"] = f"{cpu} ({torch.get_num_threads()} threads)"
    return info


def gemm_rate(device: torch.device, dtype: torch.dtype) -> float:
    """A short matmul burst (FLOP/s): what the machine gives right now, taken around each setting
    because other jobs share this machine and move the available rate during the run."""
    n = 1024 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a
    sync(device)
    start = time.perf_counter()
    for _ in range(3):
        a @ a
    sync(device)
    return 3 * 2 * n ** 3 / (time.perf_counter() - start)


def gemm_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """Best sustained torch.matmul rate (FLOP/s) on this machine now, over a few square sizes."""
    sizes = (1024, 2048) if device.type == "cpu" else (4096, 8192)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        reps = 4 if device.type == "cpu" else 20
        times = []
        for _ in range(3):
            sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            sync(device)
            times.append((time.perf_counter() - start) / reps)
        best = max(best, 2 * n ** 3 / min(times))
    return best


# ------------------------------------------------------------------------------ FLOP count

def _encoder_flops(d: int, m: int, layers: int, n_seqs: int, seq: int) -> tuple[float, float, float]:
    """Forward FLOPs of a transformer stack: (all linear layers, layer 0's q/k/v, attention matmuls)."""
    tokens = n_seqs * seq
    linear = 2 * tokens * (4 * d * d + 2 * d * m) * layers
    first_qkv = 2 * tokens * 3 * d * d
    attention = 2 * 2 * n_seqs * seq * seq * d * layers
    return linear, first_qkv, attention


def train_step_flops(config, batch: int, num_classes: int, prompt_len: int, encoder: str,
                     r: int = 2, n_params: int = 3) -> float:
    """Useful FLOPs of one training step (formula in the module docstring)."""
    total = 0.0
    v, t = config.vision_config, config.text_config
    proj = config.projection_dim
    towers = {"vision": ("vision" in encoder or encoder == "both"), "text": encoder in ("text", "both")}
    patches = (v.image_size // v.patch_size) ** 2
    specs = {
        "vision": (v.hidden_size, v.intermediate_size, v.num_hidden_layers, batch, patches + 1),
        "text": (t.hidden_size, t.intermediate_size, t.num_hidden_layers, num_classes, prompt_len),
    }
    for tower, (d, m, layers, n_seqs, seq) in specs.items():
        linear, first_qkv, attention = _encoder_flops(d, m, layers, n_seqs, seq)
        head = 2 * n_seqs * d * proj
        if towers[tower]:
            adapters = 3 * 2 * n_seqs * seq * r * 2 * d * n_params * layers
            total += 2 * linear - first_qkv + 3 * attention + 2 * head + adapters
            if tower == "vision":
                total += 2 * batch * patches * 3 * v.patch_size ** 2 * d
        elif tower == "vision":  # a frozen vision tower still runs forward every step
            total += linear + attention + head + 2 * batch * patches * 3 * v.patch_size ** 2 * d
    total += 3 * 2 * batch * num_classes * proj  # logits and their gradients
    return total


# --------------------------------------------------------------------------- prompts

def synthetic_prompts(tokenizer, num_classes: int, longest: int) -> list[str]:
    """Prompts whose token counts spread evenly from SHORTEST_PROMPT to `longest`.

    The benchmark checkpoints use the one-token-per-character tokenizer, so a prompt of k letters
    is k + 2 tokens. Real CLIP BPE makes 'a photo of a {}.' 7 tokens plus the class name's pieces.
    """
    lengths = [SHORTEST_PROMPT + round(i * (longest - SHORTEST_PROMPT) / max(num_classes - 1, 1))
               for i in range(num_classes)]
    prompts = ["x" * (n - 2) for n in lengths]
    got = len(tokenizer(prompts[-1])["input_ids"])
    if got != longest:
        raise RuntimeError(f"tokenizer made {got} tokens of a {longest}-token prompt; "
                           "the benchmark expects one token per character")
    return prompts


class FullContextPrompts(ClassPrompts):
    """CLIP-LoRA's prompts: every prompt padded to the full 77-token context."""

    def __init__(self, tokenizer, prompts: list[str], device: torch.device):
        super().__init__(tokenizer, prompts, device, padding="max_length")


# ------------------------------------------------------------------------------ one setting

class AdapterDropoutDora(DoraLinearVariant):
    """DoRA with the dropout on the adapter branch only, as in LoRA: m / ||W + sBA|| * (W x + s B A drop(x)).

    PEFT applies the dropout to the input of the whole re-normalised layer, so in training every
    adapted projection runs its frozen matmul twice (W x for the output, W drop(x) for DoRA) and a
    QDoRA layer dequantizes once more. This is the change proposed for model.py; the benchmark
    applies it to measure what it saves.
    """

    @staticmethod
    def forward(module, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs) -> torch.Tensor:
        return result + module.lora_magnitude_vector[active_adapter](
            module.lora_dropout[active_adapter](x), lora_A=module.lora_A[active_adapter],
            lora_B=module.lora_B[active_adapter], scaling=module.scaling[active_adapter],
            base_layer=module.get_base_layer(), base_result=result, adapter_name=active_adapter)


def use_adapter_dropout_dora(model: torch.nn.Module) -> None:
    for module in model.modules():
        variants = getattr(module, "lora_variant", None) or {}
        for name, variant in variants.items():
            if variant is DoraLinearVariant or isinstance(variant, DoraLinearVariant):
                variants[name] = AdapterDropoutDora()


def checkpoint_dir(backbone: str) -> Path:
    return tiny_checkpoint_dir() if backbone == "tiny" else random_checkpoint_dir(backbone)


def load(backbone: str, mode: str, encoder: str, dtype: str, checkpointing: bool,
         device: torch.device, dropout: float | None = None):
    """The model exactly as main.py builds it, through model.load_clip."""
    config = ModelConfig(backbone=str(checkpoint_dir(backbone)),
                         adapter=AdapterConfig(mode=mode, encoder=encoder,
                                               dropout=DROPOUT if dropout is None else dropout),
                         gradient_checkpointing=checkpointing)
    precision = resolve_precision(dtype, device)
    return config, precision, load_clip(config, device, precision.dtype)


class StepTimer:
    """One training step as trainer.train takes it, split into timed phases.

    The backward is taken in three calls (to the features, then through each tower) instead of
    one loss.backward(): the same operations and gradients, but each tower's share is visible.
    """

    def __init__(self, model, prompts: ClassPrompts, precision: Precision, reencode_text: bool):
        self.model, self.prompts, self.precision = model, prompts, precision
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-2)
        self.scaler = precision.grad_scaler()
        self.cached_text = None
        if not reencode_text:
            model.eval()
            with torch.no_grad(), precision.autocast():
                self.cached_text = prompts.features(model)
        model.train()

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        device, p = self.precision.device, self.precision
        marks = [time.perf_counter()]

        def mark():
            sync(device)
            marks.append(time.perf_counter())

        with p.autocast():
            text = self.prompts.features(self.model) if self.cached_text is None else self.cached_text
        mark()
        with p.autocast():
            image = image_features(self.model, images)
        mark()
        with p.autocast():
            logits = LOGIT_SCALE * image @ text.T
            loss = F.cross_entropy(logits.float(), labels)
        outputs = [image, text] if text.requires_grad else [image]
        grads = torch.autograd.grad(self.scaler.scale(loss), outputs)
        mark()
        image.backward(grads[0])
        mark()
        if text.requires_grad:
            text.backward(grads[1])
        mark()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        mark()
        t = [b - a for a, b in zip(marks, marks[1:])]
        return {"step_s": marks[-1] - marks[0], "text_s": t[0] + t[4], "image_s": t[1] + t[3],
                "loss": loss.item()}


def random_batch(batch: int, image_size: int, num_classes: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, image_size, image_size, generator=g)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    return images.to(device), labels.to(device)


def time_training(model, prompts, precision, reencode_text, batch, image_size, num_classes,
                  steps, warmup) -> dict:
    timer = StepTimer(model, prompts, precision, reencode_text)
    images, labels = random_batch(batch, image_size, num_classes, precision.device)
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
def eval_images_per_s(model, precision: Precision, batch: int, image_size: int, reps: int) -> float:
    model.eval()
    images, _ = random_batch(batch, image_size, 2, precision.device, seed=1)
    times = []
    with precision.autocast():
        for i in range(reps + 1):
            sync(precision.device)
            start = time.perf_counter()
            image_features(model, images)
            sync(precision.device)
            if i:  # the first pass is warm-up
                times.append(time.perf_counter() - start)
    model.train()
    return batch / statistics.median(times)


def measure_setting(args, device, mode, encoder, batch, dtype, checkpointing, peak_flops,
                    dropout: float | None = None, num_classes: int | None = None,
                    full_context: bool = False, with_eval: bool = False, adapter_dropout_dora: bool = False) -> dict:
    num_classes = num_classes or args.num_classes
    release_memory(device)
    run_args, precision, bundle = load(args.backbone, mode, encoder, dtype, checkpointing, device, dropout)
    # As in main.py, the peak covers training with the model loaded, not the load itself (on the
    # CPU a 4-bit load passes through the full-precision weights).
    release_memory(device)
    rss_before = current_rss_mb()
    memory = PeakMemory(device)
    memory.reset()
    model = bundle.model
    if adapter_dropout_dora:
        use_adapter_dropout_dora(model)
    prompt_cls = FullContextPrompts if full_context else ClassPrompts
    prompts = prompt_cls(bundle.tokenizer, synthetic_prompts(bundle.tokenizer, num_classes, args.prompt_tokens),
                         device)
    prompt_len = prompts.input_ids.shape[1]
    row = {"backbone": args.backbone, "mode": mode, "encoder": encoder, "batch": batch, "dtype": dtype,
           "checkpointing": checkpointing, "num_classes": num_classes, "prompt_len": prompt_len,
           "dropout": run_args.adapter.dropout, "adapter_dropout_dora": adapter_dropout_dora,
           "footprint_mb": model.get_memory_footprint() / MB}
    rate_before = gemm_rate(device, precision.dtype)
    row.update(time_training(model, prompts, precision, encoder != "vision", batch, bundle.image.image_size,
                             num_classes, args.steps, args.warmup))
    row["gemm_rate_around"] = (rate_before + gemm_rate(device, precision.dtype)) / 2
    peak = memory.read()
    row["peak_memory_mb"] = peak["peak_memory_mb"]
    row["memory_kind"] = peak["memory_kind"]
    if device.type == "cuda":
        row["peak_reserved_mb"] = peak["peak_memory_reserved_mb"]
    else:
        row["peak_rss_above_loaded_mb"] = peak["peak_memory_mb"] - rss_before
    flops = train_step_flops(model.config, batch, num_classes, prompt_len, encoder, r=run_args.adapter.r,
                             n_params=len(run_args.adapter.params))
    row["step_gflop"] = flops / 1e9
    row["achieved_gflops"] = flops / row["step_s"] / 1e9
    row["utilization"] = flops / row["step_s"] / peak_flops[dtype]
    row["utilization_vs_gemm_around"] = flops / row["step_s"] / row["gemm_rate_around"]
    if with_eval:
        row["eval_images_per_s"] = eval_images_per_s(model, precision, batch, bundle.image.image_size, reps=2)
    log.info("%s %s b%d %s ckpt=%s C=%d L=%d: step %.3fs (%.1f img/s, text %.0f%%, image %.0f%%), "
             "peak %.0f MB, util %.0f%%", mode, encoder, batch, dtype, checkpointing, num_classes, prompt_len,
             row["step_s"], row["images_per_s"], 100 * row["text_share"], 100 * row["image_share"],
             row["peak_memory_mb"], 100 * row["utilization"])
    del model, bundle, prompts
    release_memory(device)
    return row


def footprints(args, device) -> dict:
    """Weight footprint (MB) of the adapted model for each mode and storage dtype; nothing is run."""
    out = {}
    for mode, dtype in (("lora", "fp32"), ("lora", "fp16"), ("qlora", "fp32"), ("qlora", "fp16"),
                        ("qdora", "fp32")):
        _, _, bundle = load(args.backbone, mode, "both", dtype, False, device)
        out[f"{mode}_{dtype}"] = bundle.model.get_memory_footprint() / MB
        del bundle
        release_memory(device)
    return out


@torch.no_grad()
def padding_logits_max_diff(args, device) -> float:
    """Largest |logit| difference between longest and 77-token padding, adapters made non-trivial."""
    _, precision, bundle = load(args.backbone, "lora", "both", "fp32", False, device)
    model = bundle.model.eval()
    g = torch.Generator().manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.copy_(0.05 * torch.randn(param.shape, generator=g))
    prompts = synthetic_prompts(bundle.tokenizer, args.num_classes, args.prompt_tokens)
    images, _ = random_batch(4, bundle.image.image_size, 2, device, seed=2)
    image = image_features(model, images)
    short = LOGIT_SCALE * image @ ClassPrompts(bundle.tokenizer, prompts, device).features(model).T
    full = LOGIT_SCALE * image @ FullContextPrompts(bundle.tokenizer, prompts, device).features(model).T
    return (short - full).abs().max().item()


def dequant_seconds(args, device, dtype: str) -> dict:
    """Time to dequantize every 4-bit weight once; a QLoRA step does it once forward, once backward
    (and once more in the recomputation when checkpointing)."""
    import bitsandbytes as bnb
    _, _, bundle = load(args.backbone, "qlora", "both", dtype, False, device)
    layers = [m for m in bundle.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    times = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for layer in layers:
            bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        sync(device)
        times.append(time.perf_counter() - start)
    del bundle
    release_memory(device)
    return {"layers": len(layers), "all_layers_once_s": min(times)}


# ------------------------------------------------------------------------------ report

def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def find(rows, **keys):
    for row in rows:
        if all(row.get(k) == v for k, v in keys.items()):
            return row
    return None


def compute_ratios(rows: list[dict], foot: dict | None) -> dict:
    """The ratios the issue asks for, each from rows measured in this run."""
    out = {}
    for base in rows:
        if base["mode"] != "lora" or base.get("study"):
            continue
        key = f"{base['encoder']}_b{base['batch']}_{base['dtype']}_ckpt{'on' if base['checkpointing'] else 'off'}"
        same = {k: base[k] for k in ("encoder", "batch", "dtype", "checkpointing", "backbone")}
        q, d, qd = (find(rows, mode=m, study=None, **same) for m in ("qlora", "dora", "qdora"))
        out[key] = {
            "qlora_over_lora_memory": ratio(q and q["peak_memory_mb"], base["peak_memory_mb"]),
            "qlora_over_lora_time": ratio(q and q["step_s"], base["step_s"]),
            "dora_over_lora_time": ratio(d and d["step_s"], base["step_s"]),
            "qdora_over_qlora_time": ratio(qd and qd["step_s"], q and q["step_s"]),
        }
        if base["checkpointing"] is False:
            gc_q = find(rows, mode="qlora", study=None, **{**same, "checkpointing": True})
            if gc_q:
                out[key]["qlora_ckpt_on_over_lora_ckpt_off_memory"] = gc_q["peak_memory_mb"] / base["peak_memory_mb"]
    if foot:
        out["footprint"] = {"qlora_over_lora_fp32": foot["qlora_fp32"] / foot["lora_fp32"],
                            "qlora_over_lora_fp16": foot["qlora_fp16"] / foot["lora_fp16"]}
    return out


def _fmt(value, digits=2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    rows = [r for r in report["rows"] if not r.get("study")]
    lines = [f"Backbone {report['args']['backbone']} (random weights), {report['machine']['device_name']}, "
             f"median of {report['args']['steps']} steps after {report['args']['warmup']} warm-up; "
             f"GEMM peak {', '.join(f'{k} {v / 1e9:.0f} GFLOP/s' for k, v in report['gemm_peak_flops'].items())}.",
             "",
             "| mode | encoder | batch | dtype | ckpt | step s | img/s | text % | image % | peak MB "
             "| footprint MB | eval img/s | GFLOP/step | util % | util % (GEMM around) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join([
            r["mode"], r["encoder"], str(r["batch"]), r["dtype"], _fmt(r["checkpointing"]), _fmt(r["step_s"], 3),
            _fmt(r["images_per_s"], 1), _fmt(100 * r["text_share"], 0), _fmt(100 * r["image_share"], 0),
            _fmt(r["peak_memory_mb"], 0), _fmt(r["footprint_mb"], 0), _fmt(r.get("eval_images_per_s"), 1),
            _fmt(r["step_gflop"], 0), _fmt(100 * r["utilization"], 0),
            _fmt(100 * r["utilization_vs_gemm_around"], 0)]) + " |")
    lines += ["", "| ratio | value |", "|---|---|"]
    for setting, values in report["ratios"].items():
        for name, value in values.items():
            lines.append(f"| {setting}: {name} | {_fmt(value, 3)} |")
    for name, result in report["studies"].items():
        lines += ["", f"**{name}**: `{json.dumps(result, default=float)}`"]
    return "\n".join(lines) + "\n"


def run_studies(args, device, peak) -> tuple[dict, list[dict]]:
    studies, rows = {}, []
    batch, dtype = args.batch_sizes[0], args.compute_dtypes[0]
    if "padding" in args.studies:
        longest = measure_setting(args, device, "lora", "both", batch, dtype, False, peak, num_classes=PADDING_CLASSES)
        full = measure_setting(args, device, "lora", "both", batch, dtype, False, peak, num_classes=PADDING_CLASSES,
                               full_context=True)
        rows += [dict(longest, study="padding"), dict(full, study="padding")]
        studies["padding"] = {
            "num_classes": PADDING_CLASSES, "batch": batch, "longest_len": longest["prompt_len"], "full_len": full["prompt_len"],
            "step_s_longest": longest["step_s"], "step_s_77": full["step_s"],
            "speedup": full["step_s"] / longest["step_s"],
            "logits_max_abs_diff": padding_logits_max_diff(args, device)}
    if "dequant" in args.studies:
        studies["dequant"] = dequant_seconds(args, device, dtype)
    if "dora_dropout" in args.studies:
        with_dropout = measure_setting(args, device, "dora", "both", batch, dtype, False, peak)
        without = measure_setting(args, device, "dora", "both", batch, dtype, False, peak, dropout=0.0)
        proposed = measure_setting(args, device, "dora", "both", batch, dtype, False, peak, adapter_dropout_dora=True)
        plain = measure_setting(args, device, "lora", "both", batch, dtype, False, peak)
        rows += [dict(r, study="dora_dropout") for r in (with_dropout, without, proposed, plain)]
        studies["dora_dropout"] = {"batch": batch, "step_s_dora_peft": with_dropout["step_s"],
                                   "step_s_dora_no_dropout": without["step_s"],
                                   "step_s_dora_adapter_dropout": proposed["step_s"], "step_s_lora": plain["step_s"],
                                   "peft_over_adapter_dropout": with_dropout["step_s"] / proposed["step_s"],
                                   "adapter_dropout_dora_over_lora": proposed["step_s"] / plain["step_s"]}
    if "classes" in args.studies:
        by_classes = {}
        for n in CLASS_COUNTS:
            row = measure_setting(args, device, "lora", "both", batch, dtype, False, peak, num_classes=n)
            rows.append(dict(row, study="classes"))
            by_classes[n] = {"batch": batch, "step_s": row["step_s"], "text_share": row["text_share"]}
        studies["classes"] = by_classes
    return studies, rows


def shots_projection(rows: list[dict]) -> dict:
    """Training time of the protocol (N_ITERS x shots steps) from each measured lora step time."""
    out = {}
    for r in rows:
        if r["mode"] == "lora" and not r.get("study"):
            out[f"{r['encoder']}_b{r['batch']}_{r['dtype']}"] = {
                s: N_ITERS * s * r["step_s"] / 3600 for s in SHOTS}
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_bench_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    device = torch.device(args.device)
    started = time.perf_counter()
    torch.manual_seed(0)
    peak = {d: gemm_peak_flops(device, resolve_precision(d, device).dtype) for d in args.compute_dtypes}
    start_peak = dict(peak)
    log.info("GEMM peak: %s", {k: f"{v / 1e9:.0f} GFLOP/s" for k, v in peak.items()})
    rows = []
    for dtype in args.compute_dtypes:
        for checkpointing in args.checkpointing:
            for batch in args.batch_sizes:
                for encoder in args.encoders:
                    for mode in args.modes:
                        rows.append(measure_setting(args, device, mode, encoder, batch, dtype, checkpointing == "on",
                                                    peak, with_eval=encoder == args.eval_encoder))
    foot = footprints(args, device) if "lora" in args.modes and "qlora" in args.modes else None
    studies, study_rows = run_studies(args, device, peak)
    rows += study_rows
    if foot:
        studies["footprint_mb"] = foot
    studies["train_hours_vs_shots"] = shots_projection(rows)
    # The machine is shared: measure the peak again at the end and keep the higher (conservative) value.
    peak_end = {d: gemm_peak_flops(device, resolve_precision(d, device).dtype) for d in args.compute_dtypes}
    for d, value in peak_end.items():
        if value > peak[d]:
            for row in rows:
                if row["dtype"] == d:
                    row["utilization"] *= peak[d] / value
            peak[d] = value
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "args": vars(args), "machine": machine_info(device), "gemm_peak_flops": peak,
        "gemm_peak_flops_start_end": {d: [start_peak[d], peak_end[d]] for d in peak},
        "rows": rows, "ratios": compute_ratios(rows, foot), "studies": studies,
        "wall_s": time.perf_counter() - started,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{args.preset}-{args.backbone.replace('/', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=float))
    table = markdown(report)
    (out_dir / f"{stem}.md").write_text(table)
    print(table)
    log.info("wrote %s.{json,md} in %.0fs", out_dir / stem, report["wall_s"])
    return report


if __name__ == "__main__":
    main()
