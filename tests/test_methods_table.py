"""The methods table (qlora_clip/methods/table.py): every entry complete and backed by a class of the one
method interface, the table importable without torch, no method named outside qlora_clip/methods/, and
LoRA's defaults and run identities exactly what they were before the other methods came (old results
lines and folders stay valid)."""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import peft
import pytest

from qlora_clip.methods.interface import Adapted, runtime_class
from qlora_clip.methods.peft_tuners import PeftAdapter
from qlora_clip.methods.table import BASE_METHODS, KINDS, METHODS, MODES, NAMED_MODES, method_defaults, resolve_flags
from qlora_clip.run.results import comparable_config
from run_utils import flag_defaults, parse_args, run_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method", BASE_METHODS, ids=lambda m: m.name)
def test_every_entry_is_complete(method):
    assert method.label
    assert method.trains
    assert method.defaults.source
    assert method.defaults.lr > 0
    if method.peft_class is None:  # our own code (BitFit, full fine-tuning): no PEFT config behind it
        assert not issubclass(runtime_class(method), PeftAdapter)
    else:
        assert issubclass(runtime_class(method), PeftAdapter)
        fields = {f.name for f in dataclasses.fields(getattr(peft, method.peft_class))}
        assert set(method.fields.values()) | set(method.fixed) | set(method.config_defaults) <= fields
    for flag in method.fields:  # a flag the method has takes a default from the entry
        assert getattr(method.defaults, flag) is not None


def test_the_seeds_four_modes_come_first_and_every_4bit_entry_names_its_base():
    assert MODES[:4] == ("lora", "qlora", "dora", "qdora")
    assert METHODS["qlora"].base_method == "lora"
    assert METHODS["qdora"].dora
    assert METHODS["qdora"].quantized
    for name, method in METHODS.items():
        if method.quantized and method.base_method:
            assert name in (f"{method.base_method}-4bit", "qlora", "qdora")
            assert METHODS[method.base_method].four_bit
    assert set(NAMED_MODES) >= {"lora", "qlora", "dora", "qdora", "loftq", "vera", "bitfit", "full"}


def test_lora_defaults_are_clip_loras_and_what_a_run_records():
    args = parse_args([])
    assert (args.mode, args.quantize, args.r, args.alpha, args.dropout_rate, args.lr, args.lora_scaling,
            args.peft_args) == ("lora", "none", 2, 1.0, 0.25, 0.0002, "rslora", [])
    assert method_defaults(METHODS["vera"])["lr"] == 1e-3
    assert parse_args(["--mode", "vera"]).alpha is None


def test_a_line_recorded_before_the_method_defaults_is_the_same_run():
    """A results line of the old code has lr 0.0002 etc. and no quantize / peft_args: it is the run a
    new run at the defaults makes, so sweeps skip it and --resume accepts its state."""
    for mode in ("lora", "qlora", "dora", "qdora"):
        new = run_spec(parse_args(["--mode", mode, "--dataset", "dtd", "--shots", "4"]))
        old_config = {k: v for k, v in new.flags.items() if k not in ("quantize", "peft_args")}
        assert comparable_config(old_config, flag_defaults()) == new.identity
        assert new.variant == mode
        assert new.name == f"{mode}-dtd-4shot-seed1"


@pytest.mark.parametrize("mode", ["lora", "qlora", "dora", "qdora"])
def test_changed_settings_keep_the_folders_the_old_code_named(mode):
    """The old code named these folders (digest included) for the same flags."""
    spec = run_spec(parse_args(["--mode", mode, "--shots", "4", "--n_iters", "3", "--batch_size", "8", "--lr", "1e-2"]))
    assert spec.variant == f"{mode}-batch_size8-lr0.01-n_iters3-e63ca0"


def test_a_flag_left_to_the_method_is_not_a_change_of_settings():
    assert run_spec(parse_args(["--mode", "vera"])).variant == "vera"
    assert run_spec(parse_args(["--mode", "vera", "--lr", "1e-3"])).variant == "vera"  # its own default
    assert run_spec(parse_args(["--mode", "vera", "--lr", "2e-4"])).variant.startswith("vera-lr0.0002-")
    assert resolve_flags({"mode": "lora", "quantize": "4bit"})["mode"] == "qlora"


# --- the one interface behind the table -------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_every_entry_names_an_importable_class_of_the_method_interface(method):
    """What the core builds for a --mode is the entry's `runtime` class: it must import and be an Adapted."""
    module, colon, name = method.runtime.partition(":")
    assert colon
    assert module.startswith("qlora_clip.methods.")  # a method's code lives with the methods
    cls = runtime_class(method)
    assert cls.__name__ == name
    assert issubclass(cls, Adapted)
    assert method.kind in KINDS
    assert method.trains_on in ("images", "features")


def test_the_table_imports_without_torch():
    """The command line, the sweep and the summaries read the table cheaply: importing it must not import torch."""
    code = "import sys, qlora_clip.methods.table; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- nothing outside qlora_clip/methods/ asks which method it is --------------------------------------

# The core: the library outside its methods, and the top-level scripts that run a method.
CORE = sorted(p for p in (ROOT / "qlora_clip").rglob("*.py") if "methods" not in p.relative_to(ROOT).parts[:2]) + [
    ROOT / "main.py", ROOT / "trainer.py", ROOT / "run_utils.py"]
BENCH = sorted((ROOT / "bench").rglob("*.py"))
# Every --mode, and the full-precision method each 4-bit entry quantizes.
METHOD_NAMES = set(METHODS) | {m.base_method for m in METHODS.values() if m.base_method}
# Fields the table once had for branching on a method (a step of its own, our own tuner), now the runtime class's.
# `.own` has no other meaning here; `.step` also names a training step's number (StepRecord.step) and the
# optimizer's step(), so it counts only where it is tested for truth or compared with a tag.
REMOVED_FIELDS = {"step", "own"}


def _strings(node: ast.AST) -> set[str]:
    """The string constants `node` is, or holds as a tuple, list or set literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_strings(e) for e in node.elts)) if node.elts else set()
    return set()


def _removed_field(node: ast.AST) -> bool:
    while isinstance(node, ast.UnaryOp):  # `not method.own`
        node = node.operand
    return isinstance(node, ast.Attribute) and node.attr in REMOVED_FIELDS


def _is_tag(node: ast.AST) -> bool:
    """A string (or a literal of strings) or None: what a removed field was compared with."""
    return bool(_strings(node)) or (isinstance(node, ast.Constant) and node.value is None)


def _names_the_run(node: ast.AST) -> bool:
    """Whether `node` is the run's method as the code holds it: a `mode` or `method` variable or attribute
    (`settings.mode`, `spec.method`), not a row of results read back (`row["mode"]`)."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
    return name in ("mode", "method", "method_name")


def method_branches(path: Path, strict: bool) -> list[str]:
    """Where `path` compares against a method's name, or reads a removed branching field. `strict`: any
    comparison with a method's name counts (the core); otherwise only one on the run's method (bench/, whose
    report picks LoRA's and QLoRA's result rows by name to compute its ratios over them)."""
    found = []
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{shown}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr == "own":
            found.append(f"{where} reads the removed field own: {ast.unparse(node)}")
        elif isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)) and _removed_field(node.test):
            found.append(f"{where} branches on a removed field: {ast.unparse(node.test)}")
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_removed_field(o) for o in operands) and any(_is_tag(o) for o in operands):
                found.append(f"{where} compares a removed field: {ast.unparse(node)}")
            named = set().union(*(_strings(o) for o in operands)) & METHOD_NAMES
            if named and (strict or any(_names_the_run(o) for o in operands)):
                found.append(f"{where} compares with a method's name: {ast.unparse(node)}")
        elif isinstance(node, ast.MatchValue) and _strings(node.value) & METHOD_NAMES:
            found.append(f"{where} matches a method's name: {ast.unparse(node)}")
        elif strict and isinstance(node, ast.Dict):
            keys = set().union(*(_strings(k) for k in node.keys if k is not None)) & METHOD_NAMES
            if keys:
                found.append(f"{where} dispatches on method names: {sorted(keys)}")
    return found


def test_no_module_outside_the_methods_branches_on_a_methods_name():
    """The core calls the method interface and never asks which method it is (issue 25)."""
    assert len(CORE) > 30  # the scan really reads the library
    assert BENCH
    found = [hit for path in CORE for hit in method_branches(path, strict=True)]
    found += [hit for path in BENCH for hit in method_branches(path, strict=False)]
    assert found == []


def test_the_method_name_scan_finds_each_kind_of_branch(tmp_path):
    """The scan above can fail: each form of branching it forbids is found in a module written to hold it."""
    source = tmp_path / "core.py"
    for code in ('if settings.mode == "eva": pass', 'if mode in ("lora", "qlora"): pass',
                 'if method.step == "loraplus": pass', 'if method.step != "x": pass', 'if not method.step: pass',
                 'if method.own is not None: pass', 'tuning = method.own', 'match name:\n    case "bitfit": pass',
                 'RULES = {"adalora": 1}'):
        source.write_text(code + "\n")
        assert method_branches(source, strict=True), code
    source.write_text('if image.mode == "RGB": pass\nif loss == "ce": pass\n'  # not a method's name
                      'optimizer.step()\nif record.step == total: pass\n')   # not the removed field
    assert method_branches(source, strict=True) == []
    source.write_text('lora = [row for row in rows if row["mode"] == "lora"]\n')  # a report's rows
    assert method_branches(source, strict=True)
    assert method_branches(source, strict=False) == []
