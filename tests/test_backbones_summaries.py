"""summarize.py with runs of two families: one table per backbone, headed with its family; a sigmoid-loss run
is its own method, never averaged with the cross-entropy runs."""
from __future__ import annotations

from summary_results import fewshot_record, run, section, table_row

from qlora_clip.run.results import append_jsonl


def family_record(backbone: str, family: str, mode: str, seed: int, acc: float, *flags: str) -> dict:
    record = fewshot_record(mode, "dtd", 1, seed, acc, "--backbone", backbone, *flags)
    return {**record, "backbone": backbone, "family": family}


def test_each_backbone_gets_its_own_table_named_with_its_family(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    for seed in (1, 2, 3):
        append_jsonl(results, family_record("ViT-B/16", "clip", "lora", seed, 50.0 + seed))
        append_jsonl(results, family_record("SigLIP-B/16", "siglip", "lora", seed, 60.0 + seed))
        append_jsonl(results, family_record("SigLIP-B/16", "siglip", "lora", seed, 70.0 + seed, "--loss", "sigmoid"))
    code, out, _ = run([str(results), "--out", str(tmp_path / "out"), "--tables", "paper,efficiency"], capsys)
    assert code == 0
    assert "## Top-1 accuracy (%), SigLIP-B/16 (SigLIP)" in out
    assert "## Top-1 accuracy (%), ViT-B/16 (CLIP)" in out
    assert "## Efficiency, SigLIP-B/16 (SigLIP)" in out
    siglip = section(out, "## Top-1 accuracy (%), SigLIP-B/16")
    assert table_row(siglip, "lora", "1")[2] == "62.00 ± 1.00 (n=3)"
    assert table_row(siglip, "lora (loss=sigmoid)", "1")[2] == "72.00 ± 1.00 (n=3)"
    clip = section(out, "## Top-1 accuracy (%), ViT-B/16")
    assert table_row(clip, "lora", "1")[2] == "52.00 ± 1.00 (n=3)"
