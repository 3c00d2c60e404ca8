"""The FLOP count of one training step, from the model's shapes (multiply-add = 2 FLOPs).

For an encoder of width d, MLP width m, L layers, and N sequences of S tokens (T = N*S):
  forward  linear    = 2*T*(4*d^2 + 2*d*m)*L           (q, k, v, out projections + two MLP layers)
           attention = 2*2*N*S^2*d*L                    (Q K^T and P V)
           + patch embedding 2*B*P*(3*p^2)*d (vision) and each tower's pooling head (below)
  backward, base frozen: input gradients only, one more forward's worth of linear FLOPs (less layer
           0's q, k, v, whose input needs no gradient), twice the attention matmuls, the heads' input
           gradients; the patch embedding needs none.
  adapters: 2*T*r*(d_in+d_out) per adapted projection forward, three times that per step.
  logits:   2*B*C*e forward, twice that backward (B images, C classes, e the feature width).
Heads, by family (families.Family.vision_pooling): CLIP-like towers project the pooled token,
2*N*d*e (the vision tower's S counts its class token). SigLIP's text head is the same linear layer
on the last token; its vision tower has no class token, and its attention-pooling head runs a probe
over the P patch tokens: q 2*B*d^2, k and v 4*B*P*d^2, Q K^T and P V 4*B*P*d, out 2*B*d^2, MLP 4*B*d*m;
backward: k and v's input gradients, three of the four attention matmuls (the probe's query needs
no gradient), out and MLP again.
The text pass counts only when the text tower has adapters (otherwise prompts are encoded once,
outside the step, as trainer.train does). Recomputation (gradient checkpointing, DoRA's second
base matmul) is not counted: utilization is useful FLOPs over time, so overheads lower it.
tests/test_bench.py and tests/test_backbones_bench.py check this count against torch.utils.flop_counter.
"""
from __future__ import annotations

from qlora_clip.paper import RANK


def _encoder_flops(d: int, m: int, layers: int, n_seqs: int, seq: int) -> tuple[float, float, float]:
    """Forward FLOPs of a transformer stack: (all linear layers, layer 0's q/k/v, attention matmuls)."""
    tokens = n_seqs * seq
    linear = 2 * tokens * (4 * d * d + 2 * d * m) * layers
    first_qkv = 2 * tokens * 3 * d * d
    attention = 2 * 2 * n_seqs * seq * seq * d * layers
    return linear, first_qkv, attention


def _attention_head_flops(d: int, m: int, batch: int, patches: int) -> tuple[float, float]:
    """(forward, backward) FLOPs of SigLIP's attention-pooling head over `patches` tokens per image."""
    forward = 2 * batch * d * d + 4 * batch * patches * d * d + 4 * batch * patches * d + 2 * batch * d * d \
        + 4 * batch * d * m
    backward = 4 * batch * patches * d * d + 3 * 2 * batch * patches * d + 2 * batch * d * d + 4 * batch * d * m
    return forward, backward


def _feature_width(config) -> int:
    """The width of the features the logits compare: CLIP's projection_dim, SigLIP's text head output."""
    return getattr(config, "projection_dim", None) or config.text_config.projection_size


def train_step_flops(config, batch: int, num_classes: int, prompt_len: int, encoder: str,
                     r: int = RANK, n_params: int = 3) -> float:
    """Useful FLOPs of one training step of `batch` images against `num_classes` prompts of
    `prompt_len` tokens, with rank-`r` adapters on `n_params` projections per layer of `encoder`."""
    total = 0.0
    v, t = config.vision_config, config.text_config
    proj = _feature_width(config)
    # SigLIP's vision tower pools with an attention head (its config says so), CLIP's with a class token.
    attention_head = bool(getattr(v, "vision_use_head", False))
    adapted = {"vision": encoder in ("vision", "both"), "text": encoder in ("text", "both")}
    patches = (v.image_size // v.patch_size) ** 2
    patch_embedding = 2 * batch * patches * 3 * v.patch_size ** 2 * v.hidden_size
    specs = {
        "vision": (v.hidden_size, v.intermediate_size, v.num_hidden_layers, batch,
                   patches + (0 if attention_head else 1)),
        "text": (t.hidden_size, t.intermediate_size, t.num_hidden_layers, num_classes, prompt_len),
    }
    for tower, (d, m, layers, n_seqs, seq) in specs.items():
        linear, first_qkv, attention = _encoder_flops(d, m, layers, n_seqs, seq)
        if tower == "vision" and attention_head:
            head, head_backward = _attention_head_flops(d, m, n_seqs, seq)
        else:
            head = head_backward = 2 * n_seqs * d * proj
        if adapted[tower]:
            adapters = 3 * 2 * n_seqs * seq * r * 2 * d * n_params * layers
            total += 2 * linear - first_qkv + 3 * attention + head + head_backward + adapters
        elif tower == "vision":  # a frozen vision tower still runs forward every step
            total += linear + attention + head
        if tower == "vision":
            total += patch_embedding
    total += 3 * 2 * batch * num_classes * proj  # logits and their gradients
    return total


def text_pass_flops(config, sequences: int, seq_len: int, r: int = RANK, n_params: int = 3) -> float:
    """One forward and backward of the adapted text tower on `sequences` prompts of `seq_len` tokens."""
    return train_step_flops(config, 0, sequences, seq_len, "both", r, n_params)


def image_pass_flops(config, batch: int, num_classes: int, r: int = RANK, n_params: int = 3) -> float:
    """The adapted vision tower's forward and backward on `batch` images, and their logits against
    `num_classes` prompts with the logits' gradients."""
    return train_step_flops(config, batch, num_classes, 1, "vision", r, n_params)
