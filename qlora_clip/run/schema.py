"""The results line, declared once: every field, its type, what it means, and when a line has it.

Every writer of a results line takes its keys from here (`fields(...)` refuses a name the schema
does not declare or a value of the wrong type), main.py checks the assembled line with `check`
before appending it, and docs/results.md's table is generated from this declaration:

    python -m qlora_clip.run.schema --write docs/results.md

(tests/test_schema.py fails when the file and the declaration disagree). A reader of old lines
should still use `.get`: lines written before a field existed lack it.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from qlora_clip.methods.table import METHODS

Number = (int, float)


@dataclass(frozen=True)
class Field:
    name: str
    type: type | tuple[type, ...]
    meaning: str
    nullable: bool = False  # null where the meaning says so
    when: str | None = None  # None: every line has it; else a key of CONDITIONS

    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        names = {int: "int", float: "number", str: "string", bool: "bool", dict: "object", list: "list"}
        text = " or ".join(dict.fromkeys(names[t] for t in types))
        return f"{text} or null" if self.nullable else text


# The conditions under which a line carries a field that not every line has.
CONDITIONS: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "base2new": ("with `--protocol base2new`", lambda record: record.get("protocol") == "base2new"),
    "eval_datasets": ("with `--eval_datasets`", lambda record: bool(record.get("config", {}).get("eval_datasets"))),
    "baseline": ("with a method fitted on frozen features (a baseline: docs/baselines.md)",
                 lambda record: _trains_on(record) == "features"),
    # The text pass's speed-ups belong to the training loop (trainer.py); a baseline is fitted on frozen
    # features (`baseline_features`).
    "adapter": ("with a method trained on images (not a baseline)", lambda record: _trains_on(record) == "images"),
    "extra_evals": ("with `--protocol base2new` or `--eval_datasets`",
                    lambda record: record.get("protocol") == "base2new"
                    or bool(record.get("config", {}).get("eval_datasets"))),
    "split_file": ("with `--split_file`", lambda record: bool(record.get("config", {}).get("split_file"))),
    "ood_datasets": ("with `--ood_datasets`", lambda record: bool(record.get("config", {}).get("ood_datasets"))),
    "interpolate": ("with `--interpolate`", lambda record: bool(record.get("config", {}).get("interpolate"))),
    "save_predictions": ("with `--save_predictions`",
                         lambda record: bool(record.get("config", {}).get("save_predictions"))),
}

def _trains_on(record: dict) -> str | None:
    method = METHODS.get(record.get("mode"))
    return method.trains_on if method is not None else None


SCHEMA: tuple[Field, ...] = (
    # --- which run -----------------------------------------------------------------------------
    Field("mode", str, "the method (`--mode`)"),
    Field("dataset", str, "the dataset trained and tested on (`--dataset`)"),
    Field("shots", int, "training images per class (`--shots`)"),
    Field("shots_drawn", int, "the fewest distinct training images of any class in the draw: `shots`, unless a "
                              "class had fewer images than `--shots` and the draw repeated some (the summaries "
                              "mark such cells `*N`; docs/protocol.md, \"Few-shot sampling\")"),
    Field("seed", int, "seed of the few-shot draw and of training (`--seed`)"),
    Field("backbone", str, "`--backbone` as given (alias, hub id, folder or a tiny offline checkpoint's name)"),
    Field("family", str, "the backbone's family, from its config.json: `clip`, `siglip`, `siglip2` or "
                         "`metaclip_2` (qlora_clip/families.py)"),
    Field("protocol", str, "`fewshot` (train and test on all classes) or `base2new`"),
    Field("config", dict, "every flag of main.py with its value: the run's full configuration (with "
                          "`--split_file`, also `split_file_digest`, the digest of that file's lists)"),
    # --- accuracy ------------------------------------------------------------------------------
    Field("zero_shot_acc", float, "top-1 accuracy (%) of the frozen base (adapters off) on the run's test set, "
                                  "measured before training"),
    Field("zero_shot_cached", bool, "whether `zero_shot_acc` (and its calibration) was read from the zero-shot "
                                    "store, where an earlier run on the same base, test set, prompts and precision "
                                    "put it (docs/protocol.md, \"Evaluation\"), instead of computed"),
    Field("test_acc", float, "top-1 accuracy (%) on the full test set of the reported model: the last training "
                             "step's, or with `--select_on val` the step `protocol_card` names"),
    Field("base_acc", float, "base classes' test accuracy (%) against the base class names; equals `test_acc`",
          when="base2new"),
    Field("new_acc", float, "new classes' test accuracy (%) against the new class names only", when="base2new"),
    Field("hm_acc", float, "harmonic mean 2BN/(B+N) of `base_acc` and `new_acc`", when="base2new"),
    Field("zero_shot_base_acc", float, "zero-shot accuracy (%) on the base classes", when="base2new"),
    Field("zero_shot_new_acc", float, "zero-shot accuracy (%) on the new classes", when="base2new"),
    Field("zero_shot_hm_acc", float, "harmonic mean of the two zero-shot accuracies", when="base2new"),
    Field("eval_datasets", dict, "per `--eval_datasets` target: `{test_acc, zero_shot_acc}` on its full test set "
                                 "with its own class names", when="eval_datasets"),
    # --- beyond the accuracy (docs/evaluation.md) ---------------------------------------------------
    Field("zero_shot_ece", float, "expected calibration error (%) of the zero-shot model on the test set: top label, "
                                  "15 equal-width bins, from the logits `zero_shot_acc` counts (read from the "
                                  "zero-shot store with it where `zero_shot_cached`)"),
    Field("zero_shot_nll", float, "mean negative log-likelihood of the label (nats), zero-shot"),
    Field("zero_shot_brier", float, "Brier score, zero-shot: mean over images of the sum over classes of "
                                    "(p - one-hot)^2, in [0, 2]"),
    Field("test_ece", float, "expected calibration error (%) of the reported model, from the logits `test_acc` "
                             "counts"),
    Field("test_nll", float, "mean negative log-likelihood of the label (nats), the reported model"),
    Field("test_brier", float, "Brier score of the reported model"),
    Field("reliability", dict, "the reliability diagram's numbers, `{zero_shot, test}`: per confidence bin "
                               "`bin_counts`, `bin_accuracy`, `bin_confidence` (fractions; null for an empty bin), "
                               "and the mean `confidence`"),
    Field("ood", dict, "per `--ood_datasets` set (its name or path): `images`, and MCM's `auroc` and `fpr95` "
                       "(%, FPR at 95 % TPR) of the reported model against the test images, `zero_shot_auroc` and "
                       "`zero_shot_fpr95` of the zero-shot model", when="ood_datasets"),
    Field("interpolation", list, "per `--interpolate` alpha, in order: `{alpha, test_acc, test_ece, test_nll, "
                                 "test_brier}`, with `eval_datasets` (target -> accuracy %) and `ood` (set -> "
                                 "`{auroc, fpr95}`) where the run has them; alpha 0 is the zero-shot model, 1 the "
                                 "reported one", when="interpolate"),
    Field("predictions_file", str, "the safetensors file of the test set's logits and labels, zero-shot and "
                                   "trained (`--save_predictions`); null when it could not be written",
          nullable=True, when="save_predictions"),
    Field("protocol_card", dict, "under which protocol the numbers were chosen: `hyperparameters` (published "
                                 "defaults, published per-dataset values, or flags changed from the defaults: "
                                 "`changed_flags`), `defaults_source`, `selection` (last step, or best val accuracy "
                                 "every `select_every` steps) with `selected_step`, `validation` (the validation data "
                                 "it saw), `test_set_used_to_choose` (always false) and `label`, the short form tables "
                                 "group by"),
    Field("baseline_params", dict, "the baseline's hyperparameters as it ran: its paper's values with their "
                                   "`source`, and what it searched on the val images (e.g. the probe's `C`, "
                                   "Tip-Adapter's `alpha` and `beta`, a zero-shot ensemble's `template_set`)",
          when="baseline"),
    Field("baseline_features", dict, "per frozen-feature set the baseline was fitted on (`val`, `train`, "
                                     "`train-<view stream>`; the test set is the evaluator's): images, views, dim, `seconds` to encode or read it, "
                                     "`cached` (read from the feature cache), `file`, and how its pixels were made",
          when="baseline"),
    Field("extra_zero_shot_cached", dict, "per test set besides the run's own (base2new's new classes, each "
                                          "`--eval_datasets` target, by name): whether its zero-shot accuracy was "
                                          "read from the zero-shot store", when="extra_evals"),
    # --- training ------------------------------------------------------------------------------
    Field("train_seconds", float, "wall time of the training loop (resumed parts included; loading and "
                                  "evaluation excluded), synchronised with the GPU; for a baseline, its fit and "
                                  "search on frozen features (their encoding is in `baseline_features`)"),
    Field("total_steps", int, "optimizer steps: n_iters x shots (0 with `--eval_only`)"),
    Field("train_images_seen", int, "images through the model in training, all processes"),
    Field("skipped_steps", int, "steps fp16's GradScaler skipped because gradients overflowed; null without "
                                "a scaler (fp32, bf16)", nullable=True),
    Field("input_wait_seconds", float, "time the training loop waited for its next batch (this process)"),
    Field("final_loss", float, "mean loss of the last step's images; null when no step ran", nullable=True),
    # --- the text pass ---------------------------------------------------------------------------
    Field("text_once_per_update", bool, "whether each optimizer step encoded the class prompts once and "
                                        "back-propagated the text tower once, with the gradient summed over "
                                        "the step's micro-batches (false: see `text_speedups_off`)", when="adapter"),
    Field("text_shards", int, "processes each step's text pass was split over, each encoding its share of the "
                              "prompts (1: not split)", when="adapter"),
    Field("text_buckets", int, "length buckets the run's class prompts were encoded in, for training and "
                               "evaluation (1: one call, padded to the longest prompt)", when="adapter"),
    Field("text_speedups_off", dict, "why each of `text_once_per_update`, `text_shards`, `text_buckets` that is "
                                     "off is off, by name (`{}` when all three are on)", when="adapter"),
    # --- memory and size -----------------------------------------------------------------------
    Field("peak_memory_mb", float, "peak memory of the training loop, reset before its first step: PyTorch's "
                                   "allocated bytes on CUDA, the process's resident set on the CPU; null with "
                                   "`--eval_only`", nullable=True),
    Field("memory_kind", str, "what `peak_memory_mb` measures: `cuda_allocated`, `cpu_rss`, or "
                              "`cpu_rss_process_lifetime` where the peak could not be reset", nullable=True),
    Field("peak_memory_reserved_mb", float, "the training loop's peak of memory reserved by PyTorch's CUDA "
                                            "allocator; null on the CPU", nullable=True),
    Field("eval_peak_memory_mb", float, "the highest peak of the zero-shot and test evaluations, measured apart"),
    Field("eval_memory_kind", str, "what `eval_peak_memory_mb` measures (as `memory_kind`)"),
    Field("eval_peak_memory_reserved_mb", float, "the evaluations' reserved CUDA peak; null on the CPU",
          nullable=True),
    Field("model_footprint_mb", float, "the adapted model's weights (`get_memory_footprint()`): where the 4-bit "
                                       "base shows"),
    Field("trainable_params", int, "weights the optimizer updates (0 with `--eval_only`)"),
    Field("adapter_params", int, "the method's weights, trainable or not (BitFit, full fine-tuning: the tuned "
                                 "parameters)"),
    Field("adapter_size_mb", float, "bytes of the tensors `--save_path` writes for the adapter (whether or not it "
                                    "was saved; the file adds a header of a few KB), in MiB: PiSSA's and OLoRA's "
                                    "saved form is a LoRA of twice the rank; null for a baseline", nullable=True),
    Field("peft_config", dict, "the adapter's complete effective config: PEFT's config as a dict (`to_dict()`, "
                               "with the ranks AdaLoRA and EVA settled on), or for BitFit and full fine-tuning "
                               "(our own code) what they tune; null for a baseline", nullable=True),
    Field("method_args", dict, "the method's settings that are not PEFT config fields (LoRA+'s "
                               "`loraplus_lr_ratio`, EVA's `eva_rho`); `{}` for most methods and the baselines"),
    Field("quantized", bool, "whether the frozen base was stored in 4-bit NF4"),
    # --- evaluation ----------------------------------------------------------------------------
    Field("eval_seconds", float, "wall time of the zero-shot and test evaluations of the run's own test set "
                                 "(a run that finds the test images cached shows what the cache saved)"),
    Field("test_images_per_process", list, "test images each process evaluated, in rank order"),
    Field("subset_file", str, "the JSON file recording the few-shot draw (train and val images, labels)"),
    Field("split_file", dict, "the published split the run trained on instead of our draw: `path` (as given), "
                              "`format` (`2sfs`, `dassl` or `qlora-clip`), `files` read, `digest` of its train and "
                              "val lists (also in `config.split_file_digest`, part of the run's identity), and "
                              "`val`: where the val images came from (the file's list, or drawn where it has none)",
          when="split_file"),
    # --- where, when, with what ----------------------------------------------------------------
    Field("compute_dtype", str, "the precision the run computed in: `fp32`, `fp16` or `bf16` (autocast)"),
    Field("device", str, "the torch device of the main process, e.g. `cuda:0`, `cpu`"),
    Field("device_name", str, "the GPU's name, or `cpu`"),
    Field("processes", int, "data-parallel processes (1 unless started with `accelerate launch`)"),
    Field("host", str, "the machine's host name"),
    Field("cuda_visible_devices", str, "CUDA_VISIBLE_DEVICES when the run started; null when unset", nullable=True),
    Field("started_at", str, "when the run started, ISO 8601 with time zone"),
    Field("finished_at", str, "when the run finished, ISO 8601 with time zone"),
    Field("versions", dict, "versions of torch, torchvision, transformers, peft, bitsandbytes, accelerate"),
    # --- outputs -------------------------------------------------------------------------------
    Field("run_name", str, "the run's name in the tracking backends (`--run_name`, or "
                           "`<mode>-<dataset>-<K>shot-seed<S>`)"),
    Field("run_group", str, "`--run_group` (a sweep's group); null when unset", nullable=True),
    Field("tracking_dir", str, "the folder the tracking backends logged to; null with `--report_to none`",
          nullable=True),
    Field("adapter_dir", str, "where `--save_path` saved the adapter; null when not saved", nullable=True),
    Field("merge_export", str, "the folder `--merge_export` wrote the merged model to; null without it",
          nullable=True),
)
FIELDS = {field.name: field for field in SCHEMA}


class SchemaError(Exception):
    """A writer used a name or type the schema does not declare: a bug in the code, not in the input."""


def _type_ok(field: Field, value: Any) -> bool:
    if value is None:
        return field.nullable
    types = field.type if isinstance(field.type, tuple) else (field.type,)
    if isinstance(value, bool) and bool not in types:
        return False  # True is an int to Python, never to a results line
    if float in types and isinstance(value, int):
        return True   # a whole number is a number
    return isinstance(value, types)


def fields(**values: Any) -> dict:
    """Part of a results line; every name must be declared in SCHEMA and every value of its type."""
    for name, value in values.items():
        field = FIELDS.get(name)
        if field is None:
            raise SchemaError(f"results field {name!r} is not declared in qlora_clip/schema.py")
        if not _type_ok(field, value):
            raise SchemaError(f"results field {name!r} must be {field.type_name()}, not {value!r}")
    return dict(values)


def expected_names(record: dict) -> set[str]:
    """The fields a line with this protocol and config must have."""
    return {f.name for f in SCHEMA if f.when is None or CONDITIONS[f.when][1](record)}


def check(record: dict) -> None:
    """Raise SchemaError unless the line has exactly the declared fields for its kind, each of its type."""
    expected = expected_names(record)
    missing, extra = sorted(expected - record.keys()), sorted(record.keys() - expected)
    if missing or extra:
        raise SchemaError(f"results line: missing {missing}, undeclared {extra}")
    fields(**record)
    for name in ("zero_shot_acc", "test_acc"):
        if not math.isfinite(record[name]):
            raise SchemaError(f"results field {name!r} is {record[name]}")


def markdown() -> str:
    """The schema as a Markdown table (docs/results.md)."""
    rows = ["| field | type | when | meaning |", "|---|---|---|---|"]
    for f in SCHEMA:
        when = CONDITIONS[f.when][0] if f.when else "always"
        rows.append(f"| `{f.name}` | {f.type_name()} | {when} | {f.meaning} |")
    return "\n".join(rows) + "\n"


START, END = "<!-- results-schema:start -->", "<!-- results-schema:end -->"


def with_table(document: str) -> str:
    """`document` with the text between the schema markers replaced by the current table."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(document):
        raise SchemaError(f"the document has no {START} ... {END} markers")
    return pattern.sub(lambda _: f"{START}\n{markdown()}{END}", document)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlora_clip.run.schema", description="Print or write the results schema.")
    p.add_argument("--write", type=Path, help="replace the table between the schema markers of this Markdown file")
    args = p.parse_args(argv)
    if args.write is None:
        sys.stdout.write(markdown())
    else:
        args.write.write_text(with_table(args.write.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
