"""PEFT's tuners behind the table's entries: LoRA, DoRA, VeRA, OFT, IA3, LN tuning, ... (methods/interface.py).

`PeftAdapter` builds the entry's PEFT config (its defaults, our generic flags, its fixed fields,
--peft_args), puts it on the base with `get_peft_model`, and answers the rest through PEFT: the
adapter switched off for zero-shot, the tower rule, the saved adapter and its checks, the merge.
A method that adds a step of its own subclasses it (eva.py, loftq.py, loraplus.py, adalora.py).

PiSSA and OLoRA (`ResidualInit`) initialise by rewriting the frozen base (W_res = W - s B0 A0).
Their pretrained weights are kept beside the model for the zero-shot evaluation, and their saved
adapter is PEFT's conversion to a plain LoRA of the pretrained base (rank 2r: B A - B0 A0), which
loads anywhere.
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
from typing import Any, ContextManager, Iterator

import torch
from peft import PeftConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from qlora_clip.backbones.loading import ClipBundle
from qlora_clip.backbones.targets import tower_of
from qlora_clip.errors import UserError
from qlora_clip.methods import peft_args
from qlora_clip.methods.interface import Adapted
from qlora_clip.methods.refusals import refusal
from qlora_clip.methods.settings import AdapterConfig

PEFT_PREFIX = "base_model.model."
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def peft_config(settings: AdapterConfig, names: list[str], extra: dict[str, Any] | None = None) -> PeftConfig:
    """The method's PEFT config on `names`: its defaults, our generic flags, its fixed fields, a method's own
    `extra` fields, --peft_args; UserError naming the flags when PEFT refuses it."""
    method = settings.method
    kwargs: dict[str, Any] = dict(method.config_defaults)
    for flag, field in method.fields.items():
        kwargs[field] = getattr(settings, flag)
    if method.scaling_flag:
        kwargs["use_rslora"] = settings.rslora
    kwargs.update(method.fixed)
    kwargs.update(extra or {})
    kwargs.update(peft_args.split(method, settings.peft_values)[0])
    try:
        return peft_args.config_class(method)(target_modules=list(names), **kwargs)
    except (ValueError, TypeError) as err:
        raise refusal(settings, err) from err


def method_args(settings: AdapterConfig) -> dict[str, Any]:
    """The method's settings that are not PEFT config fields (LoRA+'s ratio, EVA's rho), --peft_args applied."""
    return peft_args.split(settings.method, settings.peft_values)[1]


class PeftAdapter(Adapted):
    """A PEFT tuner on the base (a PeftModel)."""

    @classmethod
    def config(cls, settings: AdapterConfig, names: list[str]) -> PeftConfig:
        try:
            extra = cls.extra_config(settings)  # PEFT's configs of its own (EVA's EvaConfig) check their fields too
        except (ValueError, TypeError) as err:
            raise refusal(settings, err) from err
        return peft_config(settings, names, extra)

    @classmethod
    def extra_config(cls, settings: AdapterConfig) -> dict[str, Any]:
        """Config fields a method derives from the run (AdaLoRA's schedule, EVA's rho); none by default."""
        return {}

    @classmethod
    def attach(cls, bundle: ClipBundle, settings: AdapterConfig) -> PeftAdapter:
        names = settings.targets(bundle.family, bundle.model.config)
        return cls(bundle, settings, get_peft_model(bundle.model, cls.config(settings, names)))

    @classmethod
    def attach_plain(cls, bundle: ClipBundle, settings: AdapterConfig) -> PeftAdapter:
        """PEFT's layers with their plain initialisation (PiSSA's SVD, EVA's data pass and LoftQ's residual skipped)."""
        names = settings.targets(bundle.family, bundle.model.config)
        config = cls.config(settings, names)
        _plain_init(config)
        return cls(bundle, settings, get_peft_model(bundle.model, config))

    # --- what the rest of the code asks ---------------------------------------------------------
    def base_model(self) -> torch.nn.Module:
        return self.model.get_base_model()

    def zero_shot_view(self) -> ContextManager:
        return self.model.disable_adapter()

    @contextlib.contextmanager
    def interpolated(self, alpha: float) -> Iterator[None]:
        """Every adapted layer gives (1 - alpha) x its pretrained output + alpha x its adapted output. A mergeable
        tuner's adapted layer is the linear map of its merged weight W_1 (LN tuning's, a LayerNorm of its tuned
        affine), so this is the layer of weights (1 - alpha) W_0 + alpha W_1, WiSE-FT, for every tuner alike and
        on a 4-bit base too, without merging. Exact at the ends: at 0 the output is the pretrained layer's
        (`zero_shot_view` computes the same call), at 1 the adapted layer's, bit for bit."""
        if not self.method.mergeable:
            raise UserError(f"--interpolate: --mode {self.method.name} does not merge into the weights, so no weights "
                            "lie between the pretrained and the trained ones; leave --interpolate out")

        def mixed(name: str):
            def hook(module, args, kwargs, output):
                return (1 - alpha) * self.pretrained_output(name, module, args, kwargs) + alpha * output
            return hook
        handles = [module.register_forward_hook(mixed(name.removeprefix(PEFT_PREFIX)), with_kwargs=True)
                   for name, module in self.model.named_modules() if isinstance(module, BaseTunerLayer)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def pretrained_output(self, name: str, layer: BaseTunerLayer, args: tuple, kwargs: dict) -> torch.Tensor:
        """What the adapted layer `name` (its name in the base model) computes with the adapter off."""
        return layer.get_base_layer()(*args, **kwargs)

    def tower_is_adapted(self, tower: str) -> bool:
        """True when an adapter layer sits in the tower (trained now, or loaded frozen by --eval_only), or when a
        parameter under it trains. Parameter names alone do not tell: VeRA, IA3, OFT or LN tuning name theirs
        otherwise than LoRA, and some tuners share one parameter across both towers."""
        if any(isinstance(module, BaseTunerLayer) and tower_of(name) == tower
               for name, module in self.model.named_modules()):
            return True
        return any(p.requires_grad and tower_of(n) == tower for n, p in self.model.named_parameters())

    def adapter_parameters(self) -> int:
        """The method's weights, trainable or not (an --eval_only model has them frozen)."""
        prefix = self.model.base_model.prefix
        return sum(p.numel() for n, p in self.model.named_parameters() if prefix in n)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return get_peft_model_state_dict(self.model)

    def adapter_bytes(self) -> int:
        """Bytes of the tensors --save_path writes (the safetensors file adds a header of a few KB)."""
        return sum(t.numel() * t.element_size() for t in self.adapter_state().values())

    def effective_config(self) -> dict:
        """PEFT's config as a dict (AdaLoRA's and EVA's final rank patterns included), with the modules it adapted
        (PEFT shortens a long target list to name suffixes)."""
        config = _json_safe(self.model.peft_config["default"].to_dict())
        config["target_modules"] = adapted_modules(self.model)
        return config

    def method_args(self) -> dict[str, Any]:
        return method_args(self.settings)

    def fields(self) -> dict[str, Any]:
        return {"trainable_params": self.trainable_parameters(), "adapter_params": self.adapter_parameters(),
                "adapter_size_mb": self.adapter_bytes() / 2**20, "peft_config": self.effective_config(),
                "method_args": self.method_args()}

    # --- saving, loading, merging ---------------------------------------------------------------
    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)

    @classmethod
    def load(cls, bundle: ClipBundle, settings: AdapterConfig, folder: Path) -> PeftAdapter:
        """The adapter saved in `folder`, frozen; UserError naming the flag when it is not the adapter the flags
        describe."""
        method = settings.method
        names = settings.targets(bundle.family, bundle.model.config)
        if not all((folder / name).exists() for name in ADAPTER_FILES):
            raise UserError(f"--eval_only: no saved adapter at {folder} ({' and '.join(ADAPTER_FILES)} expected). "
                            "Train with the same flags and --save_path first, or fix --save_path.")
        saved = _read_saved_config(folder)
        expected = cls.config(settings, names)
        if saved.peft_type != expected.peft_type:
            raise UserError(f"--eval_only: the adapter in {folder} is a {saved.peft_type.value} adapter, but --mode "
                            f"{method.name} makes {expected.peft_type.value}; pass the --mode it was trained with.")
        cls.check_saved_fields(saved, expected, settings, folder)
        try:
            saved_modules = _adapted_modules(folder / ADAPTER_FILES[1], PEFT_TYPE_TO_PREFIX_MAPPING[saved.peft_type])
        except (SafetensorError, OSError) as err:
            raise UserError(f"--eval_only: {folder / ADAPTER_FILES[1]} cannot be read ({err}); the file is damaged or "
                            "cut short: save the adapter again (train with --save_path) or restore the file") from err
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
            model = PeftModel.from_pretrained(bundle.model, os.fspath(folder), config=saved, is_trainable=False)
        except (SafetensorError, RuntimeError) as err:  # damaged tensors, or shapes of another backbone
            first_line = str(err).splitlines()[0] if str(err) else "no detail"
            raise UserError(f"--eval_only: the adapter in {folder} does not fit this --backbone or is damaged "
                            f"({type(err).__name__}: {first_line}); pass the --backbone it was trained on, or save it "
                            "again") from err
        return cls(bundle, settings, model)

    @classmethod
    def check_saved_fields(cls, saved: PeftConfig, expected: PeftConfig, settings: AdapterConfig,
                           folder: Path) -> None:
        """The fields our flags set must agree with the saved config's."""
        method = settings.method
        flags = {field: f"--{flag}" for flag, field in method.fields.items()}
        if method.dora:
            flags["use_dora"] = "--mode"
        if method.scaling_flag:
            flags["use_rslora"] = "--lora_scaling"
        for field, flag in flags.items():
            want, got = cls.saved_value(field, getattr(expected, field), expected), getattr(saved, field, None)
            same = math.isclose(want, got, rel_tol=1e-9) if isinstance(want, float) and isinstance(got, (int, float)) \
                else want == got
            if not same:
                raise UserError(f"--eval_only: the adapter in {folder} was saved with {field}={got}, but the flags ask "
                                f"for {want}; pass the {flag} it was trained with.")

    @classmethod
    def saved_value(cls, field: str, value: Any, expected: PeftConfig) -> Any:
        """A config field's value as the saved adapter holds it (ResidualInit's conversion changes two)."""
        return value

    def merged(self, base: torch.nn.Module) -> torch.nn.Module:
        """`base` with the adapter merged in: the same adapter state on a plain copy, then PEFT's merge."""
        config = copy.deepcopy(self.model.peft_config["default"])
        _plain_init(config)
        config.inference_mode = False
        adapted = get_peft_model(base, config)
        set_peft_model_state_dict(adapted, {k: v.detach().cpu() for k, v in self.adapter_state().items()})
        return adapted.merge_and_unload()


class ResidualInit(PeftAdapter):
    """PiSSA and OLoRA: the initialisation rewrites the frozen base to the residual W - s B0 A0.

    The pretrained weights are kept for the zero-shot view, and the initial adapter for the saved form:
    PEFT's conversion to a LoRA of the pretrained base, of rank 2r (its alpha rescaled to keep the scale)."""

    def __init__(self, bundle: ClipBundle, settings: AdapterConfig, model: torch.nn.Module,
                 originals: dict[str, torch.Tensor] | None = None, initial: dict[str, torch.Tensor] | None = None):
        super().__init__(bundle, settings, model)
        self.originals = originals or {}  # module name -> its pretrained weight
        self.initial = initial            # the adapter state right after the initialisation

    @classmethod
    def attach(cls, bundle: ClipBundle, settings: AdapterConfig) -> ResidualInit:
        names = settings.targets(bundle.family, bundle.model.config)
        with torch.no_grad():
            originals = {name: bundle.model.get_submodule(name).weight.detach().clone() for name in names}
        model = get_peft_model(bundle.model, cls.config(settings, names))
        initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        return cls(bundle, settings, model, originals, initial)

    @contextlib.contextmanager
    def zero_shot_view(self) -> Iterator[None]:
        weights = {name: self.model.get_submodule(PEFT_PREFIX + name).get_base_layer().weight
                   for name in self.originals}
        with self.model.disable_adapter(), swapped(weights, self.originals):
            yield

    def pretrained_output(self, name: str, layer: BaseTunerLayer, args: tuple, kwargs: dict) -> torch.Tensor:
        """With the pretrained weight in place of the residual the initialisation left, as `zero_shot_view`."""
        base = layer.get_base_layer()
        if name not in self.originals:
            return base(*args, **kwargs)
        with swapped({"weight": base.weight}, {"weight": self.originals[name]}):
            return base(*args, **kwargs)

    def tower_is_adapted(self, tower: str) -> bool:
        return super().tower_is_adapted(tower) or any(tower_of(name) == tower for name in self.originals)

    def adapter_bytes(self) -> int:
        """Twice the adapter state once trained: the conversion concatenates the trained and the initial factors."""
        return 2 * super().adapter_bytes() if self.initial is not None else super().adapter_bytes()

    def save(self, folder: Path) -> None:
        if self.initial is None:  # loaded by --eval_only: already the converted LoRA
            super().save(folder)
            return
        with tempfile.TemporaryDirectory() as tmp:
            start = Path(tmp) / "initial"
            start.mkdir()
            save_file({k: v.cpu().contiguous() for k, v in self.initial.items()}, start / ADAPTER_FILES[1])
            self.model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(start))

    @classmethod
    def saved_value(cls, field: str, value: Any, expected: PeftConfig) -> Any:
        if field == "r":
            return 2 * value
        if field == "lora_alpha":
            return value * (math.sqrt(2) if expected.use_rslora else 2)
        return value


@contextlib.contextmanager
def swapped(params: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> Iterator[None]:
    """While open, each parameter of `params` holds the value of the same name in `values`."""
    saved = {name: params[name].data for name in values}
    try:
        for name, value in values.items():
            params[name].data = value
        yield
    finally:
        for name, data in saved.items():
            params[name].data = data


def adapted_modules(model: torch.nn.Module) -> list[str]:
    """The modules that carry an adapter layer, by their name in the base model."""
    return sorted(name.removeprefix(PEFT_PREFIX) for name, module in model.named_modules()
                  if isinstance(module, BaseTunerLayer))


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


def _read_saved_config(folder: Path) -> PeftConfig:
    """adapter_config.json as PEFT reads it; UserError when it is not a readable adapter configuration."""
    path = folder / ADAPTER_FILES[0]
    try:
        return PeftConfig.from_pretrained(os.fspath(folder))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as err:
        # json.JSONDecodeError is a ValueError; a JSON list or a missing peft_type fails inside PEFT.
        raise UserError(f"--eval_only: {path} is not a readable adapter configuration ({type(err).__name__}: {err}); "
                        "save the adapter again (train with --save_path) or restore the file") from err


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
