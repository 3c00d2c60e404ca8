"""Check datasets on disk before training: `python check_data.py --root_path DATA [--datasets NAME ...]`.

For each dataset: is its folder where --root_path says (under CoOp's or CLIP-LoRA's folder name),
is its split file there and readable, is every image it lists present and decodable (decoded in
parallel worker processes, with a progress bar), and do the per-split image counts match the
published ones (each dataset module's SIZES, the table in DATASETS.md). Prints one table row per
dataset, then the first few missing or corrupt files; exits with 1 when anything is wrong.

`--datasets folder --write_split` also writes the split of your own image folder as a CoOp split
json (split.json), so its test set stays the same when images are added later.

`--download NAME ... [--mirror URL]` first fetches and lays out each named dataset that the check
does not accept yet (datasets/fetch/), then checks it; what could not be fetched is said under the
table, with the URLs tried and the manual steps.

`--write_2sfs SUBSET.json ... --out DIR` exports runs' few-shot draws (their results/subsets/*.json)
in 2SFS's format, DIR/<dataset folder>/split_fewshot/shot_K-seed_S_{train,val}.jsonl, so another
codebase trains on exactly our images (main.py's --split_file reads them back). It is a command of
this data tool rather than a flag of main.py because it runs nothing: it converts files a run wrote.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from datasets import DATASET_NAMES, SplitDataset, dataset_module, require_test_images
from qlora_clip.data.images import MissingImage, UnreadableImage
from qlora_clip.data.items import SplitSizes
from datasets.folder import coop_split
from datasets.splits import PARTS, MissingImages, NotFound
from qlora_clip.errors import UserError
from qlora_clip.paper import PAPER_DATASETS

DEFAULT_DATASETS = [name for name in DATASET_NAMES if name in PAPER_DATASETS]  # the 11 benchmarks
SPLIT_JSON = "split.json"
CHUNK = 64  # images per task sent to a worker: few enough round trips, a smooth progress bar


@dataclass
class Report:
    """What the check found for one dataset."""
    dataset: str
    status: str = "ok"
    counts: dict[str, int] = field(default_factory=dict)  # classes, train, val, test as read
    expected: SplitSizes | None = None
    missing: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (image, why it does not decode)
    error: str | None = None  # why the split could not be read
    notes: list[str] = field(default_factory=list)  # --download: what could not be fetched, what was kept

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def wrong_counts(self) -> list[str]:
        if self.expected is None or not self.counts:
            return []
        return [key for key, value in self.counts.items() if getattr(self.expected, key) != value]


# --- decoding, in worker processes ------------------------------------------------------------

_load_image: Callable[[Any], Any] | None = None


def _set_loader(load_image: Callable[[Any], Any]) -> None:
    global _load_image
    _load_image = load_image


def _decode_problem(source: Any) -> str | None:
    """None if the image decodes as a run decodes it (the dataset's loader, qlora_clip.data.images.open_rgb for
    files), else why not: a file it cannot decode or one it refuses (a floating-point image, an
    image above the pixel limit)."""
    try:
        _load_image(source)
    except (FileNotFoundError, MissingImage):
        return "missing"
    except UnreadableImage as err:
        return str(err).removeprefix(f"{source}: ")
    except Exception as err:  # noqa: BLE001 - other loaders: any failure to decode is what we are looking for
        return f"{type(err).__name__}: {err}"
    return None


def decode_problems(sources: Sequence[Any], load_image: Callable[[Any], Any], workers: int,
                    desc: str) -> Iterator[tuple[Any, str]]:
    """(source, problem) for each of `sources` that `load_image` cannot decode, decoding in `workers` processes."""
    bar = tqdm(total=len(sources), desc=desc, unit="img", leave=False, disable=None)
    if workers <= 1:
        _set_loader(load_image)
        results = map(_decode_problem, sources)
        pool = None
    else:
        # The loader is handed over once per worker, not with every image (Fashion-MNIST's holds the array).
        pool = ProcessPoolExecutor(workers, initializer=_set_loader, initargs=(load_image,))
        results = pool.map(_decode_problem, sources, chunksize=CHUNK)
    try:
        for source, problem in zip(sources, results):
            bar.update()
            if problem is not None:
                yield source, problem
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# --- one dataset ------------------------------------------------------------------------------

def read_split(name: str, root: Path, report: Report) -> SplitDataset | None:
    """The dataset's split as its loader reads it, noting in `report` what stops or spoils it."""
    try:
        return dataset_module(name).load(root)
    except NotFound as err:
        report.status, report.error = "not found", str(err)
    except MissingImages as err:
        report.missing = err.missing
        return err.split
    except UserError as err:
        report.status, report.error = "bad split", str(err)
    except Exception as err:  # noqa: BLE001 - the checker diagnoses damaged data; it must not die of it
        report.status, report.error = "unreadable", f"reading the split failed: {type(err).__name__}: {err}"
    return None


def check_dataset(name: str, root: Path, workers: int) -> Report:
    report = Report(name, expected=getattr(dataset_module(name), "SIZES", None))
    split = read_split(name, root, report)
    if split is None:
        return report
    report.counts = {"classes": len(split.classnames), **{part: len(getattr(split, part)) for part in PARTS}}
    try:
        require_test_images(name, root, split)
    except UserError as err:
        report.error = str(err)
    missing = set(report.missing)
    # Each image once, should a split list it in two parts.
    sources = list(dict.fromkeys(item.source for part in PARTS for item in getattr(split, part)
                                 if item.source not in missing))
    for source, problem in decode_problems(sources, split.load_image, workers, desc=name):
        if problem == "missing":
            report.missing.append(str(source))
        else:
            report.corrupt.append((str(source), problem))
    if report.missing:
        report.status = "missing images"
    elif report.corrupt:
        report.status = "corrupt images"
    elif report.error:
        report.status = "bad split"
    elif report.wrong_counts():
        report.status = "wrong counts"
    return report


# --- output -----------------------------------------------------------------------------------

def _count_cell(report: Report, key: str) -> str:
    if key not in report.counts:
        return "-"
    cell = f"{report.counts[key]:,}"
    if key in report.wrong_counts():
        cell += f" (expected {getattr(report.expected, key):,})"
    return cell


def format_table(reports: Sequence[Report]) -> str:
    header = ["dataset", "status", "classes", "train", "val", "test", "missing", "corrupt"]
    rows = [[r.dataset, r.status, *(_count_cell(r, key) for key in ("classes", *PARTS)),
             str(len(r.missing)), str(len(r.corrupt))] for r in reports]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_details(reports: Sequence[Report], examples: int) -> str:
    """What is wrong with each dataset that is not ok, with the first `examples` files."""
    lines = []
    for r in reports:
        lines += r.notes
        if r.error:
            lines.append(f"{r.dataset}: {r.error}")
        if r.missing:
            lines.append(f"{r.dataset}: {len(r.missing):,} listed image(s) missing, e.g.")
            lines += [f"  {path}" for path in r.missing[:examples]]
        if r.corrupt:
            lines.append(f"{r.dataset}: {len(r.corrupt):,} image(s) do not decode, e.g.")
            lines += [f"  {path}  ({why})" for path, why in r.corrupt[:examples]]
        wrong = r.wrong_counts()
        if wrong and not (r.missing or r.corrupt):
            lines.append(f"{r.dataset}: {', '.join(wrong)} differ from the published split (DATASETS.md); "
                         "a different or partial split file?")
    return "\n".join(lines)


# --- writing an own dataset's split -----------------------------------------------------------

def write_split(root: Path) -> Path:
    """Pin the split of a `--dataset folder` image folder: write it to ROOT/split.json."""
    record = coop_split(root)
    path = root / SPLIT_JSON
    tmp = path.with_suffix(".json.tmp")
    # One image per line: readable, and a diff of two splits shows the images that moved.
    parts = [f"  {json.dumps(part)}: [\n" + ",\n".join(f"    {json.dumps(entry)}" for entry in entries) + "\n  ]"
             for part, entries in record.items()]
    tmp.write_text("{\n" + ",\n".join(parts) + "\n}\n")
    tmp.replace(path)
    return path


# --- fetching ---------------------------------------------------------------------------------

def download(names: Sequence[str], root: Path, mirror: str | None, workers: int) -> list[Report]:
    """--download: fetch each dataset the check does not accept yet, lay it out, then check it."""
    from datasets.fetch import fetch_dataset  # torchvision's download helpers: only --download pays for them

    reports = []
    for name in names:
        report = check_dataset(name, root, workers)
        if not report.ok:
            outcome = fetch_dataset(name, root, mirror)
            if outcome.installed:
                report = check_dataset(name, root, workers)
            report.notes = outcome.problems
            if not report.ok:
                report.notes += [f"{name}: {root / target} was already there and was kept, not fetched again; if it "
                                 "is incomplete, move it aside and run again" for target in outcome.kept]
        reports.append(report)
    return reports


# --- exporting our draws in 2SFS's format ----------------------------------------------------

def export_2sfs(subsets: Sequence[Path], out: Path, image_root: Path | None) -> list[Path]:
    """--write_2sfs: each subset file as 2SFS's pair of files under OUT/<dataset folder>/split_fewshot/."""
    from datasets.split_files import image_folder_anchors, read_subset_dataset, write_2sfs

    written = []
    for subset in subsets:
        name = read_subset_dataset(subset)
        module = dataset_module(name) if name in DATASET_NAMES else None
        folders = getattr(module, "FOLDERS", None) or ((module.FOLDER,) if hasattr(module, "FOLDER") else ())
        if image_root is not None and not folders:
            raise UserError(f"--image_root: {subset} is a draw of --dataset {name}, whose images have no dataset "
                            "folder to place under another root; leave --image_root out (the paths stay this "
                            "machine's)")
        # 2SFS reads <its data root>/<dataset folder, CoOp's name>/split_fewshot/ (datasets/oxford_pets.py:44-47).
        folder = folders[0].split("/")[0] if folders else name
        anchors = image_folder_anchors(module) if folders else ()
        written += write_2sfs(subset, out / folder / "split_fewshot", image_root, anchors)
    return written


# --- command line -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="check_data.py",
        description="Check that datasets are where main.py looks for them, complete and decodable.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root_path", default="DATA", help="folder holding the datasets, as for main.py")
    # --datasets and --num_workers as sweep.py and main.py spell them; the singular --dataset (one
    # folder: `--datasets folder --write_split`) and the older --workers are accepted too.
    p.add_argument("--datasets", "--dataset", dest="datasets", nargs="+", choices=DATASET_NAMES,
                   default=DEFAULT_DATASETS, metavar="NAME",
                   help=f"datasets to check (default: the 11 benchmark datasets); from {', '.join(DATASET_NAMES)}")
    p.add_argument("--num_workers", "--workers", dest="num_workers", type=int, default=os.cpu_count() or 1,
                   help="processes decoding images (1 = decode in this process)")
    p.add_argument("--examples", type=int, default=5, help="missing or corrupt files listed per dataset")
    p.add_argument("--download", nargs="+", choices=DATASET_NAMES, metavar="NAME",
                   help="fetch these datasets (images and split files) into ROOT_PATH, laid out as the loaders read "
                        "them, unless the check already accepts them; then check them (instead of --datasets)")
    p.add_argument("--mirror", metavar="BASE_URL",
                   help="with --download: your own copy, tried before the public sources, serving each file under "
                        "its published name (BASE_URL/dtd-r1.0.1.tar.gz); when not given, $QLORA_CLIP_MIRROR if set")
    p.add_argument("--write_split", action="store_true",
                   help="with --dataset folder: write the folder's split to ROOT_PATH/split.json "
                        "(fixed seed), so its test set never changes")
    p.add_argument("--write_2sfs", nargs="+", type=Path, metavar="SUBSET_JSON",
                   help="export these runs' few-shot draws (RESULTS/subsets/*.json) in 2SFS's format to "
                        "OUT/<dataset folder>/split_fewshot/shot_K-seed_S_{train,val}.jsonl (no check runs)")
    p.add_argument("--out", type=Path, metavar="DIR", help="with --write_2sfs: the folder to write to")
    p.add_argument("--image_root", type=Path, metavar="DATA",
                   help="with --write_2sfs: write each image path as it will be on the machine that reads the files, "
                        "DATA/<dataset folder>/<image folder>/...; default: its absolute path here")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_workers < 1:
        parser.error(f"--num_workers must be >= 1 (got {args.num_workers})")
    if args.examples < 0:
        parser.error(f"--examples must be >= 0 (got {args.examples})")
    if args.write_split and args.datasets != ["folder"]:
        parser.error("--write_split writes the split of your own images: use it with --datasets folder only")
    if args.write_2sfs:
        if args.out is None:
            parser.error("--write_2sfs needs --out DIR, the folder the 2SFS files go to")
        others = [flag for flag, given in (("--download", args.download), ("--write_split", args.write_split),
                                           ("--datasets", args.datasets is not DEFAULT_DATASETS)) if given]
        if others:
            parser.error(f"--write_2sfs converts files and checks no dataset: leave out {', '.join(others)}")
    elif args.out is not None or args.image_root is not None:
        parser.error("--out and --image_root go with --write_2sfs")
    if args.download:
        from datasets.fetch import CATALOG
        from datasets.fetch.fetcher import mirror_base

        try:
            mirror_base(args.mirror)
        except UserError as err:
            parser.error(str(err))
        unknown = [name for name in args.download if name not in CATALOG]
        if unknown:
            parser.error(f"--download {' '.join(unknown)}: nothing to fetch for it (your own images, or a dataset "
                         f"from a package: see DATASETS.md); fetchable: {', '.join(CATALOG)}")
        if args.datasets is not DEFAULT_DATASETS:
            parser.error("--download NAME checks what it fetches: leave out --datasets")
    elif args.mirror is not None:
        parser.error("--mirror is where --download fetches from: use it with --download")
    return args


def main(argv: list[str] | None = None) -> int:
    """Check the datasets; 0 when all are complete, 1 when anything is missing or wrong."""
    args = parse_args(argv)
    root = Path(args.root_path)
    if args.write_2sfs:
        for path in export_2sfs(args.write_2sfs, args.out, args.image_root):
            print(f"written {path}")
        return 0
    if args.write_split:
        print(f"split written to {write_split(root)}")
    if args.download:
        reports = download(list(dict.fromkeys(args.download)), root, args.mirror, args.num_workers)
    else:
        reports = [check_dataset(name, root, args.num_workers) for name in dict.fromkeys(args.datasets)]
    print(format_table(reports))
    details = format_details(reports, args.examples)
    if details:
        print("\n" + details)
    return 0 if all(r.ok for r in reports) else 1


def cli() -> int:
    logging.basicConfig(format="%(message)s")
    logging.getLogger("datasets.fetch").setLevel(logging.INFO)  # --download says what it fetches from where
    try:
        return main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
