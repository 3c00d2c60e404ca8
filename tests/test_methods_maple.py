"""MaPLe's deep coupled prompts: they enter exactly the first J layers of both towers (the input of layer 0, then
a replacement before each layer 1 .. J-1, nothing from layer J on), every vision prompt is the coupling (a Linear
per depth) of the text prompt of the same depth, the deep couplings start identical, and SigLIP's pooling head
never sees the vision prompts."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_methods_training import tiny_batch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.errors import UserError
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.prompts.deep import tower_layers
from qlora_clip.methods.prompts.maple import CoupledPrompts
from qlora_clip.methods.settings import AdapterConfig

CPU = torch.device("cpu")
NAMES = ["red", "green thing", "blue", "yellow"]
DEPTH = 3  # of the tiny towers' 6 layers


def test_the_coupling_by_hand():
    learner = CoupledPrompts(torch.tensor([[1.0, 2.0]]), depth=2, vision=3)
    with torch.no_grad():
        learner.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        learner.proj.bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
        assert learner.vision(0).tolist() == [[1.0, 2.5, 2.0]]
        learner.deep_text.copy_(torch.tensor([[[2.0, -1.0]]]))
        learner.deep_proj[0].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]]))
        learner.deep_proj[0].bias.zero_()
        assert learner.vision(1).tolist() == [[1.0, -2.0, 6.0]]


def layer_inputs(model: torch.nn.Module, tower: str) -> tuple[list[torch.Tensor], list]:
    """Hooks recording each layer's input hidden states (after the method's own hooks, which run first)."""
    seen = []
    handles = [layer.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[0].detach().clone()),
                                               with_kwargs=True) for layer in tower_layers(model, tower)]
    return seen, handles


def test_prompts_enter_exactly_the_first_j_layers_of_both_towers_and_vision_is_the_coupling_of_text():
    adapted = load_adapted("tiny", AdapterConfig(mode="maple", peft_args=(f"depth={DEPTH}",)), CPU, torch.float32)
    model, learner = adapted.model.eval(), adapted.learner
    assert adapted.depth == DEPTH
    # The deep couplings start as copies of one initialised layer (maple.py#L116-L117).
    assert all(torch.equal(p.weight, learner.deep_proj[0].weight) for p in learner.deep_proj)
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {n}." for n in NAMES], CPU,
                           classes=SimpleNamespace(classnames=NAMES))
    context = adapted.context_for(prompts)
    start, n = context.start, adapted.n_ctx
    with torch.no_grad():
        text_seen, handles = layer_inputs(model, "text_model")
        adapted.text_features(prompts)
        vision_seen, more = layer_inputs(model, "vision_model")
        adapted.image_embeddings(tiny_batch()[0][:2])
        for handle in handles + more:
            handle.remove()
        positions = model.text_model.embeddings.position_embedding.weight[start:start + n]
        # Layer 0: the context, in place of the words, plus the positions' embeddings.
        torch.testing.assert_close(text_seen[0][:, start:start + n], (learner.ctx + positions).expand(4, -1, -1))
        # Vision layer 0: the coupled context appended after the patches, through CLIP's pre-LayerNorm.
        appended = model.vision_model.pre_layrnorm(learner.proj(learner.ctx))
        torch.testing.assert_close(vision_seen[0][:, -n:], appended.expand(2, -1, -1))
        patches = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
        assert all(hidden.shape[1] == patches + 1 + n for hidden in vision_seen)
        for layer in range(1, DEPTH):  # replaced before each of layers 1 .. J-1: text, and its coupling
            text_prompt = learner.deep_text[layer - 1]
            torch.testing.assert_close(text_seen[layer][:, start:start + n], text_prompt.expand(4, -1, -1))
            coupled = text_prompt @ learner.deep_proj[layer - 1].weight.T + learner.deep_proj[layer - 1].bias
            torch.testing.assert_close(vision_seen[layer][:, -n:], coupled.expand(2, -1, -1))
        for layer in range(DEPTH, len(text_seen)):  # from layer J on: what layer J-1 left there, no prompt
            assert not any(torch.allclose(text_seen[layer][0, start:start + n], p) for p in learner.deep_text)
            assert not any(torch.allclose(vision_seen[layer][0, -n:], learner.vision(j)) for j in range(DEPTH))
        # With the prompts off (zero-shot) the towers see no prompt tokens.
        vision_off, handles = layer_inputs(model, "vision_model")
        with adapted.zero_shot_view():
            adapted.image_embeddings(tiny_batch()[0][:2])
        for handle in handles:
            handle.remove()
        assert all(hidden.shape[1] == patches + 1 for hidden in vision_off)


def test_siglips_pooling_head_attends_to_the_patches_only():
    adapted = load_adapted("tiny-siglip", AdapterConfig(mode="maple"), CPU, torch.float32)
    model = adapted.model.eval()
    seen = []
    handle = model.vision_model.head.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    encoder = []
    more = model.vision_model.encoder.register_forward_hook(lambda m, a, out: encoder.append(out[0].shape[1]))
    with torch.no_grad():
        adapted.image_embeddings(tiny_batch()[0][:2])
    handle.remove()
    more.remove()
    patches = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    assert encoder == [patches + adapted.n_ctx]  # the prompts went through the layers
    assert seen == [patches]                      # and were dropped before the attention-pooling head


def test_a_depth_the_towers_do_not_have_is_refused():
    with pytest.raises(UserError, match="prompt depth 7 needs 1 to 6 layers"):
        load_adapted("tiny", AdapterConfig(mode="maple", peft_args=("depth=7",)), CPU, torch.float32)
