"""The methods, in one table: how each `--mode` is built, its defaults and where they come from.

Every method is one entry here, and the code behind it is one class that the entry names
(`runtime`, imported only when a run builds it; methods/interface.py says what such a class
does). The core calls that class and never asks which method it is. An entry says which PEFT
config class builds it (None for our own code), the fixed fields of that config, which PEFT field
each of our generic flags (`--r`, `--alpha`, `--dropout_rate`) sets, the method's default
hyperparameters with their source, whether it trains on a 4-bit base and merges into the weights,
which flags it cannot take and why, and what kind of method it is. docs/methods.md describes
every entry; CONTRIBUTING.md says how to add one.

The 4-bit base is an axis, not a method: each method that supports it has a 4-bit entry generated
from it (`--quantize 4bit`, or its name): LoRA's and DoRA's keep their names, `qlora` and `qdora`;
the others are `<name>-4bit`.

The baselines of the field's tables (BASELINES) are entries too, fitted on the frozen base's
features with their papers' hyperparameters (`published`, from methods/baselines/hparams.py, which
cites each value).

Nothing here imports torch or PEFT, so the command line, the sweep and the summaries read the
table cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from qlora_clip import paper
from qlora_clip.methods.baselines import hparams

CLIP_LORA = "CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024): r 2, alpha 1, dropout 0.25, lr 2e-4"
PEFT_MM = "PEFT's MetaMathQA method comparison (method_comparison/MetaMathQA/experiments)"
# Our generic flags, which each method maps onto a field of its own config (Method.fields).
GENERIC_FLAGS = ("r", "alpha", "dropout_rate")
# What kind of method an entry is (the methods table's column).
KINDS = ("adapter", "prompt", "probe", "training-free")
QUANTIZE = ("none", "4bit")


@dataclass(frozen=True)
class Defaults:
    """A method's default hyperparameters and where they come from."""
    lr: float | None              # None: a baseline, whose optimiser (if any) is its paper's
    r: int | None = None          # the value of the PEFT field `Method.fields['r']` names
    alpha: float | None = None
    dropout_rate: float | None = None
    source: str = ""


@dataclass(frozen=True)
class Method:
    name: str            # the --mode value, and the method's name in results lines
    label: str           # how papers write it
    kind: str            # a KINDS value: what the method trains or fits (the methods table's column)
    runtime: str         # 'module:Class', the code behind the entry (a methods.interface.Adapted)
    peft_class: str | None  # the PEFT config class; None for our own code
    trains: str          # what the optimizer updates, in words (docs/methods.md)
    defaults: Defaults
    paper: str = ""
    # Our generic flags -> the config field each sets ({'r': 'r', 'alpha': 'lora_alpha', ...}).
    fields: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)  # PEFT config fields that make it this method
    # Further PEFT config values of ours where PEFT's default does not fit (--peft_args can change them).
    config_defaults: Mapping[str, Any] = field(default_factory=dict)
    scaling_flag: bool = False   # --lora_scaling applies (PEFT's use_rslora)
    four_bit: bool = False       # PEFT 0.21 trains it on a bitsandbytes 4-bit base (checked by tests)
    only_4bit: bool = False      # it exists only on the 4-bit base (LoftQ initialises LoRA for one)
    mergeable: bool = True       # PEFT (or our own code) can merge it into the weights
    quantized: bool = False      # this entry runs on the 4-bit NF4 base
    base_method: str | None = None  # for a 4-bit entry: the full-precision method it quantizes
    # Method settings that are not PEFT config fields, settable like them with --peft_args.
    extras: Mapping[str, Any] = field(default_factory=dict)
    targets: str = "projections"  # 'projections' (--params of --position layers) or 'layer_norms'
    # 'images': trained by the training loop, images through the towers; 'features': fitted on frozen image features.
    trains_on: str = "images"
    # main.py flags the method cannot take other than at their defaults, and why ("--mode NAME <why>"; checked
    # before anything loads).
    refuses: Mapping[str, str] = field(default_factory=dict)
    # Whether it classifies classes it was not fitted on (base-to-novel's new half, --eval_datasets): a
    # classifier whose weights are the train classes' (a linear probe, a cache model) does not.
    unseen_classes: bool = True
    # The backbone families (families.py names) it runs on, and why only those; None: every family.
    families: tuple[str, ...] | None = None
    families_why: str = ""
    # A baseline's published hyperparameters, with their "source".
    published: Mapping[str, Any] = field(default_factory=dict)
    # What --interpolate's alpha means for it, where not the merged weights' interpolation (INTERPOLATES_WEIGHTS); a
    # method where nothing lies between the pretrained and the trained model refuses the flag (`refuses`).
    between: str = ""

    @property
    def dora(self) -> bool:
        return bool(self.fixed.get("use_dora"))

    @property
    def four_bit_name(self) -> str | None:
        """The name of this method on the 4-bit base, or None where it has none."""
        if self.quantized:
            return self.name
        return FOUR_BIT_NAMES.get(self.name, f"{self.name}-4bit") if self.four_bit else None

    @property
    def full_precision_name(self) -> str | None:
        return self.base_method if self.quantized else self.name

    @property
    def interpolation(self) -> str | None:
        """What the model at --interpolate's alpha is (docs/evaluation.md); None where the method refuses the flag."""
        if "interpolate" in self.refuses:
            return None
        return self.between or (INTERPOLATES_WEIGHTS if self.mergeable else None)


# --interpolate (WiSE-FT, Wortsman et al., CVPR 2022) for a method that merges into the weights.
INTERPOLATES_WEIGHTS = ("the weights (1 - alpha) W_0 + alpha W_1 of every layer the method changes, W_1 its merged "
                        "form: each such layer gives (1 - alpha) x its pretrained output + alpha x its adapted output")
# ... and for a baseline that classifies the frozen features with a head of its own.
INTERPOLATES_LOGITS = ("the logits (1 - alpha) x zero-shot + alpha x fitted, WiSE-FT's output-space ensemble: for a "
                       "linear head on the frozen features, its weights interpolated with the zero-shot classifier's")

# The code behind the entries (methods/interface.py): PEFT's tuners, and the methods that add a step of their own.
PEFT = "qlora_clip.methods.peft_tuners:PeftAdapter"


def _lora(name: str, label: str, trains: str, defaults: Defaults, paper_ref: str, runtime: str = PEFT,
          **kw) -> Method:
    """A method built by PEFT's LoraConfig: our three generic flags are its r, lora_alpha, lora_dropout."""
    return Method(name, label, "adapter", runtime, "LoraConfig", trains, defaults, paper_ref,
                  fields=MappingProxyType({"r": "r", "alpha": "lora_alpha", "dropout_rate": "lora_dropout"}),
                  scaling_flag=True, **kw)


def _adapter(name: str, label: str, peft_class: str, trains: str, defaults: Defaults, paper_ref: str,
             fields: dict[str, str] | None = None, fixed: dict[str, Any] | None = None, runtime: str = PEFT,
             **kw) -> Method:
    return Method(name, label, "adapter", runtime, peft_class, trains, defaults, paper_ref,
                  fields=MappingProxyType(fields or {}), fixed=MappingProxyType(fixed or {}), **kw)


REWRITES_BASE = "qlora_clip.methods.peft_tuners:ResidualInit"
LORA_TRAINS = "A (r x in) and B (out x r) per projection; W + s B A, s = alpha/sqrt(r) (rsLoRA) or alpha/r"
_PROTOCOL = Defaults(lr=paper.LR, r=paper.RANK, alpha=paper.ALPHA, dropout_rate=paper.DROPOUT, source=CLIP_LORA)

BASE_METHODS: tuple[Method, ...] = (
    # --- the LoRA family ------------------------------------------------------------------------
    _lora("lora", "LoRA", LORA_TRAINS, _PROTOCOL, "Hu et al., ICLR 2022", four_bit=True),
    _lora("dora", "DoRA", LORA_TRAINS + ", and a magnitude vector (out) per projection", _PROTOCOL,
          "Liu et al., ICML 2024", fixed=MappingProxyType({"use_dora": True}), four_bit=True),
    _lora("pissa", "PiSSA", LORA_TRAINS + "; A, B start as the top-r singular vectors of W, which keeps only the "
          "residual", replace(_PROTOCOL, dropout_rate=0.0, source=CLIP_LORA + "; dropout 0 as PEFT's PiSSA example "
                              "(examples/pissa_finetuning)"),
          "Meng et al., NeurIPS 2024", fixed=MappingProxyType({"init_lora_weights": "pissa"}), runtime=REWRITES_BASE),
    _lora("olora", "OLoRA", LORA_TRAINS + "; A, B start from the QR decomposition of W, which keeps the residual",
          _PROTOCOL, "Büyükakyüz, 2024", fixed=MappingProxyType({"init_lora_weights": "olora"}), runtime=REWRITES_BASE),
    _lora("eva", "EVA", LORA_TRAINS + "; A starts as the top singular vectors of each layer's inputs on the few-shot "
          "train images, ranks redistributed by explained variance",
          replace(_PROTOCOL, source=CLIP_LORA + "; rho 2 as PEFT's EVA guide (docs: LoRA developer guide)"),
          "Paischer et al., 2024", fixed=MappingProxyType({"init_lora_weights": "eva"}), runtime="qlora_clip.methods.eva:Eva", four_bit=True,
          extras=MappingProxyType({"eva_rho": 2.0})),
    _lora("loftq", "LoftQ", LORA_TRAINS + "; A, B start as the rank-r SVD of W minus its NF4 quantization",
          _PROTOCOL, "Li et al., ICLR 2024", runtime="qlora_clip.methods.loftq:LoftQ", four_bit=True, only_4bit=True),
    _lora("loraplus", "LoRA+", LORA_TRAINS + "; B at loraplus_lr_ratio x the learning rate",
          replace(_PROTOCOL, source=CLIP_LORA + "; loraplus_lr_ratio 16 = 2^4, as the LoRA+ paper and PEFT's "
                                                "create_loraplus_optimizer"),
          "Hayou et al., ICML 2024", runtime="qlora_clip.methods.loraplus:LoraPlus", four_bit=True,
          extras=MappingProxyType({"loraplus_lr_ratio": 16.0})),
    Method("adalora", "AdaLoRA", "adapter", "qlora_clip.methods.adalora:AdaLora", "AdaLoraConfig",
           "P (r x in), Lambda (r), Q (out x r) per projection (SVD form); ranks pruned from init_r to r by importance",
           Defaults(lr=paper.LR, r=paper.RANK, alpha=paper.ALPHA, dropout_rate=paper.DROPOUT,
                    source=CLIP_LORA + " (r = the final budget); init_r = 1.5 x r as the AdaLoRA paper; tinit, "
                    "tfinal, deltaT, beta1/2, orth_reg_weight: PEFT's AdaLoraConfig defaults"),
           "Zhang et al., ICLR 2023",
           fields=MappingProxyType({"r": "target_r", "alpha": "lora_alpha", "dropout_rate": "lora_dropout"}),
           four_bit=True, refuses=MappingProxyType({**dict.fromkeys(
               ("checkpoint_every", "resume"), "cannot resume: its rank allocator (its importance scores) is not part of the "
               "training state, so a resumed run would not reproduce the uninterrupted one"),
               "select_on": "prunes its ranks as it trains and saves the last step's rank pattern, which an earlier "
                            "step's weights do not fit"})),
    # --- other adapters -------------------------------------------------------------------------
    _adapter("vera", "VeRA", "VeraConfig", "two vectors (r and out) per projection scaling shared frozen random "
             "matrices", Defaults(lr=1e-3, r=256, dropout_rate=0.0, source="r 256, d_initial 0.1: PEFT's VeraConfig "
                                  "defaults; lr 1e-3: " + PEFT_MM),
             "Kopiczko et al., ICLR 2024", {"r": "r", "dropout_rate": "vera_dropout"}, four_bit=True),
    _adapter("loha", "LoHa", "LoHaConfig", "two low-rank pairs per projection, combined by a Hadamard product",
             Defaults(lr=paper.LR, r=paper.RANK, alpha=float(paper.RANK), source="rank and lr: " + CLIP_LORA
                      + "; alpha = r (scale 1) as PEFT's LoHaConfig defaults"),
             "Hyeon-Woo et al., ICLR 2022 (FedPara); LyCORIS", {"r": "r", "alpha": "alpha"}),
    _adapter("lokr", "LoKr", "LoKrConfig", "a Kronecker product of a small factor and a low-rank factor per "
             "projection", Defaults(lr=paper.LR, r=paper.RANK, alpha=float(paper.RANK),
                                    source="rank and lr: " + CLIP_LORA + "; alpha = r as PEFT's LoKrConfig defaults"),
             "Yeh et al., ICLR 2024 (LyCORIS)", {"r": "r", "alpha": "alpha"}),
    _adapter("oft", "OFT", "OFTConfig", "a block-diagonal orthogonal rotation (Cayley) of each projection's input, "
             "blocks of oft_block_size", Defaults(lr=paper.LR, r=32, dropout_rate=0.0, source="oft_block_size 32: PEFT's "
                                                  "OFTConfig default and OFT guide; lr: " + CLIP_LORA),
             "Qiu et al., NeurIPS 2023; OFTv2 (Qiu et al., 2025)", {"r": "oft_block_size", "dropout_rate": "module_dropout"},
             fixed={"r": 0}, four_bit=True),
    _adapter("boft", "BOFT", "BOFTConfig", "an orthogonal rotation factored into butterfly blocks per projection",
             Defaults(lr=paper.LR, r=4, dropout_rate=0.1, source="boft_block_size 4, dropout 0.1: PEFT's BOFT "
                      "image-classification example (docs); one butterfly factor: PEFT's default, and what PEFT "
                      "falls back to without its CUDA extension (so every machine runs the same); lr: " + CLIP_LORA),
             "Liu et al., ICLR 2024", {"r": "boft_block_size", "dropout_rate": "boft_dropout"}, four_bit=True),
    _adapter("hra", "HRA", "HRAConfig", "r Householder reflections (vectors of size in) per projection",
             Defaults(lr=paper.LR, r=8, source="r 8: PEFT's HRAConfig default; lr: " + CLIP_LORA),
             "Yuan et al., NeurIPS 2024", {"r": "r"}),
    _adapter("ia3", "IA3", "IA3Config", "one scaling vector (out) per projection, multiplying its output",
             Defaults(lr=5e-3, source="lr 5e-3: " + PEFT_MM + " (ia3, all attention, lr 0.005)"),
             "Liu et al., NeurIPS 2022 (T-Few)", fixed={"feedforward_modules": []}, four_bit=True),
    _adapter("fourierft", "FourierFT", "FourierFTConfig", "n_frequency spectral coefficients per projection "
             "(fixed random frequencies), W + scaling x IDFT", Defaults(
                 lr=paper.LR, r=3000, alpha=300.0, source="n_frequency 3000: the paper's ViT setting; scaling 300: "
                 "PEFT's FourierFTConfig docstring for ViT-base/large; lr: " + CLIP_LORA),
             "Gao et al., ICML 2024", {"r": "n_frequency", "alpha": "scaling"}, four_bit=True),
    _adapter("lntuning", "LN tuning", "LNTuningConfig", "the weights and biases of both LayerNorms of the selected "
             "layers (a trainable copy; the original stays for zero-shot)",
             Defaults(lr=paper.LR, source="lr: " + CLIP_LORA),
             "Zhao et al., ICLR 2024", targets="layer_norms", four_bit=True,
             refuses=MappingProxyType({"params": "tunes the LayerNorms of the selected layers, not projections (--encoder "
                                                 "and --position still choose the layers)"})),
    Method("bitfit", "BitFit", "adapter", "qlora_clip.methods.own_tuners:BitFit", None, "the biases of the targeted projections (our own code: PEFT has no "
           "config for it)", Defaults(lr=1e-3, source="lr 1e-3: the top of BitFit's search range (1e-4 to 1e-3)"),
           "Ben Zaken et al., ACL 2022", four_bit=True),
    Method("full", "Full fine-tuning", "adapter", "qlora_clip.methods.own_tuners:FullFineTuning", None, "every weight and bias of the targeted projections (our own "
           "code): the reference the adapters approximate", Defaults(lr=1e-5, source="lr 1e-5: " + PEFT_MM
                                                                   + " (full-finetuning, lr 0.00001)"),
           ""),
    # --- more of PEFT's tuners that apply to these layers (docs/methods.md lists the rest) -------
    _adapter("road", "RoAd", "RoadConfig", "2D rotations with scales, 2 parameters per output pair and group",
             Defaults(lr=1e-3, source="variant road_1, group_size 64: PEFT's defaults; lr 1e-3: PEFT's RoAd guide"),
             "Liao et al., 2025", four_bit=True),
    _adapter("randlora", "RandLoRA", "RandLoraConfig", "diagonal scalings of fixed random low-rank bases (full-rank "
             "update)", Defaults(lr=paper.LR, r=32, alpha=640.0, source="r 32, randlora_alpha 640: PEFT's defaults "
                                 "and " + PEFT_MM + "; lr: " + CLIP_LORA),
             "Albert et al., ICLR 2025", {"r": "r", "alpha": "randlora_alpha"}, four_bit=True),
    _adapter("miss", "MiSS", "MissConfig", "one shared r x out block per projection (matrix shard sharing)",
             Defaults(lr=paper.LR, r=64, dropout_rate=0.0, source="r 64: PEFT's MissConfig default; lr: " + CLIP_LORA),
             "Kang & Yin, 2024 (Bone/MiSS)", {"r": "r", "dropout_rate": "miss_dropout"}, four_bit=True),
    _adapter("shira", "SHiRA", "ShiraConfig", "a fixed random sparse subset of W's entries, r x (in + out) of them",
             Defaults(lr=3e-4, r=32, source="r 32, random mask: PEFT's defaults; lr 3e-4: " + PEFT_MM),
             "Bhardwaj et al., NeurIPS 2024", {"r": "r"}, config_defaults=MappingProxyType({"random_seed": 42}),
             four_bit=True),
    _adapter("c3a", "C3A", "C3AConfig", "circular-convolution kernels, in x out / block_size weights per projection",
             Defaults(lr=1e-1, r=64, source="block_size 64: " + PEFT_MM + "; lr 1e-1: PEFT's C3A guide"),
             "Chen et al., ACL 2025", {"r": "block_size"}),
    _adapter("waveft", "WaveFT", "WaveFTConfig", "n_frequency wavelet coefficients per projection, W + scaling x IDWT",
             Defaults(lr=paper.LR, r=2592, alpha=25.0, source="n_frequency 2592, scaling 25: PEFT's WaveFTConfig "
                      "defaults; lr: " + CLIP_LORA),
             "Bilican et al., 2025", {"r": "n_frequency", "alpha": "scaling"}, four_bit=True),
    _adapter("delora", "DeLoRA", "DeloraConfig", "A, B and a norm bound lambda per projection (decoupled, "
             "normalised low-rank update)", Defaults(lr=1e-3, r=8, alpha=15.0, source="r 8, delora_lambda 15: PEFT's "
                                                    "defaults; lr 1e-3: PEFT's DeLoRA guide (10-100x LoRA's)"),
             "Bini et al., ICLR 2025", {"r": "r", "alpha": "delora_lambda"}),
    _adapter("vblora", "VB-LoRA", "VBLoRAConfig", "a shared bank of vectors and per-projection top-k mixing logits",
             Defaults(lr=5e-4, r=4, source="r 4, 256 vectors, top-2: PEFT's defaults; vector_length 64 (it must "
                      "divide every width: 64 tiny, 512/768 ViT-B); lr 5e-4: " + PEFT_MM),
             "Li et al., NeurIPS 2024", {"r": "r"}, config_defaults=MappingProxyType({"vector_length": 64}),
             four_bit=True),
    _adapter("hira", "HiRA", "HiraConfig", "A and B per projection, W + W * (B A) (Hadamard high-rank update)",
             Defaults(lr=4.5e-3, r=32, dropout_rate=0.0, source="r 32, hira_dropout 0: PEFT's defaults; lr 4.5e-3: "
                      + PEFT_MM),
             "Huang et al., ICLR 2025", {"r": "r", "dropout_rate": "hira_dropout"}, four_bit=True),
    _adapter("lily", "Lily", "LilyConfig", "low-rank A per layer group and B experts shared across layers, with a "
             "router", Defaults(lr=paper.LR, r=32, alpha=1.0, source="r 32, stride_A 1, num_B 2, scaling 1: PEFT's "
                                "LilyConfig defaults; lr: " + CLIP_LORA),
             "Zhong et al., 2024", {"r": "r", "alpha": "scaling"}, four_bit=True, mergeable=False,
             refuses=MappingProxyType({"interpolate": "does not merge into the weights (its B experts are shared "
                                                      "through a router), so no weights lie between"})),
)

# 4-bit entries keep the names the literature gives them where it gives one.
FOUR_BIT_NAMES = {"lora": "qlora", "dora": "qdora"}
FOUR_BIT_LABELS = {"lora": "QLoRA", "dora": "QDoRA"}


def _four_bit(method: Method) -> Method:
    return replace(method, name=method.four_bit_name, label=FOUR_BIT_LABELS.get(method.name, f"{method.label} (4-bit)"),
                   quantized=True, base_method=method.name)


def _ordered() -> tuple[Method, ...]:
    """LoRA, QLoRA, DoRA, QDoRA first (the seed's four, in their old order), then each method and its 4-bit entry."""
    out = []
    for method in BASE_METHODS:
        if method.only_4bit:
            out.append(replace(method, quantized=True))
            continue
        out.append(method)
        if method.four_bit:
            out.append(_four_bit(method))
    return tuple(out)


# What a baseline runs with is its paper's (published): the adapters' flags would be silently ignored, so a run
# that changes one is refused, naming the flag, rather than recorded as if it had mattered.
NOT_FOR_BASELINES = MappingProxyType({
    "r": "adapter rank", "alpha": "adapter alpha", "dropout_rate": "adapter dropout", "lora_scaling": "adapter scaling",
    "quantize": "a 4-bit base", "peft_args": "a PEFT config", "encoder": "adapter placement",
    "position": "adapter placement", "params": "adapter placement", "lr": "the adapters' learning rate",
    "loss": "the adapters' training loss", "n_iters": "the adapters' schedule", "batch_size": "the adapters' batch size",
    "gradient_accumulation_steps": "the adapters' batches", "gradient_checkpointing": "the adapters' training step",
    "save_path": "saved adapters", "eval_only": "saved adapters", "checkpoint_every": "training states",
    "resume": "training states", "merge_export": "merged exports",
    "select_on": "the adapters' choice of a training step (a baseline searches its own values on the val images)",
    "select_every": "the adapters' choice of a training step"})


def _baseline(name: str, label: str, kind: str, runtime: str, trains: str, published: Mapping[str, Any],
              unseen_classes: bool, nothing_between: str = "", **kw) -> Method:
    """`nothing_between`: why no model lies between the pretrained and the fitted one (it refuses --interpolate);
    '' for a baseline with a head of its own, whose logits are interpolated (INTERPOLATES_LOGITS)."""
    why = {flag: f"is a baseline with its paper's hyperparameters (docs/baselines.md) and does not use {what}"
           for flag, what in NOT_FOR_BASELINES.items()}
    if nothing_between:
        why["interpolate"] = nothing_between
    return Method(name, label, kind, f"qlora_clip.methods.baselines.{runtime}", None, trains,
                  Defaults(lr=None, source=published["source"]), mergeable=False, trains_on="features",
                  refuses=MappingProxyType(why), unseen_classes=unseen_classes,
                  published=MappingProxyType(dict(published)),
                  between="" if nothing_between else INTERPOLATES_LOGITS, **kw)


ENSEMBLE_NOTHING_BETWEEN = "trains nothing (the pretrained model with other prompts), so nothing lies between"

BASELINES: tuple[Method, ...] = (
    _baseline("zs_ensemble_imagenet", "Zero-shot CLIP, 80 ImageNet prompts", "training-free",
              "zero_shot_ensemble:ImageNetEnsemble", "nothing (averaged text features)", hparams.ZERO_SHOT_ENSEMBLE,
              unseen_classes=True, nothing_between=ENSEMBLE_NOTHING_BETWEEN),
    _baseline("zs_ensemble_dataset", "Zero-shot CLIP, per-dataset prompts", "training-free",
              "zero_shot_ensemble:DatasetEnsemble", "nothing (averaged text features)", hparams.ZERO_SHOT_ENSEMBLE,
              unseen_classes=True, nothing_between=ENSEMBLE_NOTHING_BETWEEN),
    _baseline("linear_probe", "Linear probe", "probe", "linear_probe:LinearProbe",
              "a logistic regression on frozen image features", hparams.LINEAR_PROBE, unseen_classes=False),
    _baseline("lp_plus_plus", "LP++", "probe", "lp_plus_plus:LpPlusPlus",
              "a text-initialised linear probe and its blending weights", hparams.LP_PLUS_PLUS, unseen_classes=False),
    _baseline("tip_adapter", "Tip-Adapter", "training-free", "tip_adapter:TipAdapter",
              "nothing (a cache model of the few-shot features)", hparams.TIP_ADAPTER, unseen_classes=False),
    _baseline("tip_adapter_f", "Tip-Adapter-F", "adapter", "tip_adapter:TipAdapterF", "the cache model's keys",
              hparams.TIP_ADAPTER, unseen_classes=False),
    _baseline("clip_adapter", "CLIP-Adapter", "adapter", "clip_adapter:ClipAdapter",
              "a residual MLP on the image features", hparams.CLIP_ADAPTER, unseen_classes=True),
    _baseline("coop", "CoOp", "prompt", "coop:CoOp", "16 context vectors in the text tower's input", hparams.COOP,
              unseen_classes=True, nothing_between="learns its context from a random start, not from the pretrained "
              "prompt, so no model lies between (its prompts stay as they are)", families=("clip",),
              families_why="its prompts are CLIP's token layout, start token, context, class name, end-of-text "
                           "token where the causal tower pools"),
)

METHODS: dict[str, Method] = {m.name: m for m in _ordered() + BASELINES}
MODES = tuple(METHODS)
BASELINE_MODES = tuple(m.name for m in BASELINES)
# The methods of the methods table (docs/methods.md): every entry but the field's baselines.
ADAPTER_MODES = tuple(name for name in METHODS if name not in BASELINE_MODES)
FULL_PRECISION_MODES = tuple(name for name in ADAPTER_MODES if not METHODS[name].quantized)
# Every method once: on the full-precision base, plus the 4-bit methods the literature names (QLoRA,
# QDoRA, LoftQ). What run_methods.sh sweeps and bench.py times by default; the other -4bit entries
# are one --quantize 4bit away.
NAMED_MODES = tuple(name for name in ADAPTER_MODES if not METHODS[name].quantized or name in ("qlora", "qdora", "loftq"))


def four_bit_methods() -> list[str]:
    """The full-precision methods that have a 4-bit entry."""
    return [m.name for m in BASE_METHODS if m.four_bit and not m.only_4bit]


# --- flags that default to the method's value --------------------------------------------------------
# main.py's --lr, --r, --alpha, --dropout_rate, --lora_scaling and --quantize default to None: the
# method's value. A run (and its results line) records the effective value; a flag the method has
# no field for records None.

def method_defaults(method: Method) -> dict[str, Any]:
    """The flag values a run of `method` has when they are not given."""
    d = method.defaults
    return {"lr": d.lr,
            "r": d.r if "r" in method.fields else None,
            "alpha": d.alpha if "alpha" in method.fields else None,
            "dropout_rate": d.dropout_rate if "dropout_rate" in method.fields else None,
            "lora_scaling": "rslora" if method.scaling_flag else None,
            "quantize": "4bit" if method.quantized else "none"}


def resolved_mode(mode: str, quantize: str | None) -> str:
    """The entry `--mode MODE --quantize Q` runs: `lora` + 4bit is `qlora`, `ia3` + 4bit is `ia3-4bit`."""
    method = METHODS.get(mode)
    if method is None or quantize != "4bit" or method.quantized:
        return mode
    return method.four_bit_name or mode


def resolve_flags(flags: Mapping[str, Any]) -> dict:
    """`flags` (a run's flag values, or a recorded config filled with main.py's defaults) with the mode
    resolved against --quantize and every method-defaulted flag that is None set to the method's value.

    The one rule that turns `--lr None` into LoRA's 2e-4: the results line, RunSpec, the run's identity
    and the sweep all go through it, so a line recorded before these flags defaulted to None (lr 0.0002)
    is the same run as a new one at the defaults. Unknown modes (a line from another version) are left as
    they are.
    """
    out = dict(flags)
    mode = resolved_mode(out.get("mode", "lora"), out.get("quantize"))
    method = METHODS.get(mode)
    if method is None or method.trains_on == "features":  # fitted on frozen features: it takes none of these flags
        return out
    out["mode"] = mode
    for name, value in method_defaults(method).items():
        if out.get(name) is None:
            out[name] = value
    return out


def zero_shot_label(quantized: bool, details: list[str] = ()) -> str:
    """Zero-shot CLIP, on the base a method evaluates (the 4-bit base is a different model)."""
    details = (["4-bit base"] if quantized else []) + list(details)
    return f"zero-shot ({', '.join(details)})" if details else "zero-shot"
