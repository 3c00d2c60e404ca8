"""The baselines of the field's few-shot tables, as entries of the methods table (methods/table.py, BASELINES):
fitted on the frozen base's features, on the same draws, test sets and backbones as every method, through
the same main.py path (`main.py --mode NAME`).

    base.py                FeatureBaseline (the method interface for all of them), what a baseline is given
                           (BaselineInputs) and gives back (Fitted)
    hparams.py             each baseline's published hyperparameters and schedule, with their sources
    templates.py           CLIP's prompt templates (80 for ImageNet, the per-dataset sets), as data
    views.py               the train images' augmented views, each seeded per (seed, stream, view, image)
    features.py            FeatureBank: a run's val and train-view features, each encoded once (cached)
    text.py                class text features: one template, or the mean over a template set
    schedules.py           Dassl's epoch schedule and loop (CoOp, CLIP-Adapter): warm-up, cosine, batches
    zero_shot_ensemble.py  zero-shot CLIP with averaged prompt-ensemble text features
    linear_probe.py        L2-regularised logistic regression, C searched on val as CoOp's lpclip does
    lp_plus_plus.py        LP++: text-blended linear probe with its data-derived step sizes
    tip_adapter.py         Tip-Adapter's cache model (training-free) and Tip-Adapter-F (keys trained)
    clip_adapter.py        CLIP-Adapter: a residual bottleneck MLP on the image embedding
    coop.py                CoOp: 16 learned context vectors in the text tower's input
    saved_fit.py           a fit that is saved and reloaded (--save_path, --eval_only), its rows found by prompt
    proker.py              ProKeR: proximal kernel ridge regression of the zero-shot residual, training-free
    clap.py                CLAP: a zero-shot-initialised probe with class-adaptive multipliers, validation-free

hparams and templates import no torch (the table reads them); the rest do. docs/baselines.md says what
each trains, its schedule with the citation, and where we differ.
"""
