"""docs/methods.md's tables, generated from the methods table (methods.py) with measured parameter counts:

    python -m qlora_clip.methods.doc --write docs/methods.md

The trainable-parameter column is measured: each method is put on a ViT-B/16-shaped CLIP at its
defaults (q, k, v of both encoders, all layers) and its trainable parameters counted. Most are
built on the meta device (shapes only, no memory); PiSSA, OLoRA and SHiRA initialise from the
weights' values, so they are built on random ViT-B/16 weights (tiny_clip.random_checkpoint_dir,
built offline on first use, ~600 MB). tests/test_methods_doc.py checks the tables list every method
with the defaults the table has.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from qlora_clip.methods.table import BASE_METHODS, FOUR_BIT_NAMES, Method
from qlora_clip.training.optimization import CLIP_LORA

START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"
NEEDS_VALUES = ("pissa", "olora", "shira")  # their initialisation reads the weights (SVD, QR, nonzero)
NOTES = {"eva": " (before EVA moves ranks between layers; the total rank stays)",
         "adalora": " (at the start, init_r 3; pruned to a budget of r 2 per layer by the end)",
         "2sfs": " (stage 1; stage 2 then trains a classes x 512 classifier)"}


def b16_counts() -> dict[str, int]:
    """Trainable parameters of every full-precision method at its defaults on ViT-B/16 shapes."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from qlora_clip.backbones.families import CLIP
    from qlora_clip.backbones.loading import Checkpoint, ClipBundle
    from qlora_clip.backbones.tiny_clip import REAL_SHAPES, random_checkpoint_dir
    from qlora_clip.methods.interface import runtime_class
    from qlora_clip.methods.settings import AdapterConfig

    shapes = REAL_SHAPES["ViT-B/16"]
    config = CLIPConfig(text_config={**shapes["text"], "vocab_size": 49408}, vision_config=shapes["vision"],
                        projection_dim=shapes["projection_dim"])
    text = CLIP.text_settings(config)
    counts = {}
    for method in BASE_METHODS:
        if method.only_4bit:  # LoftQ: LoRA's adapter on the 4-bit base
            continue
        if method.name in NEEDS_VALUES:
            model = CLIPModel.from_pretrained(random_checkpoint_dir("ViT-B/16"), dtype=torch.float32)
        else:
            with torch.device("meta"):
                model = CLIPModel(config)
        bundle = ClipBundle(model=model, tokenizer=WordTokenizer(), image=None, text=text, family=CLIP,
                            checkpoint=Checkpoint("ViT-B/16", "unused", CLIP))
        adapted = runtime_class(method).attach(bundle, AdapterConfig(mode=method.name, total_steps=1000))
        counts[method.name] = adapted.trainable_parameters()
        del model, bundle, adapted
    counts["loftq"] = counts["lora"]
    return counts


class WordTokenizer:
    """One token per word: how CLIP's BPE tokenises the prompt learners' context words ("a photo of a": 4 tokens),
    all that building them on ViT-B/16's shapes asks of a tokenizer (no vocabulary is read offline)."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(text.split())))}


def _defaults(method: Method) -> str:
    d = method.defaults
    parts = [f"lr {d.lr:g}"]
    for flag, field in method.fields.items():
        parts.append(f"--{flag} {getattr(d, flag):g} (`{field}`)")
    parts += [f"`{k}` {v!r}" for k, v in {**method.config_defaults, **method.extras}.items()]
    if method.optimization != CLIP_LORA:  # the adapters' recipe is the protocol's, said once in the text
        parts.append(method.optimization.describe())
    return ", ".join(parts)


def _four_bit(method: Method) -> str:
    if method.only_4bit:
        return f"only (`{method.name}`)"
    return f"yes: `{FOUR_BIT_NAMES.get(method.name, method.name + '-4bit')}`" if method.four_bit else "no"


def table(counts: dict[str, int]) -> str:
    rows = ["| method | kind | PEFT class | what it trains | defaults | 4-bit base | merge | trainable at ViT-B/16 "
            "| command |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in BASE_METHODS:
        built = f"`{m.peft_class}`" + (f" ({', '.join(f'{k}={v!r}' for k, v in m.fixed.items())})" if m.fixed else "")
        ours = f"ours (`{m.runtime.split(':')[0].removeprefix('qlora_clip.methods.').replace('.', '/')}.py`)"
        rows.append(f"| **{m.name}** ({m.label}) | {m.kind} | {built if m.peft_class else ours} | {m.trains} "
                    f"| {_defaults(m)} | {_four_bit(m)} | {'yes' if m.mergeable else 'no'} "
                    f"| {counts[m.name]:,}{NOTES.get(m.name, '')} | `python main.py --mode {m.name}` |")
    return "\n".join(rows) + "\n"


def sources() -> str:
    rows = ["| method | paper | where its defaults come from |", "|---|---|---|"]
    rows += [f"| {m.name} | {m.paper or '—'} | {m.defaults.source} |" for m in BASE_METHODS]
    return "\n".join(rows) + "\n"


def with_tables(document: str, counts: dict[str, int]) -> str:
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(document):
        raise SystemExit(f"the document has no {START} ... {END} markers")
    body = f"{START}\n{table(counts)}\nSources of the defaults:\n\n{sources()}{END}"
    return pattern.sub(lambda _: body, document)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlora_clip.methods.doc", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", type=Path, help="replace the tables between the markers of this Markdown file")
    args = p.parse_args(argv)
    counts = b16_counts()
    if args.write is None:
        sys.stdout.write(table(counts) + "\n" + sources())
    else:
        args.write.write_text(with_tables(args.write.read_text(), counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
