"""Our `datasets/` package has the name of Hugging Face's `datasets` (it is this project's name for it).

Inside the repository ours wins (the script's folder comes first on sys.path), so
`transformers.utils.is_datasets_available()` is true even where Hugging Face's package is not
installed, and on Colab, where it is preinstalled, a library that imported it would get ours. That
is harmless exactly as long as no library imports `datasets` on the code paths we run; this test
runs them and fails, naming the importer, when one starts to.
"""
from __future__ import annotations

import builtins
import sys
from pathlib import Path

import main

REPO = Path(__file__).resolve().parents[1]


def test_no_library_imports_datasets_on_our_code_paths(tiny_argv, tmp_path, monkeypatch):
    importers = []
    real_import = builtins.__import__

    def recording(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] == "datasets":
            caller = (globals or {}).get("__file__") or ""
            if not Path(caller).resolve().is_relative_to(REPO):
                importers.append((caller, name, fromlist))
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", recording)
    # Every library path of a run: 4-bit loading, PEFT, training, evaluation, saving, model card,
    # merged export, TensorBoard.
    main.main(tiny_argv("--mode", "qlora", "--save_path", str(tmp_path / "ckpt"),
                        "--merge_export", str(tmp_path / "merged"), "--report_to", "tensorboard",
                        "--logging_dir", str(tmp_path / "runs")))
    assert importers == [], "a library imports `datasets` and would get this project's package"
    assert Path(sys.modules["datasets"].__file__).resolve().is_relative_to(REPO)
