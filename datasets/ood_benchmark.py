"""The out-of-distribution sets of MCM's ImageNet benchmark: iNaturalist, SUN, Places and Textures.

Huang & Li (CVPR 2021, "MOS: Towards Scaling Out-of-distribution Detection for Large Semantic
Space") curated them for ImageNet-1k: concepts that overlap ImageNet's classes removed, 10,000
images sampled from each of iNaturalist, SUN and Places, and all 5,640 images of Textures (DTD).
MCM (Ming et al., NeurIPS 2022) evaluates CLIP on them. They are test-only and unlabelled: each is
scored with the classifier of the run's dataset, so its images get label 0 of one pseudo-class
(image_collection.py), and all images under the set's folder count, at any depth.

Where they are looked for, under --root_path (DATASETS.md, "ImageNet's OOD sets"):
- MCM's layout first: `ImageNet_OOD_dataset/{iNaturalist,SUN,Places,dtd}`, the tree of its README
  (deeplearning-wisc/MCM, README.md, "Out-of-Distribution Datasets"), read by its loader as
  `<root>/ImageNet_OOD_dataset/` (eval_ood_detection.py, line 86) plus `iNaturalist`, `SUN`,
  `Places` and `dtd/images` (utils/train_eval_util.py, lines 127-137);
- then the set's folder directly under --root_path, as MOS keeps them (`ood_data/iNaturalist`, ...,
  `ood_data/Textures`; deeplearning-wisc/large_scale_ood, README.md, "Out-of-distribution dataset");
- for Textures also the dtd benchmark's own image folder (`dtd/images`, `DTD/images`): the same
  5,640 images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from qlora_clip.data.items import SplitDataset
from .image_collection import collection_split
from .splits import NotFound, see_docs

MCM_FOLDER = "ImageNet_OOD_dataset"


def load_ood_set(name: str, root: Path, folders: Sequence[str], classname: str) -> SplitDataset:
    """The images of the first of `folders` (relative to `root`) that exists."""
    candidates = [root / folder for folder in folders]
    for folder in candidates:
        if folder.is_dir():
            return collection_split(f"--dataset {name}", folder, classname, see_docs(name))
    also = ", ".join(map(str, candidates[1:]))
    raise NotFound(f"--dataset {name}: {candidates[0]} not found (also looked for {also}); {see_docs(name)}")
