"""Top-1 accuracy of the model on a test set: encode the images, compare with the class prompts, count.

One Evaluator serves a run's evaluations (zero-shot before training, test after), for every
method alike: it asks the method (methods/interface.Adapted) for its text features, image
embeddings and logits, and for the pretrained base (`zero_shot_view`). With several processes each
encodes its share of the test images (inputs/test_images.prepared_test_images) and the counts are
summed, so N GPUs evaluate N times faster and the accuracy is the 1-process one. When the vision
tower is not adapted (`Adapted.tower_is_adapted`), its embeddings are the same in both evaluations,
so the first evaluation of a test set keeps them and later ones only re-encode the prompts; with a
cache folder they are also stored on disk (`FrozenEmbeddings`, feature_cache.py), so the next run
on the same base and test set (a sweep's next seed, method or baseline) reads them instead of
encoding the test set again. A zero-shot accuracy that an earlier run stored for the same base and
test set (zero_shot_cache.py, keyed by zero_shot_key.py) is read instead of computed.
The same pass gives the calibration figures (calibration.py) from the logits the accuracy counts,
and, on request, keeps each image's logits or MCM score (scores.py): one pass per test set and model.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Protocol

import torch
from tqdm import tqdm

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.families import CLIP_TEXT, ImageSettings, TextSettings
from qlora_clip.data.items import Item
from qlora_clip.evaluation import feature_cache, zero_shot_cache
from qlora_clip.evaluation.calibration import ECE_BINS, CalibrationAccumulator, calibration_from_sums, sums_length
from qlora_clip.evaluation.metrics import accuracy_percent, count_correct
from qlora_clip.evaluation.ood import mcm_score
from qlora_clip.evaluation.scores import KEEP, Evaluation, gathered_in_order, sum_over_processes
from qlora_clip.evaluation.zero_shot_key import test_set_key
from qlora_clip.inputs.loaders import EvalBatches, eval_transform
from qlora_clip.inputs.test_images import cache_key, prepared_test_images
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import Precision


log = logging.getLogger(__name__)

# Test batches are at least this large: no gradients, so memory allows more than training.
MIN_EVAL_BATCH = 64


def eval_batch_size(train_batch_size: int) -> int:
    return max(train_batch_size, MIN_EVAL_BATCH)


@dataclass(frozen=True)
class EvalSettings:
    """How a run prepares its test sets: image settings, batch size, cache, workers, process share,
    the family's text rules for the class prompts of other test sets (extra_evals.py), and the length
    buckets its class prompts are encoded in (text_buckets.bucket_limit)."""
    image: ImageSettings
    batch_size: int
    cache_dir: str | None
    num_workers: int
    dist: Distributed
    text_buckets: int = 1
    text: TextSettings = CLIP_TEXT


@dataclass
class EvalSet:
    """Test images (this process's share) with the prompts of their classes, in label order."""
    name: str
    loader: EvalBatches
    prompts: ClassPrompts
    items: list[Item] = field(default_factory=list, repr=False)  # the images of `loader`, in its order
    cached: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False)
    # What it is, all processes' images (zero_shot_key); None when its images cannot be identified on disk.
    key: dict | None = field(default_factory=dict, repr=False)
    images_key: dict | None = field(default=None, repr=False)  # its images alone (test_images.cache_key)
    zero_shot_cached: bool = False  # its zero-shot accuracy was read from the zero-shot store
    # Its frozen embeddings on disk (FrozenEmbeddings): {"cached": read rather than encoded, "file": where, or None}.
    embeddings: dict = field(default_factory=lambda: {"cached": False, "file": None}, repr=False)
    keep: str | None = None  # what its passes keep per image (scores.KEEP): logits, MCM scores, or nothing
    last: Evaluation | None = field(default=None, repr=False)  # its latest pass (or the zero-shot store's entry)


def build_eval_set(name: str, items: list[Item], load_image: Callable, prompts: ClassPrompts,
                   settings: EvalSettings) -> EvalSet:
    """This process's share of the test images, preprocessed once (cached across a sweep's runs)."""
    image, dist = settings.image, settings.dist
    # One identity of the images (stats, and hashes where cheap) for both caches: pixels and zero-shot.
    images_key = cache_key(name, items, image.resize_size, image.image_size, load_image, image.center_crop)
    pixels, labels = prepared_test_images(name, items, load_image, eval_transform(image), image.resize_size,
                                          image.image_size, settings.cache_dir, settings.num_workers, dist.rank,
                                          dist.world, center_crop=image.center_crop, key=images_key)
    # Test images that cannot be identified on disk are never cached, and neither is their zero-shot accuracy.
    key = test_set_key(images_key, prompts.prompts) if images_key is not None else None
    return EvalSet(name, EvalBatches(pixels, labels, image, settings.batch_size, dist.device), prompts,
                   list(items[dist.rank::dist.world]), key=key, images_key=images_key)


@dataclass(frozen=True)
class ZeroShotReuse:
    """Where zero-shot accuracies are stored, and the base model's part of their keys (zero_shot_key.base_key)."""
    folder: Path
    base: dict


@dataclass(frozen=True)
class FrozenEmbeddings:
    """Where a frozen vision tower's test embeddings are stored (feature_cache.py's files), and the base model's
    part of their keys (zero_shot_key.base_key: the checkpoint's files, precision, 4-bit or not, preprocessing,
    device type, library versions)."""
    folder: Path
    base: dict

    def path_and_key(self, test: EvalSet, dtype: torch.dtype) -> tuple[Path, dict] | None:
        """The file and key of `test`'s embeddings in `dtype`; None when its images cannot be identified on disk."""
        if test.images_key is None:
            return None
        key = json.loads(json.dumps({"format": feature_cache.FORMAT, "kind": "test-embeddings", **self.base,
                                     "dtype": str(dtype), "test_images": test.images_key}))
        return feature_cache.cache_path(self.folder, f"{test.name}-test-embeddings", key), key


class Scored(Protocol):
    """What the evaluator asks of a method on a model (every methods.interface.Adapted answers it)."""
    model: torch.nn.Module

    def text_features(self, prompts: ClassPrompts) -> torch.Tensor: ...
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor: ...
    def logits(self, embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor: ...
    def zero_shot_view(self) -> ContextManager: ...
    def tower_is_adapted(self, tower: str) -> bool: ...


class Evaluator:
    def __init__(self, adapted: Scored, precision: Precision, dist: Distributed | None = None,
                 zero_shot_reuse: ZeroShotReuse | None = None, frozen_embeddings: FrozenEmbeddings | None = None):
        self.adapted = adapted
        self.precision = precision
        self.dist = dist or Distributed(rank=0, world=1, device=precision.device)
        # With a frozen vision tower the zero-shot image embeddings are also the trained model's.
        self.reuse_image_features = not adapted.tower_is_adapted("vision_model")
        self.zero_shot_reuse = zero_shot_reuse
        # Stored across runs where they are the base's own (frozen tower) and one process encodes the whole set.
        self.frozen_embeddings = frozen_embeddings if self.reuse_image_features and self.dist.world == 1 else None

    def zero_shot(self, test: EvalSet) -> float:
        """Accuracy of the pretrained base (the method's `zero_shot_view`: adapters off, and the pretrained values
        back where its initialisation rewrote them): stored by an earlier run with its calibration, or computed
        (and then stored, by the main process). `test.zero_shot_cached` says which; `test.last` holds the pass.
        A set whose passes keep something per image (`test.keep`), which no store holds, is always computed."""
        # No store for a test set without an identity on disk (the same on every process).
        reuse = self.zero_shot_reuse if test.key is not None else None
        key = {**reuse.base, "test_set": test.key} if reuse is not None else None
        if reuse is not None and test.keep is None:
            stored = _stored_evaluation(zero_shot_cache.read_entry(reuse.folder, key))
            # Every process reads; all must agree, since computing it sums counts over them.
            [found] = self.dist.sum_counts(torch.tensor(int(stored is not None), device=self.dist.device))
            if found == self.dist.world:
                test.zero_shot_cached = True
                test.last = stored
                return stored.accuracy
        with self.adapted.zero_shot_view():
            accuracy = self.accuracy(test, desc=f"zero-shot {test.name}")
        if reuse is not None and self.dist.is_main:
            zero_shot_cache.write(reuse.folder, key, accuracy, test.last.calibration_sums)
        return accuracy

    @torch.no_grad()
    def accuracy(self, test: EvalSet, desc: str = "test") -> float:
        """Top-1 accuracy (percent) of the model as it is now, over every process's share; the whole pass (its
        calibration, and what `test.keep` asks for) in `test.last`."""
        test.last = self.evaluate(test, desc, test.keep)
        return test.last.accuracy

    @torch.no_grad()
    def evaluate(self, test: EvalSet, desc: str = "test", keep: str | None = None) -> Evaluation:
        """The model as it is now on `test`, over every process's share: the accuracy, the calibration of the same
        logits, and per image what `keep` asks for (scores.KEEP), in the test set's order."""
        if keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}; got {keep!r}")
        adapted = self.adapted
        adapted.model.eval()
        device = self.precision.device
        correct = torch.zeros((), dtype=torch.int64, device=device)
        total = torch.zeros((), dtype=torch.int64, device=device)
        calibration = CalibrationAccumulator(device=device)
        kept, kept_labels = [], []
        with self.precision.autocast():
            text = adapted.text_features(test.prompts)
            for embeddings, labels in self._encoded(test, desc):
                logits = adapted.logits(embeddings, text)
                correct += count_correct(logits, labels)
                total += labels.numel()
                calibration.update(logits, labels)
                if keep == "logits":
                    kept.append(logits.float())
                    kept_labels.append(labels)
                elif keep == "scores":
                    kept.append(mcm_score(logits))
        correct, total = self.dist.sum_counts(correct, total)
        sums = sum_over_processes(self.dist, calibration.sums)
        evaluation = Evaluation(accuracy_percent(correct, total), calibration_from_sums(sums),
                                calibration_sums=sums.tolist())
        if keep == "logits":
            evaluation.logits = self._whole(kept, (0, len(test.prompts.prompts)))
            evaluation.labels = self._whole(kept_labels, (0,), torch.int64)
            evaluation.scores = mcm_score(evaluation.logits)
        elif keep == "scores":
            evaluation.scores = self._whole(kept, (0,))
        return evaluation

    def _whole(self, parts: list[torch.Tensor], empty: tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
        """This process's kept rows joined, then every process's in the test set's order."""
        mine = torch.cat(parts) if parts else torch.zeros(empty, dtype=dtype, device=self.precision.device)
        return gathered_in_order(self.dist, mine)

    def _encoded(self, test: EvalSet, desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(image embeddings, labels) per test batch: from memory when an earlier pass kept them, from the disk
        store when an earlier run stored them (a frozen tower), else encoded (and then kept, and stored)."""
        if not test.cached and self.frozen_embeddings is not None:
            test.cached = self._stored(test)
        if test.cached:
            yield from test.cached
            return
        for images, labels in tqdm(test.loader, desc=desc, leave=False, disable=None if self.dist.is_main else True):
            encoded = (self.adapted.image_embeddings(images), labels)
            if self.reuse_image_features:
                test.cached.append(encoded)
            yield encoded
        if self.frozen_embeddings is not None:
            self._store(test)

    def _stored(self, test: EvalSet) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The set's embeddings from the disk store, in the loader's batches; [] when not stored (or unusable)."""
        dtype = self.precision.dtype
        found = self.frozen_embeddings.path_and_key(test, dtype)
        if found is None:
            return []
        path, key = found
        embeddings = feature_cache.load(path, key)
        test.embeddings = {"cached": embeddings is not None, "file": str(path)}
        if embeddings is None:
            return []
        device, size = self.precision.device, test.loader.batch_size
        labels = torch.tensor([item.label for item in test.items], dtype=torch.long)
        # Stored as float32; back in the dtype they were computed in (an exact round trip for fp16 and bf16).
        return [(embeddings[start:start + size].to(device, dtype), labels[start:start + size].to(device))
                for start in range(0, len(labels), size)]

    def _store(self, test: EvalSet) -> None:
        found = self.frozen_embeddings.path_and_key(test, self.precision.dtype)
        if found is None or not test.cached:
            return
        path, key = found
        try:
            feature_cache.write(path, key, torch.cat([embeddings for embeddings, _ in test.cached]))
        except (OSError, ValueError) as err:  # a full disk, say: the run goes on, the next one encodes again
            log.warning("the test embeddings could not be stored in %s (%s); the next run encodes them again",
                        path, err)
            path = None
        test.embeddings = {"cached": False, "file": str(path) if path else None}


def _stored_evaluation(entry: dict | None) -> Evaluation | None:
    """A zero-shot store entry as the pass it saves; None when absent or stored without its calibration sums."""
    sums = entry.get("calibration_sums") if entry is not None else None
    if sums is None or len(sums) != sums_length(ECE_BINS):
        return None
    return Evaluation(entry["zero_shot_acc"], calibration_from_sums(torch.tensor(sums, dtype=torch.float64)),
                      calibration_sums=list(sums))
