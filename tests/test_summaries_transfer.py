"""summaries/transfer.py: the cross-dataset and domain-generalization tables, through summarize.py."""
from __future__ import annotations

import csv

from summary_results import section, summarize, table_row


def test_cross_dataset_and_domain_generalization_tables(protocol_results, tmp_path, capsys):
    out, _ = summarize(protocol_results, tmp_path, capsys, "--tables", "cross_dataset,domain_generalization")
    cross = section(out, "## Cross-dataset transfer")
    assert table_row(cross, "Method") == ["Method", "Shots", "Source", "Source accuracy", "Caltech", "DTD",
                                          "Average over targets"]
    assert table_row(cross, "lora", "16", "ImageNet")[3:] == ["71.50 ± 0.71 (n=2)", "94.00 ± 1.41 (n=2)",
                                                              "44.00 ± 1.41 (n=2)", "69.00 ± 1.41 (n=2)"]
    assert table_row(cross, "zero-shot", "0", "ImageNet")[3:] == ["66.00 ± 0.00 (n=2)", "92.00 ± 0.00 (n=2)",
                                                                  "44.00 ± 0.00 (n=2)", "68.00"]
    domain = section(out, "## Domain generalization")
    assert table_row(domain, "Method")[4:] == ["ImageNet-V2", "ImageNet-A", "Average over targets"]
    assert table_row(domain, "lora", "16", "ImageNet")[4:] == ["61.00 ± 1.41 (n=2)", "49.00 ± 1.41 (n=2)",
                                                               "55.00 ± 1.41 (n=2)"]
    with open(tmp_path / "out" / "domain_generalization_table.csv") as f:
        rows = {(r["method"], r["dataset"]): r for r in csv.DictReader(f)}
    assert rows[("lora", "average")]["mean"] == "55" and rows[("lora", "imagenet")]["mean"] == "71.5"
