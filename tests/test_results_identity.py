"""qlora_clip/results.py: which flags make a run's identity (comparable_config), and the defaults older
lines take for flags they predate."""
from __future__ import annotations

from qlora_clip.run.results import comparable_config
from run_utils import flag_defaults, parse_args


def test_protocol_flags_tell_runs_apart_and_default_for_older_lines():
    plain = comparable_config(vars(parse_args(["--dataset", "imagenet"])), flag_defaults())
    assert plain == comparable_config({k: v for k, v in plain.items() if k not in ("protocol", "eval_datasets")}, flag_defaults())
    assert plain != comparable_config(vars(parse_args(["--dataset", "imagenet", "--protocol", "base2new"])), flag_defaults())
    assert plain != comparable_config(vars(parse_args(["--dataset", "imagenet", "--eval_datasets", "imagenet_a"])), flag_defaults())
