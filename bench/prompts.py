"""Class prompts of a chosen token length, for checkpoints whose tokenizer has one token per character.

The benchmark checkpoints (tiny_clip) use that tokenizer, so a prompt of k letters is k + 2 tokens.
Real CLIP BPE makes 'a photo of a {}.' 7 tokens plus the class name's pieces; the shortest real
prompt, with a one-token name, is SHORTEST_PROMPT tokens.
"""
from __future__ import annotations

from transformers import PreTrainedTokenizerBase

SHORTEST_PROMPT = 8  # tokens: BOS + 'a photo of a' + a one-token name + '.' + EOS


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
