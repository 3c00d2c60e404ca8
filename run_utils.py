"""The command line of main.py: its flags, their validation, and the RunSpec built from them.

Library modules (qlora_clip/) never import this one: their errors come from errors.py, and what
needs the flags' defaults gets them passed (flag_defaults). Only the commands (main.py, sweep.py,
summarize.py, bench.py) import it. It imports no torch at module level, so planning a sweep or
reading results files stays cheap.
"""
from __future__ import annotations

import argparse
import functools
import logging
import math
import random
import re
from pathlib import Path

from datasets import DATASET_NAMES, TEMPLATES, TEST_ONLY, untrainable_message
from qlora_clip import paper
from qlora_clip.methods.baselines.flags import baseline_flag_errors
from qlora_clip.config import cache_root
from qlora_clip.errors import UserError
from qlora_clip.backbones.families import SIGLIP_TEMPLATE, TINY_BACKBONES, aliases_help
from qlora_clip.methods.table import (
    BASE_METHODS,
    BASELINE_MODES,
    METHODS,
    MODES,
    QUANTIZE,
    four_bit_methods,
    resolve_flags,
    resolved_mode,
)
from qlora_clip.run.outputs import export_target_error, location_error
from qlora_clip.run.spec import RunSpec
from qlora_clip.run.tracking import REPORT_TO, WANDB_INSTALL, wandb_installed

COMPUTE_DTYPES = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cuda", "cpu")
# Run names and groups name folders under --logging_dir.
FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=-]*")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py",
        description="Few-shot adaptation of CLIP with a parameter-efficient method (LoRA, QLoRA, DoRA, QDoRA, "
                    "PiSSA, VeRA, OFT, IA3, ... : docs/methods.md) under the CLIP-LoRA protocol (docs/protocol.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--root_path", default="DATA", help="folder holding the datasets")
    data.add_argument("--dataset", default="fashion_mnist", choices=DATASET_NAMES,
                      help="dataset (DATASETS.md); 'folder' = your own images under --root_path")
    data.add_argument("--shots", type=int, default=16, help="training images per class")
    data.add_argument("--seed", type=int, default=1, help="seed of the few-shot draw and of training")
    data.add_argument("--template", choices=TEMPLATES, default="clip-lora",
                      help="clip-lora: one prompt for every dataset, as CLIP-LoRA, the backbone family's own: "
                           f"'a photo of a {{}}.' for CLIP and MetaCLIP 2, {SIGLIP_TEMPLATE!r} for SigLIP and "
                           "SigLIP 2; dataset: CoOp's per-dataset prompt, for every family")
    data.add_argument("--num_workers", type=int, default=None,
                      help="DataLoader worker processes (default: 0 on the CPU; on CUDA the CPUs per process, "
                           "at most 8)")
    data.add_argument("--decode_budget_gb", type=float, default=16.0,
                      help="decode the train images once and keep them in memory when they fit in this many GB "
                           "(0: decode at every step)")
    data.add_argument("--eval_cache_dir", default=str(default_eval_cache_dir()),
                      help="folder of the preprocessed test images a sweep's runs share ('' = no disk cache), "
                           "of their zero-shot accuracies (its zero-shot/ folder) and of the baselines' frozen "
                           "features (its features/ folder)")
    data.add_argument("--no_zero_shot_cache", action="store_true",
                      help="compute the zero-shot accuracies even where an earlier run on the same base, test set, "
                           "prompts and precision stored them under --eval_cache_dir")

    proto = p.add_argument_group("protocol")
    proto.add_argument(
        "--protocol", choices=paper.PROTOCOLS, default="fewshot",
        help="fewshot: train and test on all classes; base2new: CoCoOp's base-to-novel generalization, "
             "train on the first half of the classes, test base and new classes with separate classifiers")
    proto.add_argument(
        "--eval_datasets", nargs="+", choices=DATASET_NAMES, default=[], metavar="NAME",
        help="after training (or with --eval_only), also evaluate on each of these datasets' full test "
             "sets with their own class prompts, zero-shot beside it (cross-dataset transfer, domain "
             f"generalization); choose from {', '.join(n for n in DATASET_NAMES if n != 'folder')}")

    model = p.add_argument_group("model")
    model.add_argument(
        "--backbone", default=paper.BACKBONE,
        help=f"an alias ({aliases_help()}), any Hugging Face hub id or local checkpoint folder of a CLIP, SigLIP, "
             f"fixed-resolution SigLIP 2 or MetaCLIP 2 model, or a small random checkpoint built offline: "
             f"{', '.join(TINY_BACKBONES)}",
    )
    model.add_argument("--mode", choices=MODES, default="lora", metavar="METHOD",
                       help="adapter method (docs/methods.md), or a baseline on the frozen base (docs/baselines.md): "
                            + " ".join(MODES))
    model.add_argument("--quantize", choices=QUANTIZE, default=None,
                       help="the frozen base: 4bit = NF4 (bitsandbytes) under any method that supports it "
                            "(--mode lora --quantize 4bit is qlora); default: the method's (4bit for qlora, qdora, "
                            "loftq and the -4bit methods)")
    model.add_argument("--r", type=int, default=None,
                       help="the method's rank-like size (LoRA's r, OFT's block size, FourierFT's n_frequency: "
                            "docs/methods.md); default: the method's")
    model.add_argument("--alpha", type=float, default=None,
                       help="the method's scale (LoRA's lora_alpha, FourierFT's scaling, ...); default: the method's")
    model.add_argument("--dropout_rate", type=float, default=None,
                       help="the method's dropout (LoRA's on the adapter input); default: the method's")
    model.add_argument("--encoder", choices=paper.ENCODERS, default="both", help="encoders that get adapters")
    model.add_argument("--position", choices=paper.POSITIONS, default="all", help="layers that get adapters")
    model.add_argument("--params", nargs="+", choices=paper.PARAMS, default=["q", "k", "v"],
                       help="attention projections that get adapters (o = output projection)")
    model.add_argument("--lora_scaling", choices=("rslora", "standard"), default=None,
                       help="LoRA family: rslora = alpha/sqrt(r) as CLIP-LoRA (the default); standard = alpha/r")
    model.add_argument("--peft_args", nargs="+", default=[], metavar="KEY=VALUE",
                       help="any other field of the method's PEFT config, e.g. --peft_args d_initial=0.2 "
                            "(values in JSON; an unknown key lists the valid ones)")

    train = p.add_argument_group("training")
    train.add_argument("--loss", choices=paper.LOSSES, default=paper.LOSS,
                       help="ce: cross-entropy over the classes, CLIP-LoRA's, for every family (the protocol's, and "
                            "what top-1 accuracy rewards); sigmoid: SigLIP's one-vs-rest loss with its logit bias, "
                            "the one it was pre-trained with (SigLIP and SigLIP 2 only)")
    train.add_argument("--lr", type=float, default=None,
                       help="AdamW learning rate; default: the method's (2e-4 for the LoRA family, as CLIP-LoRA)")
    train.add_argument("--n_iters", type=int, default=paper.N_ITERS,
                       help="optimizer steps per shot: total steps = n_iters x shots (0 = evaluate only)")
    train.add_argument("--batch_size", type=int, default=paper.BATCH_SIZE, help="images per optimizer step")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1,
                       help="split each batch into this many micro-batches: less memory, the same batch and loss "
                            "weighting; the same update only with --dropout_rate 0 (dropout masks are drawn per "
                            "micro-batch)")
    train.add_argument("--gradient_checkpointing", action="store_true",
                       help="recompute encoder activations in backward to save memory")
    train.add_argument("--compute_dtype", choices=COMPUTE_DTYPES, default="auto",
                       help="auto = fp16 autocast on CUDA, fp32 on CPU")
    train.add_argument("--device", choices=DEVICES, default="auto")

    out = p.add_argument_group("outputs")
    out.add_argument("--save_path", default=None,
                     help="save the adapter under SAVE_PATH/<backbone>/<dataset>/<K>shots/seed<S>/<mode>")
    out.add_argument("--eval_only", action="store_true",
                     help="load the adapter saved under --save_path and only evaluate it")
    out.add_argument("--checkpoint_every", type=int, default=0,
                     help="save the full training state every N optimizer steps (0 = never)")
    out.add_argument("--checkpoint_dir", default="checkpoints",
                     help="training states go to CHECKPOINT_DIR/<backbone>/<dataset>/<K>shots/seed<S>/<mode>")
    out.add_argument("--resume", action="store_true",
                     help="continue from the last training state in --checkpoint_dir (start at 0 if none)")
    out.add_argument("--merge_export", default=None, metavar="DIR",
                     help="write a plain checkpoint of the family's own class (CLIPModel, SiglipModel, "
                          "MetaClip2Model) with the adapter merged in (4-bit bases: into the dequantized weights) "
                          "to this new or empty folder; every method PEFT can merge")
    out.add_argument("--overwrite_export", action="store_true",
                     help="let --merge_export replace the model folder (one with config.json) already there")
    out.add_argument("--results_file", default="results/results.jsonl",
                     help="JSON-lines file that gets one line per run")

    track = p.add_argument_group("experiment tracking")
    track.add_argument("--report_to", nargs="+", choices=REPORT_TO, default=["none"],
                       help="where to send per-step loss, learning rate, speed and the accuracies "
                            "(several allowed; wandb is optional: pip install wandb)")
    track.add_argument("--run_name", default=None,
                       help="the run's name in TensorBoard / W&B and the results line; "
                            "unset: <mode>-<dataset>-<K>shot-seed<S>")
    track.add_argument("--run_group", default=None,
                       help="a group of runs, e.g. a sweep: W&B's group, a TensorBoard folder level")
    track.add_argument("--logging_dir", default="runs",
                       help="tracking logs go to LOGGING_DIR/[RUN_GROUP/]RUN_NAME")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for message in validation_errors(args) + input_file_errors(args):
        parser.error(message)
    return normalised(args)


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
    need(args.n_iters >= 0, f"--n_iters must be >= 0 (got {args.n_iters})")
    need(args.batch_size >= 1, f"--batch_size must be >= 1 (got {args.batch_size})")
    need(args.num_workers is None or args.num_workers >= 0, f"--num_workers must be >= 0 (got {args.num_workers})")
    need(args.decode_budget_gb >= 0, f"--decode_budget_gb must be >= 0 (got {args.decode_budget_gb})")
    accum = args.gradient_accumulation_steps
    need(accum >= 1, f"--gradient_accumulation_steps must be >= 1 (got {accum})")
    if accum >= 1:
        need(args.batch_size % accum == 0,
             f"--gradient_accumulation_steps {accum} must divide --batch_size {args.batch_size} "
             "so every micro-batch has the same size")
    need(args.checkpoint_every >= 0, f"--checkpoint_every must be >= 0 (got {args.checkpoint_every})")
    need(not (args.resume and args.eval_only), "--resume continues training; it cannot go with --eval_only")
    need(len(set(args.params)) == len(args.params), f"--params lists a projection twice: {args.params}")
    need(not args.eval_only or args.save_path,
         "--eval_only needs --save_path, the folder the adapter was saved under")
    need(not args.overwrite_export or args.merge_export, "--overwrite_export goes with --merge_export")
    # A baseline takes none of the adapter's flags; a PEFT method is checked against its table entry.
    errors += (baseline_flag_errors(vars(args), flag_defaults()) if args.mode in BASELINE_MODES
               else method_errors(args))
    errors += tracking_errors(args)
    errors += protocol_errors(args)
    errors += output_errors(args)
    if args.device == "cuda":
        import torch

        need(torch.cuda.is_available(), "--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    return errors


def output_errors(args: argparse.Namespace) -> list[str]:
    """Every place the run writes, checked now: a file where a folder goes (or the reverse), or no
    permission, would otherwise stop the run after training and lose it."""
    spec = run_spec(args)
    places = [("--results_file", Path(args.results_file), "file"),
              ("--results_file", spec.subset_path.parent, "folder")]  # the few-shot draw goes beside it
    if args.save_path and not args.eval_only:
        places.append(("--save_path", spec.adapter_dir, "folder"))
    if args.checkpoint_every > 0:
        places.append(("--checkpoint_dir", spec.checkpoint_path.parent, "folder"))
    if args.eval_cache_dir:
        places.append(("--eval_cache_dir", Path(args.eval_cache_dir), "folder"))
    if args.merge_export:
        places.append(("--merge_export", Path(args.merge_export), "folder"))
    errors = [message for flag, path, kind in places if (message := location_error(flag, path, kind))]
    if args.merge_export and not errors:
        from qlora_clip.backbones.loading import backbone_folder

        refusal = export_target_error(Path(args.merge_export), args.overwrite_export, backbone_folder(args.backbone))
        errors += [refusal] if refusal else []
    return errors


def input_file_errors(args: argparse.Namespace) -> list[str]:
    """What is wrong with the files this one run would read first (the sweep plans runs without these).

    A damaged --resume checkpoint is refused now, before the model loads, rather than after the
    zero-shot evaluation.
    """
    checkpoint = run_spec(args).checkpoint_path
    if not args.resume or not checkpoint.exists():
        return []
    from qlora_clip.training.checkpointing import read_checkpoint

    try:
        read_checkpoint(checkpoint)
    except UserError as err:
        return [str(err)]
    return []


def method_errors(args: argparse.Namespace) -> list[str]:
    """What the method (methods.py) cannot take: a base it does not train on, flags it has no field for,
    an export it cannot merge, --peft_args its PEFT config does not have."""
    method = METHODS[args.mode]
    if args.quantize == "4bit" and not method.quantized and method.four_bit_name is None:
        return [f"--quantize 4bit: {args.mode} does not train on a 4-bit base in PEFT 0.21; the methods that do: "
                f"{', '.join(four_bit_methods())} (and loftq)"]
    if args.quantize == "none" and method.quantized:
        if method.base_method is None:
            return [f"--quantize none: {args.mode} initialises LoRA for the 4-bit base; it has no full-precision form "
                    "(use --mode lora)"]
        return [f"--quantize none: {args.mode} is {method.base_method} on the 4-bit base; use --mode "
                f"{method.base_method} for a full-precision base"]
    method = METHODS[resolved_mode(args.mode, args.quantize)]
    errors = []
    for flag, name in (("r", "--r"), ("alpha", "--alpha"), ("dropout", "--dropout_rate")):
        value = getattr(args, "dropout_rate" if flag == "dropout" else flag)
        if value is not None and flag not in method.fields:
            errors.append(f"{name} {value}: {method.name} has no such hyperparameter (docs/methods.md lists what it "
                          "has; other fields of its PEFT config go in --peft_args)")
    if args.lora_scaling is not None and not method.scaling_flag:
        errors.append(f"--lora_scaling {args.lora_scaling}: only the LoRA family's scale has two forms; "
                      f"{method.name} has its own")
    if method.targets == "layer_norms" and list(args.params) != ["q", "k", "v"]:
        errors.append(f"--params {' '.join(args.params)}: {method.name} tunes the LayerNorms of the selected layers, "
                      "not projections; leave --params out (--encoder and --position still choose the layers)")
    if args.merge_export and not method.mergeable:
        errors.append(f"--merge_export: PEFT cannot merge {method.name} into the weights; save it with --save_path "
                      f"instead, or use a mergeable method: {', '.join(m.name for m in BASE_METHODS if m.mergeable)}")
    if method.step == "adalora" and (args.checkpoint_every or args.resume):
        errors.append("--checkpoint_every / --resume: AdaLoRA's rank allocator (its importance scores) is not part of "
                      "the training state, so a resumed AdaLoRA run would not reproduce the uninterrupted one; run it "
                      "without them")
    if args.peft_args:
        errors += peft_args_errors(args, method)
    return errors


def peft_args_errors(args: argparse.Namespace, method) -> list[str]:
    """--peft_args checked against the method's PEFT config class, and the config PEFT then builds."""
    from qlora_clip.methods import peft_args

    try:
        values = peft_args.parse(method, args.peft_args)
        if method.peft_class is not None:
            from qlora_clip.methods.adapters import peft_config
            from qlora_clip.config import AdapterConfig

            adapter = AdapterConfig(mode=method.name, r=args.r, alpha=args.alpha, dropout=args.dropout_rate,
                                    lora_scaling=args.lora_scaling, peft_args=tuple(values.items()),
                                    total_steps=max(args.n_iters * args.shots, 1))
            peft_config(adapter, ["text_model.encoder.layers.0.self_attn.q_proj"])
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


@functools.lru_cache(maxsize=1)
def flag_defaults() -> dict:
    """Every flag's default: what a results line that predates a flag is read with (results.comparable_config)."""
    return vars(build_parser().parse_args([]))


def run_spec(args: argparse.Namespace) -> RunSpec:
    """The run the parsed flags describe: the one place the Namespace becomes typed settings."""
    return RunSpec.from_flags(vars(args), flag_defaults())


def default_eval_cache_dir() -> Path:
    return cache_root() / "test-images"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_logging() -> None:
    """One log format for the entry points (main.py, sweep.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
