"""qlora_clip/export.py: --merge_export writes a plain CLIPModel that computes what the adapted model does."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

import main
from datasets import build_dataset
from qlora_clip.distributed import Distributed
from qlora_clip.encode import ClassPrompts, image_features
from qlora_clip.evaluator import EvalSet, EvalSettings, Evaluator, build_eval_set
from qlora_clip.model import load_clip
from qlora_clip.precision import resolve_precision
from run_utils import parse_args, run_spec

CPU = torch.device("cpu")


@pytest.mark.parametrize("mode", ["lora", "qlora", "qdora"])
def test_merged_export_is_a_plain_clip_with_the_adapters_outputs(mode, tiny_argv, tmp_path, color_folder):
    export = tmp_path / "merged"
    record = main.main(tiny_argv("--mode", mode, "--lr", "2e-2", "--n_iters", "2", "--merge_export", str(export),
                                 "--save_path", str(tmp_path / "ckpt")))
    assert record["merge_export"] == str(export)
    assert not (export / "adapter_config.json").exists()
    merged = CLIPModel.from_pretrained(export)  # nothing but transformers
    assert not any("lora" in name for name, _ in merged.named_parameters())

    args = parse_args(tiny_argv("--mode", mode, "--save_path", str(tmp_path / "ckpt"), "--eval_only"))
    data = build_dataset(args.dataset, args.root_path, args.shots, args.seed)
    bundle = load_clip(run_spec(args).model, CPU, torch.float32, saved_adapter=Path(record["adapter_dir"]))
    prompts = ClassPrompts(bundle.tokenizer, data.prompts(), CPU)
    settings = EvalSettings(bundle.image, 64, None, 0, Distributed(rank=0, world=1, device=CPU))
    test = build_eval_set("folder", data.test, data.load_image, prompts, settings)
    images = next(iter(test.loader))[0]
    bundle.model.eval()
    with torch.no_grad():
        adapted = image_features(bundle.model, images) @ prompts.features(bundle.model).T
        plain = image_features(merged, images) @ prompts.features(merged).T
    assert (adapted - plain).abs().max() > 0 or mode == "lora"  # computed through different layers
    torch.testing.assert_close(plain, adapted, rtol=1e-4, atol=1e-4)
    fp32 = resolve_precision("fp32", CPU)
    assert Evaluator(merged, fp32).accuracy(EvalSet("folder", test.loader, prompts)) == record["test_acc"]
