"""Each baseline's published hyperparameters and schedule, with where they come from (pure data, no torch).

These are the values of the papers' official code unless a comment says otherwise; docs/baselines.md
cites each one and lists where we deliberately differ. qlora_clip/methods.py points its table at
these dicts, and every results line of a baseline records the values it ran with (`baseline_params`).
"""
from __future__ import annotations

# --- zero-shot with prompt ensembles (CLIP, Radford et al., ICML 2021) --------------------------
# The template sets are data: qlora_clip/baselines/templates.py.
ZERO_SHOT_ENSEMBLE = {
    "source": "Radford et al., 'Learning Transferable Visual Models From Natural Language Supervision', ICML 2021; "
              "templates from openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb and data/prompts.md",
    "aggregation": "mean of the L2-normalised text features of every template, normalised again",
}

# --- linear probe (CoOp's lpclip/linear_probe.py, after CLIP's appendix A.3) --------------------
LINEAR_PROBE = {
    "source": "Zhou et al., 'Learning to Prompt for Vision-Language Models' (CoOp), IJCV 2022: lpclip/linear_probe.py",
    # scikit-learn's LogisticRegression(solver='lbfgs', penalty='l2', max_iter=1000) objective:
    # C * sum of cross-entropies + 0.5 * ||W||^2, intercept unpenalised; features: the unnormalised
    # image embeddings of the centre-cropped images (lpclip/feat_extractor.py).
    "coarse_grid": [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6],
    "refine_steps": 8,
    "max_iter": 1000,
}

# --- LP++ (Huang et al., CVPR 2024; FereshteShakeri/FewShot-CLIP-Strong-Baseline) ---------------
LP_PLUS_PLUS = {
    "source": "Huang et al., 'LP++: A Surprisingly Strong Linear Probe for Few-Shot CLIP', CVPR 2024: "
              "methods/linear_probe_p2.py and configs/base.yaml",
    "epochs": 300,               # full-batch gradient steps (configs/base.yaml train_epoch)
    "momentum": 0.9,             # SGD on the visual weights and bias, step size 4N / lambda_max(F^T F)
    "alpha_every": 10,           # the blending weights take a gradient step every 10 epochs ...
    "alpha_init_scale": 250.0,   # ... from alpha_0 = 250 x the mean over classes of mean <f_i, t_y(i)>
    "view_scale": [0.5, 1.0],    # one augmented view per train image (main.py's train_tranform)
}

# --- Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022; gaopengcuhk/Tip-Adapter) -----------
TIP_ADAPTER = {
    "source": "Zhang et al., 'Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification', "
              "ECCV 2022: main.py, utils.py, configs/<dataset>.yaml",
    "cache_views": 10,           # augment_epoch: the cache keys average 10 augmented views per image
    "view_scale": [0.5, 1.0],    # RandomResizedCrop(scale=(0.5, 1)) + horizontal flip
    "search_steps": [200, 20],   # search_step: beta grid, alpha grid
    "init_beta": 1.0,
    # Tip-Adapter-F: the keys become a learnable linear layer, trained with fresh augmented views
    "lr": 1e-3,                  # AdamW(lr, eps=1e-4), PyTorch's default weight decay 0.01
    "eps": 1e-4,
    "weight_decay": 0.01,
    "batch_size": 256,
    "epochs": 20,                # train_epoch (EuroSAT: 100, below)
}
# configs/<dataset>.yaml: search_scale (beta, alpha), init_alpha, train_epoch where not 20. Datasets
# without a Tip-Adapter config (fashion_mnist, folder) use ImageNet's, and record that they did.
TIP_ADAPTER_DATASETS = {
    "imagenet": {"search_scale": [7, 3], "init_alpha": 1.17},
    "caltech101": {"search_scale": [12, 5], "init_alpha": 3.0},
    "dtd": {"search_scale": [13, 13], "init_alpha": 2.0},
    "eurosat": {"search_scale": [12, 10], "init_alpha": 2.0, "epochs": 100},
    "fgvc": {"search_scale": [30, 30], "init_alpha": 5.0},
    "food101": {"search_scale": [10, 10], "init_alpha": 1.17},
    "oxford_flowers": {"search_scale": [50, 50], "init_alpha": 10.0},
    "oxford_pets": {"search_scale": [7, 3], "init_alpha": 1.17},
    "stanford_cars": {"search_scale": [20, 10], "init_alpha": 3.0},
    "sun397": {"search_scale": [12, 10], "init_alpha": 1.17},
    "ucf101": {"search_scale": [7, 3], "init_alpha": 3.0},
}
TIP_ADAPTER_FALLBACK = "imagenet"

# --- CoOp's training schedule (Dassl configs/trainers/CoOp/vit_b16*.yaml, scripts/coop/main.sh) ---
# SGD (Dassl's defaults: momentum 0.9, weight decay 5e-4), cosine over the epochs stepped once per
# epoch, the first epoch at a constant 1e-5, batches of 32 with the short last batch dropped.
DASSL_SGD = {"momentum": 0.9, "weight_decay": 5e-4, "batch_size": 32, "warmup_epochs": 1, "warmup_lr": 1e-5}
# Epochs by shots: rn50_ep50 for 1 shot, _ep100 for 2 and 4, the 200-epoch config for 8 and 16;
# ImageNet uses the 50-epoch config at every shot count (COOP.md).
COOP_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
COOP_IMAGENET_EPOCHS = 50

COOP = {
    "source": "Zhou et al., 'Learning to Prompt for Vision-Language Models', IJCV 2022: trainers/coop.py, "
              "configs/trainers/CoOp/vit_b16*.yaml, scripts/coop/main.sh",
    "n_ctx": 16,                 # generic (shared) context, random init N(0, 0.02^2), class token at the end
    "ctx_init_std": 0.02,
    "lr": 0.002,
    **DASSL_SGD,
    "view_scale": [0.08, 1.0],   # Dassl's random_resized_crop (RRCROP_SCALE) + random_flip
}

# --- CLIP-Adapter (Gao et al., IJCV 2023; gaopengcuhk/CLIP-Adapter) -----------------------------
CLIP_ADAPTER = {
    "source": "Gao et al., 'CLIP-Adapter: Better Vision-Language Models with Feature Adapters', IJCV 2023: "
              "clip_adapter.py (architecture, ratio); schedule: CoOp's Dassl trainer, which its README says to run",
    "reduction": 4,              # Linear(d, d/4, no bias) - ReLU - Linear(d/4, d, no bias) - ReLU
    "ratio": 0.2,                # x' = 0.2 adapter(x) + 0.8 x, on the unnormalised image embedding
    # Not in the released code: the paper's implementation details as we read them (200 epochs,
    # batch 32, learning rate 1e-5); docs/baselines.md says what we could not confirm.
    "lr": 1e-5,
    "epochs": 200,
    **DASSL_SGD,
    "view_scale": [0.08, 1.0],
}


def coop_epochs(dataset: str, shots: int) -> int:
    """CoOp's epochs for a shot count; counts between the published ones take the next larger one's."""
    if dataset == "imagenet":
        return COOP_IMAGENET_EPOCHS
    for published in sorted(COOP_EPOCHS):
        if shots <= published:
            return COOP_EPOCHS[published]
    return COOP_EPOCHS[max(COOP_EPOCHS)]


def tip_adapter_config(dataset: str) -> dict:
    """TIP_ADAPTER with the dataset's own search scale, initial alpha and epochs, and which config it is."""
    config_of = dataset if dataset in TIP_ADAPTER_DATASETS else TIP_ADAPTER_FALLBACK
    return {**TIP_ADAPTER, **TIP_ADAPTER_DATASETS[config_of], "config_of": config_of}
