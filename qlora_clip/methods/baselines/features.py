"""A baseline run's frozen image features for its fit: the val set and the train images' views, each
encoded at most once per (backbone, data, draw, views, preprocessing, precision) and cached. (The
test set is the shared evaluator's: evaluation/evaluator.FrozenEmbeddings stores its embeddings in
the same folder, keyed without the draw, so a sweep encodes it once.)

Features are the raw image embeddings (`get_image_features(...).pooler_output`, the projection's
output, not normalised: the linear probe and CLIP-Adapter take them so, the others normalise them),
float32, on the CPU; a method moves to the device what it uses. The files live in
<--eval_cache_dir>/features (feature_bank).

A key holds: the format; the checkpoint (its source, and its weight file's name, size and time);
the image settings (crop, resize, mean, std); the compute dtype and whether the base is 4-bit; the
dataset (with the folder's identity for --dataset folder); the set's name; a SHA-256 of its items
(sources and labels, in order: the draw); how its images become pixels (centre crop, or a view set
with its crop scale, count, stream and the run's seed); and the library versions that compute them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import PIL
import torch
import transformers
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from qlora_clip.data.items import FewShotDataset, Item
from qlora_clip.evaluation import feature_cache
from qlora_clip.backbones.identity import checkpoint_fingerprint
from qlora_clip.methods.baselines.views import AugmentedViews, ViewSet, labels_tensor
from qlora_clip.backbones.families import ImageSettings
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.inputs.loaders import eval_transform, to_model_input
from qlora_clip.inputs.test_images import images_identity, preprocess
from qlora_clip.inputs.train_images import decode_all
from qlora_clip.training.precision import Precision

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """One set's raw image embeddings, (images, dim) or (views, images, dim), float32 on the CPU, and labels."""
    name: str
    features: torch.Tensor
    labels: torch.Tensor
    seconds: float = 0.0     # encoding, or reading the cache
    cached: bool = False     # read from the disk cache
    file: str | None = None  # the cache file (None without a disk cache)
    transform: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """Its entry in the results line's `baseline_features`."""
        shape = list(self.features.shape)
        return {"images": shape[-2], "views": shape[0] if len(shape) == 3 else 1, "dim": shape[-1],
                "seconds": self.seconds, "cached": self.cached, "file": self.file, **self.transform}


@dataclass(frozen=True)
class Encoder:
    """The frozen vision tower, and how its inputs and outputs are handled."""
    model: torch.nn.Module
    image: ImageSettings
    precision: Precision
    batch_size: int
    num_workers: int

    @torch.no_grad()
    def encode(self, batches: Iterable[torch.Tensor], total: int, desc: str) -> torch.Tensor:
        """uint8 NCHW batches -> raw embeddings (total, dim), float32 on the CPU."""
        out: list[torch.Tensor] = []
        device = self.precision.device
        for pixels in tqdm(batches, total=-(-total // self.batch_size), desc=desc, leave=False, disable=None):
            with self.precision.autocast():
                embedded = self.model.get_image_features(pixel_values=to_model_input(pixels, device, self.image))
            out.append(embedded.pooler_output.float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    def loader(self, dataset: Dataset) -> DataLoader:
        # Its own generator: starting the loader draws nothing from the global one.
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          generator=torch.Generator())


class FeatureBank:
    """The feature sets of one run, each computed (or read from the cache) the first time it is asked for."""

    def __init__(self, encoder: Encoder, data: FewShotDataset, backbone_source: str, dataset_tag: str,
                 seed: int, cache_dir: Path | None, pixel_cache_dir: str | None, decode_budget_gb: float,
                 quantized: bool = False):
        self.encoder, self.data, self.seed = encoder, data, seed
        self.decode_budget_gb = decode_budget_gb
        self.cache_dir, self.pixel_cache_dir = cache_dir, pixel_cache_dir
        self.dataset_tag = dataset_tag
        self._base_key = {
            "format": feature_cache.FORMAT, "backbone": checkpoint_fingerprint(backbone_source),
            "image": asdict(encoder.image), "compute_dtype": encoder.precision.name, "quantized": quantized,
            "dataset": dataset_tag,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "pillow": PIL.__version__},
        }
        self.sets: dict[str, FeatureSet] = {}

    # --- the sets -------------------------------------------------------------------------------
    def val(self) -> FeatureSet:
        return self._get("val", self.data.val, self._centre(), lambda: self._encode_centre(self.data.val, "val"))

    def train_centre(self) -> FeatureSet:
        return self._get("train", self.data.train, self._centre(),
                         lambda: self._encode_centre(self.data.train, "train"))

    def train_views(self, views: ViewSet) -> FeatureSet:
        transform = {"kind": "views", **views.describe(), "seed": self.seed}
        return self._get(f"train-{views.stream}", self.data.train, transform, lambda: self._encode_views(views))

    def describe(self) -> dict:
        """`baseline_features`: every set this run used."""
        return {name: feature_set.describe() for name, feature_set in self.sets.items()}

    # --- cache ----------------------------------------------------------------------------------
    def key(self, name: str, items: list[Item], transform: dict) -> dict | None:
        """What the features depend on; None when the images cannot be identified (not cached then).

        The images by where they are and what is in them (test_images.images_identity: resolved paths,
        sizes and modification times), so replacing a folder's images never serves old features.
        """
        identity = images_identity(items, self.data.load_image)
        if identity is None:
            return None
        listing = json.dumps([identity, [item.label for item in items]]).encode()
        key = {**self._base_key, "set": name, "items_sha256": hashlib.sha256(listing).hexdigest(),
               "images": len(items), "transform": transform}
        return json.loads(json.dumps(key))  # as the file's header will read back (tuples become lists)

    def _get(self, name: str, items: list[Item], transform: dict, encode) -> FeatureSet:
        if name in self.sets:
            return self.sets[name]
        key = self.key(name, items, transform)
        cacheable = self.cache_dir and key is not None
        path = feature_cache.cache_path(self.cache_dir, f"{self.dataset_tag}-{name}", key) if cacheable else None
        start = time.perf_counter()
        features = feature_cache.load(path, key) if path is not None else None
        cached = features is not None
        if cached:
            log.info("%s features of %s from the cache %s", name, self.dataset_tag, path)
        else:
            features = encode()
            if path is not None:
                feature_cache.write(path, key, features)
                log.info("%s features of %s cached in %s", name, self.dataset_tag, path)
        labels = labels_tensor([item.label for item in items], torch.device("cpu"))
        self.sets[name] = FeatureSet(name, features, labels, time.perf_counter() - start, cached,
                                     str(path) if path is not None else None, transform)
        return self.sets[name]

    # --- encoding -------------------------------------------------------------------------------
    def _centre(self) -> dict:
        image = self.encoder.image
        return {"kind": "centre", "resize": image.resize_size, "crop": image.image_size, "interpolation": "bicubic"}

    def _encode_centre(self, items: list[Item], name: str) -> torch.Tensor:
        image = self.encoder.image
        pixels = preprocess(items, self.data.load_image, eval_transform(image), image.image_size,
                            self.encoder.num_workers, desc=f"preparing {name} images")
        return self._encode_pixels(pixels, f"encoding {name} images")

    def _encode_pixels(self, pixels: torch.Tensor, desc: str) -> torch.Tensor:
        size = self.encoder.batch_size
        batches = (pixels[start:start + size] for start in range(0, len(pixels), size))
        return self.encoder.encode(batches, len(pixels), desc)

    def _encode_views(self, views: ViewSet) -> torch.Tensor:
        images = decode_all([item.source for item in self.data.train], self.data.load_image, self.decode_budget_gb)
        dataset = AugmentedViews(images, views, self.seed, self.encoder.image.image_size)
        encoded = self.encoder.encode(self.encoder.loader(dataset), len(dataset),
                                      f"encoding {views.count} views ({views.stream})")
        return encoded.view(views.count, len(images), -1)


def feature_bank(bundle: ClipBundle, precision: Precision, data: FewShotDataset, dataset_tag: str,
                 cache_dir: str | None, batch_size: int, num_workers: int, decode_budget_gb: float) -> FeatureBank:
    """A run's feature sets on its frozen base, cached in <cache_dir>/features (none without a cache folder)."""
    encoder = Encoder(bundle.model, bundle.image, precision, batch_size, num_workers)
    return FeatureBank(encoder, data, bundle.checkpoint.source, dataset_tag, data.seed,
                       Path(cache_dir) / "features" if cache_dir else None, cache_dir, decode_budget_gb)
