"""`python bench.py input`: what feeding the model costs, per core, on the old and the new path.

- `old`: the path before the images were decoded once: every step opens each JPEG with PIL and
  runs torchvision's PIL transforms (RandomResizedCrop, flip, ToTensor, Normalize). Kept here only
  as the baseline.
- `new`: the run's path: the images decoded once (image_store.decode_all, timed apart), then the
  uint8 crop and resize (augment.py) through loaders.TrainStream's DataLoader, as main.py builds
  it, up to the uint8 batch (the float conversion and normalisation run on the GPU in a GPU run).
- `test`: the first fill of the test-image cache (eval_images.preprocess), later runs read it.

Each line gives images/s for a worker count. With --num_workers 0 and --torch_threads 1 the rate
is per core, and the `speedup` line compares the two train paths from the same run. The
`input_wait` line runs the new path against a simulated step of --step_ms (a sleep standing in for
the GPU's work) and reports how long each step waited for its batch, measured here and projected
to a GPU machine's workers.
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
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from bench.harness import checkpoint_dir, cpu_name
from bench.settings import InputSettings
from datasets import Item, build_dataset
from qlora_clip.data.images import open_rgb
from qlora_clip.backbones import families
from qlora_clip.backbones.families import ImageSettings
from qlora_clip.inputs.loaders import TrainStream, eval_transform
from qlora_clip.inputs.sampler import TrainBatchSampler
from qlora_clip.inputs.test_images import preprocess
from qlora_clip.inputs.train_images import decode_all

CPU = torch.device("cpu")
# The GPU machine the projection is for: 16 cores, the run's default of at most 8 loader workers.
GPU_MACHINE_WORKERS = 8


class _PilPerStep(Dataset):
    """The old train path: decode and transform with PIL at every read, seeded per image."""

    def __init__(self, items: list[Item], load_image: Callable, image: ImageSettings):
        self.items, self.load_image = items, load_image
        self.transform = T.Compose([
            T.RandomResizedCrop(image.image_size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(0.5), T.ToTensor(), T.Normalize(image.mean, image.std)])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.transform(self.load_image(self.items[index].source)), self.items[index].label


def synthetic_jpegs(folder: Path, count: int, size: tuple[int, int], quality: int,
                    classes: int = 10) -> list[Item]:
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
        items.append(Item(str(path), i % classes, str(i % classes)))
    return items


def _count_images(batches: Iterator, images: int, step_seconds: float = 0.0) -> int:
    seen = 0
    while seen < images:
        batch = next(batches)
        seen += len(batch[1])
        if step_seconds:
            time.sleep(step_seconds)
    return seen


def images_per_s(stream, images: int, repeats: int) -> float:
    """Images/s of an endless stream over `repeats` passes of `images`, after one warm-up pass."""
    batches = iter(stream)
    _count_images(batches, images)  # worker start, file cache
    start = time.perf_counter()
    seen = sum(_count_images(batches, images) for _ in range(repeats))
    return seen / (time.perf_counter() - start)


def image_settings(backbone: str) -> ImageSettings:
    """The transforms' sizes and normalisation, from the backbone's checkpoint as a run reads them."""
    return families.image_settings(str(checkpoint_dir(backbone)), backbone)


def _old_stream(items, load_image, image, batch_size, workers):
    sampler = TrainBatchSampler(len(items), batch_size, 1, seed=0)
    return DataLoader(_PilPerStep(items, load_image, image), batch_sampler=sampler, num_workers=workers,
                      persistent_workers=workers > 0, generator=torch.Generator())


def measure(settings: InputSettings, items: list[Item], source: str, load_image: Callable) -> Iterator[dict]:
    """One record per pipeline x worker count, then the speedup and the input wait, as measured."""
    image = image_settings(settings.backbone)
    sizes = [os.path.getsize(item.source) for item in items[:64] if isinstance(item.source, str)]
    context = {"source": source, "images": len(items), "image_size": image.image_size, "batch": settings.batch_size,
               "mean_file_kb": round(sum(sizes) / len(sizes) / 1024, 1) if sizes else None,
               "nproc": os.cpu_count(), "cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
               "load_average": os.getloadavg()[0]}
    start = time.perf_counter()
    decoded = decode_all([item.source for item in items], load_image, budget_gb=64)
    decode_s = time.perf_counter() - start
    yield {**context, "pipeline": "decode_once", "threads": len(os.sched_getaffinity(0)),
           "seconds": round(decode_s, 3), "images_per_s": round(len(items) / decode_s, 1)}
    labels = [item.label for item in items]
    rates: dict[tuple[str, int], float] = {}
    for workers in settings.num_workers:
        sampler = TrainBatchSampler(len(items), settings.batch_size, 1, seed=0)
        # The new path's batches as its loader yields them (uint8): on a GPU machine that is the CPU's
        # share of the work, conversion and normalisation run on the device.
        streams = {"old": _old_stream(items, load_image, image, settings.batch_size, workers),
                   "new": TrainStream(decoded, labels, image, sampler, workers, CPU).loader}
        for pipeline, stream in streams.items():
            rates[pipeline, workers] = images_per_s(stream, len(items), settings.repeats)
            yield {**context, "pipeline": pipeline, "num_workers": workers,
                   "images_per_s": round(rates[pipeline, workers], 1)}
        start = time.perf_counter()
        preprocess(items, load_image, eval_transform(image), image.image_size, workers)
        yield {**context, "pipeline": "test", "num_workers": workers,
               "images_per_s": round(len(items) / (time.perf_counter() - start), 1)}
    for workers in settings.num_workers:
        yield {**context, "pipeline": "speedup", "num_workers": workers,
               "new_over_old": round(rates["new", workers] / rates["old", workers], 2)}
    yield from input_wait(settings, decoded, labels, image, context, rates)


def input_wait(settings: InputSettings, decoded, labels, image: ImageSettings, context: dict,
               rates: dict) -> Iterator[dict]:
    """The new path against a simulated step: the wait per step here, and projected to a GPU machine."""
    step = settings.step_ms / 1000
    workers = max(settings.num_workers)
    sampler = TrainBatchSampler(len(labels), settings.batch_size, 1, seed=0)
    stream = TrainStream(decoded, labels, image, sampler, workers, CPU)
    batches = iter(stream)
    _count_images(batches, settings.batch_size * 2)  # start the workers
    stream.input_wait_seconds = 0.0
    steps = settings.wait_steps
    _count_images(batches, settings.batch_size * steps, step_seconds=step)
    per_step = stream.input_wait_seconds / steps
    # One core of the new path feeds `per_core` images/s; a GPU machine runs GPU_MACHINE_WORKERS such
    # workers while the step runs. A batch they cannot prepare within a step is waited for.
    per_core = rates.get(("new", 0))
    projected = None
    if per_core:
        prepare = settings.batch_size / (per_core * GPU_MACHINE_WORKERS)
        projected = max(0.0, prepare - step) / step
    yield {**context, "pipeline": "input_wait", "num_workers": workers, "step_ms": settings.step_ms,
           "steps": steps, "wait_ms_per_step": round(1000 * per_step, 2),
           "wait_share_of_step": round(per_step / step, 4),
           "new_images_per_s_per_core": round(per_core, 1) if per_core else None,
           "projected_wait_share_8_workers": None if projected is None else round(projected, 4)}


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
