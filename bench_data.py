"""Image-loading throughput: decode + transform, images per second, through the real loaders.

Runs loaders.train_loader and loaders.eval_loader (the 224-pixel CLIP pipelines of training and
evaluation) over a set of images for each --num_workers value and prints one JSON line per
measurement. The images are a benchmark dataset's test split (--dataset, --root_path) or, by
default, synthetic photo-like JPEGs of a typical ImageNet size written to a temporary folder.

    python bench_data.py --num_workers 0 2
    python bench_data.py --dataset food101 --root_path DATA --images 512 --num_workers 0 2 4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from batching import TrainBatchSampler
from datasets import Item, build_dataset
from datasets.base import open_rgb
from errors import UserError
from eval_images import preprocess
from image_store import decode_all
from loaders import ImageSettings, TrainStream, eval_transform

# What the ViT-B/16 image processor gives the transforms (model.ClipBundle.image).
CLIP_224 = ImageSettings(image_size=224, resize_size=224, mean=(0.48145466, 0.4578275, 0.40821073),
                         std=(0.26862954, 0.26130258, 0.27577711))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default=None, help="a dataset to read (default: synthetic JPEGs)")
    p.add_argument("--root_path", default="DATA")
    p.add_argument("--images", type=int, default=256, help="images per measurement")
    p.add_argument("--size", default="500x375", help="synthetic image size, WxH")
    p.add_argument("--quality", type=int, default=90, help="synthetic JPEG quality")
    p.add_argument("--num_workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="timed passes (after one warm-up pass)")
    p.add_argument("--torch_threads", type=int, default=None,
                   help="torch intra-op threads of the main process (default: torch's choice); "
                        "DataLoader workers always use one")
    return p.parse_args(argv)


def synthetic_jpegs(folder: Path, count: int, size: tuple[int, int], quality: int) -> list[Item]:
    """Photo-like JPEGs: smooth colour fields plus fine noise, so they neither compress to nothing
    (flat images decode unrealistically fast) nor are pure noise (unrealistically slow)."""
    rng = np.random.default_rng(0)
    width, height = size
    items = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
        pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=quality)
        items.append(Item(str(path), i % 10, str(i % 10)))
    return items


def measure(loader, images: int, repeats: int) -> float:
    """Images/s over `repeats` passes of `images` images (the train loader is endless: count, don't exhaust)."""
    def one_pass(batches) -> int:
        seen = 0
        for batch, _labels in batches:
            seen += batch.shape[0]
            if seen >= images:
                break
        return seen

    stream = iter(loader)  # the train stream is endless: keep one iterator

    def batches():
        return stream

    one_pass(batches())  # warm-up: worker start, file cache
    start = time.perf_counter()
    seen = sum(one_pass(batches()) for _ in range(repeats))
    return seen / (time.perf_counter() - start)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(args: argparse.Namespace, items: list[Item], source: str, load_image=open_rgb) -> None:
    sizes = [os.path.getsize(item.source) for item in items[:64] if isinstance(item.source, str)]
    context = {"source": source, "images": len(items),
               "mean_file_kb": round(sum(sizes) / len(sizes) / 1024, 1) if sizes else None,
               "nproc": os.cpu_count(), "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
               "load_average": os.getloadavg()[0]}
    cpu = torch.device("cpu")
    images = decode_all([item.source for item in items], load_image, budget_gb=16)
    for workers in args.num_workers:
        sampler = TrainBatchSampler(len(items), args.batch_size, 1, seed=0)
        stream = TrainStream(images, [item.label for item in items], CLIP_224, sampler, workers, cpu)
        rate = measure(stream, len(items), args.repeats)
        print(json.dumps({**context, "pipeline": "train", "num_workers": workers, "images_per_s": round(rate, 1)}),
              flush=True)
        start = time.perf_counter()
        preprocess(items, load_image, eval_transform(CLIP_224), CLIP_224.image_size, workers)
        print(json.dumps({**context, "pipeline": "test", "num_workers": workers,
                          "images_per_s": round(len(items) / (time.perf_counter() - start), 1)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.dataset:
        data = build_dataset(args.dataset, args.root_path, shots=1, seed=1)
        run(args, data.test[:args.images], f"{args.dataset} test split", data.load_image)
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        items = synthetic_jpegs(Path(tmp), args.images, (width, height), args.quality)
        run(args, items, f"synthetic {width}x{height} JPEG q{args.quality}")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
