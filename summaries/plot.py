"""The plot: average accuracy vs shots per method, optionally with the published CLIP-LoRA line."""
from __future__ import annotations

import sys
from operator import attrgetter
from pathlib import Path

from qlora_clip.paper import PAPER_DATASETS, PUBLISHED_CLIP_LORA
from summaries.fewshot import PaperRow
from summaries.output import replaced_when_written
from summaries.records import by_backbone, method_sort_key


def plot(rows: list[PaperRow], records: list[dict], path: Path, reference: bool) -> None:
    """Average accuracy vs shots, one line per method (and backbone); hollow markers are partial averages."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    one_backbone = len({row.backbone for row in rows}) == 1
    trained = [row for row in rows if row.shots and row.average.mean is not None]
    for backbone, mine in by_backbone(trained, attrgetter("backbone")):
        for method in sorted({row.method for row in mine}, key=method_sort_key):
            line = sorted((row for row in mine if row.method == method), key=lambda row: row.shots)
            label = method if one_backbone else f"{method}, {backbone}"
            drawn = ax.plot([r.shots for r in line], [r.average.mean for r in line], "-", label=label)[0]
            for r in line:
                partial = bool(r.average.problems)
                ax.errorbar(r.shots, r.average.mean, yerr=r.average.std or 0, fmt="o", color=drawn.get_color(),
                            markerfacecolor="white" if partial else drawn.get_color(), capsize=3)
                if r.average.drawn is not None:  # trained on fewer distinct images than its x says
                    ax.annotate(f"*{r.average.drawn}", (r.shots, r.average.mean), textcoords="offset points",
                                xytext=(4, 4), fontsize="small", color=drawn.get_color())
    shots_seen = sorted({row.shots for row in trained})
    if reference:
        ax.plot(list(PUBLISHED_CLIP_LORA), list(PUBLISHED_CLIP_LORA.values()), "--", color="gray",
                label="CLIP-LoRA, published (ViT-B/16, 11 datasets)")
        shots_seen = sorted(set(shots_seen) | set(PUBLISHED_CLIP_LORA))
        datasets = {r["dataset_label"] for r in records}
        if datasets != set(PAPER_DATASETS):
            print("note: the published CLIP-LoRA line averages the 11 paper datasets; these results cover "
                  f"{', '.join(sorted(datasets))}", file=sys.stderr)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots_seen, [str(s) for s in shots_seen])
    ax.minorticks_off()
    ax.set_xlabel("shots per class")
    ax.set_ylabel("average top-1 accuracy (%)")
    n = len({r["dataset_label"] for r in records})
    over_drawn = "; *N: N distinct images per class drawn" if any(r.average.drawn is not None for r in trained) else ""
    ax.set_title(f"Average over {n} dataset{'s' * (n != 1)} (hollow: partial average{over_drawn})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    with replaced_when_written(path, ".tmp.png") as tmp:
        fig.savefig(tmp, dpi=120)
