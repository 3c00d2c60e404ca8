"""The published protocol's constants, in one place (docs/protocol.md says where each comes from).

CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024) fixed these for its few-shot table; our flags default
to them, the trainer and evaluator use them, and the sweep and the summaries lay out its grid.
Nothing here imports torch, so the summaries can read it cheaply.
"""
from __future__ import annotations

# --- model and training -------------------------------------------------------------------------
# The backbones of the paper, by the names its scripts use.
BACKBONE_ALIASES = {
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-L/14": "openai/clip-vit-large-patch14",
}
BACKBONE = "ViT-B/16"
ENCODERS = ("text", "vision", "both")
POSITIONS = ("bottom", "mid", "up", "half-up", "half-bottom", "all", "top", "top3")
PARAMS = ("q", "k", "v", "o")  # o = the attention output projection
RANK = 2
ALPHA = 1.0
DROPOUT = 0.25  # on the adapter's input
LR = 2e-4
WEIGHT_DECAY = 1e-2
BETAS = (0.9, 0.999)
MIN_LR = 1e-6  # the cosine schedule's floor
N_ITERS = 500  # optimizer steps per shot: n_iters x shots steps in all
BATCH_SIZE = 32
LOGIT_SCALE = 100.0  # CLIP's learned temperature, fixed as in CLIP-LoRA
# --loss: CLIP-LoRA's cross-entropy over the classes (the default, every family), or SigLIP's sigmoid
# loss (SigLIP families only; losses.py computes both).
LOSSES = ("ce", "sigmoid")
LOSS = "ce"
CONTEXT_LENGTH = 77  # CLIP's text context; prompts are truncated to it

# --- prompts ------------------------------------------------------------------------------------
# CLIP-LoRA trains and evaluates every dataset with this prompt; CoOp's per-dataset prompts are
# declared by each dataset module (--template dataset).
CLIP_LORA_TEMPLATE = "a photo of a {}."
# The prompt SigLIP's model cards and transformers' zero-shot pipeline use: SigLIP's and SigLIP 2's own
# (backbones/families.py), which --template clip-lora uses for them.
SIGLIP_TEMPLATE = "This is a photo of {}."

# --- the grid of the few-shot table -------------------------------------------------------------
PAPER_DATASETS = ("imagenet", "sun397", "fgvc", "eurosat", "stanford_cars", "food101", "oxford_pets",
                  "oxford_flowers", "caltech101", "dtd", "ucf101")  # the paper's column order
PAPER_SHOTS = (1, 2, 4, 8, 16)
PAPER_SEEDS = (1, 2, 3)
DATASET_TITLES = {
    "imagenet": "ImageNet", "sun397": "SUN", "fgvc": "Aircraft", "eurosat": "EuroSAT",
    "stanford_cars": "Cars", "food101": "Food", "oxford_pets": "Pets", "oxford_flowers": "Flowers",
    "caltech101": "Caltech", "dtd": "DTD", "ucf101": "UCF",
    "imagenetv2": "ImageNet-V2", "imagenet_sketch": "ImageNet-Sketch", "imagenet_a": "ImageNet-A",
    "imagenet_r": "ImageNet-R",
}

# --- the other protocols of the field -----------------------------------------------------------
# --protocol: 'fewshot' is the table above; 'base2new' is CoCoOp's base-to-novel generalization
# (train on the first half of the classes, test on both halves with separate classifiers).
PROTOCOLS = ("fewshot", "base2new")
# Cross-dataset transfer and domain generalization: one adapter trained on ImageNet (16 shots, all
# classes), evaluated on the full test sets of the other 10 datasets and of ImageNet's 4 variants.
TRANSFER_SOURCE = "imagenet"
DOMAIN_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
CROSS_DATASET_TARGETS = tuple(d for d in PAPER_DATASETS if d != TRANSFER_SOURCE)


# --- published numbers --------------------------------------------------------------------------
# CLIP-LoRA's averages over the 11 datasets, ViT-B/16, top-1 %, mean of 3 seeds, by shots.
PUBLISHED_CLIP_LORA = {1: 72.5, 2: 75.4, 4: 77.4, 8: 80.3, 16: 83.0}

# Base-to-novel generalization, ViT-B/16, 16 shots, averages over the 11 datasets (top-1 %):
# (base, new, HM), as each method's authors published them; CLIP-LoRA's row is its run by
# CLIP-SVD's authors (CLIP-LoRA published no base-to-novel numbers).
PUBLISHED_BASE2NEW = {
    "zero-shot CLIP": (69.34, 74.22, 71.70),
    "CoOp": (82.69, 63.22, 71.66),
    "CoCoOp": (80.47, 71.69, 75.83),
    "MaPLe": (82.28, 75.14, 78.55),
    "PromptSRC": (84.26, 76.10, 79.97),
    "CLIP-LoRA (run by CLIP-SVD's authors)": (84.10, 74.80, 79.18),
    "CLIP-SVD": (84.38, 76.29, 80.13),
}
