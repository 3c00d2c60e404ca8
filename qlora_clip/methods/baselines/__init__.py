"""The baselines of the field's few-shot tables, on the same draws, test sets and backbones as the
adapters: `main.py --mode NAME` with NAME one of qlora_clip.methods.table.BASELINE_MODES.

    hparams.py             each baseline's published hyperparameters and schedule, with their sources
    templates.py           CLIP's prompt templates (80 for ImageNet, the per-dataset sets), as data
    flags.py               main.py flags a baseline does not take (its hyperparameters are its paper's)
    backbone.py            the frozen CLIP, no adapter
    views.py               the train images' augmented views, each seeded per (seed, stream, view, image)
    feature_cache.py       frozen features on disk: keyed, written atomically, verified when read
    features.py            FeatureBank: a run's test, val and train-view features, each encoded once
    text.py                class text features: one template, or the mean over a template set
    base.py                what every baseline is given (BaselineInputs) and gives back (Fitted)
    schedules.py           Dassl's epoch schedule and loop (CoOp, CLIP-Adapter): warm-up, cosine, batches
    runner.py              one baseline run: features, zero-shot, fit, test accuracy (main.py records it)
    zero_shot_ensemble.py  zero-shot CLIP with averaged prompt-ensemble text features
    linear_probe.py        L2-regularised logistic regression, C searched on val as CoOp's lpclip does
    lp_plus_plus.py        LP++: text-blended linear probe with its data-derived step sizes
    tip_adapter.py         Tip-Adapter's cache model (training-free) and Tip-Adapter-F (keys trained)
    clip_adapter.py        CLIP-Adapter: a residual bottleneck MLP on the image embedding
    coop.py                CoOp: 16 learned context vectors in the text tower's input

hparams, templates and flags import no torch (the CLI and methods.py read them); the rest do.
docs/baselines.md says what each trains, its schedule with the citation, and where we differ.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qlora_clip.methods.baselines.runner import BaselineRun
    from qlora_clip.training.distributed import Distributed
    from qlora_clip.training.precision import Precision
    from qlora_clip.run.spec import RunSpec


def run(spec: RunSpec, dist: Distributed, precision: Precision) -> BaselineRun:
    """main.py's one entry point into the baselines (runner.run); imported late so that the CLI and
    methods.py, which import this package's data modules, never load torch through it."""
    from qlora_clip.methods.baselines.runner import run as run_baseline

    return run_baseline(spec, dist, precision)
