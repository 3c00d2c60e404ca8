"""Class prompts of a chosen token length, for checkpoints whose tokenizer has one token per character.

The benchmark checkpoints (tiny_clip) use that tokenizer, so a prompt of k letters is k + 2 tokens.
Real CLIP BPE makes 'a photo of a {}.' 7 tokens plus the class name's pieces; the shortest real
prompt, with a one-token name, is SHORTEST_PROMPT tokens.
"""
from __future__ import annotations

import random

from transformers import PreTrainedTokenizerBase

SHORTEST_PROMPT = 8  # tokens: BOS + 'a photo of a' + a one-token name + '.' + EOS

# ImageNet's 1,000 prompts 'a photo of a {}.' in real CLIP BPE: 7 tokens plus the class name's
# pieces, mean 9.2 tokens, median 9, longest 18. CLIP's BPE files cannot be downloaded here, so
# this is a synthetic spread with exactly those three figures (tokens: prompts), most names one or
# two pieces and a thin tail of long compound names; tests/test_text_buckets.py checks them.
IMAGENET_PROMPT_LENGTHS = {8: 473, 9: 242, 10: 120, 11: 70, 12: 40, 13: 22, 14: 13, 15: 9, 16: 5, 17: 3, 18: 3}


def synthetic_prompts(tokenizer: PreTrainedTokenizerBase, num_classes: int, longest: int,
                      exact: bool = True) -> list[str]:
    """`num_classes` prompts whose token counts spread evenly from SHORTEST_PROMPT to `longest`.

    `exact=False` skips the length check, for families whose prompts are padded to a fixed length
    anyway (SigLIP's), whose tokenizers need not make one token per character.
    """
    lengths = [SHORTEST_PROMPT + round(i * (longest - SHORTEST_PROMPT) / max(num_classes - 1, 1))
               for i in range(num_classes)]
    prompts = ["x" * (n - 2) for n in lengths]
    got = len(tokenizer(prompts[-1])["input_ids"])
    if exact and got != longest:
        raise RuntimeError(f"tokenizer made {got} tokens of a {longest}-token prompt; "
                           "the benchmark expects one token per character")
    return prompts


def imagenet_prompt_lengths() -> list[int]:
    """IMAGENET_PROMPT_LENGTHS as 1,000 token counts in a fixed shuffled (label) order."""
    lengths = [n for n, count in IMAGENET_PROMPT_LENGTHS.items() for _ in range(count)]
    random.Random(0).shuffle(lengths)
    return lengths


def prompts_of_lengths(tokenizer: PreTrainedTokenizerBase, lengths: list[int]) -> list[str]:
    """One prompt per entry of `lengths`, each exactly that many tokens (one-token-per-character tokenizer)."""
    prompts = ["x" * (n - 2) for n in lengths]
    got = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    if got != list(lengths):
        raise RuntimeError("the benchmark expects a tokenizer with one token per character")
    return prompts
