"""The command line of main.py: its flags, their checks, and the RunSpec built from them, once.

Every flag is declared once, as a field of the settings it sets (qlora_clip/flags.py says how; the
classes are qlora_clip.run.settings.SETTINGS): its default, type, help and role live there, and
`build_parser` only reads them. `parse_run` checks the flag values (all checks gathered here, so a
bad run fails before anything loads), builds the run's RunSpec once, and checks what the spec
names (output locations, a checkpoint to resume). Library modules (qlora_clip/) never import this
one: their errors come from errors.py. Only the commands (main.py, sweep.py, summarize.py,
bench.py) do. It imports no torch at module level, so planning a sweep or reading results files
stays cheap.
"""
from __future__ import annotations

import argparse
import logging
import math
import random
import re
from pathlib import Path
from typing import Any

from datasets import DATASET_NAMES, OOD_DATASETS, TEST_ONLY, untrainable_message
from qlora_clip.data.settings import SPLIT_FILE_DIGEST
from qlora_clip.errors import UserError
from qlora_clip.flags import add_flags
from qlora_clip.methods.table import BASE_METHODS, METHODS, four_bit_methods, resolve_flags, resolved_mode
from qlora_clip.run.outputs import export_target_error, location_error
from qlora_clip.run.settings import SETTINGS, flag_defaults
from qlora_clip.run.spec import RunSpec
from qlora_clip.run.tracking import WANDB_INSTALL, wandb_installed

# Run names and groups name folders under --logging_dir.
FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=-]*")
__all__ = ["build_parser", "flag_defaults", "normalised", "parse_args", "parse_run", "run_spec", "validation_errors"]


def build_parser() -> argparse.ArgumentParser:
    """main.py's command line, built from the settings that declare its flags."""
    p = argparse.ArgumentParser(
        prog="main.py",
        description="Few-shot adaptation of CLIP with a parameter-efficient method (LoRA, QLoRA, DoRA, QDoRA, "
                    "PiSSA, VeRA, OFT, IA3, ... : docs/methods.md) under the CLIP-LoRA protocol (docs/protocol.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_flags(p, SETTINGS)
    return p


def parse_run(argv: list[str] | None = None) -> RunSpec:
    """The run main.py's flags describe, checked: argparse's usage error (exit 2) naming the first problem."""
    parser = build_parser()
    args = parser.parse_args(argv)
    errors = validation_errors(args)
    spec = run_spec(normalised(args)) if not errors else None
    errors += spec_errors(spec) if spec is not None else []
    if errors:
        parser.error(errors[0])
    return spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked flag values as the results line records them (parse_run's spec.flags)."""
    return argparse.Namespace(**parse_run(argv).flags)


def normalised(args: argparse.Namespace) -> argparse.Namespace:
    """Flag values in the form a results line records them (after validation): the method resolved
    against --quantize, every flag left to the method at the method's value, --peft_args sorted."""
    for name, value in resolve_flags(vars(args)).items():
        setattr(args, name, value)
    if args.peft_args:
        from qlora_clip.methods import peft_args

        args.peft_args = peft_args.normalised(METHODS[args.mode], args.peft_args)
    if args.dataset == "folder":
        # Your own images are the dataset: record where they are, so a run on another folder (or on
        # the same folder named from elsewhere) is told apart from this one (spec.dataset_tag).
        args.root_path = str(Path(args.root_path).expanduser().resolve())
    if args.split_file:
        # The file's lists, not only its name, are part of the run's identity (qlora_clip/data/settings.py).
        from datasets.split_files import split_digest

        setattr(args, SPLIT_FILE_DIGEST, split_digest(_read_split_file(args)))
    return args


def validation_errors(args: argparse.Namespace) -> list[str]:
    """Every check on flag values, gathered in one place so a bad run fails before loading anything."""
    errors = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    need(args.shots >= 1, f"--shots must be >= 1 (got {args.shots}); use --n_iters 0 for zero-shot only")
    # numpy's generator takes seeds in [0, 2**32): a negative one failed in seed_everything.
    need(0 <= args.seed < 2 ** 32, f"--seed must be in [0, 2**32) (got {args.seed})")
    need(args.r is None or args.r >= 1, f"--r must be >= 1 (got {args.r})")
    # inf and nan pass a comparison or fail it with a misleading message; say which flag is not a number.
    need(args.alpha is None or (math.isfinite(args.alpha) and args.alpha > 0),
         f"--alpha must be a finite number > 0 (got {args.alpha})")
    need(args.dropout_rate is None or 0 <= args.dropout_rate < 1,
         f"--dropout_rate must be in [0, 1) (got {args.dropout_rate})")
    need(args.lr is None or (math.isfinite(args.lr) and args.lr > 0),
         f"--lr must be a finite number > 0 (got {args.lr})")
    need(args.n_iters is None or args.n_iters >= 0, f"--n_iters must be >= 0 (got {args.n_iters})")
    need(args.batch_size is None or args.batch_size >= 1, f"--batch_size must be >= 1 (got {args.batch_size})")
    need(args.num_workers is None or args.num_workers >= 0, f"--num_workers must be >= 0 (got {args.num_workers})")
    need(args.decode_budget_gb >= 0, f"--decode_budget_gb must be >= 0 (got {args.decode_budget_gb})")
    accum = args.gradient_accumulation_steps
    need(accum >= 1, f"--gradient_accumulation_steps must be >= 1 (got {accum})")
    batch_size = resolve_flags(vars(args))["batch_size"]  # the method's, when left out
    if accum >= 1 and batch_size is not None and batch_size >= 1:
        need(batch_size % accum == 0,
             f"--gradient_accumulation_steps {accum} must divide --batch_size {batch_size} "
             "so every micro-batch has the same size")
    need(args.checkpoint_every >= 0, f"--checkpoint_every must be >= 0 (got {args.checkpoint_every})")
    need(not (args.resume and args.eval_only), "--resume continues training; it cannot go with --eval_only")
    need(len(set(args.params)) == len(args.params), f"--params lists a projection twice: {args.params}")
    need(not args.eval_only or args.save_path,
         "--eval_only needs --save_path, the folder the adapter was saved under")
    need(not args.overwrite_export or args.merge_export, "--overwrite_export goes with --merge_export")
    errors += method_errors(args)
    errors += tracking_errors(args)
    errors += protocol_errors(args)
    errors += split_file_errors(args)
    errors += beyond_accuracy_errors(args)
    if args.device == "cuda":
        import torch

        need(torch.cuda.is_available(), "--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    return errors


def spec_errors(spec: RunSpec) -> list[str]:
    """What is wrong with what the run names: where it writes, the training state it would resume."""
    return output_errors(spec) + input_file_errors(spec)


def output_errors(spec: RunSpec) -> list[str]:
    """Every place the run writes, checked now: a file where a folder goes (or the reverse), or no
    permission, would otherwise stop the run after training and lose it."""
    outputs = spec.outputs
    places = [("--results_file", outputs.results_file, "file"),
              ("--results_file", spec.subset_path.parent, "folder")]  # the few-shot draw goes beside it
    if outputs.save_path and not spec.evaluation.eval_only:
        places.append(("--save_path", spec.adapter_dir, "folder"))
    if outputs.checkpoint_every > 0:
        places.append(("--checkpoint_dir", spec.checkpoint_path.parent, "folder"))
    if spec.evaluation.cache_dir:
        places.append(("--eval_cache_dir", Path(spec.evaluation.cache_dir), "folder"))
    if outputs.merge_export:
        places.append(("--merge_export", outputs.merge_export, "folder"))
    errors = [message for flag, path, kind in places if (message := location_error(flag, path, kind))]
    if outputs.merge_export and not errors:
        from qlora_clip.backbones.loading import backbone_folder

        refusal = export_target_error(outputs.merge_export, outputs.overwrite_export, backbone_folder(spec.backbone))
        errors += [refusal] if refusal else []
    return errors


def input_file_errors(spec: RunSpec) -> list[str]:
    """What is wrong with the files this one run would read first (the sweep plans runs without these).

    A damaged --resume checkpoint is refused now, before the model loads, rather than after the
    zero-shot evaluation.
    """
    checkpoint = spec.checkpoint_path
    if not spec.outputs.resume or not checkpoint.exists():
        return []
    from qlora_clip.training.checkpointing import read_checkpoint

    try:
        read_checkpoint(checkpoint)
    except UserError as err:
        return [str(err)]
    return []


def method_errors(args: argparse.Namespace) -> list[str]:
    """What the method (its table entry) cannot take: a base it does not train on, flags it refuses or has no
    field for, classes it was not fitted on, an export it cannot merge, --peft_args its config does not have."""
    method = METHODS[args.mode]
    if args.quantize == "4bit" and not method.quantized and method.four_bit_name is None \
            and "quantize" not in method.refuses:
        only = [m.name for m in BASE_METHODS if m.only_4bit]
        why = f" ({method.not_four_bit})" if method.not_four_bit else " in PEFT 0.21"
        return [f"--quantize 4bit: {args.mode} does not train on a 4-bit base{why}; the methods that do: "
                f"{', '.join(four_bit_methods() + only)}"]
    if args.quantize == "none" and method.quantized:
        if method.base_method is None:
            return [f"--quantize none: {args.mode} exists only on the 4-bit base ({method.trains}); it has no "
                    "full-precision form"]
        return [f"--quantize none: {args.mode} is {method.base_method} on the 4-bit base; use --mode "
                f"{method.base_method} for a full-precision base"]
    method = METHODS[resolved_mode(args.mode, args.quantize)]
    defaults = flag_defaults()
    errors = [f"--{name} {_shown(vars(args)[name])}: --mode {method.name} {why}; {_leave(name, defaults[name])}"
              for name, why in method.refuses.items() if vars(args)[name] != defaults[name]]
    for flag in ("r", "alpha", "dropout_rate"):
        value = getattr(args, flag)
        if value is not None and flag not in method.fields and flag not in method.refuses:
            errors.append(f"--{flag} {value}: {method.name} has no such hyperparameter (docs/methods.md lists what it "
                          "has; other fields of its PEFT config go in --peft_args)")
    if args.lora_scaling is not None and not method.scaling_flag and "lora_scaling" not in method.refuses:
        errors.append(f"--lora_scaling {args.lora_scaling}: only the LoRA family's scale has two forms; "
                      f"{method.name} has its own")
    if not method.unseen_classes:
        unseen = [f"--protocol {args.protocol}"] if args.protocol == "base2new" else []
        unseen += [f"--eval_datasets {' '.join(args.eval_datasets)}"] if args.eval_datasets else []
        errors += [f"{flag}: --mode {method.name} classifies only the classes it was fitted on (its weights are "
                   "theirs), so it cannot score classes it never saw; use a method that classifies through the "
                   "class prompts (zero-shot ensembles, CLIP-Adapter, CoOp or any adapter)" for flag in unseen]
    if args.merge_export and not method.mergeable and "merge_export" not in method.refuses:
        errors.append(f"--merge_export: {method.name} cannot be merged into the weights; save it with --save_path "
                      f"instead, or use a mergeable method: {', '.join(m.name for m in BASE_METHODS if m.mergeable)}")
    if args.peft_args and "peft_args" not in method.refuses:
        errors += peft_args_errors(args, method)
    return errors


def _leave(name: str, default: Any) -> str:
    return f"leave --{name} out" if default in (None, [], False) else f"leave --{name} at its default ({_shown(default)})"


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def peft_args_errors(args: argparse.Namespace, method) -> list[str]:
    """--peft_args checked against the method's PEFT config class, and the config PEFT then builds."""
    from qlora_clip.methods import peft_args

    try:
        items = peft_args.normalised(method, args.peft_args)
        if method.peft_class is not None:
            from qlora_clip.methods.interface import runtime_class
            from qlora_clip.methods.settings import AdapterConfig

            adapter = AdapterConfig(mode=method.name, r=args.r, alpha=args.alpha, dropout_rate=args.dropout_rate,
                                    lora_scaling=args.lora_scaling, peft_args=tuple(items),
                                    total_steps=max(resolve_flags(vars(args))["n_iters"] * args.shots, 1))
            runtime_class(method).config(adapter, ["text_model.encoder.layers.0.self_attn.q_proj"])
    except UserError as err:
        return [str(err)]
    return []


def tracking_errors(args: argparse.Namespace) -> list[str]:
    errors = []
    if "none" in args.report_to and len(args.report_to) > 1:
        errors.append(f"--report_to {' '.join(args.report_to)}: 'none' cannot go with a backend")
    if len(set(args.report_to)) != len(args.report_to):
        errors.append(f"--report_to lists a backend twice: {' '.join(args.report_to)}")
    if "wandb" in args.report_to and not wandb_installed():
        errors.append(WANDB_INSTALL)
    for flag, value in (("--run_name", args.run_name), ("--run_group", args.run_group)):
        if value is not None and not FOLDER_NAME.fullmatch(value):
            errors.append(f"{flag} {value!r}: use letters, digits and . _ + = - (it names a folder), "
                          "starting with a letter, digit or _")
    return errors


def protocol_errors(args: argparse.Namespace) -> list[str]:
    """What --dataset, --protocol and --eval_datasets cannot be together."""
    errors = []
    if args.dataset in TEST_ONLY:
        errors.append(untrainable_message(args.dataset)
                      + (" (base-to-novel needs train images too)" if args.protocol == "base2new" else ""))
    targets = args.eval_datasets
    repeated = sorted({name for name in targets if targets.count(name) > 1})
    if repeated:
        errors.append(f"--eval_datasets lists {', '.join(repeated)} more than once")
    if args.dataset in targets:
        errors.append(f"--eval_datasets {args.dataset}: that is the --dataset itself, whose test set every run "
                      "evaluates; list only other datasets")
    # --dataset folder reads --root_path itself, so it cannot also hold other datasets' folders.
    if "folder" in targets:
        errors.append("--eval_datasets folder: your own images can only be the --dataset (--root_path is that "
                      "folder); evaluate a saved adapter on them with --dataset folder --eval_only")
    elif targets and args.dataset == "folder":
        errors.append("--eval_datasets with --dataset folder: targets are read from --root_path, which is your "
                      "image folder here; train on a dataset under DATA/ to evaluate on others")
    return errors


def split_file_errors(args: argparse.Namespace) -> list[str]:
    """--split_file read and checked against --dataset, --shots and --seed now; the images it names are checked
    against the dataset when main.py builds it, before any model loads (datasets/split_files.py)."""
    if args.split_file is None or args.dataset in TEST_ONLY:
        return []
    if not args.split_file:
        return ["--split_file: give the path of a split file (or leave the flag out to draw the few-shot set)"]
    if args.dataset == "fashion_mnist":
        return [f"--split_file {args.split_file}: --dataset fashion_mnist's images are indices into its IDX files, "
                "not image files a split file can name"]
    try:
        _read_split_file(args)
    except UserError as err:
        return [str(err)]
    return []


def _read_split_file(args: argparse.Namespace) -> Any:
    """The --split_file of these flags, read relative to --dataset's image folder and checked: a
    datasets.split_files.SplitFile."""
    from datasets import dataset_module
    from datasets.split_files import check_split_file, split_file_anchors

    anchors = split_file_anchors(dataset_module(args.dataset), args.root_path)
    return check_split_file(args.split_file, anchors, args.shots, args.seed)


def beyond_accuracy_errors(args: argparse.Namespace) -> list[str]:
    """What --ood_datasets, --interpolate and --select_on/--select_every cannot be (docs/evaluation.md)."""
    errors = []
    ood_in_targets = [name for name in args.eval_datasets if name in OOD_DATASETS]
    if ood_in_targets:
        errors.append(f"--eval_datasets {' '.join(ood_in_targets)}: an OOD set is unlabelled (one pseudo-class), so an "
                      f"accuracy on it means nothing; score it as out-of-distribution with --ood_datasets "
                      f"{' '.join(ood_in_targets)}")
    sets = args.ood_datasets
    repeated = sorted({name for name in sets if sets.count(name) > 1})
    if repeated:
        errors.append(f"--ood_datasets lists {', '.join(repeated)} more than once")
    for name in sets:
        if name in DATASET_NAMES and name != "folder":
            if name == args.dataset:
                errors.append(f"--ood_datasets {name}: that is the --dataset itself, whose test images are the "
                              "in-distribution ones; name another dataset or a folder of images")
            elif args.dataset == "folder":
                errors.append(f"--ood_datasets {name}: with --dataset folder, --root_path is your image folder and "
                              "holds no other dataset; give the OOD set's folder path instead")
        elif not Path(name).expanduser().is_dir():
            errors.append(f"--ood_datasets {name}: neither a dataset name ({', '.join(OOD_DATASETS)}, or any other "
                          "dataset's test images) nor a folder of images")
    alphas = args.interpolate
    bad = [a for a in alphas if not (math.isfinite(a) and 0 <= a <= 1)]
    if bad:
        errors.append(f"--interpolate {' '.join(map(str, bad))}: each alpha must be in [0, 1] (0: the pretrained "
                      "model, 1: the trained one)")
    if len(set(alphas)) != len(alphas):
        errors.append(f"--interpolate lists an alpha more than once: {' '.join(map(str, alphas))}")
    if args.select_every < 0:
        errors.append(f"--select_every must be >= 0 (got {args.select_every})")
    elif args.select_every and args.select_on != "val":
        errors.append(f"--select_every {args.select_every} goes with --select_on val (the last step is reported "
                      "otherwise)")
    if args.select_on == "val":
        if args.eval_only:
            errors.append("--select_on val chooses among the training steps; --eval_only trains none (the saved "
                          "adapter is the one its run chose)")
        elif args.n_iters == 0:
            errors.append("--select_on val: --n_iters 0 trains no step to choose from")
        if args.resume:
            errors.append("--select_on val with --resume: the checks made before the interruption and the best state "
                          "are not part of the training state; run it again from the start")
    return errors


def run_spec(args: argparse.Namespace) -> RunSpec:
    """The run the checked, normalised flags describe."""
    return RunSpec.from_flags(vars(args))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_logging() -> None:
    """One log format for the entry points (main.py, sweep.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
