"""2SFS (Farina et al., CVPR 2025): two stages of one schedule through the shared training loop.

Of the run's n_iters x shots optimizer steps, the first int(0.6 x total) train the LayerNorms of every block of
both towers (stage 1: layer_norm1 and layer_norm2 of the selected layers, `Method.targets == "layer_norms"`);
then the LayerNorms freeze and a linear classifier, one row per class initialised with the class prompts'
normalised features from the stage-1 text tower, trains for the remaining steps (stage 2). Each stage is a
call of the shared loop (FitInputs.train_steps) with its own TrainConfig: its own AdamW and its own cosine to
1e-6 over its steps (so stage 2 restarts at the learning rate), stage 2 continuing the run's stream of batches
where stage 1 stopped (TrainConfig.first_step).

Logits are the family's (CLIP: 100 x cosine) of the image embedding and the class rows, normalised. A class
the classifier has a row for uses it; any other class prompt (base-to-novel's new classes, --eval_datasets)
is encoded by the stage-1 text tower: the official "selective inference" (fs/twostage.py#L79-L142). The
classifier's rows are keyed by their prompt text, so a prompt list in any order, or a share of it, finds them.

The official code also marks ln_pre, ln_post and ln_final trainable, then freezes them again (a generator
yields them twice, fs/utils/model_utils.py#L12-L20): its published numbers come from the per-block
LayerNorms only, which is what we train (61,440 parameters on ViT-B/16).

Saved form: the LayerNorms as BitFit's are (tuned_weights.safetensors under the base's names,
tuned_config.json), and the classifier (classifier.safetensors) with the prompts of its rows
(classifier.json). Not mergeable: the classifier is not a part of the family's model class.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.errors import UserError
from qlora_clip.methods.interface import FitInputs
from qlora_clip.methods.own_tuners import TunedParameters
from qlora_clip.methods.published import TWO_STAGE
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.training.result import TrainResult

CLASSIFIER_FILE = "classifier.safetensors"
CLASSIFIER_PROMPTS = "classifier.json"


def stage_steps(total: int, fraction: float = TWO_STAGE["stage1_fraction"]) -> tuple[int, int]:
    """(stage 1, stage 2) optimizer steps of a run of `total`: int(total x fraction), then the rest
    (fs/twostage.py#L261-L262, #L296)."""
    first = int(total * fraction)
    return first, total - first


def combined(first: TrainResult, second: TrainResult) -> TrainResult:
    """The run's result from its two stages' (steps, time, losses and images add up; the memory peak is the
    higher one; the text pass is stage 1's, where the text tower trains)."""
    skipped = None if first.skipped_steps is None else first.skipped_steps + (second.skipped_steps or 0)
    peaks = [r.peak_memory for r in (first, second) if r.peak_memory and r.peak_memory.get("peak_memory_mb")]
    return TrainResult(steps=first.steps + second.steps, seconds=first.seconds + second.seconds,
                       losses=first.losses + second.losses, images_seen=first.images_seen + second.images_seen,
                       input_wait_seconds=first.input_wait_seconds + second.input_wait_seconds,
                       skipped_steps=skipped,
                       peak_memory=max(peaks, key=lambda p: p["peak_memory_mb"]) if peaks else first.peak_memory,
                       text_speedups=first.text_speedups or second.text_speedups)


class TwoStage(TunedParameters):
    """Stage 1: the per-block LayerNorms, trained in place (as BitFit trains biases); stage 2: a classifier."""
    tunes = ("weight", "bias")
    kind = "layer_norms"
    plain_load = False  # the classifier and its rule for other classes are this library's

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, targets: list[str],
                 originals: dict[str, torch.Tensor]):
        super().__init__(bundle, settings, targets, originals)
        self.classifier: torch.nn.Parameter | None = None
        self.rows: dict[str, int] = {}  # prompt -> its row of the classifier
        self.loaded = False
        self._zero_shot = False

    # --- the two stages -------------------------------------------------------------------------
    def fit(self, inputs: FitInputs) -> TrainResult:
        """Stage 1 then stage 2, each a call of the shared loop over its share of the run's steps."""
        run = inputs.train
        first, second = stage_steps(run.total_steps)
        stage1 = inputs.train_steps(self, dataclasses.replace(run, steps=first))
        self.start_classifier(inputs.prompts, inputs.precision)
        stage2 = inputs.train_steps(self, dataclasses.replace(run, steps=second, first_step=first))
        return combined(stage1, stage2)

    @torch.no_grad()
    def start_classifier(self, prompts: ClassPrompts, precision) -> None:
        """The switch: freeze the LayerNorms; one classifier row per class prompt, its normalised features from the
        stage-1 text tower (fs/twostage.py#L59-L65), in float32."""
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.model.eval()
        with precision.autocast():
            features = prompts.features(self.model)
        self.classifier = torch.nn.Parameter(F.normalize(features.float(), dim=-1))
        self.rows = {prompt: row for row, prompt in enumerate(prompts.prompts)}

    # --- what the trainer and the evaluator compute with ----------------------------------------
    def text_features(self, prompts: ClassPrompts) -> torch.Tensor:
        """The classifier's rows (normalised) for the classes it has; the stage-1 text tower for any other."""
        if self._zero_shot or self.classifier is None:
            return super().text_features(prompts)
        rows = [self.rows.get(prompt) for prompt in prompts.prompts]
        trained = F.normalize(self.classifier, dim=-1)
        if all(row is not None for row in rows):
            return trained[rows]
        encoded = prompts.features(self.model).to(trained.dtype) if any(r is None for r in rows) else None
        return torch.stack([trained[row] if row is not None else encoded[i] for i, row in enumerate(rows)])

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        extra = [self.classifier] if self.classifier is not None and self.classifier.requires_grad else []
        return super().trained_parameters() + extra

    def zero_shot_view(self):
        return self._pretrained()

    @contextlib.contextmanager
    def _pretrained(self) -> Iterator[None]:
        with super().zero_shot_view():
            self._zero_shot = True
            try:
                yield
            finally:
                self._zero_shot = False

    def tower_is_adapted(self, tower: str) -> bool:
        """A tower whose LayerNorms it tuned; the text side also once the classifier stands for the class prompts."""
        return super().tower_is_adapted(tower) or (tower == "text_model" and self.classifier is not None)

    # --- the record and the saved form ----------------------------------------------------------
    def classifier_params(self) -> int:
        return self.classifier.numel() if self.classifier is not None else 0

    def trainable_parameters(self) -> int:
        """Both stages' weights: the LayerNorms and the classifier (0 when loaded for --eval_only)."""
        if self.loaded:
            return 0
        return sum(t.numel() for t in self.originals.values()) + self.classifier_params()

    def fields(self) -> dict:
        fields = super().fields()
        classifier_bytes = self.classifier_params() * 4
        fields["adapter_params"] += self.classifier_params()
        fields["adapter_size_mb"] += classifier_bytes / 2**20
        fields["peft_config"] = {**fields["peft_config"], "classifier": list(self.classifier.shape)
                                 if self.classifier is not None else None}
        fields["method_args"] = {"stage1_fraction": TWO_STAGE["stage1_fraction"]}
        return fields

    def save(self, folder: Path) -> None:
        super().save(folder)
        if self.classifier is not None:
            save_file({"classifier": self.classifier.detach().float().cpu().contiguous()}, folder / CLASSIFIER_FILE)
            prompts = sorted(self.rows, key=self.rows.get)
            (folder / CLASSIFIER_PROMPTS).write_text(json.dumps({"prompts": prompts}, indent=2))

    @classmethod
    def load(cls, bundle: ClipBundle, settings: AdapterConfig, folder: Path) -> TwoStage:
        adapted = super().load(bundle, settings, folder)
        path = folder / CLASSIFIER_FILE
        if not path.exists():
            raise UserError(f"--eval_only: no saved classifier at {path}; the run that saved {folder} did not reach "
                            "stage 2. Train with the same flags and --save_path first.")
        prompts = json.loads((folder / CLASSIFIER_PROMPTS).read_text())["prompts"]
        weight = load_file(path)["classifier"]
        device = next(bundle.model.parameters()).device
        adapted.classifier = torch.nn.Parameter(weight.to(device), requires_grad=False)
        adapted.rows = {prompt: row for row, prompt in enumerate(prompts)}
        adapted.loaded = True
        return adapted
