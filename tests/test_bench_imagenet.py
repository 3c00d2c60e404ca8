"""The ImageNet-shaped study (bench/imagenet_shaped.py), shrunk to the tiny model: every setting on both paths,
the reference really is the earlier algorithm, and the FLOP model's ratios are the ones BENCHMARKS.md quotes."""
import pytest
import torch

from bench import cli, imagenet_shaped
from bench.gpu import GPU_PRESET
from bench.harness import load_model, random_batch
from bench.step_time import StepTimer
from bench.suite import STUDIES
from bench.text_reference import PerMicroBatchText
from qlora_clip.training.text_pass import PerUpdateText

CPU = torch.device("cpu")


@pytest.mark.slow
def test_the_study_times_both_paths_in_every_setting():
    settings = cli.parse_bench_args(["--preset", "imagenet", "--backbone", "tiny", "--steps", "1", "--warmup", "0"])
    summary, rows = STUDIES["imagenet"](settings, {"fp32": 1e12})
    assert [(r["setting"], r["path"]) for r in rows] == [
        ("1 process", "today"), ("1 process", "new"), ("accumulation 4", "today"), ("accumulation 4", "new"),
        ("2 processes", "today"), ("2 processes", "new")]
    for row in rows:
        assert row["step_s"] > 0
        assert row["num_classes"] == 1000
        assert row["peak_memory_mb"] > 0
        assert row["text_buckets"] == (4 if row["path"] == "new" else 1)
    today, new = rows[4], rows[5]
    assert today["text_tokens_per_rank"] == 18_000
    assert new["text_tokens_per_rank"] < 18_000 / 3  # half, bucketed
    assert summary["text_tokens_longest_padding"] == 18_000
    assert summary["text_tokens_bucketed"] < 18_000 / 1.6
    assert set(summary["speedups"]) == set(imagenet_shaped.TARGETS)
    assert summary["logits_max_abs_diff_buckets"] < 1e-4
    per_rank = summary["cost_model"]["per_rank"]
    assert per_rank["1p_accum4"]["today_gflop"] > 3 * per_rank["1p_accum1"]["today_gflop"]
    assert per_rank["1p_accum4"]["new_gflop"] == per_rank["1p_accum1"]["new_gflop"]  # one text pass either way


def test_the_reference_path_re_encodes_the_prompts_at_every_micro_batch():
    _, precision, adapted = load_model("tiny", "fp32", CPU, dropout=0.0)
    bundle = adapted.bundle
    pair = imagenet_shaped.paths(bundle.tokenizer, CPU)
    calls = [0]
    adapted.model.base_model.model.text_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    images, labels = random_batch(4, bundle.image.image_size, 1000, CPU)
    # new: one pass of its 4 length buckets
    for path, passes, text_pass in (("today", 4, PerMicroBatchText), ("new", 4 + 4, PerUpdateText)):
        prompts, per_update = pair[path]
        assert imagenet_shaped.text_pass(per_update) is text_pass  # the study times this path with it
        StepTimer(adapted, prompts, precision, text_pass=text_pass).step(images, labels, 4)
        assert calls[0] == passes


def vit_b16_config():
    from transformers import CLIPConfig

    from qlora_clip.backbones.tiny_clip import REAL_SHAPES

    shape = REAL_SHAPES["ViT-B/16"]
    return CLIPConfig(text_config=shape["text"], vision_config=shape["vision"], projection_dim=shape["projection_dim"])


def test_the_flop_model_gives_the_issues_imagenet_figures():
    """The issue's facts at batch 32, 1,000 prompts of 16 tokens (BENCHMARKS.md, "How cost grows")."""
    config = vit_b16_config()
    lengths = [16] * 1000
    gflop = lambda *args, per_update=False: imagenet_shaped.rank_flops(config, 32, lengths, *args,  # noqa: E731
                                                                       per_update=per_update) / 1e9
    assert gflop(1, 1, 0) == pytest.approx(4686, abs=1)
    assert gflop(4, 1, 0) == pytest.approx(11_900, rel=0.01)  # four text passes for one update
    assert gflop(4, 1, 0, per_update=True) == pytest.approx(4686, abs=1)
    image = imagenet_shaped.image_pass_flops(config, 4, 1000) / 1e9
    assert image == pytest.approx(283, rel=0.01)
    assert gflop(1, 8, 0) - image == pytest.approx(2400, rel=0.02)


def test_the_gpu_preset_runs_the_study_on_one_gpu_within_its_budget():
    settings = cli.parse_bench_args(["--preset", "imagenet"])
    gpu = settings.__class__(**{**settings.__dict__, **GPU_PRESET, "out_dir": "x"})
    assert "imagenet" in gpu.studies
    assert gpu.batch_sizes == (32,)
    # At a pessimistic 10 TFLOP/s sustained (an H200 peaks near 1,000 in fp16), with the model load:
    # about a minute of the preset's 8.
    assert imagenet_shaped.estimated_seconds(vit_b16_config(), gpu, 10e12) < 70


def test_the_preset_runs_only_the_study():
    settings = cli.parse_bench_args(["--preset", "imagenet"])
    assert settings.modes == ()
    assert settings.studies == ("imagenet",)
    assert settings.backbone == "ViT-B/16"
