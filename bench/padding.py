"""Study: class prompts padded to the longest prompt (features.ClassPrompts) vs CLIP's 77 tokens.

CLIP-LoRA pads every prompt to the full context. CLIP's text tower is causal and pools at the
end-of-text token, so the shorter padding must give the same logits; it only removes work. The
study times both paddings at PADDING_CLASSES classes and checks the logits agree. Families whose
text is pooled elsewhere (SigLIP's last position) are padded to their fixed length anyway: the
study is skipped for them, saying so.
"""
from __future__ import annotations

import torch

from bench.harness import checkpoint_dir, load_model, random_batch
from bench.prompts import synthetic_prompts
from bench.settings import BenchSettings
from bench.step_time import first_setting, measure_setting
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.families import family_of

PADDING_CLASSES = 100  # Caltech101's class count, where the seed reports its numbers


@torch.no_grad()
def logits_max_diff(backbone: str, num_classes: int, prompt_tokens: int, device: torch.device) -> float:
    """Largest |logit| difference between longest and 77-token padding, adapters made non-trivial."""
    _, _, adapted = load_model(backbone, "fp32", device)
    bundle, model = adapted.bundle, adapted.model.eval()
    g = torch.Generator().manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.copy_(0.05 * torch.randn(param.shape, generator=g))
    prompts = synthetic_prompts(bundle.tokenizer, num_classes, prompt_tokens)
    images, _ = random_batch(4, bundle.image.image_size, 2, device, seed=2)
    image = adapted.image_embeddings(images)
    longest = adapted.logits(image, adapted.text_features(ClassPrompts(bundle.tokenizer, prompts, device)))
    full = adapted.logits(image, adapted.text_features(ClassPrompts(bundle.tokenizer, prompts, device,
                                                                    padding="max_length")))
    return (longest - full).abs().max().item()


def run(bench: BenchSettings, peak_flops: dict[str, float]) -> tuple[dict, list[dict]]:
    """Step time of LoRA on both encoders with each padding; (summary, rows)."""
    family = family_of(str(checkpoint_dir(bench.backbone)), bench.backbone)
    if not family.pooled_at_end_of_text:
        return {"skipped": f"{family.label} pools its text at the last position, so its prompts are always padded "
                           "to its fixed length: there is no shorter padding to compare"}, []
    longest = measure_setting(bench, peak_flops, first_setting(bench, num_classes=PADDING_CLASSES))
    full = measure_setting(bench, peak_flops, first_setting(bench, num_classes=PADDING_CLASSES,
                                                            padding="max_length"))
    summary = {
        "num_classes": PADDING_CLASSES, "batch": longest["batch"], "longest_len": longest["prompt_len"],
        "full_len": full["prompt_len"], "step_s_longest": longest["step_s"], "step_s_77": full["step_s"],
        "speedup": full["step_s"] / longest["step_s"],
        "logits_max_abs_diff": logits_max_diff(bench.backbone, bench.num_classes, bench.prompt_tokens,
                                               torch.device(bench.device))}
    return summary, [longest, full]
