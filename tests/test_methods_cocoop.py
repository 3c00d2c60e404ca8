"""CoCoOp's instance-conditioned context: the meta-net's token differs per image and is added to every context
token; each image's class features come from the text tower with its own context in every prompt (B x C text
sequences); its logits train the meta-net and the context."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from test_methods_training import tiny_batch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.prompts.cocoop import ConditionalContext
from qlora_clip.methods.prompts.context import context_inserted, token_embedding
from qlora_clip.methods.settings import AdapterConfig
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_run
from trainer import TrainStep

CPU = torch.device("cpu")
NAMES = ["red", "green thing", "blue", "yellow"]


def test_the_context_shifts_every_token_by_its_images_bias_by_hand():
    learner = ConditionalContext(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), image_width=2, width=3)
    first, _, second = learner.meta_net  # 2 -> 1 (2 // 16, at least 1) -> 3
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.0]]))
        first.bias.zero_()
        second.weight.copy_(torch.tensor([[-10.0], [0.0], [-1.0]]))
        second.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
        # image (0, 0): hidden 0, token (10, 0, 0); image (1, 0): hidden 1, token (0, 0, -1)
        out = learner(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert out.tolist() == [[[11.0, 2.0, 3.0], [14.0, 5.0, 6.0]], [[1.0, 2.0, 2.0], [4.0, 5.0, 5.0]]]


def test_each_image_has_its_own_token_in_every_context_position_and_its_own_class_features():
    adapted = load_adapted("tiny", AdapterConfig(mode="cocoop"), CPU, torch.float32)
    model = adapted.model.eval()
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {n}." for n in NAMES], CPU,
                           classes=SimpleNamespace(classnames=NAMES))
    images = tiny_batch()[0][:3]
    with torch.no_grad():
        features = F.normalize(adapted.image_embeddings(images), dim=-1)
        contexts = adapted.learner(features)
        shift = contexts - adapted.learner.ctx
        assert torch.allclose(shift, shift[:, :1].expand_as(shift))  # one token, on every context position
        assert not torch.allclose(shift[0], shift[1])                  # and another for another image
        adapted.text_features(prompts)  # the classes the logits score
        calls = []
        handle = model.text_model.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].shape[0]),
                                                            with_kwargs=True)
        per_image = adapted.image_text(features, adapted.scored)
        logits = adapted.logits(adapted.image_embeddings(images), None)
        handle.remove()
        assert sum(calls) == 2 * len(images) * len(NAMES)  # B x C sequences, for image_text and for the logits
        context = adapted.scored
        for i in range(len(images)):
            with context_inserted(token_embedding(model), lambda: contexts[i], context.start):
                expected = context.prompts.features(model)
            torch.testing.assert_close(per_image[i], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(logits[i], 100 * features[i] @ expected.T, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(per_image[0], per_image[1])


def test_a_step_trains_the_meta_net_and_the_context_through_its_logits(color_folder):
    spec = parse_run(["--backbone", "tiny", "--mode", "cocoop", "--shots", "1", "--n_iters", "1"])
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {n}." for n in NAMES], CPU,
                           classes=SimpleNamespace(classnames=NAMES))
    before = {n: p.detach().clone() for n, p in adapted.learner.named_parameters()}
    step = TrainStep(adapted, prompts, spec.train, resolve_precision("fp32", CPU), Distributed(0, 1, CPU), steps_per_epoch=1)
    assert step.cached_text is not None  # the class prompts' own features are not trained: the per-image logits are
    images, labels = tiny_batch()
    step([(images[:2], labels[:2])], 2)
    changed = {n for n, p in adapted.learner.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == set(before)  # the context and both meta-net layers
