"""What CoCoOp's per-image class prompts cost: B x C text sequences per batch, where the other prompt learners
(KgCoOp here) encode the C class prompts once per step and once per evaluation.

    python -m bench.prompt_costs [--backbone tiny] [--images 4] [--classes 10 100 400]

Measures, on this machine and the given checkpoint (fp32), for CoCoOp and KgCoOp: the text sequences one batch
runs through the text tower (counted at the tower's input), the seconds of one training step (trainer.TrainStep)
and of one evaluation batch's logits; then extrapolates CoCoOp's text passes to ImageNet (1,000 classes, 50,000
test images, 16 shots) in FLOPs at ViT-B/16's shapes (bench/flops.py's count, prompts of 9 tokens, the median of
ImageNet's in CLIP's BPE, bench/prompts.py). docs/methods.md quotes its output.
"""
from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from bench.flops import _encoder_flops
from bench.harness import load_model, random_batch, train_config
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.tiny_clip import REAL_SHAPES
from qlora_clip.training.distributed import Distributed
from trainer import TrainStep

MODES = ("cocoop", "kgcoop")
IMAGENET = dict(classes=1000, test_images=50_000, train_images=16_000, epochs=10, prompt_tokens=9)


def _median_seconds(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(backbone: str, mode: str, images: int, classes: int, reps: int = 3) -> dict:
    """One batch of `images` against `classes` classes: text sequences, train-step and evaluation seconds."""
    device = torch.device("cpu")
    _, precision, adapted = load_model(backbone, "fp32", device, mode)
    names = [f"class {i}" for i in range(classes)]
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {n}." for n in names], device,
                           text=adapted.bundle.text, classes=SimpleNamespace(classnames=names))
    batch, labels = random_batch(images, adapted.bundle.image.image_size, classes, device)
    adapted.initialize([batch], prompts)
    counted = []
    hook = adapted.model.text_model.register_forward_pre_hook(
        lambda module, args, kwargs: counted.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    step = TrainStep(adapted, prompts, train_config(mode, 1000), precision, Distributed(0, 1, device),
                     steps_per_epoch=1)
    counted.clear()
    step([(batch, labels)], images)
    train_sequences = sum(counted)

    def evaluate() -> None:
        adapted.model.eval()
        with torch.no_grad():
            adapted.logits(adapted.image_embeddings(batch), adapted.text_features(prompts))

    counted.clear()
    evaluate()
    eval_sequences = sum(counted)
    hook.remove()
    return {"mode": mode, "images": images, "classes": classes, "train_sequences": train_sequences,
            "eval_sequences": eval_sequences,
            "train_s": _median_seconds(lambda: step([(batch, labels)], images), reps),
            "eval_s": _median_seconds(evaluate, reps)}


def imagenet_extrapolation(backbone_shapes: str = "ViT-B/16") -> dict:
    """CoCoOp's text FLOPs on ImageNet at `backbone_shapes`, against one image pass (forward, fp32 counts)."""
    text = REAL_SHAPES[backbone_shapes]["text"]
    linear, _, attention = _encoder_flops(text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"],
                                          1, IMAGENET["prompt_tokens"])
    per_sequence = linear + attention  # forward; training adds about twice that backward (to the context)
    vision = REAL_SHAPES[backbone_shapes]["vision"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2 + 1  # and the class token
    v_linear, _, v_attention = _encoder_flops(vision["hidden_size"], vision["intermediate_size"],
                                              vision["num_hidden_layers"], 1, patches)
    image_forward = v_linear + v_attention
    # The official code tokenizes every prompt to CLIP's full context of 77 tokens.
    full = sum(_encoder_flops(text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"], 1, 77)[::2])
    c = IMAGENET["classes"]
    return {"text_gflop_per_sequence": per_sequence / 1e9, "official_gflop_per_sequence": full / 1e9,
            "image_forward_gflop": image_forward / 1e9,
            "eval_per_image_tflop": c * per_sequence / 1e12,
            "eval_total_pflop": IMAGENET["test_images"] * c * per_sequence / 1e15,
            "eval_text_once_tflop": c * per_sequence / 1e12,
            "train_total_pflop": 3 * IMAGENET["train_images"] * IMAGENET["epochs"] * c * per_sequence / 1e15}


def report(rows: list[dict], extrapolated: dict, backbone: str) -> str:
    lines = [f"Measured on `{backbone}` (fp32, this machine's CPU), one batch:", "",
             "| method | images | classes | text sequences, train step | text sequences, eval batch "
             "| train step (s) | eval batch (s) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['images']} | {r['classes']} | {r['train_sequences']} | {r['eval_sequences']} "
              f"| {r['train_s']:.3f} | {r['eval_s']:.3f} |" for r in rows]
    e = extrapolated
    lines += ["", f"Extrapolated to ImageNet at ViT-B/16's shapes (prompts of {IMAGENET['prompt_tokens']} tokens): "
              f"one text sequence is {e['text_gflop_per_sequence']:.2f} GFLOP forward, so CoCoOp's evaluation costs "
              f"{e['eval_per_image_tflop']:.2f} TFLOP of text per test image (the image itself "
              f"{e['image_forward_gflop']:.1f} GFLOP), {e['eval_total_pflop']:.0f} PFLOP for the 50,000 test images, "
              f"where the other methods encode the 1,000 prompts once ({e['eval_text_once_tflop']:.2f} TFLOP); "
              f"16-shot training (16,000 images, 10 epochs, forward and backward) about "
              f"{e['train_total_pflop']:.0f} PFLOP of text. (The official code pads every prompt to 77 tokens: "
              f"{e['official_gflop_per_sequence']:.1f} GFLOP a sequence.)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tiny")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100, 400])
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rows = [measure(args.backbone, mode, args.images, c) for c in args.classes for mode in MODES]
    text = report(rows, imagenet_extrapolation(), args.backbone)
    print(text)
    return text


if __name__ == "__main__":
    main()
