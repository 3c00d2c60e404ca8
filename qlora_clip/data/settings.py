"""The data flags of a run (DataConfig), and the names of the datasets they choose from.

Each name is a module of the top-level `datasets/` package, which reads that dataset from disk;
the library knows the names only (the command line lists them, the run's settings check them).
"""
from __future__ import annotations

from dataclasses import dataclass

from qlora_clip.flags import BOOKKEEPING, flag
from qlora_clip.paper import PROTOCOLS, SIGLIP_TEMPLATE

# --dataset names. The 11 datasets of the CLIP-LoRA table, by the names its scripts use, then ImageNet's four
# variants (CoOp's names), then the four OOD sets of MCM's ImageNet benchmark, then our own two.
DATASET_NAMES = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc", "sun397", "dtd",
    "eurosat", "ucf101",
    "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r",
    "ood_inaturalist", "ood_sun", "ood_places", "ood_textures",
    "fashion_mnist", "folder",
)
# Out-of-distribution sets: unlabelled images (one pseudo-class) that a run's own classifier scores (--ood_datasets);
# an accuracy on them would mean nothing.
OOD_DATASETS = ("ood_inaturalist", "ood_sun", "ood_places", "ood_textures")
# Datasets whose images are all test images, never trained on: ImageNet's variants (targets of --eval_datasets) and
# the OOD sets.
TEST_ONLY = frozenset({"imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r", *OOD_DATASETS})
TEMPLATES = ("clip-lora", "dataset")
# The key a run's recorded flags (its results line's "config") get beside --split_file: a digest of the file's train
# and val lists, read relative to the image folder (datasets/split_files.py). It, not the file's path, is the run's
# identity: a split file whose content changed is another run even under the same name, the same lists moved
# elsewhere are the same run, and a run without --split_file has no such key, so its identity is what it was
# before the flag existed. It is derived, never given.
SPLIT_FILE_DIGEST = "split_file_digest"


@dataclass(frozen=True)
class DataConfig:
    """The few-shot draw and how its images are read."""
    root_path: str = flag("DATA", "folder holding the datasets", group="data", role=BOOKKEEPING)
    dataset: str = flag("fashion_mnist", "dataset (DATASETS.md); 'folder' = your own images under --root_path",
                        group="data", choices=DATASET_NAMES)
    shots: int = flag(16, "training images per class", group="data")
    seed: int = flag(1, "seed of the few-shot draw and of training", group="data")
    template: str = flag("clip-lora", "clip-lora: one prompt for every dataset, as CLIP-LoRA, the backbone family's "
                         f"own: 'a photo of a {{}}.' for CLIP and MetaCLIP 2, {SIGLIP_TEMPLATE!r} for SigLIP and "
                         "SigLIP 2; dataset: CoOp's per-dataset prompt, for every family", group="data",
                         choices=TEMPLATES)
    num_workers: int | None = flag(None, "DataLoader worker processes (default: 0 on the CPU; on CUDA the CPUs per "
                                   "process, at most 8)", group="data", role=BOOKKEEPING, type=int)
    decode_budget_gb: float = flag(16.0, "decode the train images once and keep them in memory when they fit in "
                                   "this many GB (0: decode at every step)", group="data", role=BOOKKEEPING)
    protocol: str = flag("fewshot", "fewshot: train and test on all classes; base2new: CoCoOp's base-to-novel "
                         "generalization, train on the first half of the classes, test base and new classes with "
                         "separate classifiers", group="protocol", choices=PROTOCOLS)
    split_file: str | None = flag(None, "train and validate on the few-shot split in this file instead of our draw: "
                                  "2SFS's shot_K-seed_S_train.jsonl (its _val.jsonl beside it), CoOp's split_fewshot/"
                                  "shot_K-seed_S.pkl, or a run's subsets/*.json; its K and S must be --shots and "
                                  "--seed (DATASETS.md, 'Published few-shot splits')", group="data", type=str,
                                  metavar="PATH", role=BOOKKEEPING)
