"""A method's adapter: its config, putting it on the model, and what the rest of the code asks of it.

Every method of the table (methods.py) goes through here, so nothing else branches on a method:

    peft_config        the PEFT config of (method, AdapterConfig, targets)
    attach             the adapter on a loaded base (get_peft_model, or our own tuners); LoftQ's initialisation
    tower_is_adapted   whether the text or vision tower's output depends on trained weights: the one rule the
                       trainer (re-encode prompts with gradients?) and the evaluator (reuse image features?) use
    zero_shot_view     the model as the pretrained base, whatever the method's initialisation did to it
    counts, sizes      trainable and adapter parameters, bytes of the saved adapter, the effective config
    save_adapter / load_adapter / merged_model   --save_path, --eval_only, --merge_export

PiSSA and OLoRA initialise by rewriting the frozen base (W_res = W - s B0 A0). Their pretrained
weights are kept beside the model for the zero-shot evaluation, and their saved adapter is PEFT's
conversion to a plain LoRA of the pretrained base (rank 2r: B A - B0 A0), which loads anywhere.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from peft import PeftConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from qlora_clip.methods import own_tuners as own_methods

from qlora_clip.methods import peft_args
from qlora_clip.config import AdapterConfig
from qlora_clip.errors import UserError
from qlora_clip.methods.table import METHODS, Method
from qlora_clip.backbones.targets import layer_norm_names, target_module_names, tower_of

ORIGINALS = "_qlora_clip_originals"   # module name -> its pretrained weight, where the init rewrote it
INITIAL = "_qlora_clip_initial"       # the adapter state right after such an init (for the LoRA conversion)
PEFT_PREFIX = "base_model.model."
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


# --- building ---------------------------------------------------------------------------------------

def targets(model_config, adapter: AdapterConfig) -> list[str]:
    """The modules the method adapts: the --params projections, or the LayerNorms for LN tuning."""
    if adapter.method.targets == "layer_norms":
        return layer_norm_names(model_config, adapter.encoder, adapter.position)
    return target_module_names(model_config, adapter.encoder, adapter.position, list(adapter.params))


def method_args(adapter: AdapterConfig) -> dict[str, Any]:
    """The method's settings that are not PEFT config fields (LoRA+'s ratio, EVA's rho), --peft_args applied."""
    return peft_args.split(adapter.method, dict(adapter.peft_args))[1]


def peft_config(adapter: AdapterConfig, names: list[str]) -> PeftConfig:
    """The method's PEFT config on `names`: its defaults, our generic flags, its fixed fields, --peft_args."""
    method = adapter.method
    kwargs: dict[str, Any] = dict(method.config_defaults)
    for flag, field in method.fields.items():
        kwargs[field] = getattr(adapter, flag)
    if method.scaling_flag:
        kwargs["use_rslora"] = adapter.rslora
    kwargs.update(method.fixed)
    if method.step == "adalora":
        # AdaLoRA prunes from init_r down to r over the run's steps; the paper starts at 1.5 x the target.
        kwargs["init_r"] = math.ceil(1.5 * adapter.r)
        kwargs["total_step"] = max(adapter.total_steps or 1, 1)
    if method.step == "eva":
        from peft import EvaConfig

        kwargs["eva_config"] = EvaConfig(rho=method_args(adapter)["eva_rho"])
    kwargs.update(peft_args.split(method, dict(adapter.peft_args))[0])
    try:
        return peft_args.config_class(method)(target_modules=list(names), **kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"--mode {method.name}: PEFT refuses this {method.peft_class} ({err}); change --peft_args "
                        "or the flags it names") from err


def attach(model: torch.nn.Module, adapter: AdapterConfig, source: str) -> torch.nn.Module:
    """`model` (a loaded base) with a fresh adapter of the method on its targets."""
    method = adapter.method
    names = targets(model.config, adapter)
    if method.own:
        return own_methods.attach(model, method.own, names)
    originals = _pretrained_weights(model, names) if method.rewrites_base else None
    model = get_peft_model(model, peft_config(adapter, names))
    if originals is not None:
        setattr(model, ORIGINALS, originals)
        setattr(model, INITIAL, {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()})
    if method.step == "loftq":
        loftq_initialize(model, source)
    return model


def _pretrained_weights(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {name: model.get_submodule(name).weight.detach().clone() for name in names}


def loftq_initialize(model: PeftModel, source: str) -> None:
    """LoftQ for the 4-bit base: A, B = the rank-r SVD of (W - dequant(NF4(W))) / s, so that the adapted
    layer starts at W up to the rank-r error, not at the quantized W.

    PEFT's `replace_lora_weights_loftq` computes exactly this (one LoftQ step) but moves the weights to
    CUDA unconditionally (peft 0.21); this is the same computation on the weights' own device, with the
    LoRA scale s divided out so that s B A equals the residual whatever alpha and r are.
    """
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit
    from peft.utils.loftq_utils import _low_rank_decomposition, _SafetensorLoader

    loader = _SafetensorLoader(model, _local_checkpoint(source))
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, Linear4bit):
                continue
            weight = loader.get_tensor(name.removeprefix(PEFT_PREFIX) + ".weight").float()
            quantized = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            out = _low_rank_decomposition((weight.to(quantized.device) - quantized), reduced_rank=module.r["default"])
            root = math.sqrt(module.scaling["default"])
            lora_a, lora_b = module.lora_A["default"].weight, module.lora_B["default"].weight
            lora_a.data = (out["R"] / root).to(lora_a.dtype)
            lora_b.data = (out["L"] / root).to(lora_b.dtype)


def _local_checkpoint(source: str) -> str:
    if os.path.isdir(source):
        return source
    from huggingface_hub import snapshot_download

    return snapshot_download(source, local_files_only=True)


# --- what the rest of the code asks -----------------------------------------------------------------

def tower_is_adapted(model: torch.nn.Module, tower: str) -> bool:
    """Whether `tower` ('text_model' or 'vision_model') computes with weights a method trained or changed.

    True when an adapter layer sits in the tower (trained now, or loaded frozen by --eval_only), when a
    parameter under it trains (BitFit, full fine-tuning), or when the method replaced pretrained values
    there. Parameter names alone do not tell: VeRA, IA3, OFT or LN tuning name theirs otherwise than
    LoRA, and some tuners share one parameter across both towers.
    """
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer) and tower_of(name) == tower:
            return True
    if any(p.requires_grad and tower_of(n) == tower for n, p in model.named_parameters()):
        return True
    return any(tower_of(n) == tower for n in _changed_values(model))


def _changed_values(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Pretrained values a method replaced in the model: parameter or module name -> the pretrained value."""
    own = own_methods.tuning(model)
    return own.originals if own is not None else getattr(model, ORIGINALS, {})


@contextlib.contextmanager
def zero_shot_view(model: torch.nn.Module) -> Iterator[None]:
    """The model computing as the pretrained base: adapters off, and the pretrained values back where the
    method's initialisation or training replaced them (PiSSA, OLoRA, BitFit, full fine-tuning)."""
    with contextlib.ExitStack() as stack:
        if isinstance(model, PeftModel):
            stack.enter_context(model.disable_adapter())
        own = own_methods.tuning(model)
        if own is not None:
            stack.enter_context(_swapped(dict(model.named_parameters()), own.originals))
        elif getattr(model, ORIGINALS, None):
            weights = {name: model.get_submodule(PEFT_PREFIX + name).get_base_layer().weight
                       for name in getattr(model, ORIGINALS)}
            stack.enter_context(_swapped(weights, getattr(model, ORIGINALS)))
        yield


@contextlib.contextmanager
def _swapped(params: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> Iterator[None]:
    saved = {name: params[name].data for name in values}
    try:
        for name, value in values.items():
            params[name].data = value
        yield
    finally:
        for name, data in saved.items():
            params[name].data = data


def trainable_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adapter_parameter_count(model: torch.nn.Module) -> int:
    """The method's weights, trainable or not (an --eval_only model has them frozen)."""
    own = own_methods.tuning(model)
    if own is not None:
        return sum(t.numel() for t in own.originals.values())
    prefix = model.base_model.prefix
    return sum(p.numel() for n, p in model.named_parameters() if prefix in n)


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors the saved adapter holds (before PiSSA's and OLoRA's conversion doubles the rank)."""
    if own_methods.tuning(model) is not None:
        return own_methods.tuned_state(model)
    return get_peft_model_state_dict(model)


def adapter_size_bytes(model: torch.nn.Module) -> int:
    """Bytes of the tensors --save_path writes (the safetensors file adds a header of a few KB): the
    adapter state, twice that for PiSSA and OLoRA, whose conversion to a LoRA of the pretrained base
    concatenates the trained and the initial factors."""
    size = sum(t.numel() * t.element_size() for t in adapter_state(model).values())
    return 2 * size if getattr(model, INITIAL, None) else size


def _json_safe(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(_json_safe(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return _json_safe(dataclasses.asdict(value))
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def effective_config(model: torch.nn.Module) -> dict:
    """The adapter's complete effective config, as the results line records it: PEFT's config as a dict
    (AdaLoRA's and EVA's final rank patterns included), or what our own tuner trains."""
    own = own_methods.tuning(model)
    if own is not None:
        return {"peft_type": None, "qlora_clip_tuner": own.kind, "target_modules": own.targets,
                "tuned_parameters": sorted(own.originals)}
    config = _json_safe(model.peft_config["default"].to_dict())
    # PEFT shortens a long target list to name suffixes ('q_proj', ...); the modules it adapted are exact.
    config["target_modules"] = adapted_modules(model)
    return config


def adapted_modules(model: torch.nn.Module) -> list[str]:
    """The modules that carry an adapter layer, by their name in the base model."""
    return sorted(name.removeprefix(PEFT_PREFIX) for name, module in model.named_modules()
                  if isinstance(module, BaseTunerLayer))


# --- saving, loading, merging -----------------------------------------------------------------------

def save_adapter(model: torch.nn.Module, folder: Path) -> None:
    """The adapter's files in `folder`: PEFT's (PiSSA and OLoRA converted to a LoRA of the pretrained base),
    or our own tuners'."""
    if own_methods.tuning(model) is not None:
        own_methods.save(model, folder)
        return
    initial = getattr(model, INITIAL, None)
    if initial is None:
        model.save_pretrained(folder)
        return
    with tempfile.TemporaryDirectory() as tmp:
        start = Path(tmp) / "initial"
        start.mkdir()
        save_file({k: v.cpu().contiguous() for k, v in initial.items()}, start / ADAPTER_FILES[1])
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(start))


def saved_files(method: Method) -> tuple[str, ...]:
    return (own_methods.CONFIG_FILE, own_methods.WEIGHTS_FILE) if method.own else ADAPTER_FILES


def load_adapter(model: torch.nn.Module, folder: Path, adapter: AdapterConfig) -> torch.nn.Module:
    """`model` (a loaded base) with the adapter saved in `folder`, frozen; UserError naming the flag when it
    is not the adapter the flags describe."""
    method = adapter.method
    names = targets(model.config, adapter)
    if method.own:
        return own_methods.load(model, folder, method.own, names)
    if not all((folder / name).exists() for name in ADAPTER_FILES):
        raise UserError(f"--eval_only: no saved adapter at {folder} ({' and '.join(ADAPTER_FILES)} expected). "
                        "Train with the same flags and --save_path first, or fix --save_path.")
    saved = _read_saved_config(folder)
    expected = peft_config(adapter, names)
    if saved.peft_type != expected.peft_type:
        raise UserError(f"--eval_only: the adapter in {folder} is a {saved.peft_type.value} adapter, but --mode "
                        f"{method.name} makes {expected.peft_type.value}; pass the --mode it was trained with.")
    _check_saved_fields(saved, expected, method, folder)
    try:
        saved_modules = _adapted_modules(folder / ADAPTER_FILES[1], PEFT_TYPE_TO_PREFIX_MAPPING[saved.peft_type])
    except (SafetensorError, OSError) as err:
        raise UserError(f"--eval_only: {folder / ADAPTER_FILES[1]} cannot be read ({err}); the file is damaged or cut "
                        "short: save the adapter again (train with --save_path) or restore the file") from err
    if saved_modules != set(names):
        raise UserError(f"--eval_only: the adapter in {folder} sits on {len(saved_modules)} modules, but the "
                        f"flags select {len(names)} other ones; pass the --encoder/--position/--params it was "
                        "trained with.")
    # Our module list, not the saved one: PEFT shortens target_modules to name suffixes when saving, which
    # would widen the adapter's reach. The saved config keeps what training decided (AdaLoRA's and EVA's
    # rank patterns, PiSSA's conversion); an initialisation that rewrites weights must not run again.
    saved.target_modules = list(names)
    _plain_init(saved)
    try:
        return PeftModel.from_pretrained(model, os.fspath(folder), config=saved, is_trainable=False)
    except (SafetensorError, RuntimeError) as err:  # damaged tensors, or shapes of another backbone
        first_line = str(err).splitlines()[0] if str(err) else "no detail"
        raise UserError(f"--eval_only: the adapter in {folder} does not fit this --backbone or is damaged "
                        f"({type(err).__name__}: {first_line}); pass the --backbone it was trained on, or save it "
                        "again") from err


def _read_saved_config(folder: Path) -> PeftConfig:
    """adapter_config.json as PEFT reads it; UserError when it is not a readable adapter configuration."""
    path = folder / ADAPTER_FILES[0]
    try:
        return PeftConfig.from_pretrained(os.fspath(folder))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as err:
        # json.JSONDecodeError is a ValueError; a JSON list or a missing peft_type fails inside PEFT.
        raise UserError(f"--eval_only: {path} is not a readable adapter configuration ({type(err).__name__}: {err}); "
                        "save the adapter again (train with --save_path) or restore the file") from err


def _check_saved_fields(saved: PeftConfig, expected: PeftConfig, method: Method, folder: Path) -> None:
    """The fields our flags set must agree (PiSSA's and OLoRA's conversion doubles r and rescales alpha)."""
    flags = {field: f"--{flag}" if flag != "dropout" else "--dropout_rate" for flag, field in method.fields.items()}
    if method.dora:
        flags["use_dora"] = "--mode"
    if method.scaling_flag:
        flags["use_rslora"] = "--lora_scaling"
    for field, flag in flags.items():
        want, got = getattr(expected, field), getattr(saved, field, None)
        if method.rewrites_base and field == "r":
            want = 2 * want
        if method.rewrites_base and field == "lora_alpha":
            want = want * (math.sqrt(2) if expected.use_rslora else 2)
        same = math.isclose(want, got, rel_tol=1e-9) if isinstance(want, float) and isinstance(got, (int, float)) \
            else want == got
        if not same:
            raise UserError(f"--eval_only: the adapter in {folder} was saved with {field}={got}, but the flags ask "
                            f"for {want}; pass the {flag} it was trained with.")


def _adapted_modules(weights: Path, prefix: str) -> set[str]:
    """The modules a saved PEFT adapter's tensors sit on (shared tensors such as VeRA's projections aside)."""
    with safe_open(weights, framework="pt") as f:
        keys = list(f.keys())
    return {key.split("." + prefix)[0].removeprefix(PEFT_PREFIX) for key in keys
            if key.startswith(PEFT_PREFIX) and "." + prefix in key}


def _plain_init(config: PeftConfig) -> None:
    """Creating the layers must not redo a data-driven or base-rewriting initialisation: the weights come next."""
    if hasattr(config, "init_lora_weights") and config.init_lora_weights not in (True, False, "gaussian"):
        config.init_lora_weights = True


def merged_model(model: torch.nn.Module, base: torch.nn.Module) -> torch.nn.Module:
    """`base` (a full-precision copy of the checkpoint, its values already those the run held) with the
    adapter merged in; our own tuners' values are already in it."""
    if own_methods.tuning(model) is not None:
        return base
    config = copy.deepcopy(model.peft_config["default"])
    _plain_init(config)
    config.inference_mode = False
    adapted = get_peft_model(base, config)
    set_peft_model_state_dict(adapted, {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()})
    return adapted.merge_and_unload()


def mergeable_methods() -> list[str]:
    return [name for name, m in METHODS.items() if m.mergeable and m.kind == "peft"]
