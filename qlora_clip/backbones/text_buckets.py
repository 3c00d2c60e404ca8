"""Length buckets for class prompts: the text pass without most of its padding (CLIP family only).

Padding every prompt to the longest one wastes the text pass on padding when lengths spread:
ImageNet's 1,000 prompts ('a photo of a {}.', real CLIP BPE) are padded to 18 tokens while their
mean is 9.2. CLIP's text tower is causal and pools at the end-of-text token (transformers 5.24's
CLIPTextTransformer takes the first `eos_token_id` position, or the highest token id for configs
from before that fix, which is end-of-text too), with positions counted from 0 in every sequence,
so a prompt's features depend on its own tokens only and on nothing after its end-of-text token.
A bucket of prompts padded to its own longest therefore gives the same features as the whole set
padded to the longest, up to floating-point rounding (tests/test_text_buckets.py).

The bucketing, fixed: sort the prompts by token length, cut the sorted list into at most BUCKETS
contiguous buckets at the cut points that minimise the padded token count (an exact dynamic
programme over the distinct lengths; the fewest buckets among equal counts), pad each bucket to its
own longest prompt. One forward per bucket, features put back in label order. The buckets are
used only when they save at least MIN_SAVING of the padded tokens: below that a few more forward
calls buy nothing worth having, and the prompts stay one call, exactly today's computation. A run
with fewer than MIN_PROMPTS class prompts is never bucketed (`bucket_limit`): each extra call costs
the tower's fixed per-call work (kernel launches, Python), which a small prompt set does not earn
back. Measured: the demo's 10 Fashion-MNIST prompts on the tiny model trained 320 steps in 25-35 s
with 4 buckets against 21.5 s with one call (two runs each, 2-core CPU).

A family whose text tower pools elsewhere or is padded to a fixed length (SigLIP) is not bucketed
(`bucket_limit`, by the family's `pooled_at_end_of_text`: the one rule, which the prompts' padding
follows too): its features would change. Nor is a model whose method adapts the token embedding,
which may not see the tokens these lengths were counted from.
"""
from __future__ import annotations

import torch

from qlora_clip.backbones.families import Family

BUCKETS = 4         # at most this many forward calls per text pass
MIN_SAVING = 0.10   # fraction of the padded tokens the buckets must save to be used
MIN_PROMPTS = 64    # fewer class prompts than this stay one call (DTD's 47, EuroSAT's 10); ImageNet has 1,000


def bucket_limit(family: Family, model: torch.nn.Module, prompts: int | None = None) -> tuple[int, str | None]:
    """The one switch: (BUCKETS, None) where length buckets keep the features and a run's `prompts` (its class
    count; None: not asked) are enough to pay for the extra calls, else (1, why not)."""
    if prompts is not None and prompts < MIN_PROMPTS:
        return 1, f"{prompts} class prompts: fewer than {MIN_PROMPTS}, one call costs less than several"
    if not family.pooled_at_end_of_text:
        return 1, (f"{family.label}'s text tower is not causal and pooled at end-of-text, so padding changes its "
                   "features")
    if adapts_token_embedding(model):
        return 1, "the method adapts the token embedding"
    return BUCKETS, None


def adapts_token_embedding(model: torch.nn.Module) -> bool:
    """Whether the text tower's token embedding carries an adapter or trains."""
    return any("token_embedding" in name and ("lora_" in name or param.requires_grad)
               for name, param in model.named_parameters())


def padded_tokens(lengths: list[int], buckets: list[list[int]]) -> int:
    """Tokens the text pass processes: every bucket padded to its own longest prompt."""
    return sum(len(rows) * max(lengths[i] for i in rows) for rows in buckets)


def plan_buckets(lengths: list[int], max_buckets: int = BUCKETS) -> list[list[int]]:
    """The prompts' row indices per bucket (shortest first, by length then row); one bucket of all
    rows, in label order, when more would save under MIN_SAVING of the padded tokens."""
    rows = list(range(len(lengths)))
    if max_buckets <= 1 or len(set(lengths)) <= 1:
        return [rows]
    values = sorted(set(lengths))
    counts = [lengths.count(v) for v in values]
    cuts = _best_cuts(values, counts, max_buckets)
    by_length = sorted(rows, key=lambda i: (lengths[i], i))
    buckets, start = [], 0
    for end in cuts:  # end: how many distinct lengths the buckets so far cover
        size = sum(counts[:end]) - start
        buckets.append(by_length[start:start + size])
        start += size
    if padded_tokens(lengths, buckets) > (1 - MIN_SAVING) * padded_tokens(lengths, [rows]):
        return [rows]
    return buckets


def _best_cuts(values: list[int], counts: list[int], max_buckets: int) -> list[int]:
    """Ends (in distinct lengths) of the buckets minimising sum(bucket size x its longest length)."""
    n = len(values)
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # cost[k][j]: fewest padded tokens covering the j shortest distinct lengths with k buckets.
    cost = [[inf] * (n + 1) for _ in range(max_buckets + 1)]
    back = [[0] * (n + 1) for _ in range(max_buckets + 1)]
    cost[0][0] = 0
    for k in range(1, max_buckets + 1):
        for j in range(1, n + 1):
            for i in range(k - 1, j):
                c = cost[k - 1][i] + values[j - 1] * (prefix[j] - prefix[i])
                if c < cost[k][j]:
                    cost[k][j], back[k][j] = c, i
    best_k = min(range(1, max_buckets + 1), key=lambda k: (cost[k][n], k))
    cuts, j = [], n
    for k in range(best_k, 0, -1):
        cuts.append(j)
        j = back[k][j]
    return cuts[::-1]


class TokenBuckets:
    """A bucket plan on the device: each bucket's rows and length, and the order back to label order."""

    def __init__(self, lengths: list[int], device: torch.device, max_buckets: int):
        groups = plan_buckets(lengths, max_buckets)
        self.count = len(groups)
        self.tokens = padded_tokens(lengths, groups)
        self.unbucketed_tokens = padded_tokens(lengths, [list(range(len(lengths)))])
        self.rows = [torch.tensor(g, dtype=torch.long, device=device) for g in groups]
        self.lengths = [max(lengths[i] for i in g) for g in groups]
        placed = [i for g in groups for i in g]
        inverse = [0] * len(placed)
        for position, row in enumerate(placed):
            inverse[row] = position
        self.inverse = torch.tensor(inverse, dtype=torch.long, device=device)
