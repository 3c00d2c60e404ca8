"""Study `protocol`: the 4-shot Caltech101-shaped protocol end to end, through main.py, per method.

What a researcher's run costs on this machine, all of it: data preparation (train images decoded
once, the test images preprocessed into the cache by the first method and read by the second),
zero-shot evaluation, n_iters x shots training steps, test evaluation. The data are synthetic
photo-sized JPEGs in Caltech101's shape (100 classes; a train split of 404 images, of which the
4-shot draw takes 400; 2,465 test images), the model random weights in ViT-B/16's shapes, batch 32,
500 x 4 = 2,000 steps, so nothing is downloaded. Each method's figures come from its results line
(the training loop's time and peak, the input wait, the evaluations' time) plus the wall time of
the whole `main.main` call.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import main
from bench.harness import checkpoint_dir, release_memory
from bench.settings import BenchSettings

log = logging.getLogger("bench")

CLASSES = 100
TRAIN_IMAGES = 404
TEST_IMAGES = 2_465
SHOTS = 4
PHOTO_SIZE = (500, 375)
METHODS = ("lora", "qlora")


def photo(path: Path, size: tuple[int, int], seed: int) -> None:
    """A photo-like JPEG: smooth colour fields plus fine noise (bench/input_pipeline.py's recipe)."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = Image.fromarray(rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
    Image.fromarray(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)).save(path, quality=90)


def write_dataset(folder: Path, classes: int, train: int, test: int, size: tuple[int, int]) -> Path:
    """`--dataset folder` data with a CoOp split json: `train` and `test` images spread over `classes`."""
    folder.mkdir(parents=True, exist_ok=True)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    jobs = []
    for part, count in (("train", train), ("test", test)):
        for i in range(count):
            name = f"{part}_{i:05d}.jpg"
            label = i % classes
            split[part].append([name, label, f"class {label:03d}"])
            jobs.append((folder / name, len(jobs)))
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda job: photo(job[0], size, job[1]), jobs))
    (folder / "split.json").write_text(json.dumps(split))
    return folder


def run_protocol(backbone: str, device: str, n_iters: int, classes: int = CLASSES, train: int = TRAIN_IMAGES,
                 test: int = TEST_IMAGES, size: tuple[int, int] = PHOTO_SIZE, methods=METHODS) -> dict:
    """Each method's run through main.main on freshly written data; its figures by method."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        data = write_dataset(Path(tmp) / "data", classes, train, test, size)
        results["write_data_s"] = time.perf_counter() - start
        for mode in methods:
            argv = ["--backbone", str(checkpoint_dir(backbone)), "--dataset", "folder", "--root_path", str(data),
                    "--shots", str(SHOTS), "--n_iters", str(n_iters), "--batch_size", "32", "--mode", mode,
                    "--device", device, "--results_file", str(Path(tmp) / "results.jsonl"),
                    "--eval_cache_dir", str(Path(tmp) / "cache")]
            start = time.perf_counter()
            record = main.main(argv)
            total = time.perf_counter() - start
            results[mode] = {
                "total_s": total, "train_s": record["train_seconds"], "steps": record["total_steps"],
                "ms_per_step": 1000 * record["train_seconds"] / max(record["total_steps"], 1),
                "input_wait_s": record["input_wait_seconds"], "eval_s": record["eval_seconds"],
                "peak_memory_mb": record["peak_memory_mb"], "memory_kind": record["memory_kind"],
                "eval_peak_memory_mb": record["eval_peak_memory_mb"], "train_images_seen": record["train_images_seen"],
                "compute_dtype": record["compute_dtype"], "skipped_steps": record["skipped_steps"],
                "test_images_cached_before": mode != methods[0]}
            log.info("protocol %s: %.1f s in all, %.1f ms/step, input wait %.1f s, training peak %.0f MB (%s)",
                     mode, total, results[mode]["ms_per_step"], record["input_wait_seconds"],
                     record["peak_memory_mb"], record["memory_kind"])
            release_memory(torch.device(device))
    return results


def run(bench: BenchSettings, peak: dict[str, float]) -> tuple[dict, list[dict]]:
    return run_protocol(bench.backbone, bench.device, bench.protocol_iters), []
