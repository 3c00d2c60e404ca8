"""The published hyperparameters and schedules of the field's 2025 fixed-hyperparameter methods (issue 26),
read from their official code, each value with its file and line (pure data, no torch).

    CLIP_SVD   HealthX-Lab/CLIP-SVD at 022b1ed                       (methods/svd.py)
    TWO_STAGE  FarinaMatteo/rethinking_fewshot_vlms at 64ac143 (2SFS) (methods/two_stage.py)
    PROKER     ybendou's code in the history of omarnust/BReg-Adapter, last author commit f2ecb3d
               (methods/baselines/proker.py)
    CLAP       jusiro/CLAP at dbdf409, on Dassl c61a1b5               (methods/baselines/clap.py)

methods/table.py points each entry at its dict (`published`); docs/methods.md cites every value and says
where we differ. A value our flags also set (the learning rate, the batch, the steps per shot) is the
entry's default where the table has one (`Defaults.lr`), and data here otherwise (`n_iters`: the
optimizer steps per shot of a published run; `--n_iters` sets it for a run).
"""
from __future__ import annotations

from qlora_clip import paper

# --- CLIP-SVD (Koleilat, Rivaz & Xiao, 2025) --------------------------------------------------------
CLIP_SVD = {
    "source": "Koleilat et al., 'Singular Value Few-shot Adaptation of Vision-Language Models', arXiv 2509.03740 "
              "(2025): HealthX-Lab/CLIP-SVD train.py#L84-L131, svf_utils/svf_torch.py#L11-L293, "
              "configs/few_shot/<dataset>.yaml#L2-L15, configs/base2new/<dataset>.yaml#L2-L15, main.py#L30-L33",
    # Few-shot: lr 5e-4 for every dataset (configs/few_shot/<dataset>.yaml#L2), n_iters x shots iterations with
    # n_iters 200 (main.py#L33, train.py#L120-L121; the configs' train_epochs is not read there).
    "lr": 5e-4,
    "n_iters": 200,
    "batch_size": paper.BATCH_SIZE,          # configs/*/<dataset>.yaml#L4
    "weight_decay": paper.WEIGHT_DECAY,      # configs/*/<dataset>.yaml#L5; AdamW betas (0.9, 0.999), train.py#L125-L128
    "min_lr": paper.MIN_LR,                  # CosineAnnealingLR(total_iters, eta_min 1e-6) stepped per iteration, #L129-L131
    "matrices": ["q", "k", "v", "o", "fc1", "fc2"],  # configs/*/<dataset>.yaml#L6-L13: all layers, both towers
    "rank": "full",                          # main.py#L30 rank ratio 1.0 (svf_torch.py#L268-L273 rounds to a multiple of 4)
    # Base-to-novel (configs/base2new/<dataset>.yaml#L2-L3, train.py#L282-L377): 16 shots of the base classes,
    # lr 4e-4, these epochs over the base train set (CosineAnnealingLR(T_max=epochs) stepped per iteration,
    # #L326-L328, #L363: a cosine of period 2 x epochs iterations).
    "base2new_lr": 4e-4,
    "base2new_epochs": {"imagenet": 10, "caltech101": 20, "oxford_pets": 20, "stanford_cars": 10,
                        "oxford_flowers": 10, "food101": 10, "fgvc": 20, "sun397": 10, "dtd": 20, "eurosat": 20,
                        "ucf101": 10},
    # Its prompt per dataset (configs/few_shot/<dataset>.yaml#L15, configs/base2new/<dataset>.yaml#L15).
    "fewshot_templates": {"imagenet": "a photo of a {}.", "caltech101": "a photo of a {}.",
                          "oxford_pets": "a photo of a {}, a type of pet.", "stanford_cars": "a photo of a {}.",
                          "oxford_flowers": "a photo of a {}, a type of flower.",
                          "food101": "a photo of a {}, a type of food.",
                          "fgvc": "a photo of a {}, a type of aircraft.", "sun397": "a photo of a {}.",
                          "dtd": "{} texture.", "eurosat": "a centered satellite photo of {}.",
                          "ucf101": "a photo of a person doing {}."},
    "base2new_templates": {"imagenet": "a photo of a {}.", "caltech101": "a photo of a {}.",
                           "oxford_pets": "a photo of a {}, a type of pet.", "stanford_cars": "a photo of a {}.",
                           "oxford_flowers": "a photo of a {}, a type of flower.",
                           "food101": "a photo of {}, a type of food.",
                           "fgvc": "a photo of a {}, a type of aircraft.", "sun397": "a photo of a {}.",
                           "dtd": "a photo of a {}.", "eurosat": "a photo of a {}.", "ucf101": "a photo of a {}."},
}

# --- 2SFS (Farina et al., CVPR 2025) ----------------------------------------------------------------
TWO_STAGE = {
    "source": "Farina et al., 'Rethinking Few-Shot Adaptation of Vision-Language Models in Two Stages', CVPR 2025: "
              "FarinaMatteo/rethinking_fewshot_vlms main.py#L41-L77, fs/twostage.py#L12-L339, "
              "fs/utils/model_utils.py#L6-L38",
    # total = n_iters x shots optimizer steps with n_iters (M) 300 (main.py#L63, twostage.py#L261); stage 1 (the
    # LayerNorms) takes int(total x 0.6) of them (main.py#L65, #L262), stage 2 (the classifier) the rest (#L296).
    "n_iters": 300,
    "stage1_fraction": 0.6,
    "lr": 2e-4,                              # both stages (main.py#L49; twostage.py#L258, #L291)
    "weight_decay": paper.WEIGHT_DECAY,      # main.py#L50; AdamW betas (0.9, 0.999)
    "min_lr": paper.MIN_LR,                  # a cosine per stage, each to 1e-6 (#L263, #L297): stage 2 restarts
    "batch_size": paper.BATCH_SIZE,          # main.py#L41
    "template": paper.CLIP_LORA_TEMPLATE,    # every dataset file's template (datasets/dtd.py#L7-L10, ...)
    # What stage 1 trains: layer_norm1 and layer_norm2 of every block of both towers. The code marks ln_pre,
    # ln_post and ln_final too, then freezes them again (model_utils.py#L12-L20), so the published numbers come
    # from the per-block LayerNorms only (61,440 parameters on ViT-B/16).
    "stage1": "per-block LayerNorms, both towers",
    "stage2": "a linear classifier (classes x dim) initialised with the stage-1 text features (twostage.py#L59-L65)",
}

# --- ProKeR (Bendou et al., CVPR 2025) --------------------------------------------------------------
# The grids of beta and lambda (torch.linspace(start, end, n)) per dataset: configs/RN50/configs_proker/
# <dataset>.yaml#L3-L4 (stanford_cars.yaml#L5, #L7; imagenet.yaml#L2-L3); only RN50 grids are published.
PROKER_GRIDS = {
    "caltech101": {"beta": [0.5, 3.0, 20], "lambda": [0.001, 1.0, 10]},
    "dtd": {"beta": [0.1, 10.0, 20], "lambda": [0.001, 10.0, 100]},
    "eurosat": {"beta": [0.5, 3.0, 20], "lambda": [0.001, 1.0, 100]},
    "fgvc": {"beta": [0.5, 3.0, 20], "lambda": [0.001, 1.0, 10]},
    "food101": {"beta": [0.5, 3.0, 20], "lambda": [0.001, 1.0, 10]},
    "imagenet": {"beta": [1.5, 3.0, 10], "lambda": [0.05, 0.25, 10]},
    "oxford_flowers": {"beta": [0.1, 10.0, 20], "lambda": [0.001, 10.0, 100]},
    "oxford_pets": {"beta": [0.01, 5.0, 40], "lambda": [0.01, 0.3, 20]},
    "stanford_cars": {"beta": [0.1, 10.0, 5], "lambda": [0.01, 1.0, 5]},
    "sun397": {"beta": [0.1, 10.0, 20], "lambda": [0.01, 10.0, 10]},
    "ucf101": {"beta": [0.5, 3.0, 20], "lambda": [0.001, 1.0, 10]},
}
# A dataset without a published grid (fashion_mnist, folder) searches the one four of the eleven share.
PROKER_FALLBACK = "caltech101"
PROKER = {
    "source": "Bendou et al., 'ProKeR: A Kernel Perspective on Few-Shot Adaptation of Large Vision-Language "
              "Models', CVPR 2025: the author's code at omarnust/BReg-Adapter@f2ecb3d trainers/proker.py#L8-L56, "
              "main.py#L31-L40, utils.py#L29-L34, utils.py#L168-L179",
    "views": 10,                   # augment_epoch (utils.py#L29): every train image encoded 10 times, kept apart
    "view_scale": [0.5, 1.0],      # RandomResizedCrop(scale=(0.5, 1)) + flip (utils.py#L168-L173)
    # Selection: the best few-shot val accuracy over the grid, beta outer and lambda inner, the first best kept
    # (proker.py#L31-L40). The official default searches the FULL val split, and on ImageNet the test set
    # (main.py#L113-L116); we search our few-shot val images (min(shots, 4) per class).
    "selection": "few-shot val",
}

# --- CLAP (Silva-Rodriguez et al., CVPR 2024) -------------------------------------------------------
CLAP = {
    "source": "Silva-Rodriguez et al., 'A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models', "
              "CVPR 2024: jusiro/CLAP configs/trainers/SGD_lr1e-1_B256_ep300.yaml#L3-L23, "
              "trainers/adapters.py#L131-L284, #L421-L484, #L679-L724",
    "lr": 0.1,                     # yaml#L17
    "momentum": 0.9,               # Dassl's SGD default (dassl/config/defaults.py#L154)
    "weight_decay": 0.0,           # yaml#L23
    "epochs": 300,                 # yaml#L18
    "batch_size": 256,             # yaml#L3: cached features per step
    "warmup_epochs": 1,            # yaml#L19-L22: one constant epoch at 1e-5, then a cosine stepped per epoch
    "warmup_lr": 1e-5,
    "views": 20,                   # epochs_aumentation (adapters.py#L142-L143): 20 augmented views per image
    "view_scale": [0.08, 1.0],     # Dassl's random_resized_crop + random_flip (yaml#L13)
    "constraint": "l2",            # CONSTRAINT l2: multipliers fixed at the zero-shot confidences (adapters.py#L232-L252)
}
