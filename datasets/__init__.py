"""Dataset factory: `build_dataset(name, root, shots, seed, template, protocol)`, `build_eval_images(...)`.

Each dataset is a short module with `load(root) -> SplitDataset` declaring its folders, split
files, class-name fixes and prompt template; the shared split reading lives in `splits.py`, and
few-shot sampling happens here, once, for all of them (docs/protocol.md, "Few-shot sampling"),
followed by the base-to-novel class split when that protocol runs (base2new.py).
Modules are imported when a dataset is built, so listing the names (the CLI's --dataset choices)
costs nothing.

The package has the name of Hugging Face's `datasets`, and inside this repository it shadows it
(also on Colab, where that one is preinstalled): never import Hugging Face's `datasets` here.
tests/test_datasets_package.py checks that no library we use imports it on our code paths.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from pathlib import Path
from types import ModuleType

from qlora_clip.errors import UserError
from qlora_clip.paper import CLIP_LORA_TEMPLATE, PROTOCOLS

from qlora_clip.data.items import EvalImages, FewShotDataset, Item, SplitDataset
from qlora_clip.data.settings import DATASET_NAMES, OOD_DATASETS, TEMPLATES, TEST_ONLY
from .base2new import base_to_new
from .sampling import sample_train_then_val, sample_train_val
from .split_files import published_draw


log = logging.getLogger(__name__)

__all__ = ["DATASET_NAMES", "OOD_DATASETS", "TEMPLATES", "TEST_ONLY", "EvalImages", "FewShotDataset", "Item",
           "SplitDataset", "build_dataset", "build_eval_images", "dataset_module", "require_test_images",
           "untrainable_message", "use_template", "write_subset"]


def dataset_module(name: str) -> ModuleType:
    """The module that reads dataset `name` from disk."""
    if name not in DATASET_NAMES:
        raise UserError(f"--dataset {name}: unknown dataset; choose one of {', '.join(DATASET_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def untrainable_message(name: str) -> str:
    use = (f"score it as out-of-distribution images with --ood_datasets {name}" if name in OOD_DATASETS
           else f"evaluate on this one with --eval_datasets {name}")
    return (f"--dataset {name} is a test-only dataset (all its images are test images), so no adapter can be "
            f"trained on it; train on another dataset and {use}")


def build_dataset(name: str, root: str | Path, shots: int, seed: int, template: str = "clip-lora",
                  protocol: str = "fewshot", family_template: str = CLIP_LORA_TEMPLATE,
                  split_file: str | Path | None = None) -> FewShotDataset:
    """The few-shot view of a dataset, drawn as CLIP-LoRA draws it for this seed and shot count, or, with
    `split_file` (--split_file), the train and val images that file lists (split_files.published_draw).

    `template` is 'clip-lora' (one prompt for every dataset, as CLIP-LoRA trains: `family_template`,
    the backbone family's own, 'a photo of a {}.' for CLIP) or 'dataset' (CoOp's per-dataset prompt).
    `protocol` 'base2new' restricts the drawn set to the base classes afterwards and carries the
    new classes' test set beside it (base2new.py).
    """
    if name in TEST_ONLY:
        raise UserError(untrainable_message(name))
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol}: choose one of {', '.join(PROTOCOLS)}")
    split = _load_split(name, root, template)
    published = None
    if split_file is not None:
        train, val, published = published_draw(split_file, dataset_module(name), root, split, shots, seed)
    elif split.val_from_train:
        train, val = sample_train_then_val(split.train, shots, seed)
    else:
        train, val = sample_train_val(split.train, split.val, shots, seed)
    data = FewShotDataset(name=name, train=train, val=val, test=split.test, classnames=split.classnames,
                          template=_template(split, template, family_template), load_image=split.load_image,
                          shots=shots, seed=seed, split_file=published)
    return base_to_new(data) if protocol == "base2new" else data


def build_eval_images(name: str, root: str | Path, template: str = "clip-lora",
                      family_template: str = CLIP_LORA_TEMPLATE) -> EvalImages:
    """A dataset's full test set with all its class names, for evaluation only (--eval_datasets)."""
    split = _load_split(name, root, template)
    return EvalImages(name=name, test=split.test, classnames=split.classnames,
                      template=_template(split, template, family_template), load_image=split.load_image)


def _load_split(name: str, root: str | Path, template: str) -> SplitDataset:
    if template not in TEMPLATES:
        raise UserError(f"--template {template}: choose one of {', '.join(TEMPLATES)}")
    split = dataset_module(name).load(Path(root))
    # The full split's sizes, to compare with the counts in DATASETS.md.
    log.info("%s: %d classes; split of %d train / %d val / %d test images", name, len(split.classnames),
             len(split.train), len(split.val), len(split.test))
    require_test_images(name, root, split)
    return split


def require_test_images(name: str, root: str | Path, split: SplitDataset) -> None:
    """A split without test images leaves no accuracy to measure: refuse it before anything loads."""
    if not split.test:
        where = "your folder" if name == "folder" else "the split"
        raise UserError(f"--dataset {name}: {where} under {root} has no test images, so there is no accuracy to "
                        f"measure; add test images (see DATASETS.md#{name})")


def _template(split: SplitDataset, template: str, family_template: str) -> str:
    return family_template if template == "clip-lora" else split.template


def use_template(data: FewShotDataset | EvalImages, template: str, family_template: str) -> FewShotDataset | EvalImages:
    """`data` with its prompts in the backbone family's own template when --template is clip-lora (the run reads
    its data before the checkpoint, so the family is known only afterwards); unchanged with --template dataset."""
    if template != "clip-lora":
        return data
    new = getattr(data, "new", None)
    changes = {"new": dataclasses.replace(new, template=family_template)} if new is not None else {}
    return dataclasses.replace(data, template=family_template, **changes)


def write_subset(data: FewShotDataset, path: str | Path) -> None:
    """Record which images a run trained and validated on, so the draw can be audited.

    Sources are written as the loader saw them (paths under --root_path; image indices for
    Fashion-MNIST), train and val in the order they were drawn, with the labels the run trained on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": data.name,
        "shots": data.shots,
        "seed": data.seed,
        "protocol": data.protocol,
        "template": data.template,
        "classnames": data.classnames,
        "test_images": len(data.test),
        "train": [[str(item.source), item.label] for item in data.train],
        "val": [[str(item.source), item.label] for item in data.val],
    }
    if data.new is not None:
        # Base-to-novel: the lists above are the base classes' (relabelled); these classes never trained.
        record["new_classnames"] = data.new.classnames
        record["new_test_images"] = len(data.new.test)
    if data.split_file is not None:
        # --split_file: the lists above are that file's, not our draw.
        record["split_file"] = data.split_file
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
