"""The shape of the code: one declaration per flag, one resolution of the backbone per run, imports one way.

These are the structure's promises (CONTRIBUTING.md): the command line is built from the settings
that declare the flags, nothing in the library imports the top-level scripts, the library's
packages import each other in one direction only, and a run reads its checkpoint's config once.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import main
from qlora_clip.backbones import loading
from qlora_clip.flags import default_of, flag_fields, flag_of
from qlora_clip.run.settings import SETTINGS
from run_utils import build_parser

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "qlora_clip"
TOP_LEVEL = {"main", "trainer", "run_utils", "metrics", "datasets", "sweep", "sweeps", "summarize", "summaries",
             "check_data", "bench"}
# The library's packages from the bottom up: a package imports only those before it (and the bottom modules).
LAYERS = ("data", "backbones", "inputs", "training", "evaluation", "methods", "run")


def library_imports() -> list[tuple[Path, str]]:
    """(module file, imported module name) for every import statement in the library, TYPE_CHECKING ones too."""
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((path, node.module))
    return found


def test_no_library_module_imports_the_top_level_scripts():
    upward = [f"{path.relative_to(REPO)} imports {name}" for path, name in library_imports()
              if name.split(".")[0] in TOP_LEVEL]
    assert upward == []


def test_the_librarys_packages_import_each_other_one_way():
    backwards = []
    for path, name in library_imports():
        parts = path.relative_to(LIBRARY).parts
        if len(parts) < 2 or not name.startswith("qlora_clip."):
            continue
        importer, imported = parts[0], name.split(".")[1]
        if importer in LAYERS and imported in LAYERS and LAYERS.index(imported) > LAYERS.index(importer):
            backwards.append(f"{path.relative_to(REPO)} imports {name}")
    assert backwards == []


def test_the_command_line_is_built_from_the_settings_that_declare_the_flags():
    parser_flags = {action.dest: action for action in build_parser()._actions if action.dest != "help"}
    declared = {field.name: field for cls in SETTINGS for field in flag_fields(cls)}
    assert set(parser_flags) == set(declared)
    for name, field in declared.items():
        action, spec = parser_flags[name], flag_of(field)
        assert action.help == spec.help, name
        assert action.default == default_of(field), name
        assert (tuple(action.choices) if action.choices else None) == spec.choices, name


def test_a_flag_is_declared_once():
    names = [field.name for cls in SETTINGS for field in flag_fields(cls)]
    assert len(names) == len(set(names))


def test_each_flag_has_its_help():
    for cls in SETTINGS:
        for field in flag_fields(cls):
            assert flag_of(field).help, field.name


@pytest.fixture
def counted_resolutions(monkeypatch):
    """How many times a run reads its checkpoint's config (open_checkpoint, and the family lookup under it)."""
    calls = {"open_checkpoint": 0, "family_of": 0}
    real_open, real_family = loading.open_checkpoint, loading.family_of

    def open_checkpoint(backbone):
        calls["open_checkpoint"] += 1
        return real_open(backbone)

    def family_of(source, backbone):
        calls["family_of"] += 1
        return real_family(source, backbone)

    monkeypatch.setattr(loading, "open_checkpoint", open_checkpoint)
    monkeypatch.setattr(loading, "family_of", family_of)
    return calls


def test_a_run_resolves_its_backbone_once(tiny_argv, counted_resolutions):
    main.main(tiny_argv("--n_iters", "0", "--eval_cache_dir", ""))
    assert counted_resolutions == {"open_checkpoint": 1, "family_of": 1}
