"""CoOp's prompt learner: the context sits right after BOS, the class tokens after it, CLIP pools at
EOS; only the context trains; Dassl's schedule as CoOp's configs run it."""
from __future__ import annotations

import math

import pytest
import torch

from qlora_clip.methods.baselines import hparams
from qlora_clip.methods.baselines.coop import PromptLearner, prompt_ids
from qlora_clip.methods.interface import Adapted, load_adapted
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.methods.baselines.schedules import dassl_lr, epoch_batches

CPU = torch.device("cpu")
N_CTX = 16


@pytest.fixture(scope="module")
def clip() -> Adapted:
    """The frozen tiny CLIP as a CoOp run loads it (the shared loader, then the baseline's class, which freezes it)."""
    return load_adapted("tiny", AdapterConfig(mode="coop"), CPU, torch.float32)


def test_prompt_ids_are_bos_context_class_tokens_eos(clip):
    tokenizer = clip.bundle.tokenizer
    ids, mask, eos = prompt_ids(tokenizer, ["sea_lion", "cat"], N_CTX, CPU)
    placeholder = tokenizer("X", add_special_tokens=False)["input_ids"]
    for row, name in enumerate(["sea lion", "cat"]):
        words = tokenizer(name + ".", add_special_tokens=False)["input_ids"]
        expected = [tokenizer.bos_token_id] + placeholder * N_CTX + words + [tokenizer.eos_token_id]
        assert ids[row, :len(expected)].tolist() == expected
        assert int(eos[row]) == len(expected) - 1 == 1 + N_CTX + len(words)
        assert mask[row].sum() == len(expected)


def test_learned_context_replaces_the_tokens_after_bos_and_pools_at_eos(clip):
    """With the context set to the embeddings of 16 distinct words, the learner's features equal CLIP's
    own features of the prompt that spells those words out: same positions, same pooling."""
    model, tokenizer = clip.model, clip.bundle.tokenizer
    letters = "abcdefghijklmnop"
    learner = PromptLearner(model, tokenizer, ["dog", "sea lion"], N_CTX, 0.02, seed=1, device=CPU)
    letter_ids = [tokenizer(letter, add_special_tokens=False)["input_ids"] for letter in letters]
    assert all(len(ids) == 1 for ids in letter_ids)
    with torch.no_grad():
        learner.ctx.copy_(learner.token_embedding(torch.tensor([ids[0] for ids in letter_ids])))
        ours = learner.features()
        spelled = tokenizer([" ".join(letters) + " " + name + "." for name in ["dog", "sea lion"]],
                            padding=True, return_tensors="pt")
        reference = torch.nn.functional.normalize(model.get_text_features(**spelled).pooler_output, dim=-1)
    assert torch.allclose(ours, reference, atol=1e-5)
    # The hook is gone once the features are computed: plain prompts encode as before.
    assert not learner.token_embedding._forward_hooks


def test_only_the_context_receives_gradients(clip):
    learner = PromptLearner(clip.model, clip.bundle.tokenizer, ["dog", "cat"], N_CTX, 0.02, seed=1, device=CPU)
    learner.features().sum().backward()
    assert learner.ctx.grad is not None
    assert learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.model.parameters())
    assert learner.ctx.shape == (N_CTX, clip.model.config.text_config.hidden_size)


def test_the_context_is_drawn_from_the_runs_seed_without_touching_the_global_generator(clip):
    before = torch.random.get_rng_state()
    tokenizer = clip.bundle.tokenizer
    first, again, other = (PromptLearner(clip.model, tokenizer, ["dog"], N_CTX, 0.02, seed=s, device=CPU).ctx
                           for s in (1, 1, 2))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert 0.01 < float(first.detach().std()) < 0.03


def test_dassl_schedule_is_a_constant_first_epoch_then_cosine_per_epoch():
    epochs, base = 10, 0.002
    # Dassl: ConstantWarmupScheduler(CosineAnnealingLR(T_max=epochs)), stepped once per epoch.
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    expected = [1e-5]
    for _ in range(epochs - 1):
        expected.append(cosine.get_last_lr()[0])
        optimizer.step()
        cosine.step()
    ours = [dassl_lr(e, base, epochs, 1, 1e-5) for e in range(epochs)]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(ours, expected))


def test_epoch_batches_drop_the_short_batch_as_dassl_does():
    batches = epoch_batches(70, 32, seed=1, epoch=0, drop_last=True)
    assert [len(b) for b in batches] == [32, 32]
    assert [len(b) for b in epoch_batches(20, 32, 1, 0, drop_last=True)] == [20]  # fewer than a batch: kept
    assert [len(b) for b in epoch_batches(70, 32, 1, 0, drop_last=False)] == [32, 32, 6]
    assert not torch.equal(epoch_batches(70, 70, 1, 0, True)[0], epoch_batches(70, 70, 1, 1, True)[0])


def test_coop_epochs_by_shots_as_its_configs():
    assert [hparams.coop_epochs("dtd", k) for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert {hparams.coop_epochs("imagenet", k) for k in (1, 16)} == {50}
