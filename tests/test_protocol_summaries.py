"""summarize.py's base-to-novel, cross-dataset and domain-generalization tables, and their sweep scripts."""
from __future__ import annotations

import csv
import os
import statistics
import subprocess
from pathlib import Path

import pytest

from metrics import harmonic_mean
from qlora_clip.paper import PUBLISHED_BASE2NEW
from qlora_clip.results import append_jsonl
from run_utils import build_parser
from summarize import main as summarize_main

REPO = Path(__file__).resolve().parents[1]

# (dataset) -> base and new accuracy for seeds 1, 2, 3
BASE2NEW = {
    "caltech101": ((90.0, 92.0, 94.0), (50.0, 52.0, 54.0)),
    "dtd": ((70.0, 72.0, 74.0), (30.0, 32.0, 34.0)),
}
ZERO_SHOT_BASE2NEW = {"caltech101": (85.0, 80.0), "dtd": (45.0, 50.0)}
# target -> (test_acc for seeds 1, 2; zero-shot)
TARGETS = {"caltech101": ((93.0, 95.0), 92.0), "dtd": ((43.0, 45.0), 44.0),
           "imagenetv2": ((60.0, 62.0), 61.0), "imagenet_a": ((48.0, 50.0), 47.0)}


def record(dataset: str, seed: int, *flags: str, mode: str = "lora", shots: int = 16, **fields) -> dict:
    argv = ["--mode", mode, "--dataset", dataset, "--shots", str(shots), "--seed", str(seed), *flags]
    config = vars(build_parser().parse_args(argv))
    return {"mode": mode, "dataset": dataset, "shots": shots, "seed": seed, "backbone": "ViT-B/16",
            "config": config, "quantized": False, "protocol": config["protocol"], **fields}


@pytest.fixture
def results(tmp_path) -> Path:
    path = tmp_path / "results.jsonl"
    for dataset, (base, new) in BASE2NEW.items():
        zs_base, zs_new = ZERO_SHOT_BASE2NEW[dataset]
        for seed in (1, 2, 3):
            b, n = base[seed - 1], new[seed - 1]
            append_jsonl(path, record(dataset, seed, "--protocol", "base2new", test_acc=b, zero_shot_acc=zs_base,
                                      base_acc=b, new_acc=n, hm_acc=harmonic_mean(b, n), zero_shot_base_acc=zs_base,
                                      zero_shot_new_acc=zs_new, zero_shot_hm_acc=harmonic_mean(zs_base, zs_new)))
        # A few-shot run of the same dataset: paper table only. Written without "protocol", as older lines are.
        line = record(dataset, 1, test_acc=99.0, zero_shot_acc=88.0)
        del line["protocol"]
        append_jsonl(path, line)
    for seed in (1, 2):
        targets = {name: {"test_acc": accs[seed - 1], "zero_shot_acc": zero_shot}
                   for name, (accs, zero_shot) in TARGETS.items()}
        append_jsonl(path, record("imagenet", seed, "--eval_datasets", *TARGETS, test_acc=70.0 + seed,
                                  zero_shot_acc=66.0, eval_datasets=targets))
    return path


def summarize(results: Path, tmp_path: Path, capsys, *argv: str) -> tuple[str, str]:
    assert summarize_main([str(results), "--out", str(tmp_path / "out"), *argv]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def row(markdown: str, *first_cells: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no row starting {first_cells} in\n{markdown}")


def section(markdown: str, title: str) -> str:
    start = markdown.index(title)
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end >= 0 else None]


def test_base2new_table_averages_hm_as_the_hm_of_the_averages(results, tmp_path, capsys):
    out, _ = summarize(results, tmp_path, capsys, "--tables", "base2new")
    assert "Top-1 accuracy (%)" not in out  # the few-shot table was not asked for
    assert row(out, "Method")[3:] == ["Caltech", "DTD", "Average"]
    assert row(out, "lora", "16", "base")[3:] == ["92.00 ± 2.00 (n=3)", "72.00 ± 2.00 (n=3)", "82.00 ± 2.00 (n=3)"]
    assert row(out, "lora", "16", "new")[3:] == ["52.00 ± 2.00 (n=3)", "32.00 ± 2.00 (n=3)", "42.00 ± 2.00 (n=3)"]
    hm = row(out, "lora", "16", "HM")[3:]
    per_seed = [harmonic_mean(80.0 + 2 * i, 40.0 + 2 * i) for i in range(3)]
    assert hm[0].startswith(f"{harmonic_mean(92, 52):.2f} ± ")
    # HM(mean base, mean new) = 55.55, not the mean of the datasets' HMs (55.38).
    assert hm[2] == f"{harmonic_mean(82, 42):.2f} ± {statistics.stdev(per_seed):.2f} (n=3)" == "55.55 ± 2.21 (n=3)"
    assert statistics.fmean([harmonic_mean(92, 52), harmonic_mean(72, 32)]) == pytest.approx(55.38, abs=0.01)
    assert row(out, "zero-shot", "0", "base")[3:] == ["85.00 ± 0.00 (n=3)", "45.00 ± 0.00 (n=3)", "65.00"]
    assert row(out, "zero-shot", "0", "HM")[5] == f"{harmonic_mean(65, 65):.2f}"
    with open(tmp_path / "out" / "base2new_table.csv") as f:
        rows = {(r["method"], r["dataset"], r["classes"]): r for r in csv.DictReader(f)}
    assert float(rows[("lora", "average", "HM")]["mean"]) == pytest.approx(harmonic_mean(82, 42), abs=1e-4)
    assert rows[("lora", "average", "HM")]["complete"] == "True"


def test_a_missing_seed_makes_the_average_hm_partial(results, tmp_path, capsys):
    lines = results.read_text().splitlines()
    results.write_text("\n".join(line for line in lines if not ('"dtd"' in line and '"seed": 3' in line)) + "\n")
    out, _ = summarize(results, tmp_path, capsys, "--tables", "base2new")
    assert row(out, "lora", "16", "HM")[4].startswith("⚠") and "no seed 3" in row(out, "lora", "16", "HM")[4]
    assert row(out, "lora", "16", "HM")[5].startswith("⚠ ") and "partial" in row(out, "lora", "16", "HM")[5]


def test_protocols_keep_to_their_own_tables(results, tmp_path, capsys):
    out, _ = summarize(results, tmp_path, capsys, "--tables", "paper,efficiency")
    paper = section(out, "## Top-1 accuracy")
    assert row(paper, "Method")[2:] == ["ImageNet", "Caltech", "DTD", "Average"]
    # One few-shot run per dataset (99.0), never the base-to-novel runs' base accuracy; the expected
    # seeds are the few-shot runs' (1, 2), not the base-to-novel runs' third.
    assert row(paper, "lora", "16")[3:5] == ["⚠ 99.00 (n=1) no seed 2", "⚠ 99.00 (n=1) no seed 2"]
    assert "base2new" not in out and "(protocol=" not in out
    efficiency = section(out, "## Efficiency")
    assert [line for line in efficiency.splitlines() if "| DTD |" in line and "| lora |" in line][0].endswith(
        "⚠ 99.00 (n=1) no seed 2 |")


def test_reference_prints_the_published_base2new_averages(results, tmp_path, capsys):
    out, _ = summarize(results, tmp_path, capsys, "--tables", "base2new", "--reference")
    published = section(out, "## Published base-to-novel averages")
    for method, (base, new, hm) in PUBLISHED_BASE2NEW.items():
        assert row(published, method)[1:] == [f"{base:.2f}", f"{new:.2f}", f"{hm:.2f}"]
    assert row(published, "CLIP-SVD")[1:] == ["84.38", "76.29", "80.13"]
    assert row(published, "zero-shot CLIP")[1:] == ["69.34", "74.22", "71.70"]


def test_cross_dataset_and_domain_generalization_tables(results, tmp_path, capsys):
    out, _ = summarize(results, tmp_path, capsys, "--tables", "cross_dataset,domain_generalization")
    cross = section(out, "## Cross-dataset transfer")
    assert row(cross, "Method") == ["Method", "Shots", "Source", "Source accuracy", "Caltech", "DTD",
                                    "Average over targets"]
    assert row(cross, "lora", "16", "ImageNet")[3:] == ["71.50 ± 0.71 (n=2)", "94.00 ± 1.41 (n=2)",
                                                        "44.00 ± 1.41 (n=2)", "69.00 ± 1.41 (n=2)"]
    assert row(cross, "zero-shot", "0", "ImageNet")[3:] == ["66.00 ± 0.00 (n=2)", "92.00 ± 0.00 (n=2)",
                                                            "44.00 ± 0.00 (n=2)", "68.00"]
    domain = section(out, "## Domain generalization")
    assert row(domain, "Method")[4:] == ["ImageNet-V2", "ImageNet-A", "Average over targets"]
    assert row(domain, "lora", "16", "ImageNet")[4:] == ["61.00 ± 1.41 (n=2)", "49.00 ± 1.41 (n=2)",
                                                         "55.00 ± 1.41 (n=2)"]
    with open(tmp_path / "out" / "domain_generalization_table.csv") as f:
        rows = {(r["method"], r["dataset"]): r for r in csv.DictReader(f)}
    assert rows[("lora", "average")]["mean"] == "55" and rows[("lora", "imagenet")]["mean"] == "71.5"


def test_default_tables_leave_out_the_empty_ones_and_named_ones_say_so(tmp_path, capsys):
    path = tmp_path / "fewshot.jsonl"
    append_jsonl(path, record("dtd", 1, test_acc=60.0, zero_shot_acc=40.0))
    out, err = summarize(path, tmp_path, capsys)
    assert "## Top-1 accuracy" in out and "## Efficiency" in out and "Base-to-novel" not in out
    assert not (tmp_path / "out" / "base2new_table.csv").exists()
    _, err = summarize(path, tmp_path, capsys, "--tables", "base2new")
    assert "note: no runs for the base2new table" in err


# --- the sweep scripts -----------------------------------------------------------------------------

def dry_run(script: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATASETS", "SHOTS", "SEEDS", "LOG_DIR", "EXTRA_ARGS", "TARGETS", "MODE")}
    return subprocess.run([str(REPO / script), *args, "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                          env={**clean, "RESULTS_FILE": str(tmp_path / "r.jsonl"), **env}, timeout=120)


def planned(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return [line.strip() for line in proc.stdout.splitlines() if "main.py --mode" in line]


def test_run_base2new_sweeps_16_shots_seeds_1_to_3_under_the_protocol(tmp_path):
    proc = dry_run("run_base2new.sh", tmp_path, "qdora", DATASETS="dtd eurosat", EXTRA_ARGS="--n_iters 2")
    commands = planned(proc)
    assert len(commands) == 2 * 3
    assert all("--mode qdora" in c and "--shots 16" in c and "--protocol base2new --n_iters 2" in c for c in commands)
    assert {c.split("--seed ")[1].split()[0] for c in commands} == {"1", "2", "3"}
    assert "logs/base2new/ViT-B-16/dtd/16shots_seed1_qdora.log" in proc.stdout


def test_run_cross_dataset_trains_on_imagenet_and_evaluates_the_14_targets(tmp_path):
    commands = planned(dry_run("run_cross_dataset.sh", tmp_path, "lora"))
    assert len(commands) == 3 and all("--dataset imagenet --shots 16" in c for c in commands)
    targets = commands[0].split("--eval_datasets ")[1].split()
    assert len(targets) == 14 and "imagenet" not in targets
    assert targets[-4:] == ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]


def test_protocol_scripts_need_a_mode(tmp_path):
    for script in ("run_base2new.sh", "run_cross_dataset.sh"):
        proc = subprocess.run([str(REPO / script)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "usage:" in proc.stderr and "MODE" in proc.stderr
