"""bench/prompt_costs.py: CoCoOp's B x C text sequences per batch against KgCoOp's C, counted at the text
tower's input, and the ImageNet extrapolation docs/methods.md quotes."""
from __future__ import annotations

import pytest

from bench import prompt_costs


def test_cocoop_encodes_every_class_prompt_per_image_and_kgcoop_once():
    cocoop = prompt_costs.measure("tiny", "cocoop", images=2, classes=3, reps=1)
    kgcoop = prompt_costs.measure("tiny", "kgcoop", images=2, classes=3, reps=1)
    assert (cocoop["train_sequences"], cocoop["eval_sequences"]) == (2 * 3, 2 * 3 + 3)  # + the prompts once
    assert (kgcoop["train_sequences"], kgcoop["eval_sequences"]) == (3, 3)
    assert cocoop["train_s"] > 0 and cocoop["eval_s"] > 0


def test_the_imagenet_extrapolation_is_the_encoder_count_times_the_sequences():
    e = prompt_costs.imagenet_extrapolation()
    # ViT-B/16's text tower: width 512, MLP 2048, 12 layers; 9 tokens: linear 2*9*(4*512^2 + 2*512*2048)*12,
    # attention 4*9^2*512*12.
    per_sequence = 2 * 9 * (4 * 512**2 + 2 * 512 * 2048) * 12 + 4 * 81 * 512 * 12
    assert e["text_gflop_per_sequence"] == pytest.approx(per_sequence / 1e9)
    assert e["eval_total_pflop"] == pytest.approx(50_000 * 1000 * per_sequence / 1e15)
    assert e["train_total_pflop"] == pytest.approx(3 * 16_000 * 10 * 1000 * per_sequence / 1e15)
    assert e["official_gflop_per_sequence"] / e["text_gflop_per_sequence"] > 8  # 77 tokens against 9
