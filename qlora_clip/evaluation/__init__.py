"""Evaluating a model on test sets, and the metrics.

    metrics.py          accuracy from counts, the harmonic mean (metrics.py at the top level re-exports them)
    evaluator.py        test-set accuracy, sharded over processes, image features reused when frozen
    zero_shot_key.py    what a zero-shot accuracy depends on (the store's key)
    zero_shot_cache.py  the zero-shot store: keyed JSON entries, written atomically, verified
    extra_evals.py      what a run evaluates besides its test set: base2new's new classes, --eval_datasets
    calibration.py      ECE (15 top-label bins), NLL and Brier score, accumulated in the evaluation's one pass
    ood.py              out-of-distribution detection: the MCM score, AUROC, FPR at 95 % TPR
    scores.py           what one pass gives back (Evaluation: accuracy, calibration, kept logits or scores)
    beyond.py           the figures beyond the accuracy in a run: calibration, --ood_datasets, --interpolate
    predictions.py      the --save_predictions file (safetensors: logits and labels, zero-shot and trained)
    selection.py        which step's model a run reports: the last, or the best on the val images (--select_on)
"""
