"""summaries/records.py: which runs make one table row; zero-shot rows kept apart by what changes them."""
from __future__ import annotations

from qlora_clip.run.results import append_jsonl
from run_utils import build_parser
from summarize import main as summarize_main


def test_zero_shot_rows_are_kept_apart_by_template_and_compute_dtype(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    settings = [("clip-lora", "fp16", 60.0), ("dataset", "fp16", 62.0), ("clip-lora", "fp32", 61.0)]
    for template, dtype, zero_shot in settings:
        config = vars(build_parser().parse_args(["--dataset", "dtd", "--template", template, "--shots", "4",
                                                 "--compute_dtype", dtype]))
        append_jsonl(results, {"mode": "lora", "dataset": "dtd", "shots": 4, "seed": 1, "backbone": "ViT-B/16",
                               "config": config, "zero_shot_acc": zero_shot, "test_acc": 70.0,
                               "compute_dtype": dtype, "quantized": False})
    assert summarize_main([str(results), "--out", str(tmp_path / "out"), "--tables", "paper"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| zero-shot")]
    cells = sorted(row.split("|")[3].strip() for row in rows)
    assert len(rows) == 3 and cells == ["60.00 (n=1)", "61.00 (n=1)", "62.00 (n=1)"]
    assert any("template=dataset" in row for row in rows) and any("fp32" in row for row in rows)
