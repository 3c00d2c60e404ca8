"""The results schema: every real line matches it, writers cannot stray from it, the docs table is its own.

The line of a run with --eval_datasets is checked in test_eval_datasets.py, where such a run is set up.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import main
from qlora_clip.run import schema
from qlora_clip.run.results import read_results

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("extra, kind", [
    ((), "fewshot"),
    (("--protocol", "base2new"), "base2new"),
    (("--eval_only",), "eval_only"),
])
def test_a_real_line_has_exactly_the_declared_fields_for_its_protocol(extra, kind, tiny_argv, tmp_path):
    save = ("--save_path", str(tmp_path / "ckpt"))
    if kind == "eval_only":
        main.main(tiny_argv(*save))
    record = main.main(tiny_argv(*save, *extra))
    written, problems = read_results(tmp_path / "results.jsonl")
    assert problems == []
    assert written[-1] == record
    assert set(record) == schema.expected_names(record)
    schema.check(record)
    base2new = {"base_acc", "new_acc", "hm_acc", "zero_shot_base_acc", "zero_shot_new_acc", "zero_shot_hm_acc"}
    assert base2new <= set(record) if kind == "base2new" else not base2new & set(record)
    assert (record["peak_memory_mb"] is None) == (kind == "eval_only")
    assert (record["adapter_dir"] is None) == (kind == "eval_only")


def test_writers_cannot_use_undeclared_names_or_wrong_types():
    assert schema.fields(test_acc=50, final_loss=None) == {"test_acc": 50, "final_loss": None}
    with pytest.raises(schema.SchemaError, match="'test_accuracy' is not declared"):
        schema.fields(test_accuracy=1.0)
    with pytest.raises(schema.SchemaError, match="'shots' must be int"):
        schema.fields(shots="4")
    with pytest.raises(schema.SchemaError, match="'shots' must be int"):
        schema.fields(shots=True)
    with pytest.raises(schema.SchemaError, match="'test_acc' must be number, not None"):
        schema.fields(test_acc=None)


def test_check_names_what_is_missing_or_undeclared(tiny_argv):
    record = main.main(tiny_argv("--n_iters", "0"))
    with pytest.raises(schema.SchemaError, match=r"missing \['seed'\], undeclared \['extra'\]"):
        schema.check({**{k: v for k, v in record.items() if k != "seed"}, "extra": 1})
    with pytest.raises(schema.SchemaError, match="'test_acc' is nan"):
        schema.check({**record, "test_acc": float("nan")})


def test_docs_table_is_generated_from_the_schema():
    document = (REPO / "docs" / "results.md").read_text()
    assert schema.with_table(document) == document, "run: python -m qlora_clip.run.schema --write docs/results.md"
    for field in schema.SCHEMA:
        assert f"| `{field.name}` |" in document
