"""docs/methods.md's tables are the methods table's: every method, its class, defaults and 4-bit support
(the measured parameter counts come from `python -m qlora_clip.methods.doc --write docs/methods.md`)."""
from __future__ import annotations

import re
from pathlib import Path

from qlora_clip.methods import doc as methods_doc
from qlora_clip.methods.table import BASE_METHODS

DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def documented_counts(text: str) -> dict[str, int]:
    counts = {}
    for line in text.splitlines():
        match = re.match(r"\| \*\*(\S+)\*\* ", line)
        if match:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            counts[match.group(1)] = int(cells[7].split()[0].replace(",", ""))
    return counts


def test_the_document_lists_every_method_as_the_table_declares_it():
    text = DOC.read_text()
    counts = documented_counts(text)
    assert list(counts) == [m.name for m in BASE_METHODS]
    assert methods_doc.with_tables(text, counts) == text, (
        "docs/methods.md is out of date: python -m qlora_clip.methods.doc --write docs/methods.md")
    assert counts["lora"] == 184_320  # CLIP-LoRA's published count for ViT-B/16
