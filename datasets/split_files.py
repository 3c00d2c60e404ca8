"""Published few-shot splits in, our own draws out: 2SFS's .jsonl files and CoOp/Dassl's shot pickles.

The formats, as their code writes and reads them:
- **2SFS** (FarinaMatteo/rethinking_fewshot_vlms@64ac143): two files per shot count and seed in the
  dataset's split_fewshot/ folder, `shot_{K}-seed_{S}_train.jsonl` and `shot_{K}-seed_{S}_val.jsonl`
  (datasets/oxford_pets.py:44-47; ImageNet has the train file only, datasets/imagenet.py:230-231). Each
  line is one JSON object holding a Datum's attributes, `{"_impath", "_label", "_domain", "_classname"}`
  (read back by datasets/utils.py:17-30).
- **CoOp/Dassl** (KaiyangZhou/CoOp@ff61507, datasets/dtd.py:33-46): `split_fewshot/shot_{K}-seed_{S}.pkl`,
  a pickle of `{"train": [Datum, ...], "val": [Datum, ...]}` (ImageNet: "train" only,
  datasets/imagenet.py:43-55). Datum is `dassl.data.datasets.base_dataset.Datum`, whose attributes are
  _impath, _label, _domain and _classname (KaiyangZhou/Dassl.pytorch@c61a1b5,
  dassl/data/datasets/base_dataset.py:12-29). A pickle can run any code when loaded, so it is read with
  an unpickler that knows that one class, mapped to a plain holder of those four values, and refuses
  every other.
- **ours**: the subset json `datasets.write_subset` writes for each run.

`--split_file PATH` (main.py) trains on such a file instead of our draw: `check_split_file` reads it when
the flags are checked (a missing or malformed file, or one whose shots and seed are not the run's, stops
the run there), `split_digest` is what the run's identity records of it (its lists, so a changed file is
another run), and `published_draw` picks the dataset's own items the file names when the dataset is
built (an image the dataset lacks, or a label it gives otherwise, stops the run before anything loads).
A file without a val part (2SFS's and CoOp's ImageNet files) gets its val images drawn as
`published_draw` says. `write_2sfs` goes the other way: `check_data.py --write_2sfs` exports our draws.

The image paths of both published formats are paths on the machine that wrote them (CoOp makes the
data root absolute, datasets/dtd.py:17). They are read relative to the dataset's image folder: the
part after the last `<dataset folder>/<image folder>/` in the path, for the folder names the dataset
module declares (`image_folder_anchors`). Nothing here imports torch.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from qlora_clip.data.items import Item, SplitDataset
from qlora_clip.errors import UserError

from .sampling import sample_per_class

FORMATS = ("2sfs", "dassl", "qlora-clip")
PARTS = ("train", "val")
# Dassl's Datum, the one class a CoOp shot pickle holds.
DASSL_DATUM = ("dassl.data.datasets.base_dataset", "Datum")
DATUM_FIELDS = ("_impath", "_label", "_domain", "_classname")
# 2SFS keeps a Datum's domain; Dassl's default (base_dataset.py:22) is what CoOp's Datums carry.
DEFAULT_DOMAIN = 0
TWO_SFS_NAME = re.compile(r"(?P<stem>.*)_(?P<part>train|val)\.jsonl")
SHOTS_SEED = re.compile(r"shot_(?P<shots>\d+)-seed_(?P<seed>\d+)")
FLAG = "--split_file"
# Where a run's val images came from (the results line's split_file.val).
VAL_FROM_FILE = "the file's val list"
VAL_FROM_VAL_SPLIT = "drawn from the dataset's val split: min(shots, 4) per class, seeded with --seed, as our own draw"
VAL_FROM_TRAIN = ("drawn from the train images the file does not list: min(shots, 4) per class, seeded with --seed "
                  "(the dataset has no val split)")


@dataclass(frozen=True)
class SplitEntry:
    """One image of a split file: its path relative to the dataset's image folder ("/"-separated), its label."""
    path: str
    label: int
    classname: str | None = None


@dataclass(frozen=True)
class SplitFile:
    """A few-shot split as a file gives it. `val` is None when the file has no val part (ImageNet's)."""
    format: str                    # one of FORMATS
    source: Path                   # the file read (2SFS: the train file)
    train: list[SplitEntry]
    val: list[SplitEntry] | None
    shots: int | None = None       # from the file name (2SFS, Dassl) or the record (ours)
    seed: int | None = None

    def pairs(self, part: str) -> list[tuple[str, int]]:
        """(path, label) of `part` ("train" or "val"), in the file's order; [] for an absent val part."""
        return [(entry.path, entry.label) for entry in getattr(self, part) or []]


def image_folder_anchors(module: ModuleType) -> tuple[str, ...]:
    """`<dataset folder>/<image folder>` for each folder name a dataset module accepts (CoOp's first).

    `read_split_file(path, image_folder_anchors(dataset_module("dtd")))` reads paths relative to
    DATA/dtd/images whatever root the file was written under.
    """
    folders = getattr(module, "FOLDERS", None) or (module.FOLDER,)
    image_dir = getattr(module, "IMAGE_DIR", "")
    return tuple(f"{folder}/{image_dir}".rstrip("/") for folder in folders)


def read_split_file(path: str | Path, anchors: Sequence[str] = ()) -> SplitFile:
    """A few-shot split in any of FORMATS, told apart by the file name: `*_train.jsonl` or `*_val.jsonl`
    (2SFS; the other part is read from beside it), `*.pkl` (CoOp/Dassl), `*.json` (our subset file).

    Paths become relative to the image folder named by `anchors` (see `image_folder_anchors`); a
    path that holds none of them is kept as written if relative, refused if absolute.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--split_file {path}: no such file")
    if path.suffix == ".jsonl":
        return _read_2sfs(path, anchors)
    if path.suffix in (".pkl", ".pickle"):
        return _read_dassl(path, anchors)
    if path.suffix == ".json":
        return _read_subset(path, anchors)
    raise UserError(f"--split_file {path}: give 2SFS's shot_K-seed_S_train.jsonl, CoOp's shot_K-seed_S.pkl or "
                    "a run's subsets/*.json")


def relative_path(raw: str, anchors: Sequence[str], where: str) -> str:
    """`raw` relative to the image folder: what follows the last occurrence of the first anchor found in it."""
    parts = [part for part in raw.replace("\\", "/").split("/") if part not in ("", ".")]
    for anchor in anchors:
        names = anchor.split("/")
        for start in range(len(parts) - len(names) - 1, -1, -1):
            if parts[start:start + len(names)] == names:
                return "/".join(parts[start + len(names):])
    if os.path.isabs(raw) or re.match(r"[A-Za-z]:[\\/]", raw):
        looked = f" (looked for {', '.join(f'.../{a}/' for a in anchors)})" if anchors else ""
        raise UserError(f"{where}: image path {raw} is not under the dataset's image folder{looked}; is this "
                        "split file for another dataset?")
    return "/".join(parts)


def write_2sfs(subset_json: str | Path, out_dir: str | Path, image_root: str | Path | None = None,
               anchors: Sequence[str] = ()) -> list[Path]:
    """Write a run's draw (its subsets/*.json) as 2SFS's two files, out_dir/shot_K-seed_S_{train,val}.jsonl.

    `_impath` is the image's absolute path (a relative source is resolved against the current
    folder, as the run that wrote the subset resolved it), which 2SFS opens as it is; with
    `image_root` (the data folder of the machine that will read the files) it is
    `image_root/<anchors[0]>/<path relative to the image folder>` instead. `_domain` is Dassl's
    default 0. Returns the paths written.
    """
    subset_json, out_dir = Path(subset_json), Path(out_dir)
    record = _load_subset_record(subset_json)
    if image_root is not None and not anchors:
        raise ValueError("write_2sfs: image_root needs the dataset's anchors (split_file_anchors)")
    if record.get("protocol", "fewshot") != "fewshot":
        raise UserError(f"{subset_json}: a {record['protocol']} draw holds the base classes relabelled 0..k-1, "
                        "which no other codebase reads as the dataset's labels; export the few-shot draw of the same "
                        "shots and seed (the images are the same before the base classes are kept)")
    if record.get("dataset") == "fashion_mnist":
        raise UserError(f"{subset_json}: Fashion-MNIST's images are indices into its IDX files, not image files "
                        "another codebase could open")
    classnames = record["classnames"]

    def impath(source: str, where: str) -> str:
        if image_root is None:
            return os.path.abspath(source)
        return os.path.join(os.path.abspath(image_root), anchors[0], relative_path(source, anchors, where))

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for part in PARTS:
        lines = [json.dumps({"_impath": impath(source, f"{subset_json}: {part}[{index}]"), "_label": label,
                             "_domain": DEFAULT_DOMAIN, "_classname": classnames[label]})
                 for index, (source, label) in enumerate(record[part])]
        path = out_dir / f"shot_{record['shots']}-seed_{record['seed']}_{part}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(path)
        written.append(path)
    return written


def pick_items(entries: Sequence[SplitEntry], items: Sequence[Item], image_dir: str | Path,
               where: str) -> list[Item]:
    """The dataset's items that `entries` name, in the entries' order (repeats kept, as a draw may repeat).

    `items` are the dataset's full train (and val) items under `image_dir`; an entry naming an image
    they lack, or giving it another label, is refused: the file is not for this dataset or this split.
    """
    by_path = {Path(os.path.relpath(item.source, image_dir)).as_posix(): item for item in items}
    picked = []
    for index, entry in enumerate(entries):
        item = by_path.get(entry.path)
        if item is None:
            raise UserError(f"{where}: entry {index} names {entry.path}, which is not an image of the dataset's "
                            f"split under {image_dir}; is the split file for another dataset?")
        if item.label != entry.label:
            raise UserError(f"{where}: entry {index} gives {entry.path} label {entry.label}, the dataset's split "
                            f"gives {item.label} ({item.classname!r}); the split file numbers the classes otherwise")
        picked.append(item)
    return picked


# --- --split_file: a published draw instead of ours ---------------------------------------------------------

def split_file_anchors(module: ModuleType, root: str | Path) -> tuple[str, ...]:
    """What a split file's paths are read relative to for this dataset: its module's image folders
    (`image_folder_anchors`), or for a dataset without folders of its own (`--dataset folder`, whose
    images are under --root_path itself) the name of the --root_path folder."""
    if getattr(module, "FOLDERS", None) or getattr(module, "FOLDER", None):
        return image_folder_anchors(module)
    return (Path(root).expanduser().resolve().name,)


def dataset_image_dir(module: ModuleType, root: str | Path) -> Path:
    """The folder the dataset's split paths are relative to, as its loader chooses it (the first folder
    name of the module that exists under `root`, CoOp's first), or `root` itself for `--dataset folder`."""
    root = Path(root)
    if not (getattr(module, "FOLDERS", None) or getattr(module, "FOLDER", None)):
        return root
    anchors = image_folder_anchors(module)
    return next((root / anchor for anchor in anchors if (root / anchor).is_dir()), root / anchors[0])


def check_split_file(path: str | Path, anchors: Sequence[str], shots: int, seed: int) -> SplitFile:
    """--split_file read and checked against the run's --shots and --seed, before anything loads.

    The shots and seed a file names (2SFS's and CoOp's shot_K-seed_S, our subset file's record) must be
    the run's: they name its results, folders and subset file. Whatever its name, the file's largest
    class must hold --shots train images (CoOp keeps a class smaller than K as it is: Dassl's
    generate_fewshot_dataset with repeat=False, KaiyangZhou/Dassl.pytorch@c61a1b5,
    dassl/data/datasets/base_dataset.py:195-201).
    """
    try:
        split = read_split_file(path, anchors)
    except UserError as err:
        message = str(err)
        raise UserError(message if message.startswith(FLAG) else f"{FLAG} {path}: {message}") from None
    named = []
    if split.shots is not None and split.shots != shots:
        named.append(f"--shots {split.shots}")
    if split.seed is not None and split.seed != seed:
        named.append(f"--seed {split.seed}")
    if named:
        raise UserError(f"{FLAG} {path}: the file is the {split.shots}-shot draw of seed {split.seed}, which the run "
                        f"is named and filed by; give {' '.join(named)} (or the file of --shots {shots} --seed {seed})")
    if not split.train:
        raise UserError(f"{FLAG} {path}: its train list is empty")
    largest = max(Counter(entry.label for entry in split.train).values())
    if largest != shots:
        raise UserError(f"{FLAG} {path}: its largest class has {largest} train image(s), so it is a {largest}-shot "
                        f"draw; give --shots {largest}")
    return split


def split_digest(split: SplitFile) -> str:
    """What a run's identity records of its split file: a digest of its train and val lists (paths relative
    to the image folder, labels, in the file's order), so the same draw written on another machine (other
    absolute paths) digests the same, and a changed draw does not."""
    lists = {part: split.pairs(part) if getattr(split, part) is not None else None for part in PARTS}
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()[:16]


def published_draw(path: str | Path, module: ModuleType, root: str | Path, dataset: SplitDataset, shots: int,
                   seed: int) -> tuple[list[Item], list[Item], dict]:
    """The train and val items a split file names, the dataset's own (its paths, labels and class names),
    and what the run records of the file.

    Train entries must be images of the dataset's train split, val entries of its val split (of train
    where the dataset has none, ImageNet), with the split's labels: anything else means a file for
    another dataset or split. Every class must have train images. A file without a val list gets
    one drawn with `random.Random(seed)`, min(shots, 4) per class: from the val split where the
    dataset has one (the same val images as our own draw of this seed, which draws val first), else
    from the train images the file does not list, so train and val never share an image. 2SFS and
    CoOp validate ImageNet on its test set instead (FarinaMatteo/rethinking_fewshot_vlms@64ac143,
    datasets/imagenet.py:239; KaiyangZhou/CoOp@ff61507, datasets/imagenet.py:61); our baselines choose
    hyperparameters on val, which must never be the test set.
    """
    anchors = split_file_anchors(module, root)
    split = check_split_file(path, anchors, shots, seed)
    image_dir = dataset_image_dir(module, root)
    if dataset.train and not isinstance(dataset.train[0].source, (str, os.PathLike)):
        raise UserError(f"{FLAG} {path}: this dataset's images are not files (Fashion-MNIST's are indices into its "
                        "IDX files), so no split file can name them")
    where = f"{FLAG} {split.source}"
    train = pick_items(split.train, dataset.train, image_dir, f"{where}, train list")
    absent = sorted(set(range(len(dataset.classnames))) - {item.label for item in train})
    if absent:
        names = ", ".join(repr(dataset.classnames[label]) for label in absent[:3])
        raise UserError(f"{where}: no train image of {len(absent)} of the dataset's {len(dataset.classnames)} classes "
                        f"({names}{', ...' if len(absent) > 3 else ''}); is it a base-to-novel or another dataset's "
                        "draw?")
    val_pool = dataset.train if dataset.val_from_train else dataset.val
    if split.val is not None:
        val = pick_items(split.val, val_pool, image_dir, f"{where}, val list")
        val_from = VAL_FROM_FILE
    elif dataset.val_from_train:
        listed = {item.source for item in train}
        val = sample_per_class([item for item in dataset.train if item.source not in listed], min(shots, 4),
                               random.Random(seed), "val")
        val_from = VAL_FROM_TRAIN
    else:
        val = sample_per_class(dataset.val, min(shots, 4), random.Random(seed), "val")
        val_from = VAL_FROM_VAL_SPLIT
    files = [str(split.source)]
    if split.format == "2sfs" and split.val is not None:
        files.append(str(split.source.with_name(split.source.name.replace("_train.jsonl", "_val.jsonl"))))
    record = {"path": str(path), "format": split.format, "files": files, "digest": split_digest(split),
              "val": val_from}
    return train, val, record


# --- 2SFS ------------------------------------------------------------------------------------------------

def _read_2sfs(path: Path, anchors: Sequence[str]) -> SplitFile:
    match = TWO_SFS_NAME.fullmatch(path.name)
    if match is None:
        raise UserError(f"--split_file {path}: a 2SFS split file is named shot_K-seed_S_train.jsonl "
                        "(or _val.jsonl), the two parts side by side")
    train_path = path.with_name(f"{match['stem']}_train.jsonl")
    val_path = path.with_name(f"{match['stem']}_val.jsonl")
    if not train_path.is_file():
        raise UserError(f"--split_file {path}: its train part {train_path} is missing")
    shots, seed = _shots_seed(match["stem"])
    val = _read_jsonl(val_path, anchors) if val_path.is_file() else None
    return SplitFile("2sfs", train_path, _read_jsonl(train_path, anchors), val, shots, seed)


def _read_jsonl(path: Path, anchors: Sequence[str]) -> list[SplitEntry]:
    entries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read this split file ({err})") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            datum = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: not a JSON line ({err.msg})") from None
        entries.append(_entry(datum, anchors, where))
    return entries


# --- CoOp/Dassl ------------------------------------------------------------------------------------------

class _Datum:
    """Stands in for Dassl's Datum while a pickle loads: keeps the four attributes, runs no code of the pickle's."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not set(state) <= set(DATUM_FIELDS):
            raise pickle.UnpicklingError(f"a Datum with state {state!r:.80}, not Dassl's {', '.join(DATUM_FIELDS)}")
        self.state = state


class _DatumOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        if (module, name) == DASSL_DATUM:
            return _Datum
        raise pickle.UnpicklingError(f"it refers to {module}.{name}; a CoOp/Dassl shot file holds only "
                                     f"{'.'.join(DASSL_DATUM)} objects, and anything else it names could run code")


def _read_dassl(path: Path, anchors: Sequence[str]) -> SplitFile:
    try:
        with path.open("rb") as handle:
            data = _DatumOnly(handle).load()
    except Exception as err:  # noqa: BLE001 - a damaged pickle fails in many ways; each is a file not to train on
        raise UserError(f"--split_file {path}: not read ({err}); only CoOp/Dassl's split_fewshot pickles "
                        "({\"train\": [Datum], \"val\": [Datum]}) are loaded") from None
    if not isinstance(data, dict) or not isinstance(data.get("train"), list):
        raise UserError(f"--split_file {path}: expected a dict with a \"train\" list of Datums, as CoOp writes")
    parts: dict[str, list[SplitEntry] | None] = {}
    for part in PARTS:
        if part not in data:
            parts[part] = None
            continue
        if not isinstance(data[part], list):
            raise UserError(f"--split_file {path}: its {part!r} is not a list of Datums")
        parts[part] = [_entry(getattr(datum, "state", datum), anchors, f"{path}: {part}[{index}]")
                       for index, datum in enumerate(data[part])]
    shots, seed = _shots_seed(path.stem)
    return SplitFile("dassl", path, parts["train"], parts["val"], shots, seed)


# --- ours --------------------------------------------------------------------------------------------------

def _load_subset_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable subset file ({err})") from None
    needed = ("shots", "seed", "classnames", *PARTS)
    if not isinstance(record, dict) or any(key not in record for key in needed):
        raise UserError(f"{path}: not a run's subset file (datasets.write_subset writes {', '.join(needed)}, ...)")
    return record


def read_subset_dataset(path: str | Path) -> str:
    """The --dataset a run's subset file is a draw of."""
    record = _load_subset_record(Path(path))
    if not isinstance(record.get("dataset"), str):
        raise UserError(f"{path}: not a run's subset file (it names no dataset)")
    return record["dataset"]


def _read_subset(path: Path, anchors: Sequence[str]) -> SplitFile:
    record = _load_subset_record(path)
    if record.get("protocol", "fewshot") != "fewshot":
        raise UserError(f"{FLAG} {path}: a {record['protocol']} draw holds the base classes only, relabelled; give "
                        "the few-shot subset file of the same shots and seed (the same images before the base classes "
                        "are kept), with --protocol base2new if that is the protocol to run")
    classnames = record["classnames"]
    parts = {}
    for part in PARTS:
        entries = []
        for index, pair in enumerate(record[part]):
            where = f"{path}: {part}[{index}]"
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and _is_label(pair[1])
                    and 0 <= pair[1] < len(classnames)):
                raise UserError(f"{where} = {pair!r}; expected [image path, label]")
            entries.append(SplitEntry(relative_path(pair[0], anchors, where), pair[1], classnames[pair[1]]))
        parts[part] = entries
    return SplitFile("qlora-clip", path, parts["train"], parts["val"], record["shots"], record["seed"])


# --- shared -----------------------------------------------------------------------------------------------

def _entry(datum: Any, anchors: Sequence[str], where: str) -> SplitEntry:
    if (not isinstance(datum, dict) or not isinstance(datum.get("_impath"), str) or not _is_label(datum.get("_label"))
            or not isinstance(datum.get("_classname", ""), str)):
        raise UserError(f"{where}: expected a Datum's fields {{\"_impath\": str, \"_label\": int, "
                        f"\"_classname\": str, ...}}, got {datum!r:.120}")
    return SplitEntry(relative_path(datum["_impath"], anchors, where), datum["_label"], datum.get("_classname"))


def _is_label(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shots_seed(stem: str) -> tuple[int | None, int | None]:
    match = SHOTS_SEED.fullmatch(stem)
    return (int(match["shots"]), int(match["seed"])) if match else (None, None)
