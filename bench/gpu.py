"""The GPU preset: `python bench.py --preset gpu`, the prepared command for one CUDA GPU.

One command, sized to finish within about 8 minutes on one H200, so that it fits the device
tool's 10-minute limit per command with room for the machine's start (an estimate from the step
counts and load times below: it has not run on one yet; BENCHMARKS.md records what it gives when
it does):

- the step-time grid at ViT-B/16 shapes and the protocol's batch 32, fp16 autocast (CLIP-LoRA's
  precision on CUDA), gradient checkpointing off and on, the four modes on both encoders and on
  the vision tower alone, 2 warm-up + 5 timed steps against 100 class prompts (16 settings: about
  16 x (5 s load + 7 x 0.3 s) = 2 minutes). Peaks are CUDA
  allocated and reserved memory; the ratios include `qlora_ckpt_on_over_lora_ckpt_off_memory`
  (QLoRA with checkpointing over LoRA without, at batch 32);
- the padding and dequantization studies;
- `imagenet` (bench/imagenet_shaped.py) on the one GPU: 1,000 ImageNet-shaped prompts, the
  earlier text path against text once per update with length buckets, for one micro-batch and for
  accumulation 4, at batch 32 (its 2-process setting runs on the CPU only). From the FLOP model
  (imagenet_shaped.estimated_seconds, checked in tests/test_bench_imagenet.py) its 7 x 4 steps
  are about 0.18 PFLOP: 18 s at a pessimistic 10 TFLOP/s sustained plus 30 s for loading the
  model, under a minute, and a few seconds of compute at the rate an H200 really sustains;
- `protocol`: the 4-shot Caltech101-shaped protocol end to end through main.py for LoRA and QLoRA
  (bench/end_to_end.py): total time, ms/step, input wait and peak memory per method. The goal
  for that run is 60 s or less per method on an H200;
- `methods`: every other method of the table (methods.NAMED_MODES: 28 more) at batch 32, fp16, both
  encoders, no checkpointing, with its ratios to LoRA's grid row (time, peak memory, footprint,
  trainable parameters). Budget: a load (~5 s for ViT-B/16, more for LoftQ's SVDs and EVA's data
  pass) plus 7 steps of ~0.1-0.3 s each, so about 6 s per method, ~3 minutes in all. With the
  protocol's ~2 x 60 s, the ImageNet study's minute and the small studies, about 8 minutes.

bf16 and the DoRA-dropout study stay out to keep within the time; `--compute_dtypes fp16 bf16`
or `--studies ... dora_dropout` add them. Another measurement joins this command by adding its
name (a key of suite.STUDIES) to `studies`.
"""
from __future__ import annotations

GPU_PRESET = dict(backbone="ViT-B/16", device="cuda", modes=("lora", "qlora", "dora", "qdora"),
                  encoders=("both", "vision"),
                  batch_sizes=(32,), compute_dtypes=("fp16",), checkpointing=("off", "on"), steps=5,
                  warmup=2, num_classes=100, prompt_tokens=16, eval_encoder="both",
                  studies=("padding", "dequant", "imagenet", "protocol", "methods"))
