"""Which modules of CLIP a method adapts: `--encoder`, `--position` and `--params` -> module names.

Most methods sit on attention projections (`--params` of the `--position` layers of the
`--encoder` towers); LN tuning sits on the same layers' two LayerNorms instead, CLIP-SVD on all six of their
Linears. No torch here:
names only, from the checkpoint's config.
"""
from __future__ import annotations

from qlora_clip.backbones.families import Family
from qlora_clip.errors import UserError

LAYER_NORMS = ("layer_norm1", "layer_norm2")
MLP_LINEARS = ("mlp.fc1", "mlp.fc2")
TOWERS = {"text": ("text_model",), "vision": ("vision_model",), "both": ("text_model", "vision_model")}


def position_layers(position: str, num_layers: int) -> list[int]:
    """Layer indices for a --position, for an encoder of any depth (12-layer values as CLIP-LoRA)."""
    n = num_layers
    spans = {
        "bottom": range(0, n // 3),
        "mid": range(n // 3, 2 * n // 3),
        "up": range(2 * n // 3, n),
        "half-bottom": range(0, n // 2),
        "half-up": range(n // 2, n),
        "all": range(n),
        "top": range(n - 1, n),
        "top3": range(max(n - 3, 0), n),
    }
    return list(spans[position])


def selected_layers(config, encoder: str, position: str) -> list[str]:
    """'<tower>.encoder.layers.<i>' of every layer --encoder and --position select."""
    depth = {"text_model": config.text_config.num_hidden_layers,
             "vision_model": config.vision_config.num_hidden_layers}
    names = []
    for tower in TOWERS[encoder]:
        layers = position_layers(position, depth[tower])
        if not layers:
            raise UserError(f"--position {position} selects no layer of the {depth[tower]}-layer "
                            f"{tower}; choose another position")
        names += [f"{tower}.encoder.layers.{layer}" for layer in layers]
    return names


def target_module_names(family: Family, config, encoder: str, position: str, params: list[str]) -> list[str]:
    """Full names of the attention projections that get adapters, by the family's map of the model
    (families.Family.layer_module; the four families share transformers' CLIP names)."""
    names = []
    for layer in selected_layers(config, encoder, position):
        tower, index = layer.split(".")[0], int(layer.rsplit(".", 1)[1])
        names += [family.layer_module(tower, index, p) for p in params]
    return names


def linear_module_names(family: Family, config, encoder: str, position: str) -> list[str]:
    """Full names of every Linear of the selected layers: the four attention projections, then the MLP's two
    (CLIP-SVD's targets; the four families share transformers' CLIP names for them)."""
    names = []
    for layer in selected_layers(config, encoder, position):
        tower, index = layer.split(".")[0], int(layer.rsplit(".", 1)[1])
        names += [family.layer_module(tower, index, p) for p in ("q", "k", "v", "o")]
        names += [f"{layer}.{mlp}" for mlp in MLP_LINEARS]
    return names


def layer_norm_names(config, encoder: str, position: str) -> list[str]:
    """Full names of both LayerNorms of the selected layers (LN tuning's targets)."""
    return [f"{layer}.{norm}" for layer in selected_layers(config, encoder, position) for norm in LAYER_NORMS]


def tower_of(name: str) -> str | None:
    """'text_model' or 'vision_model' for a module or parameter name under one of the towers."""
    parts = name.split(".")
    return next((t for t in ("text_model", "vision_model") if t in parts), None)
