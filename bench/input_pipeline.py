"""`python bench.py input`: decode + transform throughput of the real train and test loaders.

Runs loaders.train_loader (fed by batching.TrainBatchSampler, as main.py builds it) and
loaders.eval_loader over a set of images, for each worker count, and yields one record per
pipeline and count: images per second with what the machine was doing. The transforms' sizes
come from the backbone's image processor, read by model.load_clip as in a run. The images are a
dataset's test split, or by default synthetic photo-like JPEGs of a typical ImageNet size written
to a temporary folder.

A new input path is measured by adding its loader to PIPELINES.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from batching import TrainBatchSampler
from bench.harness import cpu_name, load_model, release_memory
from bench.settings import InputSettings
from datasets import Item, build_dataset
from datasets.base import open_rgb
from loaders import ImageSettings, eval_loader, train_loader

CPU = torch.device("cpu")
LoaderFactory = Callable[[list[Item], Callable, ImageSettings, int, int], DataLoader]


def _train(items: list[Item], load_image: Callable, image: ImageSettings, batch_size: int,
           workers: int) -> DataLoader:
    sampler = TrainBatchSampler(len(items), batch_size, accumulation_steps=1, seed=0)
    return train_loader(items, load_image, image, sampler, workers, CPU)


def _test(items: list[Item], load_image: Callable, image: ImageSettings, batch_size: int,
          workers: int) -> DataLoader:
    return eval_loader(items, load_image, image, batch_size, workers, CPU)


# The pipelines measured, by the name each record gives: (items, load_image, image settings,
# batch size, worker count) -> a DataLoader yielding (images, labels).
PIPELINES: dict[str, LoaderFactory] = {"train": _train, "test": _test}


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


def images_per_s(loader: DataLoader, images: int, repeats: int) -> float:
    """Images/s over `repeats` passes of `images` images, after one warm-up pass (worker start, file cache)."""
    # The train loader's sampler is endless (batching.TrainBatchSampler): keep one iterator and
    # count images rather than exhausting it.
    endless = not hasattr(loader.batch_sampler, "__len__")
    stream = iter(loader)

    def one_pass() -> int:
        seen = 0
        for batch, _labels in (stream if endless else iter(loader)):
            seen += batch.shape[0]
            if seen >= images:
                break
        return seen

    one_pass()
    start = time.perf_counter()
    seen = sum(one_pass() for _ in range(repeats))
    return seen / (time.perf_counter() - start)


def image_settings(backbone: str) -> ImageSettings:
    """The transforms' sizes and normalisation, from the backbone's checkpoint as load_clip reads them."""
    _, _, bundle = load_model(backbone, "fp32", CPU)
    image = bundle.image
    del bundle
    release_memory(CPU)
    return image


def measure(settings: InputSettings, items: list[Item], source: str, load_image: Callable) -> Iterator[dict]:
    """One record per worker count x pipeline, yielded as soon as it is measured."""
    image = image_settings(settings.backbone)
    sizes = [os.path.getsize(item.source) for item in items[:64] if isinstance(item.source, str)]
    context = {"source": source, "images": len(items), "image_size": image.image_size,
               "mean_file_kb": round(sum(sizes) / len(sizes) / 1024, 1) if sizes else None,
               "nproc": os.cpu_count(), "cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
               "load_average": os.getloadavg()[0]}
    for workers in settings.num_workers:
        for pipeline, build in PIPELINES.items():
            loader = build(items, load_image, image, settings.batch_size, workers)
            rate = images_per_s(loader, len(items), settings.repeats)
            yield {**context, "pipeline": pipeline, "num_workers": workers, "images_per_s": round(rate, 1)}


def run(settings: InputSettings) -> Iterator[dict]:
    """The study over a dataset's test split (settings.dataset) or over synthetic JPEGs."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if settings.dataset:
        data = build_dataset(settings.dataset, settings.root_path, shots=1, seed=1)
        yield from measure(settings, data.test[:settings.images], f"{settings.dataset} test split", data.load_image)
        return
    width, height = settings.size
    with tempfile.TemporaryDirectory() as tmp:
        items = synthetic_jpegs(Path(tmp), settings.images, settings.size, settings.quality)
        yield from measure(settings, items, f"synthetic {width}x{height} JPEG q{settings.quality}", open_rgb)
