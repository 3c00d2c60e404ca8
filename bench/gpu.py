"""The GPU preset: `python bench.py --preset gpu`, the prepared command for one CUDA GPU.

Sized for about 10 minutes on an H200: ViT-B/16 shapes at the protocol's batch 32, fp16 and bf16,
gradient checkpointing off and on, the four modes on both encoders and on the vision tower alone,
3 warm-up + 10 timed steps against 100 class prompts, then the padding, dequantization and
DoRA-dropout studies. Peaks are CUDA allocated and reserved memory; with checkpointing measured
both ways the ratios include `qlora_ckpt_on_over_lora_ckpt_off_memory` (QLoRA with checkpointing
over LoRA without, at batch 32), the figure BENCHMARKS.md's GPU memory target needs.

Another measurement joins this command by adding its name (a key of suite.STUDIES) to `studies`.
"""
from __future__ import annotations

from methods import MODES

GPU_PRESET = dict(backbone="ViT-B/16", device="cuda", modes=MODES, encoders=("both", "vision"),
                  batch_sizes=(32,), compute_dtypes=("fp16", "bf16"), checkpointing=("off", "on"), steps=10,
                  warmup=3, num_classes=100, prompt_tokens=16, eval_encoder="both",
                  studies=("padding", "dequant", "dora_dropout"))
