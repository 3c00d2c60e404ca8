"""What a run measures on its test sets besides top-1 accuracy (docs/evaluation.md defines each figure):

    calibration.py  ECE (15 equal-width bins, top label), NLL, Brier score and a reliability diagram's
                    bins, accumulated on the device over one pass and summable over processes
    ood.py          out-of-distribution detection: the MCM score, AUROC and FPR at 95 % TPR
"""
