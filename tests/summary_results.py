"""Synthetic results files, written the way main.py writes them, and helpers to run summarize.py on them."""
from __future__ import annotations

from pathlib import Path

from qlora_clip.evaluation.metrics import harmonic_mean
from qlora_clip.run.results import append_jsonl
from run_utils import build_parser
from summarize import main as summarize_main

# --- few-shot runs: the paper and efficiency tables ---------------------------------------------

# accuracy by (mode, dataset, shots) -> one value per seed 1, 2, 3
ACCURACY = {
    ("lora", "caltech101", 1): (90.0, 91.0, 92.0),
    ("lora", "dtd", 1): (50.0, 52.0, 54.0),
    ("qlora", "caltech101", 1): (91.0, 91.0, 91.0),
    ("qlora", "dtd", 1): (51.0, 53.0, 55.0),
    ("qlora", "caltech101", 4): (94.0, 95.0, 96.0),
    ("qlora", "dtd", 4): (60.0, 62.0, None),  # seed 3 never finished
}
ZERO_SHOT = {"caltech101": 88.0, "dtd": 40.0}


def fewshot_record(mode: str, dataset: str, shots: int, seed: int, acc: float, *extra: str, **fields) -> dict:
    """A few-shot line of a GPU run that drew all its shots; `fields` replace the line's own."""
    config = vars(build_parser().parse_args(["--mode", mode, "--dataset", dataset, "--shots", str(shots),
                                             "--seed", str(seed), "--backbone", "ViT-B/16", *extra]))
    return {"mode": mode, "dataset": dataset, "shots": shots, "seed": seed, "backbone": "ViT-B/16",
            "config": config, "zero_shot_acc": ZERO_SHOT.get(dataset, 50.0) - (1.0 if mode == "qlora" else 0.0),
            "test_acc": acc, "train_seconds": 3725.0 if mode == "lora" else 65.4, "total_steps": 500 * shots,
            "peak_memory_mb": 4823.0 if mode == "lora" else 1790.0 + seed, "memory_kind": "cuda_allocated",
            "peak_memory_reserved_mb": 5000.0, "model_footprint_mb": 570.0 if mode == "lora" else 160.0,
            "trainable_params": 184320, "quantized": mode == "qlora", "device": "cuda:0",
            "device_name": "NVIDIA A100-SXM4-40GB", "compute_dtype": "fp16", "shots_drawn": shots, **fields}


def folder_record(root: Path, seed: int, acc: float, *extra: str, **fields) -> dict:
    """A lora run on your own images in `root` (main.py records --root_path resolved, as here)."""
    return fewshot_record("lora", "folder", 1, seed, acc, "--root_path", str(root.resolve()), *extra, **fields)


def write_fewshot_results(path: Path) -> Path:
    """ACCURACY's runs, an unreadable line 18, then a smoke run with --n_iters 1."""
    for (mode, dataset, shots), accs in ACCURACY.items():
        for seed, acc in enumerate(accs, start=1):
            if acc is not None:
                append_jsonl(path, fewshot_record(mode, dataset, shots, seed, acc))
    with open(path, "a") as f:
        f.write("{this is not json\n")  # line 18
    append_jsonl(path, fewshot_record("qlora", "dtd", 1, 1, 10.0, "--n_iters", "1"))  # a smoke run: not the same method
    return path


# --- runs that drew fewer distinct images than their shots -------------------------------------

OVER_DRAWN = 6  # DTD's seed 1 at 16 shots: a class had 6 images, the draw repeated them


def write_over_drawn_results(path: Path) -> Path:
    """16-shot lora on DTD (seed 1 drew OVER_DRAWN distinct images for a class) and Caltech (all drawn),
    and a 4-shot DTD run written before lines had `shots_drawn`."""
    for seed in (1, 2):
        append_jsonl(path, fewshot_record("lora", "dtd", 16, seed, 50.0 + seed,
                                          shots_drawn=OVER_DRAWN if seed == 1 else 16))
        append_jsonl(path, fewshot_record("lora", "caltech101", 16, seed, 90.0 + seed))
    old = fewshot_record("lora", "dtd", 4, 1, 40.0)
    del old["shots_drawn"]
    append_jsonl(path, old)
    return path


# --- base-to-novel and transfer runs ------------------------------------------------------------

# (dataset) -> base and new accuracy for seeds 1, 2, 3
BASE2NEW = {
    "caltech101": ((90.0, 92.0, 94.0), (50.0, 52.0, 54.0)),
    "dtd": ((70.0, 72.0, 74.0), (30.0, 32.0, 34.0)),
}
ZERO_SHOT_BASE2NEW = {"caltech101": (85.0, 80.0), "dtd": (45.0, 50.0)}
# target -> (test_acc for seeds 1, 2; zero-shot)
TARGETS = {"caltech101": ((93.0, 95.0), 92.0), "dtd": ((43.0, 45.0), 44.0),
           "imagenetv2": ((60.0, 62.0), 61.0), "imagenet_a": ((48.0, 50.0), 47.0)}


def protocol_record(dataset: str, seed: int, *flags: str, mode: str = "lora", shots: int = 16, **fields) -> dict:
    argv = ["--mode", mode, "--dataset", dataset, "--shots", str(shots), "--seed", str(seed), *flags]
    config = vars(build_parser().parse_args(argv))
    return {"mode": mode, "dataset": dataset, "shots": shots, "seed": seed, "backbone": "ViT-B/16",
            "config": config, "quantized": False, "protocol": config["protocol"], **fields}


def write_protocol_results(path: Path) -> Path:
    """BASE2NEW's runs, one few-shot run per dataset, and two ImageNet runs evaluated on TARGETS."""
    for dataset, (base, new) in BASE2NEW.items():
        zs_base, zs_new = ZERO_SHOT_BASE2NEW[dataset]
        for seed in (1, 2, 3):
            b, n = base[seed - 1], new[seed - 1]
            append_jsonl(path, protocol_record(
                dataset, seed, "--protocol", "base2new", test_acc=b, zero_shot_acc=zs_base, base_acc=b, new_acc=n,
                hm_acc=harmonic_mean(b, n), zero_shot_base_acc=zs_base, zero_shot_new_acc=zs_new,
                zero_shot_hm_acc=harmonic_mean(zs_base, zs_new)))
        # A few-shot run of the same dataset: paper table only. Written without "protocol", as older lines are.
        line = protocol_record(dataset, 1, test_acc=99.0, zero_shot_acc=88.0)
        del line["protocol"]
        append_jsonl(path, line)
    for seed in (1, 2):
        targets = {name: {"test_acc": accs[seed - 1], "zero_shot_acc": zero_shot}
                   for name, (accs, zero_shot) in TARGETS.items()}
        append_jsonl(path, protocol_record("imagenet", seed, "--eval_datasets", *TARGETS, test_acc=70.0 + seed,
                                           zero_shot_acc=66.0, eval_datasets=targets))
    return path


# --- running summarize.py and reading its Markdown ----------------------------------------------

def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = summarize_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summarize(results: Path, tmp_path: Path, capsys, *argv: str) -> tuple[str, str]:
    """stdout and stderr of a run that must succeed, its files in tmp_path/out."""
    code, out, err = run([str(results), "--out", str(tmp_path / "out"), *argv], capsys)
    assert code == 0
    return out, err


def table_row(markdown: str, *first_cells: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no row starting {first_cells} in\n{markdown}")


def section(markdown: str, title: str) -> str:
    start = markdown.index(title)
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end >= 0 else None]
