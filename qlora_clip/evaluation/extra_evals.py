"""What a run evaluates beyond its own test set, and the results fields that come of it.

- `--protocol base2new` (CoCoOp's base-to-novel generalization): the run trains on the base
  classes, and main.py's test set is theirs (datasets/base2new.py). Here the new classes' test
  images are evaluated against the new class names only, a second classifier, and the results line
  gets base, new and their harmonic mean, trained and zero-shot.
- `--eval_datasets` (cross-dataset transfer, domain generalization): the adapter on each named
  dataset's full test set with that dataset's own class prompts, zero-shot beside it.

The test sets are read when the run starts (main.py reads them with datasets.build_eval_images), so a
missing one stops it before training; their images are prepared (and cached, as the run's own) one
set at a time when they are evaluated.
"""
from __future__ import annotations

import logging

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.data.items import EvalImages, FewShotDataset
from qlora_clip.evaluation.evaluator import EvalSet, EvalSettings, Evaluator, build_eval_set
from qlora_clip.evaluation.metrics import harmonic_mean

log = logging.getLogger("qlora-clip")


def base2new_fields(base_acc: float, new_acc: float, zero_shot_base_acc: float, zero_shot_new_acc: float) -> dict:
    """Base-to-novel's results fields: base, new and HM = 2BN/(B+N), of the adapted and the zero-shot model."""
    return dict(base_acc=base_acc, new_acc=new_acc, hm_acc=harmonic_mean(base_acc, new_acc),
                         zero_shot_base_acc=zero_shot_base_acc, zero_shot_new_acc=zero_shot_new_acc,
                         zero_shot_hm_acc=harmonic_mean(zero_shot_base_acc, zero_shot_new_acc))


class ExtraEvaluations:
    """The test sets a run evaluates beside its own: base-to-novel's new classes, --eval_datasets targets."""

    def __init__(self, data: FewShotDataset, targets: list[EvalImages], tokenizer, settings: EvalSettings):
        self.protocol = data.protocol
        self.new_classes = data.new
        self.targets = list(targets)
        self.tokenizer = tokenizer
        self.settings = settings
        if self.new_classes is not None:
            log.info("base2new: trained and tested on %d base classes; %d new classes (%d test images) never "
                     "trained on", len(data.classnames), len(self.new_classes.classnames), len(self.new_classes.test))

    def eval_set(self, images: EvalImages) -> EvalSet:
        """Its test images against its own class names only."""
        prompts = ClassPrompts(self.tokenizer, images.prompts(), self.settings.dist.device, text=self.settings.text,
                               buckets=self.settings.text_buckets, classes=images)
        return build_eval_set(images.name, images.test, images.load_image, prompts, self.settings)

    def accuracies(self, evaluator: Evaluator, images: EvalImages) -> tuple[float, float, bool]:
        """(adapted, zero-shot) accuracy on one test set, and whether the zero-shot one was stored by an
        earlier run; zero-shot first, so a frozen vision tower's image features are encoded once and reused."""
        test = self.eval_set(images)
        zero_shot = evaluator.zero_shot(test)
        return evaluator.accuracy(test, desc=f"test {images.name}"), zero_shot, test.zero_shot_cached

    def results(self, evaluator: Evaluator, test_acc: float, zero_shot_acc: float) -> dict:
        """The results fields of the protocol and the targets; `test_acc`/`zero_shot_acc` are the run's own."""
        fields = dict(protocol=self.protocol)
        cached = {}
        if self.new_classes is not None:
            new_acc, zero_shot_new_acc, cached[self.new_classes.name] = self.accuracies(evaluator, self.new_classes)
            fields.update(base2new_fields(test_acc, new_acc, zero_shot_acc, zero_shot_new_acc))
            log.info("base2new: base %.2f%% new %.2f%% HM %.2f%% (zero-shot: base %.2f%% new %.2f%% HM %.2f%%)",
                     fields["base_acc"], fields["new_acc"], fields["hm_acc"], fields["zero_shot_base_acc"],
                     fields["zero_shot_new_acc"], fields["zero_shot_hm_acc"])
        if self.targets:
            per_target = {}
            for target in self.targets:
                test, zero_shot, cached[target.name] = self.accuracies(evaluator, target)
                per_target[target.name] = {"test_acc": test, "zero_shot_acc": zero_shot}
                log.info("on %s (%d classes, %d images): zero-shot %.2f%% -> test %.2f%%", target.name,
                         len(target.classnames), len(target.test), zero_shot, test)
            fields.update(dict(eval_datasets=per_target))
        if cached:
            fields.update(dict(extra_zero_shot_cached=cached))
        return fields
