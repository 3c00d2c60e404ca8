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

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from qlora_clip import paper
from qlora_clip.methods import published as leaders
from qlora_clip.methods.baselines import hparams
from qlora_clip.training.optimization import CLIP_LORA as CLIP_LORA_OPTIMIZATION
from qlora_clip.training.optimization import Optimization, dassl

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
class Range:
    """The values a numeric method setting may take where PEFT takes any (checked with the flags, before anything
    loads: peft_args.parse): from `low` to `high` (either open, or absent), or one of the values `also`."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[float, ...] = ()
    why: str = ""

    def allows(self, value: float) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def text(self) -> str:
        """'> 0', '>= 1', 'in [0, 1)', '>= 1 or -1'."""
        if self.low is not None and self.high is not None:
            bounds = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            bounds = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            bounds = f"{'<' if self.high_open else '<='} {self.high:g}"
        return bounds + "".join(f" or {value:g}" for value in self.also)


def above(low: float, why: str) -> Range:
    return Range(low=low, low_open=True, why=why)


def at_least(low: float, why: str, also: tuple[float, ...] = ()) -> Range:
    return Range(low=low, also=also, why=why)


def probability(why: str = "a dropout probability, which PEFT does not check") -> Range:
    return Range(low=0.0, high=1.0, high_open=True, why=why)


# How the widths of the layers a method adapts bound its --r (methods/fit_check.py checks the rule on every targeted
# layer of the checkpoint, on the meta device, before any weights load).
RANK_RULES = ("min(in, out)", "in", "divides in")


@dataclass(frozen=True)
class RankBound:
    rule: str  # a RANK_RULES entry
    why: str   # why a larger (or non-dividing) --r is meaningless for the method


LOW_RANK = RankBound("min(in, out)", "its update B A has rank at most min(in, out) of the layer, so a larger r "
                                     "only adds weights (and memory) that cannot change what it learns")


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
    targets: str = "projections"  # 'projections' (--params of --position layers), 'layer_norms' or 'linears' (all six)
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
    # The values its settings may take where PEFT does not check them itself (extras and PEFT config fields, by
    # --peft_args key); PEFT's own checks run when its config is built (peft_tuners.peft_config).
    ranges: Mapping[str, Range] = field(default_factory=dict)
    # How the layers' widths bound --r, where the method's math makes a larger value meaningless; None: not bounded
    # (or PEFT checks it itself when the method is attached: methods/fit_check.py).
    rank_bound: RankBound | None = None
    # Why it has no 4-bit entry, for the --quantize 4bit refusal ("": PEFT 0.21 does not train it on one).
    not_four_bit: str = ""
    # How the training loop trains it: optimizer, schedule, batches, length (training/optimization.py); the
    # defaults of --n_iters and --batch_size. CLIP-LoRA's for every adapter.
    optimization: Optimization = CLIP_LORA_OPTIMIZATION
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


LORA_RANGES = {"qalora_group_size": at_least(1, "input features pooled per group (QALoRA); PEFT takes any value")}


def _lora(name: str, label: str, trains: str, defaults: Defaults, paper_ref: str, runtime: str = PEFT,
          ranges: Mapping[str, Range] | None = None, **kw) -> Method:
    """A method built by PEFT's LoraConfig: our three generic flags are its r, lora_alpha, lora_dropout."""
    return Method(name, label, "adapter", runtime, "LoraConfig", trains, defaults, paper_ref,
                  fields=MappingProxyType({"r": "r", "alpha": "lora_alpha", "dropout_rate": "lora_dropout"}),
                  scaling_flag=True, ranges=MappingProxyType({**LORA_RANGES, **(ranges or {})}), rank_bound=LOW_RANK,
                  **kw)


def _adapter(name: str, label: str, peft_class: str, trains: str, defaults: Defaults, paper_ref: str,
             fields: dict[str, str] | None = None, fixed: dict[str, Any] | None = None, runtime: str = PEFT,
             ranges: dict[str, Range] | None = None, **kw) -> Method:
    return Method(name, label, "adapter", runtime, peft_class, trains, defaults, paper_ref,
                  fields=MappingProxyType(fields or {}), fixed=MappingProxyType(fixed or {}),
                  ranges=MappingProxyType(ranges or {}), **kw)


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
          extras=MappingProxyType({"loraplus_lr_ratio": 16.0}),
          ranges={"loraplus_lr_ratio": above(0, "B trains at lr x loraplus_lr_ratio: 0 freezes B, a negative ratio "
                                                "climbs the loss")}),
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
                            "step's weights do not fit"}),
           ranges=MappingProxyType({
               **LORA_RANGES,
               **dict.fromkeys(("beta1", "beta2"), Range(0, 1, low_open=True, high_open=True, why=(
                   "an exponential moving average's factor; PEFT's rank allocator asserts it, without a message, in "
                   "peft/tuners/adalora/layer.py"))),
               "init_r": at_least(1, "the rank every layer starts at, pruned down to r"),
               "tinit": at_least(0, "warm-up steps before pruning"), "tfinal": at_least(0, "steps after pruning"),
               "deltaT": at_least(1, "steps between two budget updates")}),
           rank_bound=LOW_RANK),
    # --- other adapters -------------------------------------------------------------------------
    _adapter("vera", "VeRA", "VeraConfig", "two vectors (r and out) per projection scaling shared frozen random "
             "matrices", Defaults(lr=1e-3, r=256, dropout_rate=0.0, source="r 256, d_initial 0.1: PEFT's VeraConfig "
                                  "defaults; lr 1e-3: " + PEFT_MM),
             "Kopiczko et al., ICLR 2024", {"r": "r", "dropout_rate": "vera_dropout"}, four_bit=True),
    _adapter("loha", "LoHa", "LoHaConfig", "two low-rank pairs per projection, combined by a Hadamard product",
             Defaults(lr=paper.LR, r=paper.RANK, alpha=float(paper.RANK), source="rank and lr: " + CLIP_LORA
                      + "; alpha = r (scale 1) as PEFT's LoHaConfig defaults"),
             "Hyeon-Woo et al., ICLR 2022 (FedPara); LyCORIS", {"r": "r", "alpha": "alpha"},
             ranges=dict.fromkeys(("rank_dropout", "module_dropout"), probability()),
             rank_bound=RankBound("min(in, out)", "each of its two factors B A has rank at most min(in, out), so a "
                                                  "larger r only adds weights")),
    _adapter("lokr", "LoKr", "LoKrConfig", "a Kronecker product of a small factor and a low-rank factor per "
             "projection", Defaults(lr=paper.LR, r=paper.RANK, alpha=float(paper.RANK),
                                    source="rank and lr: " + CLIP_LORA + "; alpha = r as PEFT's LoKrConfig defaults"),
             "Yeh et al., ICLR 2024 (LyCORIS)", {"r": "r", "alpha": "alpha"},
             ranges={**dict.fromkeys(("rank_dropout", "module_dropout"), probability()),
                     "decompose_factor": at_least(1, "the size the Kronecker factors are chosen near (-1: near the "
                                                     "square root), as PEFT's factorization reads it", also=(-1,))}),
    _adapter("oft", "OFT", "OFTConfig", "a block-diagonal orthogonal rotation (Cayley) of each projection's input, "
             "blocks of oft_block_size", Defaults(lr=paper.LR, r=32, dropout_rate=0.0, source="oft_block_size 32: PEFT's "
                                                  "OFTConfig default and OFT guide; lr: " + CLIP_LORA),
             "Qiu et al., NeurIPS 2023; OFTv2 (Qiu et al., 2025)", {"r": "oft_block_size", "dropout_rate": "module_dropout"},
             fixed={"r": 0}, four_bit=True,
             ranges={"eps": above(0, "the radius of constrained OFT's rotations (0 allows none)"),
                     "num_cayley_neumann_terms": at_least(1, "terms of the Neumann series of the Cayley transform")},
             rank_bound=RankBound("divides in", "its rotation is block-diagonal over the layer's input in blocks of r, "
                                                "and PEFT silently trains another block size when r does not divide "
                                                "the input width, so the line would record one that did not run")),
    _adapter("boft", "BOFT", "BOFTConfig", "an orthogonal rotation factored into butterfly blocks per projection",
             Defaults(lr=paper.LR, r=4, dropout_rate=0.1, source="boft_block_size 4, dropout 0.1: PEFT's BOFT "
                      "image-classification example (docs); one butterfly factor: PEFT's default, and what PEFT "
                      "falls back to without its CUDA extension (so every machine runs the same); lr: " + CLIP_LORA),
             "Liu et al., ICLR 2024", {"r": "boft_block_size", "dropout_rate": "boft_dropout"}, four_bit=True,
             ranges={"boft_block_num": at_least(0, "blocks per rotation (0: from the block size, --r)"),
                     "boft_n_butterfly_factor": at_least(1, "butterfly factors per rotation")}),
    _adapter("hra", "HRA", "HRAConfig", "r Householder reflections (vectors of size in) per projection",
             Defaults(lr=paper.LR, r=8, source="r 8: PEFT's HRAConfig default; lr: " + CLIP_LORA),
             "Yuan et al., NeurIPS 2024", {"r": "r"},
             rank_bound=RankBound("in", "r Householder reflections of the layer's input space: any orthogonal matrix "
                                        "is a product of at most `in` of them (Cartan-Dieudonne), so more only add "
                                        "weights and time")),
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
             "Albert et al., ICLR 2025", {"r": "r", "alpha": "randlora_alpha"}, four_bit=True,
             ranges={"randlora_dropout": probability()},
             rank_bound=RankBound("min(in, out)", "each random basis has rank at most min(in, out): a larger r gives "
                                                  "one basis of that rank and more weights")),
    _adapter("miss", "MiSS", "MissConfig", "one shared r x out block per projection (matrix shard sharing)",
             Defaults(lr=paper.LR, r=64, dropout_rate=0.0, source="r 64: PEFT's MissConfig default; lr: " + CLIP_LORA),
             "Kang & Yin, 2024 (Bone/MiSS)", {"r": "r", "dropout_rate": "miss_dropout"}, four_bit=True,
             ranges={"mini_r": at_least(1, "the width of MiSS's shards")}),
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
             "Bini et al., ICLR 2025", {"r": "r", "alpha": "delora_lambda"},
             ranges={"module_dropout": probability()}, rank_bound=LOW_RANK),
    _adapter("vblora", "VB-LoRA", "VBLoRAConfig", "a shared bank of vectors and per-projection top-k mixing logits",
             Defaults(lr=5e-4, r=4, source="r 4, 256 vectors, top-2: PEFT's defaults; vector_length 64 (it must "
                      "divide every width: 64 tiny, 512/768 ViT-B); lr 5e-4: " + PEFT_MM),
             "Li et al., NeurIPS 2024", {"r": "r"}, config_defaults=MappingProxyType({"vector_length": 64}),
             four_bit=True,
             ranges={"num_vectors": at_least(1, "vectors in the shared bank"),
                     "vector_length": at_least(1, "the length of the bank's vectors"),
                     "vblora_dropout": probability(),
                     "init_vector_bank_bound": at_least(0, "the bank starts uniform in [-bound, bound]"),
                     "init_logits_std": at_least(0, "a standard deviation")},
             rank_bound=LOW_RANK),
    _adapter("hira", "HiRA", "HiraConfig", "A and B per projection, W + W * (B A) (Hadamard high-rank update)",
             Defaults(lr=4.5e-3, r=32, dropout_rate=0.0, source="r 32, hira_dropout 0: PEFT's defaults; lr 4.5e-3: "
                      + PEFT_MM),
             "Huang et al., ICLR 2025", {"r": "r", "dropout_rate": "hira_dropout"}, four_bit=True,
             rank_bound=RankBound("min(in, out)", "its update W * (B A) is the weight times a product of rank at most "
                                                  "min(in, out), so a larger r only adds weights")),
    _adapter("lily", "Lily", "LilyConfig", "low-rank A per layer group and B experts shared across layers, with a "
             "router", Defaults(lr=paper.LR, r=32, alpha=1.0, source="r 32, stride_A 1, num_B 2, scaling 1: PEFT's "
                                "LilyConfig defaults; lr: " + CLIP_LORA),
             "Zhong et al., 2024", {"r": "r", "alpha": "scaling"}, four_bit=True, mergeable=False,
             rank_bound=LOW_RANK,
             refuses=MappingProxyType({"interpolate": "does not merge into the weights (its B experts are shared "
                                                      "through a router), so no weights lie between"})),
    # --- the field's 2025 fixed-hyperparameter methods (issue 26; published.py cites their schedules) ----
    Method("clip_svd", "CLIP-SVD", "adapter", "qlora_clip.methods.svd:SingularValues", None,
           "the singular values s of every Linear of the selected layers (q, k, v, o, fc1, fc2), U and V frozen: "
           "W = U diag(s) V^T at full rank (our own code)",
           Defaults(lr=leaders.CLIP_SVD["lr"], source="lr 5e-4 (few-shot), AdamW wd 0.01, cosine to 1e-6 per step, "
                    "batch 32: HealthX-Lab/CLIP-SVD configs/few_shot/<dataset>.yaml#L2-L5, train.py#L125-L131; its "
                    "runs take 200 steps per shot (--n_iters 200, main.py#L33)"),
           "Koleilat et al., 2025 (arXiv 2509.03740)", targets="linears",
           not_four_bit="its U and V are dense float32 matrices beside every weight, 16 times the 4-bit weight's "
                        "bytes: a 4-bit base would save nothing",
           refuses=MappingProxyType({"params": "decomposes every Linear of the selected layers (q, k, v, o and the "
                                               "MLP's fc1, fc2, as its published runs); --encoder and --position still "
                                               "choose the layers"}),
           published=MappingProxyType(leaders.CLIP_SVD)),
    Method("2sfs", "2SFS", "adapter", "qlora_clip.methods.two_stage:TwoStage", None,
           "stage 1: the weights and biases of both LayerNorms of every selected layer, in place; stage 2 (the last "
           "40% of the steps): a linear classifier (classes x dim) initialised with the stage-1 text features "
           "(our own code)",
           Defaults(lr=leaders.TWO_STAGE["lr"], source="lr 2e-4 in both stages, AdamW wd 0.01, a cosine to 1e-6 per "
                    "stage, stage 1 = int(0.6 x steps), batch 32: FarinaMatteo/rethinking_fewshot_vlms main.py#L41-L77, "
                    "fs/twostage.py#L251-L339; its runs take 300 steps per shot (--n_iters 300, main.py#L63)"),
           "Farina et al., CVPR 2025", targets="layer_norms", four_bit=True, mergeable=False,
           refuses=MappingProxyType({
               "params": "tunes the LayerNorms of the selected layers, then a classifier, not projections (--encoder "
                         "and --position still choose the layers)",
               **dict.fromkeys(("checkpoint_every", "resume"), "cannot resume: its two stages build their own "
                               "optimizers and its classifier is not part of the training state, so a resumed run "
                               "could not continue across the switch"),
               "select_on": "trains in two stages whose second replaces the text head with a classifier outside the "
                            "model: a step of stage 1 has no classifier to report",
               "interpolate": "replaces the zero-shot text head with a classifier of its own, so no model lies "
                              "between the pretrained and the trained one"}),
           published=MappingProxyType(leaders.TWO_STAGE)),
)

# --- the prompt learners (kind "prompt"): tokens in the frozen base's towers, trained through the loop on Dassl's
# recipe; a 4-bit entry each (the tokens stay in float32). methods/prompts/ holds their code.
PROMPT_REFUSES = {flag: "places its learned tokens where its paper does, not adapters on projections (--peft_args "
                        "sets its own settings)" for flag in ("encoder", "position", "params")}
# A prompt is a token the towers read, not a change of their weights: nothing is defined between the base without the
# tokens and the base with them (a scaled token is no model its paper trains), so --interpolate is refused.
PROMPT_REFUSES["interpolate"] = ("adds learned tokens to the towers' inputs and changes no weight, so no model lies "
                                 "between the base without them and with them")
COCOOP = "KaiyangZhou/CoOp@ff61507 "
KGCOOP = "htyao89/KgCoOp@c43ccc3 KgCoOp/"
MAPLE = "muzairkhattak/multimodal-prompt-learning@69bce21 "
PROMPTSRC = "muzairkhattak/PromptSRC@bb95c77 "


def _prompt(name: str, label: str, runtime: str, trains: str, defaults: Defaults, paper_ref: str,
            optimization: Optimization, extras: dict[str, Any], refuses: dict[str, str] | None = None) -> Method:
    return Method(name, label, "prompt", f"qlora_clip.methods.prompts.{runtime}", None, trains, defaults, paper_ref,
                  four_bit=True, mergeable=False, extras=MappingProxyType(extras),
                  refuses=MappingProxyType({**PROMPT_REFUSES, **(refuses or {})}), optimization=optimization)


PROMPT_LEARNERS: tuple[Method, ...] = (
    _prompt("cocoop", "CoCoOp", "cocoop:CoCoOp", "n_ctx context vectors (4 at ViT-B/16: the tokens of \"a photo of "
            "a\") and a meta-net (embed -> embed/16 -> width) whose token, from each image, is added to every context "
            "vector: each image re-encodes every class prompt",
            Defaults(lr=0.002, source=f"lr 0.002, SGD, batch 1, 10 epochs, context \"a photo of a\": {COCOOP}configs/"
                     "trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml#L3-L35; meta-net: trainers/cocoop.py#L95-L99"),
            "Zhou et al., CVPR 2022", dassl(10, 1, f"{COCOOP}configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"),
            {"ctx_init": "a photo of a"}),
    _prompt("kgcoop", "KgCoOp", "kgcoop:KgCoOp", "n_ctx context vectors in the text tower's input (4 at ViT-B/16: "
            "the tokens of \"a photo of a\"); loss + kg_weight x (1 - mean cos to the hand-crafted class embeddings)",
            Defaults(lr=0.002, source=f"lr 0.002, SGD, batch 128, 100 epochs: {KGCOOP}configs/trainers/KgCoOp/"
                     f"vit_b16_ep100_ctxv1.yaml#L3-L22; context \"a photo of a\": {KGCOOP}trainers/kgcoop.py#L94-L104; "
                     f"kg_weight 8 on 1 - mean cos: {KGCOOP}scripts/run.sh#L2-L11, trainers/kgcoop.py#L238-L241, #L310"),
            "Yao et al., CVPR 2023", dassl(100, 128, f"{KGCOOP}configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml"),
            {"ctx_init": "a photo of a", "kg_weight": 8.0}),
    _prompt("maple", "MaPLe", "maple:MaPLe", "deep text prompts (n_ctx tokens) in the first depth layers of the "
            "text tower, and their couplings (one Linear per depth) that make the vision prompts of the same layers",
            Defaults(lr=0.0035, source=f"lr 0.0035, SGD, batch 4, 5 epochs, n_ctx 2 from \"a photo of a\", depth 9: "
                     f"{MAPLE}configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml#L3-L36; coupling: "
                     "trainers/maple.py#L69-L136, #L171-L176"),
            "Khattak et al., CVPR 2023", dassl(5, 4, f"{MAPLE}configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
            {"ctx_init": "a photo of a", "n_ctx": 2, "depth": 9}),
    _prompt("promptsrc", "PromptSRC", "promptsrc:PromptSRC", "independent deep prompts (n_ctx tokens per layer) in the "
            "first depth layers of both towers; loss + L1 to the frozen model's text and image features + KL to its "
            "logits; the prompts averaged over epochs with Gaussian weights",
            Defaults(lr=0.0025, source=f"lr 0.0025, SGD, batch 4, 20 epochs (few-shot 50), n_ctx 4 + 4, depth 9, "
                     f"loss weights 25 / 10, GPA 15 / 1: {PROMPTSRC}configs/trainers/PromptSRC/"
                     "vit_b16_c2_ep20_batch4_4+4ctx.yaml#L4-L43, vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml#L19, "
                     "#L42-L47; loss and GPA: trainers/promptsrc.py#L263-L335"),
            "Khattak et al., ICCV 2023",
            dassl(20, 4, f"{PROMPTSRC}configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml (base-to-novel), "
                  "vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml (few-shot)", {"fewshot": 50}),
            {"ctx_init": "a photo of a", "n_ctx": 4, "n_ctx_vision": 4, "depth": 9, "text_loss_weight": 25.0,
             "image_loss_weight": 10.0},
            refuses=dict.fromkeys(("checkpoint_every", "resume"), "cannot resume: its running Gaussian-weighted sum of "
                                  "the prompts over epochs is not part of the training state, so a resumed run would "
                                  "not reproduce the uninterrupted one") | {
                "select_on": "reports the Gaussian-weighted average of its prompts over the epochs, not the prompts of "
                             "one step, so there is no step to choose"}),
)
BASE_METHODS = BASE_METHODS + PROMPT_LEARNERS

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


def _fitted_on_features(name: str, label: str, kind: str, runtime: str, trains: str, published: Mapping[str, Any],
                        paper_ref: str) -> Method:
    """A method of the field's tables fitted on frozen features with its published hyperparameters (issue 26's ProKeR
    and CLAP): a baseline's refusals, except that its fit is saved and reloaded (--save_path, --eval_only); it scores
    classes it was not fitted on as zero-shot CLIP does."""
    why = {flag: f"is fitted on frozen features with its paper's hyperparameters (docs/methods.md) and does not use "
                 f"{what}" for flag, what in NOT_FOR_BASELINES.items() if flag not in ("save_path", "eval_only")}
    why["merge_export"] = "keeps its fit beside the base (a classifier over frozen features), not in its weights"
    why["interpolate"] = ("classifies with class features of its own, so its logits and the zero-shot ones share no "
                          "classifier to interpolate")
    return Method(name, label, kind, f"qlora_clip.methods.baselines.{runtime}", None, trains,
                  Defaults(lr=None, source=published["source"]), paper_ref, mergeable=False, trains_on="features",
                  refuses=MappingProxyType(why), unseen_classes=True, published=MappingProxyType(dict(published)))

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
    # --- the field's 2025 fixed-hyperparameter methods fitted on frozen features (issue 26) ---------
    _fitted_on_features("proker", "ProKeR", "training-free", "proker:ProKeR",
                        "nothing: a closed form (proximal kernel ridge regression of the zero-shot residual) on 10 "
                        "augmented views per train image, beta and lambda searched on the val images",
                        leaders.PROKER, "Bendou et al., CVPR 2025"),
    _fitted_on_features("clap", "CLAP", "probe", "clap:Clap",
                        "class prototypes (classes x dim) from the text features, constrained towards them with "
                        "class-adaptive multipliers, on 20 augmented views per train image",
                        leaders.CLAP, "Silva-Rodriguez et al., CVPR 2024"),
)

METHODS: dict[str, Method] = {m.name: m for m in _ordered() + BASELINES}
MODES = tuple(METHODS)
BASELINE_MODES = tuple(m.name for m in BASELINES)
# The field's 2025 fixed-hyperparameter methods (issue 26; `sweep.py --modes leaders`).
LEADER_MODES = ("clip_svd", "2sfs", "proker", "clap")
# The methods of the methods table (docs/methods.md): every entry but the field's baselines.
ADAPTER_MODES = tuple(name for name in METHODS if name not in BASELINE_MODES)
FULL_PRECISION_MODES = tuple(name for name in ADAPTER_MODES if not METHODS[name].quantized)
# Every method once: on the full-precision base, plus the 4-bit methods the literature names (QLoRA,
# QDoRA, LoftQ). What run_methods.sh sweeps and bench.py times by default; the other -4bit entries
# are one --quantize 4bit away.
NAMED_MODES = tuple(name for name in ADAPTER_MODES if not METHODS[name].quantized or name in ("qlora", "qdora", "loftq"))
# The prompt learners trained through the loop, on either base (their own tests check each; the group `prompts` of
# sweep.py is the full-precision ones).
PROMPT_MODES = tuple(name for name in ADAPTER_MODES if METHODS[name].kind == "prompt")
PROMPT_LEARNER_MODES = tuple(method.name for method in PROMPT_LEARNERS)  # sweep.py's `prompts`, bench.py's


def four_bit_methods() -> list[str]:
    """The full-precision methods that have a 4-bit entry."""
    return [m.name for m in BASE_METHODS if m.four_bit and not m.only_4bit]


# --- flags that default to the method's value --------------------------------------------------------
# main.py's --lr, --r, --alpha, --dropout_rate, --lora_scaling, --quantize, --n_iters and --batch_size default to
# None: the method's value. A run (and its results line) records the effective value; a flag the method has
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
    if method is None:
        return out
    # The training length and batch: the method's recipe for the protocol (a baseline records CLIP-LoRA's, which it
    # does not use, as it always has).
    optimization = method.optimization
    if out.get("n_iters") is None:
        out["n_iters"] = optimization.default_iterations(out.get("protocol", paper.PROTOCOLS[0]))
    if out.get("batch_size") is None:
        out["batch_size"] = optimization.batch_size
    if method.trains_on == "features":  # fitted on frozen features: it takes none of the other flags
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
