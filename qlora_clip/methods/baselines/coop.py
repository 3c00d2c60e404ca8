"""CoOp (Zhou et al., IJCV 2022): 16 learned context vectors in place of the prompt's words,

    prompt_k = [BOS] v_1 ... v_16 [tokens of "<class name>."] [EOS],   logits = 100 cos(f, text(prompt_k)),

one generic context shared by every class (CSC off), initialised from N(0, 0.02^2), the class token
at the end, the rest of CLIP frozen. The learned vectors replace the token embeddings of 16
placeholder tokens after BOS (a forward hook on the token embedding, methods/prompts/context.py's, which the
prompt learners trained through the loop share, so CLIP's own text forward adds
the positions, runs the causal tower and pools at EOS, which sits after the class tokens); the
prompt is the trainer's only parameter.

Schedule (configs/trainers/CoOp/vit_b16*.yaml, scripts/coop/main.sh): SGD lr 0.002, momentum 0.9,
weight decay 5e-4, batches of 32 (the short last one dropped), the first epoch at a constant 1e-5,
cosine per epoch, 50 epochs at 1 shot, 100 at 2 and 4, 200 at 8 and 16, 50 on ImageNet at every shot
count; the last epoch's context is kept. The image tower is frozen, so each epoch's augmented images
(Dassl's RandomResizedCrop(0.08, 1) + flip, one fresh view per image and epoch) are encoded once and
cached like every baseline's features: the training loop runs the text tower only. Our own small
loop (schedules.train_dassl), not trainer.TrainStep: TrainStep is AdamW with a per-step cosine on
adapter weights and images through the vision tower, none of which CoOp has.
"""
from __future__ import annotations

from typing import ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from qlora_clip.methods.baselines import hparams
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.baselines.base import Baseline, BaselineInputs, FeatureBaseline, Fitted, Needs
from qlora_clip.methods.baselines.clip_adapter import views_for
from qlora_clip.methods.baselines.schedules import train_dassl
from qlora_clip.methods.prompts.context import context_inserted
from qlora_clip.errors import UserError
from qlora_clip.paper import CONTEXT_LENGTH

PLACEHOLDER = "X"  # CoOp's prompt_prefix "X X ... X": a token whose embedding the context replaces


class PromptLearner(nn.Module):
    """The learned context and the fixed token ids of every class's prompt."""

    def __init__(self, model: nn.Module, tokenizer, classnames: list[str], n_ctx: int, std: float, seed: int,
                 device: torch.device):
        super().__init__()
        self.model, self.n_ctx = model, n_ctx
        self.token_embedding: nn.Embedding = model.text_model.embeddings.token_embedding
        generator = torch.Generator().manual_seed(seed)
        width = self.token_embedding.embedding_dim
        self.ctx = nn.Parameter(torch.empty(n_ctx, width).normal_(0, std, generator=generator).to(device))
        self.input_ids, self.attention_mask, self.eos_positions = prompt_ids(tokenizer, classnames, n_ctx, device)

    def _context_inserted(self) -> ContextManager:
        """While open, the token embedding's output carries the context at positions 1 .. n_ctx (after BOS)."""
        return context_inserted(self.token_embedding, lambda: self.ctx, start=1)

    def features(self) -> torch.Tensor:
        """Normalised text features (classes, dim) of the prompts with the current context."""
        with self._context_inserted():
            out = self.model.get_text_features(input_ids=self.input_ids, attention_mask=self.attention_mask)
        return F.normalize(out.pooler_output.float(), dim=-1)


def prompt_ids(tokenizer, classnames: list[str], n_ctx: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids [BOS] X*n_ctx [name tokens] [.] [EOS], padded to the longest, their mask, and each
    prompt's EOS position (1 + n_ctx + its name's tokens), where CLIP pools."""
    placeholder = tokenizer(PLACEHOLDER, add_special_tokens=False)["input_ids"]
    if len(placeholder) != 1:
        raise ValueError(f"the tokenizer splits {PLACEHOLDER!r} into {len(placeholder)} tokens")
    rows = []
    for name in classnames:
        words = tokenizer(name.replace("_", " ") + ".", add_special_tokens=False)["input_ids"]
        room = CONTEXT_LENGTH - 2 - n_ctx
        if room < 1:
            raise UserError(f"--mode coop: {n_ctx} context tokens leave no room for a class name in "
                            f"{CONTEXT_LENGTH} tokens")
        rows.append([tokenizer.bos_token_id] + placeholder * n_ctx + words[:room] + [tokenizer.eos_token_id])
    length = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([row + [pad] * (length - len(row)) for row in rows], device=device)
    mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows], device=device)
    return ids, mask, torch.tensor([len(row) - 1 for row in rows], device=device)


def _needs(dataset: str, shots: int) -> Needs:
    return Needs(views=(views_for(hparams.coop_epochs(dataset, shots)),))


def fit(inputs: BaselineInputs) -> Fitted:
    config = {**hparams.COOP, "epochs": hparams.coop_epochs(inputs.dataset, inputs.shots)}
    views = inputs.bank.train_views(views_for(config["epochs"]))
    learner = PromptLearner(inputs.model, inputs.tokenizer, inputs.classnames, config["n_ctx"],
                            config["ctx_init_std"], inputs.seed, inputs.device)
    precision = inputs.precision

    def loss_of(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            text = learner.features()
        return F.cross_entropy(inputs.zero_shot_logits(features, text), labels)

    run = train_dassl([learner.ctx], loss_of, views.features, views.labels, config, inputs.seed, inputs.device)
    with torch.no_grad(), precision.autocast():
        text = learner.features()

    @torch.no_grad()
    def class_text(prompts: ClassPrompts) -> torch.Tensor:
        """The learned context before the classes of `prompts` (another dataset's, base-to-novel's new ones)."""
        classes = prompts.classes
        if classes is None or classes.classnames == inputs.classnames:
            return text
        other = PromptLearner(inputs.model, inputs.tokenizer, classes.classnames, config["n_ctx"], config["ctx_init_std"],
                              inputs.seed, inputs.device)
        other.ctx.data = learner.ctx.data
        with precision.autocast():
            return other.features()

    return Fitted(predict=inputs.zero_shot_logits, text=class_text, params=config,
                  trainable_params=learner.ctx.numel(), added_params=learner.ctx.numel(), steps=run.steps,
                  images_seen=run.images_seen, losses=run.losses)


COOP = Baseline(needs=_needs, fit=fit)


class CoOp(FeatureBaseline):
    baseline = COOP
