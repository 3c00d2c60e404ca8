"""The backbones: the families' checkpoints, loading them, and their text and image features.

    families.py       the families (CLIP, SigLIP, SigLIP 2, MetaCLIP 2): what differs, chosen from config.json
    loading.py        a checkpoint of a family, on a 4-bit NF4 base or not
    targets.py        --encoder/--position/--params -> the names of the modules a method adapts
    encode.py         class prompts, text and image features, the family's logits
    text_buckets.py   length buckets of class prompts (causal towers pooled at end-of-text)
    tiny_clip.py      the offline tiny checkpoint, and random checkpoints in real shapes for benchmarks
    tiny_backbones.py the other families' tiny offline checkpoints and base-model shapes for benchmarks
    compat.py         version-guarded work-arounds for the pinned libraries
"""
