"""Length buckets (qlora_clip/backbones/text_buckets.py): the plan is the documented one, and bucketed prompts give
the features, logits and gradients of prompts padded to the longest one."""
from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from adapted_models import tiny_with_nonzero_adapters

from bench.prompts import imagenet_prompt_lengths
from qlora_clip.backbones import text_buckets
from qlora_clip.backbones.encode import ClassPrompts, image_features
from qlora_clip.backbones.families import METACLIP2, SIGLIP, SIGLIP2
from qlora_clip.backbones.text_buckets import BUCKETS, MIN_SAVING, bucket_limit, padded_tokens, plan_buckets

CPU = torch.device("cpu")


def brute_force_best(lengths: list[int], max_buckets: int) -> int:
    """Fewest padded tokens over every cut of the sorted lengths into at most max_buckets buckets."""
    ordered = sorted(lengths)
    best = len(ordered) * ordered[-1]
    for k in range(1, max_buckets):
        for cuts in itertools.combinations(range(1, len(ordered)), k):
            edges = (0, *cuts, len(ordered))
            best = min(best, sum((b - a) * ordered[b - 1] for a, b in zip(edges, edges[1:])))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_plan_is_the_fewest_padded_tokens_of_any_cut(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([8, 9, 9, 10, 12, 15, 18]) for _ in range(9)]
    buckets = plan_buckets(lengths, 3)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    unbucketed = len(lengths) * max(lengths)
    best = brute_force_best(lengths, 3)
    if best > (1 - MIN_SAVING) * unbucketed:
        assert buckets == [list(range(len(lengths)))]  # too little to gain: one call, label order
    else:
        assert padded_tokens(lengths, buckets) == best
        flat = [lengths[i] for b in buckets for i in b]
        assert flat == sorted(flat)  # shortest first, contiguous in length


def test_imagenet_shaped_prompts_lose_most_of_their_padding():
    lengths = imagenet_prompt_lengths()
    buckets = plan_buckets(lengths)
    assert len(buckets) == BUCKETS
    saving = padded_tokens(lengths, [list(range(len(lengths)))]) / padded_tokens(lengths, buckets)
    assert 1.6 <= saving <= 1.9


def test_few_or_equal_lengths_stay_one_call():
    assert plan_buckets([9] * 50) == [list(range(50))]
    # The colour folder's four prompts: 7 % of the padding to gain, under MIN_SAVING.
    assert plan_buckets([20, 21, 22, 23]) == [[0, 1, 2, 3]]
    assert plan_buckets([8, 30, 9, 31], 1) == [[0, 1, 2, 3]]
    assert plan_buckets([8, 30, 9, 31]) == [[0], [2], [1], [3]]
    assert plan_buckets([8, 30, 8, 30]) == [[0, 2], [1, 3]]  # the fewest buckets among equal token counts


def _model(mode: str = "lora", backbone: str = "tiny"):
    return tiny_with_nonzero_adapters(mode, 0.3, "--dropout_rate", "0", "--backbone", backbone)


# Lengths 8 to 40 tokens with the tiny tokenizer (one token per character), out of length order.
MIXED = ["a photo of a " + name + "." for name in
         ["x", "sea horse", "ox", "windsor chair", "crocodile head", "cat", "brontosaurus", "yin yang",
          "a very long compound class name", "dog", "airliner", "t"]]


# Every family whose text tower is pooled at end of text (Family.pooled_at_end_of_text) is bucketed.
@pytest.mark.parametrize(("backbone", "mode"), [("tiny", "lora"), ("tiny", "qlora"), ("tiny", "dora"),
                                                ("tiny-metaclip2", "lora"), ("tiny-metaclip2", "qlora")])
@torch.no_grad()
def test_bucketed_prompts_give_the_features_and_logits_of_longest_padding(backbone, mode):
    adapted = _model(mode, backbone)
    model, bundle = adapted.model.eval(), adapted.bundle
    assert bundle.family.pooled_at_end_of_text
    logits = bundle.family.logits(model)
    plain = ClassPrompts(bundle.tokenizer, MIXED, CPU, text=bundle.text)
    bucketed = ClassPrompts(bundle.tokenizer, MIXED, CPU, text=bundle.text, buckets=BUCKETS)
    assert plain.buckets.count == 1
    assert bucketed.buckets.count == BUCKETS
    assert bucketed.buckets.tokens < 0.75 * bucketed.buckets.unbucketed_tokens
    images = torch.randn(5, 3, bundle.image.image_size, bundle.image.image_size,
                         generator=torch.Generator().manual_seed(1))
    image = image_features(model, images)
    # Unit vectors: different matmul shapes change their last bits only (~1e-7).
    torch.testing.assert_close(bucketed.features(model), plain.features(model), rtol=0, atol=1e-6)
    # Logits are 100 x cosine: the features' 1e-6 becomes up to 1e-4 in a logit (seen: 1.8e-5 with DoRA on a
    # loaded machine, where the matmul kernels split the work otherwise), and the ranking must not change.
    ours, reference = logits(image, bucketed.features(model)), logits(image, plain.features(model))
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)
    assert torch.equal(ours.argmax(1), reference.argmax(1))
    with model.disable_adapter():  # the zero-shot features too
        torch.testing.assert_close(bucketed.features(model), plain.features(model), rtol=0, atol=1e-6)


def test_bucketed_prompts_give_the_text_adapters_the_same_gradients():
    adapted = _model()
    model, bundle = adapted.model.train(), adapted.bundle
    logits = bundle.family.logits(model)
    images = torch.randn(4, 3, bundle.image.image_size, bundle.image.image_size,
                         generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 5, 8, 11])
    grads = []
    for buckets in (1, BUCKETS):
        prompts = ClassPrompts(bundle.tokenizer, MIXED, CPU, buckets=buckets)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits(image_features(model, images), prompts.features(model)), labels).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    plain, bucketed = grads
    assert any("text_model" in n and g.abs().sum() > 0 for n, g in plain.items())
    assert plain.keys() == bucketed.keys()
    for name in plain:
        torch.testing.assert_close(bucketed[name], plain[name], rtol=1e-3, atol=1e-5)


def test_max_length_padding_is_never_bucketed():
    adapted = _model()
    full = ClassPrompts(adapted.bundle.tokenizer, MIXED, CPU, padding="max_length", buckets=BUCKETS)
    assert full.buckets.count == 1
    assert full.input_ids.shape[1] == 77


def test_only_end_of_text_pooled_text_towers_with_plain_token_embeddings_are_bucketed():
    adapted = _model()
    family, model = adapted.bundle.family, adapted.model
    assert bucket_limit(family, model) == (BUCKETS, None)
    assert bucket_limit(family, model, text_buckets.MIN_PROMPTS) == (BUCKETS, None)
    assert bucket_limit(METACLIP2, model) == (BUCKETS, None)  # pooled at end of text too
    limit, why = bucket_limit(family, model, 10)  # Fashion-MNIST's classes: fewer calls beat fewer tokens
    assert limit == 1
    assert why.startswith("10 class prompts")
    no_parameters = SimpleNamespace(named_parameters=lambda: iter(()))
    for siglip in (SIGLIP, SIGLIP2):  # pooled at the last position: padding changes the features
        limit, why = bucket_limit(siglip, no_parameters)
        assert limit == 1
        assert siglip.label in why
    embedding = model.base_model.model.text_model.embeddings.token_embedding
    embedding.weight.requires_grad_(True)  # a method that trains the token table
    assert bucket_limit(family, model) == (1, "the method adapts the token embedding")
    assert text_buckets.adapts_token_embedding(model)


def test_the_imagenet_shaped_spread_has_the_stated_figures():
    import statistics

    lengths = imagenet_prompt_lengths()
    assert len(lengths) == 1000
    assert max(lengths) == 18
    assert min(lengths) == 8
    assert statistics.mean(lengths) == pytest.approx(9.2)
    assert statistics.median(lengths) == 9


def test_a_run_with_mixed_length_class_names_uses_buckets_and_gets_the_unbucketed_results(tmp_path, monkeypatch):
    import shutil

    from conftest import make_color_folder

    import main

    root = make_color_folder(tmp_path / "names", per_class=6)
    for colour, name in zip(("blue", "green", "red", "yellow"),
                            ("x", "ox", "a rather long class name", "an even longer compound class name")):
        shutil.move(root / colour, root / name)
    argv = ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(root), "--shots", "2", "--n_iters", "2",
            "--batch_size", "4", "--dropout_rate", "0", "--results_file", str(tmp_path / "r.jsonl"),
            "--eval_cache_dir", ""]
    monkeypatch.setattr(text_buckets, "MIN_PROMPTS", 1)  # the colour folder's 4 classes, bucketed all the same
    bucketed = main.main(argv)
    assert bucketed["text_buckets"] == BUCKETS
    assert "text_buckets" not in bucketed["text_speedups_off"]
    monkeypatch.setattr(main, "bucket_limit", lambda family, model, prompts=None: (1, "switched off by the test"))
    plain = main.main(argv)
    assert plain["text_buckets"] == 1
    assert plain["text_speedups_off"]["text_buckets"] == "switched off by the test"
    assert bucketed["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)
    assert (bucketed["zero_shot_acc"], bucketed["test_acc"]) == (plain["zero_shot_acc"], plain["test_acc"])
