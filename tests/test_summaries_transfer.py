"""summaries/transfer.py: the cross-dataset and domain-generalization tables, through summarize.py."""
from __future__ import annotations

import csv

from summary_results import protocol_record, section, summarize, table_row

from qlora_clip.run.results import append_jsonl


def test_cross_dataset_and_domain_generalization_tables(protocol_results, tmp_path, capsys):
    out, _ = summarize(protocol_results, tmp_path, capsys, "--tables", "cross_dataset,domain_generalization")
    cross = section(out, "## Cross-dataset transfer")
    assert table_row(cross, "Method") == ["Method", "Shots", "Source", "Source accuracy", "Caltech", "DTD",
                                          "Average over targets", "Δ Caltech", "Δ DTD", "Mean Δ (forgetting)"]
    assert table_row(cross, "lora", "16", "ImageNet")[3:7] == ["71.50 ± 0.71 (n=2)", "94.00 ± 1.41 (n=2)",
                                                               "44.00 ± 1.41 (n=2)", "69.00 ± 1.41 (n=2)"]
    # The change from zero-shot, per seed from the same line: Caltech 93 - 92, 95 - 92; DTD 43 - 44, 45 - 44.
    assert table_row(cross, "lora", "16", "ImageNet")[7:] == ["2.00 ± 1.41 (n=2)", "0.00 ± 1.41 (n=2)",
                                                              "1.00 ± 1.41 (n=2)"]
    assert table_row(cross, "zero-shot", "0", "ImageNet")[3:] == ["66.00 ± 0.00 (n=2)", "92.00 ± 0.00 (n=2)",
                                                                  "44.00 ± 0.00 (n=2)", "68.00", "—", "—", "—"]
    domain = section(out, "## Domain generalization")
    assert table_row(domain, "Method")[4:] == ["ImageNet-V2", "ImageNet-A", "Average over targets", "Δ ImageNet-V2",
                                               "Δ ImageNet-A", "Mean Δ (forgetting)"]
    assert table_row(domain, "lora", "16", "ImageNet")[4:] == ["61.00 ± 1.41 (n=2)", "49.00 ± 1.41 (n=2)",
                                                               "55.00 ± 1.41 (n=2)", "0.00 ± 1.41 (n=2)",
                                                               "2.00 ± 1.41 (n=2)", "1.00 ± 1.41 (n=2)"]
    with open(tmp_path / "out" / "domain_generalization_table.csv") as f:
        rows = {(r["method"], r["dataset"]): r for r in csv.DictReader(f)}
    assert rows[("lora", "average")]["mean"] == "55"
    assert rows[("lora", "average")]["change_from_zero_shot_mean"] == "1"
    assert rows[("lora", "imagenet")]["mean"] == "71.5"


def test_every_cell_of_an_adapter_trained_on_fewer_distinct_images_than_its_shots_is_marked(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    targets = {"dtd": {"test_acc": 45.0, "zero_shot_acc": 44.0},
               "imagenetv2": {"test_acc": 60.0, "zero_shot_acc": 59.0}}
    for seed, drawn in ((1, 16), (2, 9)):
        append_jsonl(results, protocol_record("imagenet", seed, "--eval_datasets", *targets, test_acc=70.0,
                                              zero_shot_acc=66.0, eval_datasets=targets, shots_drawn=drawn))
    out, _ = summarize(results, tmp_path, capsys, "--tables", "cross_dataset,domain_generalization")
    for table in ("## Cross-dataset transfer", "## Domain generalization"):
        trained = table_row(section(out, table), "lora", "16", "ImageNet")[3:]
        assert all(cell.endswith(" *9 distinct") for cell in trained if cell != "(source)")
        assert "distinct" not in "".join(table_row(section(out, table), "zero-shot", "0", "ImageNet"))
