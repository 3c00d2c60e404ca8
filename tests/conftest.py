"""Shared fixtures (an isolated cache for the tiny checkpoint, small generated image folders), the rule
that marks tests slow, and where tests live.

Where to find, and put, a test: in the file of the module whose behaviour it checks, also when it
goes through main.main end to end.

    qlora_clip/<m>.py            tests/test_<m>.py            (test_spec.py, test_model.py, test_memory.py, ...)
    qlora_clip/results.py        tests/test_results_<concern>.py   (append, read, identity)
    qlora_clip/inputs/<m>.py     tests/test_inputs_<m>.py     (augment, loaders, sampler, test_images, train_images)
    trainer.py, run_utils.py,    tests/test_trainer.py, test_run_utils.py (the flags), test_metrics.py,
    metrics.py, check_data.py    test_check_data.py
    main.py                      tests/test_main_<concern>.py: behaviour of main.py itself (results line,
                                 exit status); what a run does through a module goes to that module's file
    datasets/                    tests/test_datasets.py (loaders, draw), test_datasets_<m>.py (base2new,
                                 imagenet_variants, package: the package's name)
    summaries/<m>.py             tests/test_summaries_<m>.py; summarize.py: tests/test_summarize_cli.py
    sweep.py, sweeps/<m>.py      tests/test_sweep.py, tests/test_sweep_<m>.py (claims, local, slurm)
    bench/, bench.py input       tests/test_bench.py, tests/test_bench_input.py
    scripts, notebook, demo      tests/test_scripts.py, test_notebook.py, test_demo.py

Helpers shared by several files are modules here, not tests: dataset_trees.py (miniature datasets in
their real formats), summary_results.py (synthetic results files), fake_run.py (a stand-in for
main.py), saved_weights.py (a saved adapter's tensors), image_files.py (photo-like JPEGs).

Slow tests: a test is marked `slow` at collection when its source, or the source of a helper in tests/ it
calls (recursively), contains one of SLOW_CALLS: it starts processes or runs a real entry point.
`pytest -m "not slow"` runs the unit tests only. A test that reaches an entry point only through library
code adds what it calls to SLOW_CALLS rather than a hand-written marker.
"""
from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Build the tiny checkpoint into a fresh folder, so the tests also cover building it on first use.
os.environ.setdefault("QLORA_CLIP_CACHE", tempfile.mkdtemp(prefix="qlora-clip-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 230), "yellow": (230, 220, 30)}


def make_color_folder(root: Path, per_class: int = 15, size: int = 32, seed: int = 0) -> Path:
    """`root/<color>/<i>.png`: noisy images whose class is their dominant colour (easy to learn)."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLORS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-60, 60, size=(size, size, 3))
            pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def color_folder(tmp_path_factory) -> Path:
    return make_color_folder(tmp_path_factory.mktemp("colors"))


@pytest.fixture
def tiny_argv(color_folder, tmp_path):
    """argv for a fast run of the real entry point on the tiny model and the colour folder."""
    def build(*extra: str) -> list[str]:
        return ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder),
                "--shots", "4", "--n_iters", "1", "--batch_size", "8",
                "--results_file", str(tmp_path / "results.jsonl"), *extra]
    return build


@pytest.fixture
def fewshot_results(tmp_path) -> Path:
    """A few-shot results file for the summary tests (tests/summary_results.py says what it holds)."""
    from summary_results import write_fewshot_results  # here: only the summary tests pay for importing it

    return write_fewshot_results(tmp_path / "results.jsonl")


@pytest.fixture
def protocol_results(tmp_path) -> Path:
    """Base-to-novel, few-shot and --eval_datasets runs for the summary tests (tests/summary_results.py)."""
    from summary_results import write_protocol_results

    return write_protocol_results(tmp_path / "results.jsonl")


# --- the slow marker ------------------------------------------------------------------------------

SLOW_CALLS = (
    # the entry points: main.py, sweep.py, summarize.py, check_data.py, bench.py
    "main.main(", "sweep_main(", "summarize_main(", "check_data.main(", "cli.main(",
    # library code that runs them or starts processes: main.main per method, one process per run,
    # bench.py's studies (timing loops over several models)
    "run_protocol(", "LocalSweep(", "STUDIES[",
    # processes of the test's own
    "subprocess.", "Popen", "multiprocessing", "NotebookClient",
)
TESTS = Path(__file__).resolve().parent


def _names(code) -> set[str]:
    """The global names a function's code (and the functions defined inside it) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names


def starts_processes(function, seen: set | None = None) -> bool:
    """Whether `function`, or a helper of tests/ it calls, contains one of SLOW_CALLS."""
    seen = set() if seen is None else seen
    if function in seen:
        return False
    seen.add(function)
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    if any(call in source for call in SLOW_CALLS):
        return True
    for name in _names(function.__code__):
        helper = function.__globals__.get(name)
        if (inspect.isfunction(helper) and Path(inspect.getfile(helper)).resolve().parent == TESTS
                and starts_processes(helper, seen)):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and starts_processes(function):
            item.add_marker(pytest.mark.slow)
