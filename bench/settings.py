"""What one benchmark command measures, built once from its flags (bench/cli.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchSettings:
    """The step-time grid (every backbone x mode x encoder x batch x dtype x checkpointing) and the studies."""
    preset: str
    backbone: str                      # a harness.BACKBONES name; the studies run on this one
    device: str                        # 'cpu' or 'cuda'
    modes: tuple[str, ...]
    encoders: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    compute_dtypes: tuple[str, ...]    # fp32, fp16, bf16
    checkpointing: tuple[str, ...]     # 'off' and/or 'on'
    steps: int                         # timed training steps per setting (median reported)
    warmup: int                        # untimed steps before them
    num_classes: int                   # class prompts encoded per step
    prompt_tokens: int                 # longest prompt, BOS and EOS included
    eval_encoder: str | None           # the encoder setting whose rows also time evaluation
    studies: tuple[str, ...]           # names in suite.STUDIES
    out_dir: str
    protocol_iters: int = 500          # n_iters of the `protocol` study (500 x 4 shots = 2,000 steps)
    other_backbones: tuple[str, ...] = ()  # further backbones whose grid is measured in the same run

    @property
    def backbones(self) -> tuple[str, ...]:
        return (self.backbone, *self.other_backbones)


@dataclass(frozen=True)
class InputSettings:
    """The input-pipeline study: which images, how many, through how many loader workers."""
    backbone: str                      # its image processor sets the transforms' sizes
    dataset: str | None                # a dataset's test split, or None for synthetic JPEGs
    root_path: str
    images: int
    size: tuple[int, int]              # synthetic image width, height
    quality: int                       # synthetic JPEG quality
    num_workers: tuple[int, ...]
    batch_size: int
    repeats: int                       # timed passes after one warm-up pass
    torch_threads: int | None          # intra-op threads of the main process (None: torch's choice)
    step_ms: float = 20.0              # the simulated step of the input-wait measurement
    wait_steps: int = 20               # steps it runs
