"""Miniature copies of the 11 benchmark datasets and ImageNet's 4 variants, in their real on-disk formats.

Each builder writes a few tiny JPEGs per class and the dataset's real split files (CoOp's split
json, FGVC's txt lists, ImageNet's folders + classnames.txt) under either folder convention, and
returns what a correct loader must find. The json lists are shuffled so that classes first appear
out of label order, as the sampling rule (docs/protocol.md, "Few-shot sampling") has to cope with. The variants
(`build_variant`) are folders of test images only, in CoOp's layouts. `write_2sfs_pair` writes a published
few-shot split in 2SFS's format, as if on another machine (--split_file).
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

# Per class: images in the train, val and test parts of the split.
PER_CLASS = {"train": 6, "val": 3, "test": 2}
IMAGENET_TRAIN, IMAGENET_TEST = 9, 2

# CoOp's per-dataset templates, as DATASETS.md lists them.
COOP_TEMPLATES = {
    "imagenet": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": "a photo of a {}.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc": "a photo of a {}, a type of aircraft.",
    "sun397": "a photo of a {}.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.",
}


@dataclass
class Tree:
    name: str
    root: Path                  # what --root_path gets
    image_dir: Path             # what split paths are relative to
    classnames: list[str]       # what the loader must report, in label order
    counts: dict[str, int]      # full train / val / test sizes (val 0 for ImageNet)
    split_file: Path | None = None
    entries: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # split file order


def jpeg(label: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), ((60 * label) % 256, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def out_of_label_order(entries: list, label_of: Callable) -> list:
    """Shuffled, with the last class first: first appearance differs from label order."""
    entries = list(entries)
    random.Random(len(entries)).shuffle(entries)
    last = max(map(label_of, entries))
    first = next(i for i, entry in enumerate(entries) if label_of(entry) == last)
    return [entries[first]] + entries[:first] + entries[first + 1:]


def _write_image(path: Path, label: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg(label))


# name: (CoOp folder, CLIP-LoRA folder, image folder, split file,
#        [(folder or file prefix, class name in the split)], class names after the dataset's fixes,
#        relative path of image `n` of a class in a part)
PathFn = Callable[[str, str, int], str]
SPLIT_JSON: dict[str, tuple[str, str, str, str, list[tuple[str, str]], list[str], PathFn]] = {
    "caltech101": ("caltech-101", "Caltech101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                   [("accordion", "accordion"), ("airplanes", "airplane"), ("Leopards", "Leopards"), ("ant", "ant")],
                   ["accordion", "airplane", "leopard", "ant"],
                   lambda folder, part, n: f"{folder}/image_{n:04d}.jpg"),
    "oxford_pets": ("oxford_pets", "OxfordPets", "images", "split_zhou_OxfordPets.json",
                    [("Abyssinian", "abyssinian"), ("american_bulldog", "american_bulldog"), ("Bengal", "Bengal"),
                     ("beagle", "beagle")],
                    ["abyssinian", "american_bulldog", "bengal", "beagle"],
                    lambda folder, part, n: f"{folder}_{n}.jpg"),
    "stanford_cars": ("stanford_cars", "StanfordCars", "", "split_zhou_StanfordCars.json",
                      [("", "2012 Tesla Model S Sedan"), ("", "2007 Audi S4 Sedan"),
                       ("", "1993 Geo Metro Convertible"), ("", "2012 BMW M3 Coupe")],
                      ["2012 Tesla Model S Sedan", "2007 Audi S4 Sedan", "1993 Geo Metro Convertible",
                       "2012 BMW M3 Coupe"],
                      lambda folder, part, n: f"cars_{'test' if part == 'test' else 'train'}/{n:05d}.jpg"),
    "oxford_flowers": ("oxford_flowers", "Flower102", "jpg", "split_zhou_OxfordFlowers.json",
                       [("", "pink primrose"), ("", "hard-leaved pocket orchid"), ("", "canterbury bells"),
                        ("", "sweet pea")],
                       ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea"],
                       lambda folder, part, n: f"image_{n:05d}.jpg"),
    "food101": ("food-101", "Food101", "images", "split_zhou_Food101.json",
                [("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs"), ("baklava", "baklava"),
                 ("beef_carpaccio", "beef_carpaccio")],
                ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio"],
                lambda folder, part, n: f"{folder}/{100000 + n}.jpg"),
    "sun397": ("sun397", "SUN397", "SUN397", "split_zhou_SUN397.json",
               [("a/abbey", "abbey"), ("b/bakery/shop", "shop bakery"), ("c/church/indoor", "indoor church"),
                ("d/dining_room", "dining room")],
               ["abbey", "shop bakery", "indoor church", "dining room"],
               lambda folder, part, n: f"{folder}/sun_{n:08d}.jpg"),
    "dtd": ("dtd", "DTD", "images", "split_zhou_DescribableTextures.json",
            [("banded", "banded"), ("blotchy", "blotchy"), ("braided", "braided"), ("bubbly", "bubbly")],
            ["banded", "blotchy", "braided", "bubbly"],
            lambda folder, part, n: f"{folder}/{folder}_{n:04d}.jpg"),
    "eurosat": ("eurosat", "eurosat", "2750", "split_zhou_EuroSAT.json",
                [("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"), ("SeaLake", "SeaLake"),
                 ("Highway", "Highway")],
                ["Annual Crop Land", "Forest", "Sea or Lake", "Highway or Road"],
                lambda folder, part, n: f"{folder}/{folder}_{n}.jpg"),
    "ucf101": ("ucf101", "UCF101", "UCF-101-midframes", "split_zhou_UCF101.json",
               [("Apply_Eye_Makeup", "Apply_Eye_Makeup"), ("Archery", "Archery"), ("Baby_Crawling", "Baby_Crawling"),
                ("Basketball", "Basketball")],
               ["Apply_Eye_Makeup", "Archery", "Baby_Crawling", "Basketball"],
               lambda folder, part, n: f"{folder}/v_{folder.replace('_', '')}_g{n:02d}_c01.jpg"),
}

FGVC_VARIANTS = ["707-320", "727-200", "F-16A/B", "Falcon 2000"]
IMAGENET_CLASSES = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark",
                    "n01491361": "tiger shark"}
IMAGENET_CLASSES_FIRST = next(iter(IMAGENET_CLASSES))
BENCHMARKS = ["imagenet", *SPLIT_JSON, "fgvc"]
CONVENTIONS = ("coop", "clip-lora")


def build(name: str, root: Path, convention: str = "coop") -> Tree:
    """Write the miniature `name` dataset under `root` (the --root_path) and describe it."""
    if name == "imagenet":
        return build_imagenet(root, convention)
    if name == "fgvc":
        return build_fgvc(root, "fgvc_aircraft")
    return build_split_json(name, root, convention)


def build_split_json(name: str, root: Path, convention: str = "coop") -> Tree:
    coop, clip_lora, image_dir, split_name, classes, expected, path_of = SPLIT_JSON[name]
    folder = root / (coop if convention == "coop" else clip_lora)
    images = folder / image_dir
    record: dict[str, list] = {}
    n = 0
    for part, per_class in PER_CLASS.items():
        entries = []
        for label, (prefix, classname) in enumerate(classes):
            for _ in range(per_class):
                n += 1
                relative = path_of(prefix, part, n)
                _write_image(images / relative, label)
                entries.append([relative, label, classname])
        record[part] = out_of_label_order(entries, label_of=lambda entry: entry[1])
    split_file = folder / split_name
    split_file.write_text(json.dumps(record, indent=4))
    return Tree(name, root, images, expected,
                {part: len(entries) for part, entries in record.items()}, split_file,
                {part: [(e[0], e[1]) for e in entries] for part, entries in record.items()})


def build_fgvc(root: Path, folder_name: str = "fgvc_aircraft") -> Tree:
    folder = root / folder_name
    images = folder / "images"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "variants.txt").write_text("".join(f"{v}\n" for v in FGVC_VARIANTS))
    entries: dict[str, list[tuple[str, int]]] = {}
    n = 1000000
    for part, per_class in PER_CLASS.items():
        lines = []
        for label, variant in enumerate(FGVC_VARIANTS):
            for _ in range(per_class):
                n += 1
                _write_image(images / f"{n:07d}.jpg", label)
                lines.append((f"{n:07d}", label, variant))
        lines = out_of_label_order(lines, label_of=lambda line: line[1])
        (folder / f"images_variant_{part}.txt").write_text("".join(f"{i} {v}\n" for i, _, v in lines))
        entries[part] = [(f"{i}.jpg", label) for i, label, _ in lines]
    return Tree("fgvc", root, images, list(FGVC_VARIANTS),
                {part: len(e) for part, e in entries.items()}, folder / "images_variant_train.txt", entries)


def build_imagenet(root: Path, convention: str = "coop") -> Tree:
    folder = root / "imagenet"
    images = folder / "images" if convention == "coop" else folder
    for label, wnid in enumerate(IMAGENET_CLASSES):
        # Written out of name order, with ImageNet's upper-case suffix: the loader must sort.
        for n in reversed(range(IMAGENET_TRAIN)):
            _write_image(images / "train" / wnid / f"{wnid}_{n}.JPEG", label)
        for n in range(IMAGENET_TEST):
            _write_image(images / "val" / wnid / f"ILSVRC2012_val_{label * 10 + n:08d}.JPEG", label)
    (images / "train" / IMAGENET_CLASSES_FIRST / "readme.txt").write_text("not an image")
    # The real file lists all 1,000 classes; extra lines for absent classes must not matter.
    (folder / "classnames.txt").write_text(
        "".join(f"{wnid} {name}\n" for wnid, name in IMAGENET_CLASSES.items()) + "n01494475 hammerhead shark\n")
    n_classes = len(IMAGENET_CLASSES)
    return Tree("imagenet", root, images / "train", list(IMAGENET_CLASSES.values()),
                {"train": n_classes * IMAGENET_TRAIN, "val": 0, "test": n_classes * IMAGENET_TEST})


# --- ImageNet's variants (test-only), in CoOp's layouts --------------------------------------------

# The first 12 ImageNet classes, in classnames.txt's (sorted) order; the real file has 1,000.
VARIANT_CLASSES = {
    "n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark", "n01491361": "tiger shark",
    "n01494475": "hammerhead shark", "n01496331": "electric ray", "n01498041": "stingray", "n01514668": "rooster",
    "n01514859": "hen", "n01518878": "ostrich", "n01530575": "brambling", "n01531178": "goldfinch",
}
VARIANTS = ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
# name: (CoOp folder, image folder, the WordNet ids with a folder; None = numbered folders 0..N-1)
# ImageNet-A and -R hold a subset of the classes (200 of the 1,000), each its own.
VARIANT_LAYOUTS: dict[str, tuple[str, str, list[str] | None]] = {
    "imagenetv2": ("imagenetv2", "imagenetv2-matched-frequency-format-val", None),
    "imagenet_sketch": ("imagenet-sketch", "images", list(VARIANT_CLASSES)),
    "imagenet_a": ("imagenet-adversarial", "imagenet-a", ["n01443537", "n01491361", "n01514859", "n01531178"]),
    "imagenet_r": ("imagenet-rendition", "imagenet-r", ["n01440764", "n01484850", "n01496331", "n01518878"]),
}
VARIANT_SUFFIX = {"imagenetv2": ".jpeg", "imagenet_sketch": ".JPEG", "imagenet_a": ".jpg", "imagenet_r": ".jpg"}
VARIANT_IMAGES = 2  # per class


@dataclass
class VariantTree:
    name: str
    root: Path                  # what --root_path gets
    images: Path                # the folder of class folders
    classnames: list[str]       # the classifier the loader must build, in label order
    labels: dict[str, int]      # image path -> the label the loader must give it
    classnames_file: Path       # the copy in the variant's folder (absent with copy=False)


def build_variant(name: str, root: Path, copy: bool = True) -> VariantTree:
    """Write the miniature variant under `root`; `copy=False` leaves its classnames.txt copy out and
    writes ImageNet's own (DATA/imagenet/classnames.txt) instead."""
    folder, image_dir, wnids = VARIANT_LAYOUTS[name]
    images = root / folder / image_dir
    names = list(VARIANT_CLASSES.values())
    if wnids is None:  # ImageNet-V2: folder i = line i of classnames.txt, all classes in the classifier
        class_folders = [str(i) for i in range(len(names))]
        classnames = names
    else:  # by WordNet id: labels follow the sorted folder names, only those classes in the classifier
        class_folders = sorted(wnids)
        classnames = [VARIANT_CLASSES[wnid] for wnid in class_folders]
    labels = {}
    for label, class_folder in enumerate(class_folders):
        for n in range(VARIANT_IMAGES):
            path = images / class_folder / f"{name}_{label}_{n}{VARIANT_SUFFIX[name]}"
            _write_image(path, label)
            labels[str(path)] = label
    if name == "imagenet_a":
        (images / "README.txt").write_text("not a class")  # the archive's own, beside the class folders
    lines = [f"{wnid} {classname}\n" for wnid, classname in VARIANT_CLASSES.items()]
    if wnids is not None:
        lines.reverse()  # folders named by WordNet id take their names by id, never by line position
    classnames_file = root / folder / "classnames.txt"
    target = classnames_file if copy else root / "imagenet" / "classnames.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(lines))
    return VariantTree(name, root, images, classnames, labels, classnames_file)


def write_folder_classes(root: Path, classes: dict[str, int]) -> None:
    """`root/<class>/<i>.png` with `classes[name]` images each (for --dataset folder)."""
    for label, (name, count) in enumerate(classes.items()):
        for i in range(count):
            path = root / name / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (label * 40 % 256, 0, 0)).save(path)


# --- the OOD sets of MCM's ImageNet benchmark (test-only, unlabelled) -------------------------------------

OOD_SETS = ["ood_inaturalist", "ood_sun", "ood_places", "ood_textures"]
# name: its folder under --root_path in MCM's layout (datasets/ood_benchmark.py)
OOD_MCM_FOLDERS = {
    "ood_inaturalist": "ImageNet_OOD_dataset/iNaturalist",
    "ood_sun": "ImageNet_OOD_dataset/SUN",
    "ood_places": "ImageNet_OOD_dataset/Places",
    "ood_textures": "ImageNet_OOD_dataset/dtd/images",
}


@dataclass
class OodTree:
    name: str
    root: Path                  # what --root_path gets
    folder: Path                # the set's folder
    images: list[str]           # every image the loader must find, in its (sorted) order


def build_ood_set(name: str, root: Path, folder: str | None = None) -> OodTree:
    """Write a miniature OOD set under `root/<folder>` (default: MCM's layout) and describe it: images in a
    class folder, as ImageFolder reads the archives, one of them a level deeper and with an upper-case
    suffix, beside files that are not images (a readme, a macOS "._" companion, a hidden folder)."""
    where = root / (folder or OOD_MCM_FOLDERS[name])
    images = [where / "images" / f"{name}_0.jpg", where / "images" / f"{name}_1.JPG",
              where / "images" / "deeper" / f"{name}_2.png"]
    for label, path in enumerate(images):
        _write_image(path, label)
    (where / "README.txt").write_text("not an image")
    (where / "images" / f"._{name}_0.jpg").write_bytes(b"Mac OS X AppleDouble, not an image")
    _write_image(where / ".thumbnails" / "t.jpg", 0)
    return OodTree(name, root, where, [str(path) for path in sorted(images)])


# --- published few-shot splits (--split_file) -------------------------------------------------------------

FOREIGN = "/home/someone/DATA/dtd/images"  # where a split file's author kept DTD


def write_2sfs_pair(folder: Path, stem: str, train: list[tuple[str, int]], val: list[tuple[str, int]] | None,
                    classnames: list[str], prefix: str = FOREIGN) -> Path:
    """2SFS's pair of files (FarinaMatteo/rethinking_fewshot_vlms, datasets/utils.py: one Datum's attributes per
    line) for these (relative path, label) lists, with another machine's absolute paths; no val file for None."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": train} if val is None else {"train": train, "val": val}
    for part, pairs in parts.items():
        (folder / f"{stem}_{part}.jsonl").write_text("".join(
            json.dumps({"_impath": f"{prefix}/{path}", "_label": label, "_domain": 0,
                        "_classname": classnames[label]}) + "\n" for path, label in pairs))
    return folder / f"{stem}_train.jsonl"


def hand_picked(tree: Tree, part: str, per_class: int) -> list[tuple[str, int]]:
    """The last `per_class` images of each class in the split file, classes in reverse: nothing our draw orders so."""
    by_label: dict[int, list[tuple[str, int]]] = {}
    for path, label in tree.entries[part]:
        by_label.setdefault(label, []).append((path, label))
    return [pair for label in sorted(by_label, reverse=True) for pair in by_label[label][-per_class:]]
