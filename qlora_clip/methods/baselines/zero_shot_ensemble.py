"""Zero-shot CLIP with prompt ensembles: per class, the mean of its normalised text features over a
template set (CLIP's 80 ImageNet templates, or CLIP's set for the dataset), normalised again.

Nothing is trained and no train image is used; the 'fit' encodes the templates. The row sits beside
the single-template zero-shot row (`zero_shot_acc`, the run's --template) of every results line.
"""
from __future__ import annotations

import torch

from qlora_clip.methods.baselines import hparams
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.baselines.base import Baseline, BaselineInputs, FeatureBaseline, Fitted, Needs
from qlora_clip.methods.baselines.templates import template_set
from qlora_clip.methods.baselines.text import ensemble_features


def _needs(dataset: str, shots: int) -> Needs:
    return Needs()


def _fitter(kind: str):
    def fit(inputs: BaselineInputs) -> Fitted:
        name, templates = template_set(kind, inputs.dataset)

        def text(prompts: ClassPrompts) -> torch.Tensor:
            """The ensemble's class features for the classes of `prompts` (another dataset's: its own template set)."""
            classes = prompts.classes
            if classes is None or classes.classnames == inputs.classnames:
                return weights
            _, own = template_set(kind, classes.name)
            return ensemble_features(inputs.model, inputs.tokenizer, classes.classnames, own, inputs.precision)

        weights = ensemble_features(inputs.model, inputs.tokenizer, inputs.classnames, templates, inputs.precision)
        return Fitted(predict=inputs.zero_shot_logits, text=text,
                      params={**hparams.ZERO_SHOT_ENSEMBLE, "template_set": name, "templates": len(templates)})
    return fit


IMAGENET_ENSEMBLE = Baseline(needs=_needs, fit=_fitter("imagenet"))
DATASET_ENSEMBLE = Baseline(needs=_needs, fit=_fitter("dataset"))


class ImageNetEnsemble(FeatureBaseline):
    baseline = IMAGENET_ENSEMBLE


class DatasetEnsemble(FeatureBaseline):
    baseline = DATASET_ENSEMBLE
