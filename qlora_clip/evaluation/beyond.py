"""What a run measures beyond its test accuracy, and the results fields that come of it (docs/evaluation.md).

- Calibration (every run): ECE, NLL and Brier score of the zero-shot and the trained model on the
  run's test set, from the same passes as the accuracies (evaluator.Evaluator.evaluate), and the
  reliability diagram's bins.
- `--ood_datasets`: the run's test images (in-distribution) against each set's images, scored by
  MCM with the run's own classifier (ood.py): AUROC and FPR at 95 % TPR, zero-shot and trained. The
  test set's scores come from its accuracy passes; each OOD set costs one pass per model (its
  images are encoded once when the vision tower is frozen).
- `--interpolate`: at each alpha, the model between the pretrained and the trained one (the
  method's `interpolated`): its accuracy and calibration on the test set, its accuracy on each
  --eval_datasets target (the forgetting curve) and its OOD figures; one pass per alpha and set.
- `--save_predictions`: the test set's logits and labels, zero-shot and trained (predictions.py),
  the logits of the accuracy passes themselves.

Rates in the line are percentages, as the accuracies: ECE, AUROC, FPR.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.data.items import EvalImages
from qlora_clip.evaluation.evaluator import EvalSet, EvalSettings, Evaluator, build_eval_set
from qlora_clip.evaluation.ood import auroc, fpr_at_tpr
from qlora_clip.evaluation.predictions import write_predictions
from qlora_clip.evaluation.scores import Evaluation
from qlora_clip.evaluation.settings import EvalConfig

log = logging.getLogger("qlora-clip")


@dataclass(frozen=True)
class PredictionsFile:
    """Where --save_predictions writes, and what the file says of the run (predictions.py)."""
    path: Path
    run: str
    dataset: str
    classnames: list[str]
    sources: list[str]


def ood_figures(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict:
    """AUROC and FPR at 95 % TPR (percent) of one model, the in-distribution images being the positives."""
    return {"auroc": 100 * auroc(id_scores, ood_scores), "fpr95": 100 * fpr_at_tpr(id_scores, ood_scores)}


class BeyondAccuracy:
    """The run's figures beyond the accuracy: its test set's passes (`zero_shot`, `trained`) keep what the
    figures need, `results` runs the extra passes (OOD sets, interpolation) and gives the fields."""

    def __init__(self, settings: EvalConfig, ood_sets: list[EvalImages], prompts: ClassPrompts,
                 eval_settings: EvalSettings, predictions: PredictionsFile | None = None):
        self.ood_sets = list(ood_sets)
        self.alphas = list(settings.interpolate)
        self.prompts = prompts
        self.eval_settings = eval_settings
        self.predictions = predictions if settings.save_predictions else None
        # The test set's passes keep per image what the figures need: the logits for the file, else MCM's scores.
        self.keep = "logits" if self.predictions else "scores" if self.ood_sets else None
        self.zero_shot_pass: Evaluation | None = None
        self.trained_pass: Evaluation | None = None
        self.errors: list[str] = []  # outputs that failed (a full disk): raised after the line is written

    def zero_shot(self, evaluator: Evaluator, test: EvalSet) -> float:
        """The zero-shot accuracy on the test set, its pass kept (or the zero-shot store's, where nothing per image
        is kept)."""
        test.keep = self.keep
        accuracy = evaluator.zero_shot(test)
        self.zero_shot_pass = test.last
        return accuracy

    def trained(self, evaluator: Evaluator, test: EvalSet) -> float:
        """The trained model's accuracy on the test set, its pass kept."""
        accuracy = evaluator.accuracy(test)
        self.trained_pass = test.last
        return accuracy

    def results(self, evaluator: Evaluator, adapted, test: EvalSet, targets: list[EvalImages] = (),
                target_set=None) -> dict:
        """The fields: calibration always; `ood`, `interpolation`, `predictions_file` when asked for. `targets` and
        `target_set` (ExtraEvaluations' --eval_datasets and its EvalSet builder) add each alpha's target accuracies."""
        zero_shot, trained = self.zero_shot_pass, self.trained_pass
        fields = {**zero_shot.fields("zero_shot"), **trained.fields("test"),
                  "reliability": {"zero_shot": zero_shot.bins(), "test": trained.bins()}}
        log.info("calibration: ECE %.2f%% -> %.2f%%, NLL %.3f -> %.3f, Brier %.3f -> %.3f (zero-shot -> trained)",
                 fields["zero_shot_ece"], fields["test_ece"], fields["zero_shot_nll"], fields["test_nll"],
                 fields["zero_shot_brier"], fields["test_brier"])
        along = [self._interpolated_test(evaluator, adapted, test, alpha) for alpha in self.alphas]
        if self.alphas and targets:
            for target in targets:
                self._interpolated_target(evaluator, adapted, target_set(target), along)
        if self.ood_sets:
            fields["ood"] = {images.name: self._ood(evaluator, adapted, images, along) for images in self.ood_sets}
        if self.alphas:
            fields["interpolation"] = [entry for entry, _ in along]
            for entry, _ in along:
                log.info("interpolation alpha %g: test %.2f%%, ECE %.2f%%", entry["alpha"], entry["test_acc"],
                         entry["test_ece"])
        if self.predictions is not None:
            fields["predictions_file"] = self._write_predictions()
        return fields

    def _interpolated_test(self, evaluator: Evaluator, adapted, test: EvalSet, alpha: float
                           ) -> tuple[dict, torch.Tensor | None]:
        """(the alpha's entry, its test scores for the OOD figures)."""
        test.keep = "scores" if self.ood_sets else None
        with adapted.interpolated(alpha):
            evaluator.accuracy(test, desc=f"alpha {alpha:g} {test.name}")
        evaluation = test.last
        entry = {"alpha": alpha, "test_acc": evaluation.accuracy, **evaluation.fields("test")}
        return entry, evaluation.scores

    def _interpolated_target(self, evaluator: Evaluator, adapted, target: EvalSet,
                             along: list[tuple[dict, torch.Tensor | None]]) -> None:
        for entry, _ in along:
            with adapted.interpolated(entry["alpha"]):
                accuracy = evaluator.accuracy(target, desc=f"alpha {entry['alpha']:g} {target.name}")
            entry.setdefault("eval_datasets", {})[target.name] = accuracy

    def _ood(self, evaluator: Evaluator, adapted, images: EvalImages,
             along: list[tuple[dict, torch.Tensor | None]]) -> dict:
        """One OOD set's figures, zero-shot and trained (and each alpha's, into `along`'s entries): its images
        prepared once, scored with the run's own class prompts."""
        ood = build_eval_set(images.name, images.test, images.load_image, self.prompts, self.eval_settings)
        ood.key = None  # no zero-shot store: an accuracy on unlabelled images means nothing to a later run
        ood.keep = "scores"
        evaluator.zero_shot(ood)
        zero_shot = ood.last
        evaluator.accuracy(ood, desc=f"OOD {images.name}")
        figures = ood_figures(self.trained_pass.scores, ood.last.scores)
        before = ood_figures(self.zero_shot_pass.scores, zero_shot.scores)
        out = {"images": len(images.test), **figures, "zero_shot_auroc": before["auroc"],
               "zero_shot_fpr95": before["fpr95"]}
        log.info("OOD %s (%d images): AUROC %.2f%% -> %.2f%%, FPR@95 %.2f%% -> %.2f%% (zero-shot -> trained)",
                 images.name, len(images.test), before["auroc"], figures["auroc"], before["fpr95"], figures["fpr95"])
        for entry, id_scores in along:
            with adapted.interpolated(entry["alpha"]):
                evaluator.accuracy(ood, desc=f"alpha {entry['alpha']:g} OOD {images.name}")
            entry.setdefault("ood", {})[images.name] = ood_figures(id_scores, ood.last.scores)
        return out

    def _write_predictions(self) -> str | None:
        """The file, written by the main process; its path, or None when it could not be written (the run's line
        is kept, and the failure raised after it: `errors`)."""
        target = self.predictions
        if self.eval_settings.dist.is_main:
            try:
                write_predictions(target.path, self.zero_shot_pass.logits, self.trained_pass.logits,
                                  self.trained_pass.labels, target.run, target.dataset, target.classnames,
                                  target.sources)
            except OSError as err:
                self.errors.append(f"--save_predictions: could not write {target.path} ({err})")
                log.error("%s", self.errors[-1])
                return None
        return str(target.path)
