"""The pictures of `summarize.py --plot` beside the accuracy-vs-shots plot (plot.py), each drawn where the runs
have its data:

    accuracy_vs_memory.png   test accuracy against the training loop's peak memory, one point per method
    accuracy_vs_time.png     ... against the training time; in both the Pareto front (no method both cheaper and
                             more accurate) is drawn, one panel per backbone and shot count
    reliability/*.png        a reliability diagram per method, backbone and shot count (and for zero-shot), its
                             runs' bins pooled (summaries/reliability.py draws it)
    interpolation.png        --interpolate's curves: test accuracy, the --eval_datasets targets' mean accuracy
                             (the forgetting curve) and ECE against alpha, per method

The points and curves average the runs the tables average (methods.py's rows: over datasets and
seeds); a method's point uses the mean training time and the highest peak memory, as its row.
"""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path

from summaries.methods import method_rows
from summaries.output import replaced_when_written
from summaries.records import by_backbone, expected_seeds, method_sort_key
from summaries.reliability import draw_reliability_diagram

COSTS = {"accuracy_vs_memory.png": ("peak_memory_mb", "peak memory of training (MB)"),
         "accuracy_vs_time.png": ("train_seconds", "training time (s)")}


def draw_pictures(records: list[dict], seeds_given: tuple[int, ...] | None, out: Path) -> list[Path]:
    """Every picture the few-shot `records` have data for; the files written."""
    written = []
    for name, (cost, label) in COSTS.items():
        if pareto_plot(records, seeds_given, cost, label, out / name):
            written.append(out / name)
    written += reliability_diagrams(records, out / "reliability")
    if interpolation_curves(records, out / "interpolation.png"):
        written.append(out / "interpolation.png")
    return written


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats on both (cheaper or as cheap, and more accurate), by cost."""
    front = []
    for cost, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((cost, accuracy))
    return front


def pareto_plot(records: list[dict], seeds_given: tuple[int, ...] | None, cost: str, label: str, path: Path) -> bool:
    """Test accuracy against `cost` (a MethodRow attribute), a panel per backbone and shots; False: nothing to draw."""
    panels = []
    for backbone, mine in by_backbone(records):
        for shots in sorted({r["shots"] for r in mine}):
            runs = [r for r in mine if r["shots"] == shots]
            points = [(row.method, getattr(row, cost), row.test.mean)
                      for row in method_rows(runs, expected_seeds(runs, seeds_given))
                      if getattr(row, cost) and row.test.mean is not None]
            if points:
                panels.append((backbone, shots, points))
    if not panels:
        return False
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    fig = Figure(figsize=(max(7.0, 5.5 * len(panels)), 4.8), layout="constrained")
    for ax, (backbone, shots, points) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for method, x, y in points:
            ax.plot(x, y, "o")
            ax.annotate(method, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
        front = pareto_front([(x, y) for _, x, y in points])
        ax.plot([x for x, _ in front], [y for _, y in front], "--", color="gray", drawstyle="steps-post",
                label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{backbone}, {shots} shots", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Accuracy against cost, one point per method\n(mean over datasets and seeds; dashed: the Pareto front)",
                 fontsize="medium")
    with replaced_when_written(path, ".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110)
    return True


def pooled_bins(runs: list[dict], which: str) -> tuple[list[int], list[float | None], list[float | None], float]:
    """The runs' `reliability[which]` bins added up: counts, accuracy, confidence per bin, and the pooled ECE."""
    bins = len(runs[0]["reliability"][which]["bin_counts"])
    counts, correct, confidence = [0] * bins, [0.0] * bins, [0.0] * bins
    for r in runs:
        part = r["reliability"][which]
        for k, (n, acc, conf) in enumerate(zip(part["bin_counts"], part["bin_accuracy"], part["bin_confidence"])):
            if n:
                counts[k] += n
                correct[k] += acc * n
                confidence[k] += conf * n
    total = sum(counts)
    ece = sum(abs(c - s) for c, s in zip(correct, confidence)) / total
    return (counts, [c / n if n else None for c, n in zip(correct, counts)],
            [s / n if n else None for s, n in zip(confidence, counts)], ece)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def reliability_diagrams(records: list[dict], folder: Path) -> list[Path]:
    """A diagram per (backbone, shots, method) of the trained models, and per (backbone, zero-shot row)."""
    with_bins = [r for r in records if isinstance(r.get("reliability"), dict)]
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in with_bins:
        groups[(r["backbone"], f"{r['shots']}shots", r["method"])].append(r)
    zero_shot: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in with_bins:
        zero_shot[(r["backbone"], r["zero_shot_method"])].append(r)
    written = []
    for (backbone, shots, method), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                  method_sort_key(kv[0][2]))):
        path = folder / f"{_slug(backbone)}_{shots}_{_slug(method)}.png"
        _diagram(path, runs, "test", f"{method}, {shots.removesuffix('shots')} shots, {backbone}")
        written.append(path)
    for (backbone, method), runs in sorted(zero_shot.items()):
        # One run per dataset: a zero-shot model's figures do not depend on the seed.
        runs = list({r["dataset_label"]: r for r in runs}.values())
        path = folder / f"{_slug(backbone)}_{_slug(method)}.png"
        _diagram(path, runs, "zero_shot", f"{method}, {backbone}")
        written.append(path)
    return written


def _diagram(path: Path, runs: list[dict], which: str, title: str) -> None:
    counts, accuracy, confidence, ece = pooled_bins(runs, which)
    datasets = sorted({r["dataset_label"] for r in runs})
    draw_reliability_diagram(path, counts, accuracy, confidence, ece,
                             f"{title}\n{len(runs)} run(s) pooled: {', '.join(datasets)}")


def interpolation_curves(records: list[dict], path: Path) -> bool:
    """Test accuracy, the targets' mean accuracy and ECE against alpha, per method; False: no --interpolate runs."""
    runs = [r for r in records if r.get("interpolation")]
    if not runs:
        return False
    curves: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    one_backbone = len({r["backbone"] for r in runs}) == 1
    for r in runs:
        name = f"{r['method']}, {r['shots']} shots" + ("" if one_backbone else f", {r['backbone']}")
        for entry in r["interpolation"]:
            alpha = entry["alpha"]
            curves[name]["test_acc"][alpha].append(entry["test_acc"])
            curves[name]["test_ece"][alpha].append(entry["test_ece"])
            targets = entry.get("eval_datasets") or {}
            if targets:
                curves[name]["targets"][alpha].append(statistics.fmean(targets.values()))
    panels = [("test_acc", "test accuracy (%)"), ("targets", "--eval_datasets targets, mean accuracy (%)"),
              ("test_ece", "test ECE (%)")]
    panels = [(key, label) for key, label in panels if any(curve[key] for curve in curves.values())]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(7.0, 5 * len(panels)), 4.2), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for name in sorted(curves, key=method_sort_key):
            by_alpha = curves[name][key]
            if by_alpha:
                alphas = sorted(by_alpha)
                ax.plot(alphas, [statistics.fmean(by_alpha[a]) for a in alphas], "o-", label=name)
        ax.set_xlabel("alpha (0: pretrained, 1: trained)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Between the pretrained and the trained model (WiSE-FT); mean over runs")
    with replaced_when_written(path, ".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110)
    return True
