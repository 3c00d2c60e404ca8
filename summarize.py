"""Tables and a plot from results files.

    python summarize.py RESULTS.jsonl [MORE.jsonl ...] [--out DIR] [--tables paper,...] [--plot] [--reference]

(a) the paper's table: rows = method x shots, columns = datasets + average, cells = mean ± sample std
    over seeds with the number of seeds; a cell that lacks one of the expected seeds is flagged;
(b) the efficiency table: training time, peak memory, model footprint and accuracy per dataset and shots,
    with a zero-shot row;
(c) with --plot, PNGs: the average accuracy vs shots per method, optionally with the published CLIP-LoRA
    averages; accuracy against peak memory and against training time (one point per method, the Pareto
    front drawn); a reliability diagram per method; the interpolation curves of --interpolate runs
    (summaries/pictures.py);
(d) the base-to-novel table (--protocol base2new runs): base / new / HM per dataset and their average,
    whose HM is the harmonic mean of the average base and the average new accuracy, optionally with
    the published averages of other methods;
(e) the cross-dataset transfer and domain generalization tables (runs with --eval_datasets): the source's
    accuracy, each target's, and the average over targets (other datasets; ImageNet's variants), then each
    target's change from zero-shot and their mean (forgetting);
(f) the methods table: per method, trainable parameters, adapter size on disk, weight footprint, training
    time, peak memory, zero-shot and test accuracy side by side, per backbone and shots, --sort COLUMN;
    with calibration (ECE, NLL), OOD detection (AUROC, FPR@95) and forgetting (the change from zero-shot
    on the --eval_datasets targets) where the runs have them.
Every table is built from the runs of one protocol card (qlora_clip/run/card.py) and says its card; runs of
different cards are never averaged together (with several cards, each has its files in a folder of its own).
Tables (a), (b), (c) and (f) read few-shot-protocol runs only (a line without "protocol" is one); (d) reads
base-to-novel runs only. Lines share a cell only with the same backbone, dataset (each --dataset folder image
folder is its own), method and flags, device kind and precision (summaries/records.py, label); a cell whose
runs drew fewer distinct images per class than their shots is marked "*N distinct".
Markdown goes to stdout, CSV and PNG files to --out. Lines that cannot be read are reported with their
file and line number on stderr and skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from run_utils import flag_defaults
from summaries.base2new import base2new_section
from summaries.cards import by_card, folder_name, with_card
from summaries.efficiency import efficiency_section
from summaries.fewshot import paper_rows, paper_section
from summaries.methods import SORT_KEYS, methods_section
from summaries.pictures import draw_pictures
from summaries.plot import plot
from summaries.records import SummaryError, label, latest_by_run, load, protocol_of
from summaries.transfer import transfer_section

TABLES = ("paper", "efficiency", "methods", "base2new", "cross_dataset", "domain_generalization")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags; --tables becomes a list, and tables_named says whether the user chose them."""
    p = argparse.ArgumentParser(prog="summarize.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results", nargs="+", help="results files (JSON lines written by main.py)")
    p.add_argument("--out", default="results/summary", help="folder for the CSV and PNG files")
    p.add_argument("--tables", default=None,
                   help=f"comma-separated, from: {', '.join(TABLES)} (default: every table the results have runs for)")
    p.add_argument("--plot", action="store_true",
                   help="write OUT/accuracy_vs_shots.png, accuracy_vs_memory.png, accuracy_vs_time.png, "
                        "reliability/*.png and interpolation.png (those the runs have data for)")
    p.add_argument("--reference", action="store_true",
                   help="draw the published CLIP-LoRA averages in the plot (implies --plot) and print the "
                        "published base-to-novel averages under the base-to-novel table")
    p.add_argument("--sort", choices=SORT_KEYS, default="method",
                   help="the methods table's order: best first by this column (smallest cost, highest accuracy); "
                        "method = the order of the methods table")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds every cell should have (default: every seed found for the backbone)")
    args = p.parse_args(argv)
    # Asked-for tables that have no runs get a note; by default they are silently left out.
    args.tables_named = args.tables is not None
    args.tables = [t for t in (args.tables or ",".join(TABLES)).replace(" ", "").split(",") if t]
    unknown = sorted(set(args.tables) - set(TABLES))
    if unknown:
        p.error(f"--tables: unknown table {', '.join(unknown)}; choose from {', '.join(TABLES)}")
    args.plot = args.plot or args.reference
    return args


def main(argv: list[str] | None = None) -> int:
    """Print the tables asked for and write their CSV files (and the plots); 2 when nothing could be read."""
    args = parse_args(argv)
    try:
        records = load(args.results)
    except SummaryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    label(records, flag_defaults())
    cards = list(by_card(records))
    sections, written, made = [], [], set()
    for card, mine in cards:
        # One card's runs at a time: numbers chosen under different protocols are never averaged together.
        out = Path(args.out) if len(cards) == 1 else Path(args.out) / folder_name(card)
        texts, files = card_tables(args, mine, out)
        sections += [with_card(text, card) for text in texts.values()]
        made |= set(texts)
        written += files
    for table in args.tables:
        if table not in made and args.tables_named:
            print(f"note: no runs for the {table} table in {', '.join(args.results)}", file=sys.stderr)
    print("\n\n".join(sections))
    print(f"wrote {', '.join(map(str, written)) or 'nothing'}", file=sys.stderr)
    return 0


def card_tables(args: argparse.Namespace, records: list[dict], out: Path) -> tuple[dict[str, str], list[Path]]:
    """The tables (by name) of one protocol card's runs, and the files written to `out` (CSV, and PNG with --plot)."""
    fewshot = latest_by_run([r for r in records if protocol_of(r) == "fewshot"])
    base2new = latest_by_run([r for r in records if protocol_of(r) == "base2new"])
    transfer = latest_by_run([r for r in records if protocol_of(r) == "fewshot" and r.get("eval_datasets")])
    expected = tuple(sorted(set(args.seeds))) if args.seeds else None
    rows = paper_rows(fewshot, expected)
    builders = {
        "paper": lambda: paper_section(rows, fewshot, out) if rows else "",
        "efficiency": lambda: efficiency_section(fewshot, expected, out) if fewshot else "",
        "methods": lambda: methods_section(fewshot, expected, out, args.sort) if fewshot else "",
        "base2new": lambda: base2new_section(base2new, expected, out, args.reference) if base2new else "",
        "cross_dataset": lambda: transfer_section("cross_dataset", transfer, expected, out),
        "domain_generalization": lambda: transfer_section("domain_generalization", transfer, expected, out),
    }
    texts, written = {}, []
    for table in args.tables:
        text = builders[table]()
        if text:
            texts[table] = text
            written.append(out / f"{table}_table.csv")
    if args.plot and rows:
        plot(rows, fewshot, out / "accuracy_vs_shots.png", args.reference)
        written.append(out / "accuracy_vs_shots.png")
        written += draw_pictures(fewshot, expected, out)
    elif args.plot:
        print("note: no few-shot runs, so no accuracy-vs-shots plot", file=sys.stderr)
    return texts, written


if __name__ == "__main__":
    sys.exit(main())
