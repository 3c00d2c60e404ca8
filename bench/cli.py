"""The benchmark's command line: `python bench.py [flags]` and `python bench.py input [flags]`.

The first form measures training steps, evaluation and weights (bench/suite.py) and writes its
report to --out_dir; the second measures the input pipeline (bench/input_pipeline.py) and prints
one JSON line per measurement. Flags become a BenchSettings or InputSettings here, once; nothing
below this module sees argparse.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields

import torch

from bench import input_pipeline
from bench.gpu import GPU_PRESET
from bench.harness import BACKBONES
from bench.prompts import SHORTEST_PROMPT
from bench.report import markdown, write_report
from bench.settings import BenchSettings, InputSettings
from bench.suite import STUDIES, run_benchmark
from datasets import DATASET_NAMES
from qlora_clip.errors import UserError
from qlora_clip.methods.table import MODES, NAMED_MODES
from qlora_clip.paper import CONTEXT_LENGTH

log = logging.getLogger("bench")

INPUT_COMMAND = "input"
LORA_MODES = ("lora", "qlora", "dora", "qdora")

# Defaults sized for where they run. `default`: every method (methods.NAMED_MODES) in ViT-B/16 shapes
# on this project's 2-core CPU in about 10-15 minutes (a B/16 step at batch 8 takes seconds there,
# so one warm-up and one timed step each); `lora-family`: the four LoRA modes on both encoder
# settings with the padding study, the grid this preset had before the other methods came;
# `quick`: the tiny model for the smoke test; `scaling`: how step cost grows with batch size and
# class count; `imagenet`: the ImageNet-shaped text-pass study alone (bench/imagenet_shaped.py; no
# grid), at batch 8 on the CPU, where 1,000 prompts' text pass takes most of a minute and, on the
# earlier path, 7 GB per process; `gpu`: the prepared command for one GPU (bench/gpu.py).
PRESETS = {
    "default": dict(backbone="ViT-B/16", device="cpu", modes=NAMED_MODES, encoders=("both",),
                    batch_sizes=(8,), compute_dtypes=("fp32",), checkpointing=("off",), steps=1, warmup=1,
                    num_classes=10, prompt_tokens=16, eval_encoder=None, studies=("dequant",)),
    "lora-family": dict(backbone="ViT-B/16", device="cpu", modes=LORA_MODES, encoders=("both", "vision"),
                        batch_sizes=(8,), compute_dtypes=("fp32",), checkpointing=("off",), steps=2, warmup=1,
                        num_classes=10, prompt_tokens=16, eval_encoder="both", studies=("padding", "dequant")),
    "quick": dict(backbone="tiny", device="cpu", modes=LORA_MODES, encoders=("both",),
                  batch_sizes=(4,), compute_dtypes=("fp32",), checkpointing=("off",), steps=1, warmup=1,
                  num_classes=10, prompt_tokens=16, eval_encoder="both", studies=("padding", "dequant")),
    "scaling": dict(backbone="ViT-B/16", device="cpu", modes=("lora",), encoders=("both",),
                    batch_sizes=(4, 2, 8), compute_dtypes=("fp32",), checkpointing=("off",), steps=2,
                    warmup=1, num_classes=10, prompt_tokens=16, eval_encoder=None,
                    studies=("classes", "dora_dropout")),
    "imagenet": dict(backbone="ViT-B/16", device="cpu", modes=(), encoders=("both",), batch_sizes=(8,),
                     compute_dtypes=("fp32",), checkpointing=("off",), steps=2, warmup=1, num_classes=1000,
                     prompt_tokens=18, eval_encoder=None, studies=("imagenet",)),
    "gpu": GPU_PRESET,
}


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _width_x_height(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 500x375, got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark: what a training step, an evaluation and the weights cost, per adapter method.",
        epilog=f"The input-pipeline study has its own flags: python bench.py {INPUT_COMMAND} --help")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="a set of defaults (default: default; bench/cli.py lists them); the flags below "
                        "override it")
    p.add_argument("--backbone", nargs="+", choices=BACKBONES, metavar="BACKBONE",
                   help="shapes of the random checkpoint: CLIP's ViT-B/32, ViT-B/16, ViT-L/14, or another family's "
                        "base model (SigLIP-B/16, SigLIP2-B/16, MetaCLIP2-B/16), or a tiny offline checkpoint "
                        f"({', '.join(b for b in BACKBONES if b.startswith('tiny'))}); several: each one's grid in "
                        "the same run, compared with the first (the studies run on the first)")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--modes", nargs="+", choices=MODES, metavar="METHOD",
                   help="methods to time (default preset: every method, methods.NAMED_MODES)")
    p.add_argument("--encoders", nargs="+", choices=["both", "vision", "text"])
    p.add_argument("--batch_sizes", nargs="+", type=_at_least(1))
    p.add_argument("--compute_dtypes", nargs="+", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--checkpointing", nargs="+", choices=["off", "on"], help="gradient checkpointing")
    p.add_argument("--steps", type=_at_least(1), help="timed training steps per setting (median reported)")
    p.add_argument("--warmup", type=_at_least(0), help="untimed steps before them")
    p.add_argument("--num_classes", type=_at_least(2),
                   help="class prompts encoded per step (the padding study always uses 100, Caltech101's)")
    p.add_argument("--prompt_tokens", type=int,
                   help=f"longest prompt in tokens (BOS and EOS included); prompts spread from "
                        f"{SHORTEST_PROMPT} to it")
    p.add_argument("--studies", nargs="*", choices=list(STUDIES),
                   help="extra measurements: 77-token vs longest padding, 4-bit dequantization cost, "
                        "DoRA with and without adapter dropout, step time vs number of classes, ImageNet-shaped "
                        "text passes (the earlier path vs text once per update, shards and length buckets), "
                        "the 4-shot Caltech101-shaped protocol end to end (LoRA, QLoRA), every method the grid lacks")
    p.add_argument("--protocol_iters", type=_at_least(1),
                   help="n_iters of the protocol study (default 500: 2,000 steps at 4 shots)")
    p.add_argument("--out_dir", default="bench_results",
                   help="where the JSON and Markdown go (default: bench_results)")
    return p


def parse_bench_args(argv: list[str]) -> BenchSettings:
    """The flags over their preset's defaults, checked; errors name the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    values = {**PRESETS[args.preset], **{k: v for k, v in vars(args).items() if v is not None}}
    if args.backbone:
        values["backbone"], values["other_backbones"] = args.backbone[0], tuple(args.backbone[1:])
        if len(set(args.backbone)) != len(args.backbone):
            parser.error(f"--backbone lists a backbone twice: {' '.join(args.backbone)}")
    if values["device"] == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible; use --device cpu (or --preset default)")
    if not SHORTEST_PROMPT <= values["prompt_tokens"] <= CONTEXT_LENGTH:
        parser.error(f"--prompt_tokens must be in [{SHORTEST_PROMPT}, {CONTEXT_LENGTH}] "
                     f"(got {values['prompt_tokens']})")
    return BenchSettings(**{f.name: _frozen(values[f.name]) for f in fields(BenchSettings) if f.name in values})


def _frozen(value):
    return tuple(value) if isinstance(value, list) else value


def build_input_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"bench.py {INPUT_COMMAND}", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Input-pipeline study: images/s of the old (PIL every step) and new (decode once, uint8 "
                    "augmentation) train paths and of the test-image preparation, per worker count, and the "
                    "input wait of a simulated step; one JSON line per measurement.")
    p.add_argument("--backbone", choices=BACKBONES, default="ViT-B/16",
                   help="whose image processor sets the crop size and normalisation")
    p.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                   help="read this dataset's test split (None: synthetic JPEGs)")
    p.add_argument("--root_path", default="DATA", help="the folder holding --dataset")
    p.add_argument("--images", type=_at_least(1), default=256, help="images per measurement")
    p.add_argument("--size", type=_width_x_height, default="500x375", help="synthetic image size, WxH")
    p.add_argument("--quality", type=_at_least(1), default=90, help="synthetic JPEG quality (1-100)")
    p.add_argument("--num_workers", type=_at_least(0), nargs="+", default=[0, 2],
                   help="DataLoader worker counts to measure")
    p.add_argument("--batch_size", type=_at_least(1), default=32)
    p.add_argument("--repeats", type=_at_least(1), default=2, help="timed passes (after one warm-up pass)")
    p.add_argument("--step_ms", type=float, default=20.0,
                   help="the simulated training step the input wait is measured against (milliseconds)")
    p.add_argument("--wait_steps", type=_at_least(1), default=20, help="steps of the input-wait measurement")
    p.add_argument("--torch_threads", type=_at_least(1), default=None,
                   help="torch intra-op threads of the main process (None: torch's choice); "
                        "DataLoader workers always use one")
    return p


def parse_input_args(argv: list[str]) -> InputSettings:
    parser = build_input_parser()
    args = parser.parse_args(argv)
    if args.quality > 100:
        parser.error(f"--quality must be in [1, 100] (got {args.quality})")
    return InputSettings(**{f.name: _frozen(getattr(args, f.name)) for f in fields(InputSettings)})


def run_input_study(argv: list[str]) -> None:
    """`python bench.py input ...`: one JSON line per measurement on stdout."""
    settings = parse_input_args(argv)
    try:
        for record in input_pipeline.run(settings):
            print(json.dumps(record), flush=True)
    except UserError as err:  # a missing or malformed --dataset folder
        build_input_parser().error(str(err))


def main(argv: list[str] | None = None) -> None:
    """Run the command `argv` names: the input study after `input`, the step-time benchmark otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [INPUT_COMMAND]:
        run_input_study(argv[1:])
        return
    bench = parse_bench_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    report = run_benchmark(bench, command=" ".join(["bench.py", *argv]))
    stem = write_report(report, bench)
    print(markdown(report))
    log.info("wrote %s.{json,md} in %.0fs", stem, report["wall_s"])
