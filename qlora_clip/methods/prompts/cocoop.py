"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus a meta-net that conditions it on each image.

    pi(f)       = Linear(d -> d/16) - ReLU - Linear(d/16 -> width) of the normalised image feature f
    ctx_i       = ctx + pi(f_i)           the same token pi(f_i) added to every context vector
    l_{i,c}     = the family's logits (CLIP's 100 cos) of f_i with the text of [start] ctx_i [name_c .] [end]

as the official code computes it (KaiyangZhou/CoOp, trainers/cocoop.py#L75-L83 context from "a photo of
a", #L95-L99 the meta-net, #L147-L159 the instance-conditioned prompts, #L176-L192 logits and
cross-entropy). Trainable: the context and the meta-net (35,360 weights at ViT-B/16).

Every image has its own prompts, so the method owns its logits: each image re-encodes all C class prompts,
B x C text sequences per batch, in training (with gradients back to the context and the meta-net) and
in evaluation. `text_features` of a class list gives the features with the bare context and keeps the
list, whose per-image logits the following `logits` calls compute (the evaluator and the training step
ask for text features, then for logits). The text is encoded in chunks of images (TEXT_ROWS sequences
at most per pass). Schedule: Dassl's SGD at 0.002, batch 1, 10 epochs
(configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml#L3-L22).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.methods.prompts.context import ContextPrompts, context_inserted, initial_context, token_embedding
from qlora_clip.methods.prompts.learner import PromptLearning, embedding_width, method_settings, text_width
from qlora_clip.methods.settings import AdapterConfig

# Text sequences per text-tower pass when every image re-encodes the class prompts (ImageNet: 1,000 per image).
TEXT_ROWS = 4096


class ConditionalContext(nn.Module):
    """The context and the meta-net that turns an image feature into the token added to it."""

    def __init__(self, ctx: torch.Tensor, image_width: int, width: int):
        super().__init__()
        self.ctx = nn.Parameter(ctx)
        hidden = max(image_width // 16, 1)
        self.meta_net = nn.Sequential(nn.Linear(image_width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """(images, n_ctx, width): each image's context, ctx + pi(f_i) on every token (cocoop.py#L147-L151)."""
        bias = self.meta_net(image_features.to(self.ctx.dtype))
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)


class CoCoOp(PromptLearning):
    text_prompted = False  # the class prompts' features do not carry the image's token: the logits do (below)

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, learner: nn.Module):
        super().__init__(bundle, settings, learner)
        self.scored: ContextPrompts | None = None

    @classmethod
    def build_learner(cls, bundle: ClipBundle, settings: AdapterConfig) -> nn.Module:
        ctx = initial_context(bundle, method_settings(settings)["ctx_init"], None, settings.mode)
        return ConditionalContext(ctx, embedding_width(bundle.model), text_width(bundle.model))

    def text_features(self, prompts: ClassPrompts) -> torch.Tensor:
        """The features with the bare context; the classes are kept for the per-image logits that follow."""
        if self.zero_shot:
            return super().text_features(prompts)
        self.scored = self.context_for(prompts)
        return self.encode_text(self.scored)

    def image_text(self, image_features: torch.Tensor, context: ContextPrompts) -> torch.Tensor:
        """(images, classes, dim): each image's normalised class features, its own context in every prompt."""
        contexts = self.learner(image_features)
        ids, mask = context.prompts.input_ids, context.prompts.attention_mask
        classes = ids.shape[0]
        per_pass = max(TEXT_ROWS // classes, 1)
        out = []
        for first in range(0, len(contexts), per_pass):
            chunk = contexts[first:first + per_pass]
            rows = chunk.repeat_interleave(classes, dim=0)  # image-major: image 0's C prompts, then image 1's
            with context_inserted(token_embedding(self.model), lambda: rows, context.start):
                encoded = self.model.get_text_features(
                    input_ids=ids.repeat(len(chunk), 1),
                    attention_mask=mask.repeat(len(chunk), 1) if mask is not None else None).pooler_output
            out.append(F.normalize(encoded, dim=-1).view(len(chunk), classes, -1))
        return torch.cat(out)

    def logits(self, embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.zero_shot or self.scored is None:
            return super().logits(embeddings, text)
        features = F.normalize(embeddings, dim=-1)
        per_image = self.image_text(features, self.scored)
        return torch.cat([self.family_logits(f.unsqueeze(0), t) for f, t in zip(features, per_image)])

    def loss_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.learner.parameters() if p.requires_grad]

    def describe(self) -> dict:
        return {"n_ctx": self.n_ctx, "meta_net": [layer.out_features for layer in self.learner.meta_net
                                                  if isinstance(layer, nn.Linear)]}
