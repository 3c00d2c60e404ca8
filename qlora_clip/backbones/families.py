"""Backbone families: everything that differs between CLIP, SigLIP, SigLIP 2 and MetaCLIP 2, in one table.

A checkpoint's family is chosen from its config.json (`model_type`; for `siglip`, its tokenizer
tells SigLIP from the fixed-resolution SigLIP 2) before any weights load, so an unsupported
checkpoint stops with a message naming it and what is supported. Each `Family` says:

    model class           the transformers class that loads it (and that a merged export writes)
    text                  padding, context length, padding mask, lowercasing, where the text is pooled
    logits                CLIP-LoRA's 100 x cosine, or SigLIP's exp(logit_scale) x cosine + logit_bias
    losses                which --loss values it allows (SigLIP also its sigmoid loss)
    template              its own prompt, which --template clip-lora uses for every dataset
    target modules        the towers, the layer list and the q/k/v/o projections --params names
    full precision        what stays unquantized in the 4-bit modes, and why
    tiny                  the --backbone name of its offline tiny checkpoint (tiny_backbones.py)

Image preprocessing is read from the checkpoint's own image processor (`image_settings`): CLIP's
resizes the shorter side and centre-crops, SigLIP's resizes the whole image to the square.

Nothing here imports torch or transformers at module level: the command line lists the aliases
cheaply (run_utils imports this module); the loaders import transformers when they run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from qlora_clip.errors import UserError
from qlora_clip.paper import BACKBONE_ALIASES, CLIP_LORA_TEMPLATE, CONTEXT_LENGTH, LOGIT_SCALE, SIGLIP_TEMPLATE

@dataclass(frozen=True)
class ImageSettings:
    """What the vision tower expects, from the checkpoint's image processor (families.image_settings).

    Two test-time resizes exist among the families' processors: CLIP's (the shorter side to
    `resize_size`, then a centre crop of `image_size`) and SigLIP's (the whole image to
    `image_size` x `image_size`, no crop; `resize_size` is then `image_size`).
    """
    image_size: int   # side of the square the vision tower takes
    resize_size: int  # shorter side before the centre crop at test time
    mean: tuple[float, ...]
    std: tuple[float, ...]
    center_crop: bool = True  # False: resize to the square, no crop (SigLIP's processor)


@dataclass(frozen=True)
class TextSettings:
    """How class prompts become the text tower's input, by the checkpoint's family (families.py).

    `padding` 'longest' is only right where the tower is causal and pools at the end-of-text token
    (`pooled_at_end_of_text`: CLIP, MetaCLIP 2), so tokens after it cannot change the features;
    SigLIP pools the last position, so its prompts are padded to the fixed `max_length` it was
    trained with.
    """
    padding: str                 # 'longest' or 'max_length'
    max_length: int              # the text context: prompts are truncated to it ('max_length': padded to it)
    attention_mask: bool         # pass the padding mask (CLIP) or not (SigLIP was trained without one)
    lowercase: bool              # lowercase the prompts first (SigLIP 2 was trained on lowercased text)
    pooled_at_end_of_text: bool  # the text feature is the end-of-text token's (causal tower)


# --params names -> the attention projections of an encoder layer (the same in every family).
PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
# --encoder -> the towers (model attribute, sub-config holding its depth).
TOWERS = {"text": (("text_model", "text_config"),), "vision": (("vision_model", "vision_config"),),
          "both": (("text_model", "text_config"), ("vision_model", "vision_config"))}
# PIL's bicubic filter, as preprocessor_config.json's `resample` spells it.
BICUBIC = 3


# --- how a family's logits are computed: a LogitRule per family, each a callable and the words that say it ------
# (tensor methods only: this module stays free of torch imports, so the command line reads it cheaply)

@dataclass(frozen=True)
class LogitRule:
    """How a family turns normalised image and text features into logits, and how a model card says it."""
    make: Callable[[Any], Callable]   # model -> (image features, text features) -> images x classes logits
    formula: str                      # in words, for model cards
    card_lines: Callable[["Family"], str]  # Python a model card shows: tokenise as the run did, compute the logits


def _fixed_scale(model: Any) -> Callable:
    """CLIP-LoRA's logits: the protocol fixes CLIP's learned temperature at 100."""
    def compute(image: Any, text: Any) -> Any:
        return LOGIT_SCALE * image @ text.T
    return compute


def _checkpoint_scale_and_bias(model: Any) -> Callable:
    """SigLIP's logits, as SiglipModel computes them: exp(logit_scale) x cosine + logit_bias, the checkpoint's own
    (frozen) scale and bias, read at each call so they follow the model's device (PeftModel forwards them)."""
    def compute(image: Any, text: Any) -> Any:
        return (image @ text.T) * model.logit_scale.exp() + model.logit_bias
    return compute


def _fixed_scale_card(family: Family) -> str:
    return (f"inputs = processor(text=prompts, images=images, return_tensors=\"pt\", padding=True)\n"
            f"with torch.no_grad():\n"
            f"    out = model(**inputs)\n"
            f"# Cosine similarities times {LOGIT_SCALE:g}, the temperature the adapter was trained with.\n"
            f"logits = {LOGIT_SCALE:g} * out.image_embeds @ out.text_embeds.T\n")


def _checkpoint_scale_card(family: Family) -> str:
    lower = ".lower()" if family.lowercase else ""
    why = " and on lowercased text" if family.lowercase else ""
    return (f"prompts = [prompt{lower} for prompt in prompts]\n" if family.lowercase else "") + (
        f"# {family.label} was trained on prompts padded to its fixed text length, without a padding mask{why}.\n"
        f"inputs = processor(text=prompts, images=images, return_tensors=\"pt\", padding=\"max_length\",\n"
        f"                   max_length=model.config.text_config.max_position_embeddings)\n"
        f"inputs.pop(\"attention_mask\", None)\n"
        f"with torch.no_grad():\n"
        f"    out = model(**inputs)\n"
        f"# exp(logit_scale) x cosine + logit_bias: SigLIP's logits, the checkpoint's scale and bias.\n"
        f"logits = out.logits_per_image\n")


FIXED_SCALE = LogitRule(_fixed_scale, f"{LOGIT_SCALE:g} x cosine similarity", _fixed_scale_card)
CHECKPOINT_SCALE_AND_BIAS = LogitRule(
    _checkpoint_scale_and_bias,
    "exp(logit_scale) x cosine similarity + logit_bias (the checkpoint's own, as SiglipModel computes)",
    _checkpoint_scale_card)


@dataclass(frozen=True)
class Family:
    """What one backbone family needs that the others do not (docs/protocol.md, "Backbone families")."""
    name: str                    # the results line's `family`; tiny checkpoints and aliases name it
    label: str                   # how papers write it
    model_type: str              # config.json's model_type
    model_class: str             # transformers class: loading, and the merged export's class
    processor_class: str         # transformers processor the model cards load
    tokenizer_files: str         # what a folder needs for its tokenizer (error messages)
    padding: str                 # 'longest' (causal tower pooled at end-of-text) or 'max_length'
    attention_mask: bool         # pass the padding mask; SigLIP was trained without one
    lowercase: bool              # lowercase prompts first (SigLIP 2 trained on lowercased text)
    logit_rule: LogitRule        # how image and text features become logits
    losses: tuple[str, ...]      # the --loss values it allows
    template: str                # its own prompt: what --template clip-lora uses for every dataset
    full_precision: tuple[str, ...]  # modules kept out of 4-bit (BitsAndBytesConfig's skip list)
    tiny: str                    # --backbone name of its tiny offline checkpoint
    # How the vision tower pools: 'class token' (a class token, then a linear projection) or
    # 'attention head' (SigLIP: no class token; a probe attends over the patches, then an MLP).
    vision_pooling: str = "class token"
    # Where --params' projections are, per tower and layer (the four families share transformers' CLIP names).
    layer_path: str = "{tower}.encoder.layers.{layer}.self_attn.{projection}"

    def logits(self, model: Any) -> Callable:
        """The family's logits for a loaded model: (normalised image features, text features) -> logits."""
        return self.logit_rule.make(model)

    @property
    def pooled_at_end_of_text(self) -> bool:
        """The text feature is the end-of-text token's in a causal tower: padding after it changes nothing."""
        return self.padding == "longest"

    def text_settings(self, config: Any) -> TextSettings:
        """The prompt rules for a loaded model's config: its fixed text length is its position table."""
        return TextSettings(padding=self.padding, max_length=int(config.text_config.max_position_embeddings),
                            attention_mask=self.attention_mask, lowercase=self.lowercase,
                            pooled_at_end_of_text=self.pooled_at_end_of_text)

    def model_class_object(self) -> type:
        import transformers

        return getattr(transformers, self.model_class)

    def layer_module(self, tower: str, layer: int, projection: str) -> str:
        """Full module name of one attention projection (`projection`: a --params value)."""
        return self.layer_path.format(tower=tower, layer=layer, projection=PROJECTIONS[projection])

    def depth(self, config: Any, tower_config: str) -> int:
        """Layers of a tower (`tower_config`: its sub-config's name), which --position scales with."""
        return int(getattr(config, tower_config).num_hidden_layers)


# Both projections into the shared image-text space stay in full precision in the 4-bit modes, one
# rule for both towers (left to itself transformers keeps only the last one it finds, text_projection,
# and quantizes visual_projection). They are small: 0.6 M weights for ViT-B/16.
CLIP_FULL_PRECISION = ("visual_projection", "text_projection")
# SigLIP's counterparts: the text head (a linear layer, CLIP's text_projection) and the vision
# tower's attention-pooling head (probe, nn.MultiheadAttention, LayerNorm, MLP: CLIP's class-token
# pooling and visual_projection in one). nn.MultiheadAttention reads its projection weights
# directly, so it could not run on 4-bit weights anyway; without the rule the head's MLP and the
# text head would be quantized. logit_scale and logit_bias are parameters, never quantized.
SIGLIP_FULL_PRECISION = ("vision_model.head", "text_model.head")

CLIP = Family(
    name="clip", label="CLIP", model_type="clip", model_class="CLIPModel", processor_class="CLIPProcessor",
    tokenizer_files="vocab.json and merges.txt (or tokenizer.json) with tokenizer_config.json",
    padding="longest", attention_mask=True, lowercase=False, logit_rule=FIXED_SCALE, losses=("ce",),
    template=CLIP_LORA_TEMPLATE, full_precision=CLIP_FULL_PRECISION, tiny="tiny")
# SigLIP's vision head (vision_model.head.attention, an nn.MultiheadAttention) is never adapted:
# --params names the encoder layers' projections, and PEFT adapts a MultiheadAttention only whole
# (q, k, v and o at once, merging its delta into the weights around every forward) and not at all
# with DoRA, so reaching it would make LoRA and DoRA runs adapt different modules. It is the
# counterpart of CLIP's pooling and projection, which CLIP-LoRA leaves frozen too.
SIGLIP = Family(
    name="siglip", label="SigLIP", model_type="siglip", model_class="SiglipModel",
    processor_class="SiglipProcessor",
    tokenizer_files="spiece.model with tokenizer_config.json (and the sentencepiece package)",
    padding="max_length", attention_mask=False, lowercase=False, logit_rule=CHECKPOINT_SCALE_AND_BIAS, losses=("ce", "sigmoid"),
    template=SIGLIP_TEMPLATE, full_precision=SIGLIP_FULL_PRECISION, tiny="tiny-siglip",
    vision_pooling="attention head")
# The fixed-resolution SigLIP 2 checkpoints are SiglipModel checkpoints (model_type 'siglip') with
# Gemma's tokenizer; transformers' own 'siglip2' model type is the NaFlex variant (below).
SIGLIP2 = Family(
    name="siglip2", label="SigLIP 2", model_type="siglip", model_class="SiglipModel",
    processor_class="SiglipProcessor", tokenizer_files="tokenizer.json with tokenizer_config.json (Gemma's)",
    padding="max_length", attention_mask=False, lowercase=True, logit_rule=CHECKPOINT_SCALE_AND_BIAS, losses=("ce", "sigmoid"),
    template=SIGLIP_TEMPLATE, full_precision=SIGLIP_FULL_PRECISION, tiny="tiny-siglip2",
    vision_pooling="attention head")
METACLIP2 = Family(
    name="metaclip_2", label="MetaCLIP 2", model_type="metaclip_2", model_class="MetaClip2Model",
    processor_class="CLIPProcessor",
    tokenizer_files="tokenizer.json (or sentencepiece.bpe.model) with tokenizer_config.json (XLM-RoBERTa's)",
    padding="longest", attention_mask=True, lowercase=False, logit_rule=FIXED_SCALE, losses=("ce",),
    template=CLIP_LORA_TEMPLATE, full_precision=CLIP_FULL_PRECISION, tiny="tiny-metaclip2")

FAMILIES = {family.name: family for family in (CLIP, SIGLIP, SIGLIP2, METACLIP2)}
# The tokenizer classes that make a 'siglip' checkpoint a SigLIP 2 one.
SIGLIP2_TOKENIZERS = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer")
SUPPORTED = ("CLIP-format checkpoints (model_type 'clip': OpenAI CLIP, OpenCLIP's LAION and DataComp, MetaCLIP), "
             "SigLIP and fixed-resolution SigLIP 2 ('siglip'), MetaCLIP 2 ('metaclip_2')")

# --backbone aliases of common checkpoints beside the paper's (paper.BACKBONE_ALIASES), with their family.
OTHER_ALIASES = {
    "SigLIP-B/16": ("google/siglip-base-patch16-224", "siglip"),
    "SigLIP-So400m/14": ("google/siglip-so400m-patch14-384", "siglip"),
    "SigLIP2-B/16": ("google/siglip2-base-patch16-224", "siglip2"),
    "SigLIP2-So400m/14": ("google/siglip2-so400m-patch14-384", "siglip2"),
    "MetaCLIP2-B/32": ("facebook/metaclip-2-worldwide-b32", "metaclip_2"),
    "MetaCLIP2-B/16": ("facebook/metaclip-2-worldwide-b16", "metaclip_2"),
    "MetaCLIP2-H/14": ("facebook/metaclip-2-worldwide-huge-quickgelu", "metaclip_2"),
    "MetaCLIP-B/16": ("facebook/metaclip-b16-fullcc2.5b", "clip"),
    "OpenCLIP-B/32-laion2b": ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "clip"),
    "OpenCLIP-B/16-laion2b": ("laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "clip"),
    "OpenCLIP-L/14-laion2b": ("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "clip"),
    "OpenCLIP-B/16-datacomp": ("laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K", "clip"),
}
ALIASES = {**{alias: (hub_id, "clip") for alias, hub_id in BACKBONE_ALIASES.items()}, **OTHER_ALIASES}
TINY_BACKBONES = {family.tiny: family.name for family in FAMILIES.values()}


def hub_id(backbone: str) -> str:
    """An alias's hub id; anything else unchanged."""
    return ALIASES[backbone][0] if backbone in ALIASES else backbone


def aliases_help() -> str:
    """The aliases as --help lists them."""
    return ", ".join(ALIASES)


def _where(source: str, backbone: str) -> str:
    return f"--backbone {backbone}" if source == backbone else f"--backbone {backbone} ({source})"


def read_config(source: str, backbone: str) -> dict:
    """config.json of a folder or hub id, as a dict, through transformers' normal resolution (its cache offline).

    The raw dict, so that a model type transformers does not know still gets our message.
    """
    from transformers import PretrainedConfig

    folder_without_config = Path(source).is_dir() and not (Path(source) / "config.json").is_file()
    try:
        if folder_without_config:
            raise OSError("no config.json")
        config, _ = PretrainedConfig.get_config_dict(source)
    except (OSError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        if Path(source).is_dir():
            raise UserError(f"{_where(source, backbone)}: the folder has no readable config.json ({detail}); a "
                            "checkpoint folder holds config.json, the weights, the tokenizer and "
                            "preprocessor_config.json (or processor_config.json)") from err
        raise UserError(f"{_where(source, backbone)}: could not read its config.json ({detail}). Without network "
                        f"access use a local checkpoint folder or an offline one: {', '.join(TINY_BACKBONES)}") from err
    return config


# Files any tokenizer of the families is saved in (tokenizers' JSON, BPE vocabularies, SentencePiece models).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def _checkpoint_file(source: str, name: str) -> Path | None:
    """A file of a folder or hub id (through transformers' cache), or None when the checkpoint has none."""
    from transformers.utils import cached_file

    try:
        path = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None
    return Path(path) if path is not None else None


def _has_tokenizer_files(source: str) -> bool:
    """Whether the checkpoint ships a tokenizer: without one, transformers silently builds an empty default
    tokenizer of the model type's class. (A hub id is asked for its two usual files only.)"""
    names = TOKENIZER_FILES if Path(source).is_dir() else TOKENIZER_FILES[:2]
    return any(_checkpoint_file(source, name) is not None for name in names)


def _tokenizer_class(source: str) -> str | None:
    """tokenizer_config.json's tokenizer_class, or None when the checkpoint has no such file."""
    import json

    path = _checkpoint_file(source, "tokenizer_config.json")
    if path is None:
        return None
    try:
        return json.loads(path.read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return None


def family_of(source: str, backbone: str) -> Family:
    """The family of the checkpoint `source` (a folder or hub id; `backbone` as the flag gave it), from its
    config.json before anything else loads; UserError for an unsupported one, naming what is supported."""
    config = read_config(source, backbone)
    model_type = config.get("model_type")
    where = _where(source, backbone)
    if model_type == "siglip":
        tokenizer = _tokenizer_class(source)
        if tokenizer is None:
            raise UserError(f"{where}: a SigLIP checkpoint without its tokenizer (no tokenizer_config.json); it "
                            f"needs {SIGLIP.tokenizer_files} (SigLIP) or {SIGLIP2.tokenizer_files} (SigLIP 2)")
        return SIGLIP2 if tokenizer in SIGLIP2_TOKENIZERS else SIGLIP
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    if model_type == "siglip2":
        raise UserError(f"{where}: a NaFlex SigLIP 2 checkpoint (variable resolution and aspect ratio), which the "
                        "fixed-size image pipeline cannot feed; use a fixed-resolution SigLIP 2 checkpoint, e.g. "
                        "SigLIP2-B/16 (google/siglip2-base-patch16-224). Supported: " + SUPPORTED)
    if "text_config" not in config or "vision_config" not in config:
        missing = {(True, True): "both a text and a vision", (True, False): "a text",
                   (False, True): "a vision"}["text_config" not in config, "vision_config" not in config]
        raise UserError(f"{where}: a '{model_type}' checkpoint without {missing} tower (a single-tower model); "
                        f"few-shot adaptation here needs an image-text model whose text tower encodes the class "
                        f"prompts. Supported: {SUPPORTED}")
    raise UserError(f"{where}: unsupported model type '{model_type}'. Supported: {SUPPORTED}")


def load_tokenizer(family: Family, source: str, backbone: str):
    """The checkpoint's tokenizer (AutoTokenizer: the class its tokenizer_config.json names), before any
    weights load; UserError naming the files it needs when it is missing or unreadable."""
    from transformers import AutoTokenizer

    needs = f"a {family.label} checkpoint needs {family.tokenizer_files}"
    if not _has_tokenizer_files(source):
        raise UserError(f"{_where(source, backbone)}: no usable tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                        + needs)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError, ImportError) as err:
        detail = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise UserError(f"{_where(source, backbone)}: no usable tokenizer ({err.__class__.__name__}: {detail}); "
                        + needs) from err


IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def image_settings(source: str, backbone: str) -> ImageSettings:
    """What the checkpoint's image processor does, as our transforms reproduce it (inputs/loaders.py):
    CLIP's shorter-side resize and centre crop, or SigLIP's resize to the square; UserError otherwise."""
    from transformers import AutoImageProcessor

    where = _where(source, backbone)
    # transformers reads the image settings from either file (AutoImageProcessor): preprocessor_config.json, or
    # processor_config.json's "image_processor", where transformers 5's Processor.save_pretrained writes them.
    if Path(source).is_dir() and not any((Path(source) / name).is_file() for name in IMAGE_PROCESSOR_FILES):
        raise UserError(f"{where}: the folder has no preprocessor_config.json (nor a processor_config.json, where "
                        "transformers 5 saves a processor's settings): the image size, mean and std the model was "
                        "trained with; copy it from the checkpoint the folder came from")
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise UserError(f"{where}: no usable image processor ({' or '.join(IMAGE_PROCESSOR_FILES)}: "
                        f"{str(err).splitlines()[0] if str(err) else err.__class__.__name__})") from err
    size, crop = processor.size, getattr(processor, "crop_size", None)
    resample = int(getattr(processor.resample, "value", processor.resample))
    if resample != BICUBIC or abs(processor.rescale_factor - 1 / 255) > 1e-9:
        raise UserError(f"{where}: its image processor resamples with filter {resample} and rescales by "
                        f"{processor.rescale_factor}; only bicubic resizing of 0-255 pixels is reproduced")
    mean, std = tuple(float(m) for m in processor.image_mean), tuple(float(s) for s in processor.image_std)
    if processor.do_center_crop and size.get("shortest_edge") and crop and crop["height"] == crop["width"]:
        return ImageSettings(image_size=int(crop["height"]), resize_size=int(size["shortest_edge"]), mean=mean,
                             std=std, center_crop=True)
    if not processor.do_center_crop and size.get("height") and size.get("height") == size.get("width"):
        side = int(size["height"])
        return ImageSettings(image_size=side, resize_size=side, mean=mean, std=std, center_crop=False)
    raise UserError(f"{where}: its image processor resizes to {dict(size)} with centre crop "
                    f"{dict(crop) if crop else None}; supported are a shorter-side resize with a square centre crop "
                    "(CLIP) and a resize to a square without a crop (SigLIP)")


def check_family(family: Family, loss: str, method: Any, backbone: str) -> None:
    """What the checkpoint's family must allow, checked before any weights load: the --loss (one it was trained
    with, or CLIP-LoRA's cross-entropy) and the method (an entry of methods/table.py that names its families)."""
    if method.families is not None and family.name not in method.families:
        raise UserError(f"--mode {method.name} runs on {', '.join(FAMILIES[name].label for name in method.families)} "
                        f"checkpoints only ({method.families_why}); --backbone {backbone} is a {family.label} "
                        "checkpoint")
    if loss not in family.losses:
        raise UserError(f"--loss {loss}: the sigmoid loss is SigLIP's own (it needs the checkpoint's logit_bias); "
                        f"--backbone {backbone} is a {family.label} checkpoint, which allows "
                        f"{', '.join(family.losses)}")


# CLIP's default text rule, for callers that build prompts without a loaded model (the protocol's).
CLIP_TEXT = TextSettings(padding=CLIP.padding, max_length=CONTEXT_LENGTH, attention_mask=True, lowercase=False,
                         pooled_at_end_of_text=True)
