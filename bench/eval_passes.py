"""What the figures beyond the accuracy cost an evaluation pass (BENCHMARKS.md, "Evaluation beyond the accuracy").

    python -m bench.eval_passes [--backbone tiny] [--images 10000] [--classes 10] [--repeats 5] [--device auto]
                                [--threads N]

One pass over the same preprocessed test images, four ways, interleaved `--repeats` times (median
reported): the accuracy alone, counted as the evaluator counted it before calibration existed
(`counts_only`, kept here as the reference); the evaluator's pass as runs make it now (accuracy and
calibration from the same logits); the same keeping each image's MCM score (--ood_datasets); and
keeping each image's logits (--save_predictions). Each way also counts the images the vision tower
encodes, to show that none of them adds a pass. The model is the method's as main.py builds it
(methods.interface.load_adapted, LoRA on both towers, so every pass encodes its images); the images
are random pixels and the class prompts generated, so nothing is read from disk.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.evaluation.evaluator import MIN_EVAL_BATCH, EvalSet, Evaluator
from qlora_clip.evaluation.metrics import accuracy_percent, count_correct
from qlora_clip.inputs.loaders import EvalBatches
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.training.distributed import resolve_device
from qlora_clip.training.precision import resolve_precision

WAYS = ("counts_only", "calibration", "calibration + MCM scores", "calibration + logits")


@torch.no_grad()
def counts_only(evaluator: Evaluator, test: EvalSet) -> float:
    """The accuracy pass as it was before calibration: count the correct predictions, nothing else."""
    adapted, precision = evaluator.adapted, evaluator.precision
    adapted.model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=precision.device)
    total = torch.zeros((), dtype=torch.int64, device=precision.device)
    with precision.autocast():
        text = adapted.text_features(test.prompts)
        for images, labels in test.loader:
            correct += count_correct(adapted.logits(adapted.image_embeddings(images), text), labels)
            total += labels.numel()
    return accuracy_percent(*evaluator.dist.sum_counts(correct, total))


def run(backbone: str, images: int, classes: int, repeats: int, device_flag: str, threads: int | None = None) -> dict:
    """Time the four ways over the same `images` random images; `threads`: torch's CPU threads for the run (restored
    after), None to keep torch's."""
    before = torch.get_num_threads()
    if threads is not None:
        # On a shared CPU, threads that wait on each other dominate a tiny model's pass: one thread measures the pass.
        torch.set_num_threads(threads)
    try:
        return _run(backbone, images, classes, repeats, device_flag)
    finally:
        torch.set_num_threads(before)


def _run(backbone: str, images: int, classes: int, repeats: int, device_flag: str) -> dict:
    device = resolve_device(device_flag)
    precision = resolve_precision("auto", device)
    adapted = load_adapted(backbone, AdapterConfig(mode="lora", encoder="both"), device, precision.dtype)
    size = adapted.bundle.image.image_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, classes, (images,), generator=generator).tolist()
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of class {i}." for i in range(classes)], device,
                           text=adapted.bundle.text)
    test = EvalSet("bench", EvalBatches(pixels, labels, adapted.bundle.image, MIN_EVAL_BATCH, device), prompts)
    evaluator = Evaluator(adapted, precision)
    encoded = dict.fromkeys(WAYS, 0)
    current = []
    real_embeddings = adapted.image_embeddings

    def counting(batch):
        encoded[current[0]] += len(batch)
        return real_embeddings(batch)
    adapted.image_embeddings = counting  # this model only, for this run: the images each way encodes
    passes = {"counts_only": lambda: counts_only(evaluator, test),
              "calibration": lambda: evaluator.evaluate(test).accuracy,
              "calibration + MCM scores": lambda: evaluator.evaluate(test, keep="scores").accuracy,
              "calibration + logits": lambda: evaluator.evaluate(test, keep="logits").accuracy}
    seconds = {way: [] for way in WAYS}
    accuracy = {}
    try:
        for way in WAYS:  # one warm-up each, whose accuracy shows every way counts the same predictions
            current[:] = [way]
            accuracy[way] = passes[way]()
        encoded.update(dict.fromkeys(WAYS, 0))
        for _ in range(repeats):
            for way in WAYS:
                current[:] = [way]
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                passes[way]()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[way].append(time.perf_counter() - start)
    finally:
        del adapted.image_embeddings
    base = statistics.median(seconds["counts_only"])
    rows = [{"way": way, "median_seconds": statistics.median(seconds[way]), "seconds": seconds[way],
             "vs_counts_only": statistics.median(seconds[way]) / base, "passes": encoded[way] / (repeats * images),
             "accuracy": accuracy[way]}
            for way in WAYS]
    return {"backbone": backbone, "images": images, "classes": classes, "repeats": repeats, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
            or "cpu", "compute_dtype": precision.name, "threads": torch.get_num_threads(), "rows": rows}


def markdown(result: dict) -> str:
    lines = [f"{result['backbone']}, {result['images']:,} images, {result['classes']} classes, "
             f"{result['device']} ({result['compute_dtype']}, {result['threads']} threads), median of "
             f"{result['repeats']}:", "",
             "| pass | median (s) | vs counts only | passes over the images | accuracy (%) |", "|---|---|---|---|---|"]
    lines += [f"| {row['way']} | {row['median_seconds']:.3f} | {row['vs_counts_only']:.3f} | {row['passes']:g} "
              f"| {row['accuracy']:.2f} |"
              for row in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.eval_passes", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="tiny")
    p.add_argument("--images", type=int, default=10_000, help="test images (Fashion-MNIST's test set: 10,000)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own count)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    result = run(args.backbone, args.images, args.classes, args.repeats, args.device, args.threads)
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
