"""Work-arounds for behaviour of the pinned libraries, each guarded by version and tested.

Every shim here says what it works around, which versions need it, and how to tell when it can
go: its test in tests/test_compat.py checks both that the library still behaves this way and that
the shim still has its effect, so an upgrade that fixes the library makes that test fail loudly.
"""
from __future__ import annotations

import logging

import bitsandbytes as bnb
import torch
from packaging.version import Version

# bitsandbytes 0.49 added the CPU inference repacking below (its fused AVX512-BF16 kernel);
# 0.50.2 is the version this project pins and tests.
CPU_REPACK_SINCE = Version("0.49")
CPU_REPACK_ATTRIBUTE = "support_avx512bf16_for_cpu"


def needs_cpu_4bit_layout_shim(version: str = bnb.__version__) -> bool:
    return Version(version) >= CPU_REPACK_SINCE


def keep_cpu_4bit_layout_trainable(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference.

    On CPUs with AVX512-BF16, bitsandbytes >= 0.49 repacks a Linear4bit's weight into an
    inference-only layout the first time it runs under no_grad in eval mode (our zero-shot
    evaluation) and never packs it back, so the training steps that follow fail (or would pass no
    gradient to the layers below). Keeping the standard layout costs some CPU eval speed only.
    It can go once bitsandbytes packs the weight back (or skips the repack) when the layer trains
    again: tests/test_compat.py then finds the repack gone and says so.
    """
    if not needs_cpu_4bit_layout_shim():
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and hasattr(module, CPU_REPACK_ATTRIBUTE):
            setattr(module, CPU_REPACK_ATTRIBUTE, False)


def quiet_library_logs() -> None:
    """Keep a run's output to our own progress bars and log lines.

    The libraries' per-load progress bars and deprecation notices (transformers 5 renamed gradient
    checkpointing; PEFT still calls the old name) would bury them; bitsandbytes on AVX512-BF16 CPUs
    warns that an optional hub kernel is missing and falls back to its built-in one, which is what
    we want offline.
    """
    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
