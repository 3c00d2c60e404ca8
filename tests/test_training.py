"""Training behaviour a user relies on, through the real entry point and the trainer."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import main
import trainer
from datasets import build_dataset
from qlora_clip import evaluator
from qlora_clip.distributed import Distributed
from qlora_clip.encode import ClassPrompts
from qlora_clip.errors import UserError
from qlora_clip.model import load_clip
from qlora_clip.precision import resolve_precision
from run_utils import parse_args, run_spec

CPU = torch.device("cpu")


def setup_run(*flags: str, root):
    args = parse_args(["--backbone", "tiny", "--dataset", "folder", "--root_path", str(root),
                       "--shots", "4", "--batch_size", "8", *flags])
    run = run_spec(args)
    data = build_dataset(args.dataset, args.root_path, args.shots, args.seed)
    torch.manual_seed(args.seed)
    bundle = load_clip(run.model, CPU, torch.float32)
    prompts = ClassPrompts(bundle.tokenizer, data.prompts(), CPU)
    stream = main.build_train_stream(data, bundle, run.train, run.data, Distributed(rank=0, world=1, device=CPU),
                                     num_workers=0)
    return run.train, bundle.model, prompts, stream


def adapter_weights(model, tower: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and tower in n}


@pytest.mark.parametrize("mode", ["lora", "qlora", "dora", "qdora"])
def test_one_step_trains_both_text_and_vision_adapters(mode, color_folder):
    args, model, prompts, loader = setup_run("--mode", mode, "--n_iters", "1", "--shots", "1", root=color_folder)
    assert args.n_iters * args.shots == 1
    before = {tower: adapter_weights(model, tower) for tower in ("text_model", "vision_model")}
    trainer.train(model, loader, prompts, args, resolve_precision("fp32", CPU))
    for tower, weights in before.items():
        after = adapter_weights(model, tower)
        changed = [n for n in weights if not torch.equal(weights[n], after[n])]
        # every adapter matrix of the tower moved, not just some of them
        assert len(changed) == len(weights) > 0, f"{tower}: {len(changed)}/{len(weights)} changed"


def count_text_passes(model) -> list[int]:
    calls = [0]
    model.base_model.model.text_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_text_is_reencoded_every_step_when_it_has_adapters(color_folder):
    args, model, prompts, loader = setup_run("--n_iters", "1", "--shots", "3",
                                             "--gradient_accumulation_steps", "2", root=color_folder)
    calls = count_text_passes(model)
    trainer.train(model, loader, prompts, args, resolve_precision("fp32", CPU))
    assert calls[0] == 3  # once per step, not per micro-step (qlora_clip/text_pass.py)


def test_frozen_text_is_encoded_once(color_folder):
    args, model, prompts, loader = setup_run("--encoder", "vision", "--n_iters", "1", "--shots", "3",
                                             root=color_folder)
    calls = count_text_passes(model)
    result = trainer.train(model, loader, prompts, args, resolve_precision("fp32", CPU))
    assert result.steps == 3 and calls[0] == 1


@pytest.mark.parametrize("shots, batch, accum", [
    (2, 8, 2),    # two micro-batches of 4 vs one batch of 8
    (3, 8, 8),    # 12 images: steps of 8 and a short 4, split into single images and empty micro-batches
    (3, 14, 7),   # a train set smaller than one batch, used whole: 12 images in micro-batches of 2 and 1
    (1, 8, 4),    # 4 images, smaller than the batch: one step of 4 single-image micro-batches
])
def test_gradient_accumulation_gives_the_same_update_as_one_big_batch(shots, batch, accum, color_folder,
                                                                      monkeypatch):
    """Micro-batches weigh by their image counts: every step's gradient equals the one without accumulation."""
    grads = []
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *a, **k):
        grads.append(torch.cat([p.grad.flatten() for g in self.param_groups for p in g["params"]]))
        return adamw_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    runs = []
    for steps_accum in ("1", str(accum)):
        grads.clear()
        config, model, prompts, loader = setup_run("--gradient_accumulation_steps", steps_accum, "--dropout_rate", "0",
                                                   "--n_iters", "1", "--shots", str(shots), "--batch_size", str(batch),
                                                   root=color_folder)
        assert len(loader.sampler.micro_batches(0)) == int(steps_accum) and len(loader.dataset) == 4 * shots
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(len(name)))
        result = trainer.train(model, loader, prompts, config, resolve_precision("fp32", CPU))
        runs.append((list(grads), result))
    (plain, plain_result), (accumulated, accumulated_result) = runs
    assert len(plain) == len(accumulated) == shots and plain[0].abs().sum() > 0
    for a, b in zip(plain, accumulated):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    assert accumulated_result.images_seen == plain_result.images_seen
    torch.testing.assert_close(accumulated_result.losses, plain_result.losses, rtol=1e-5, atol=1e-6)


def test_learning_rate_sets_the_first_step_size(color_folder):
    """AdamW's first step moves each weight by about lr, whatever the gradient's size."""
    for lr in (1e-3, 1e-2):
        args, model, prompts, loader = setup_run("--lr", lr and str(lr), "--n_iters", "1", "--shots", "1",
                                                 root=color_folder)
        before = adapter_weights(model, "lora_B")
        trainer.train(model, loader, prompts, args, resolve_precision("fp32", CPU))
        after = adapter_weights(model, "lora_B")
        largest = max((after[n] - before[n]).abs().max().item() for n in before)
        assert largest == pytest.approx(lr, rel=0.05)


def test_schedule_anneals_to_min_lr_over_n_iters_times_shots(color_folder, monkeypatch):
    seen = []
    original = torch.optim.lr_scheduler.CosineAnnealingLR

    def spy(optimizer, **kwargs):
        scheduler = original(optimizer, **kwargs)
        seen.append((kwargs["T_max"], kwargs["eta_min"], optimizer))
        return scheduler
    monkeypatch.setattr(torch.optim.lr_scheduler, "CosineAnnealingLR", spy)
    args, model, prompts, loader = setup_run("--n_iters", "2", "--shots", "2", root=color_folder)
    result = trainer.train(model, loader, prompts, args, resolve_precision("fp32", CPU))
    t_max, eta_min, optimizer = seen[0]
    assert result.steps == t_max == 4 and eta_min == 1e-6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-2 and optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_results_line_has_the_documented_schema(tiny_argv, tmp_path):
    record = main.main(tiny_argv("--mode", "qlora"))
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == json.loads(json.dumps(record))
    for key in ("mode", "dataset", "shots", "seed", "backbone", "config", "zero_shot_acc", "test_acc",
                "train_seconds", "peak_memory_mb", "memory_kind", "model_footprint_mb", "trainable_params",
                "total_steps", "device", "versions"):
        assert key in record, key
    assert record["memory_kind"] == "cpu_rss" and record["device"] == "cpu"
    assert record["total_steps"] == 4 and record["config"]["mode"] == "qlora"
    assert 0 <= record["test_acc"] <= 100 and record["peak_memory_mb"] > 0
    assert set(record["versions"]) >= {"torch", "transformers", "peft", "bitsandbytes"}
    main.main(tiny_argv("--mode", "lora"))
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2  # appended, not rewritten


def test_zero_iterations_only_evaluates(tiny_argv):
    record = main.main(tiny_argv("--n_iters", "0"))
    assert record["total_steps"] == 0 and record["test_acc"] == record["zero_shot_acc"]


def test_seed_and_shots_change_the_few_shot_draw(tiny_argv, tmp_path):
    subsets = {}
    for seed, shots in ((1, 4), (2, 4), (1, 2)):
        record = main.main(tiny_argv("--n_iters", "0", "--seed", str(seed), "--shots", str(shots)))
        subsets[seed, shots] = json.loads(open(record["subset_file"]).read())["train"]
    assert len(subsets[1, 4]) == 16 and len(subsets[1, 2]) == 8
    assert subsets[1, 4] != subsets[2, 4]


@pytest.mark.parametrize("mode", ["lora", "qdora"])
def test_saved_adapter_reproduces_its_accuracy_with_eval_only(mode, tiny_argv, tmp_path):
    save = ["--save_path", str(tmp_path / "ckpt"), "--mode", mode, "--lr", "1e-2", "--n_iters", "2"]
    trained = main.main(tiny_argv(*save))
    folder = Path(trained["adapter_dir"])
    assert folder == run_spec(parse_args(tiny_argv(*save))).adapter_dir
    assert (folder / "adapter_model.safetensors").exists() and (folder / "adapter_config.json").exists()
    evaluated = main.main(tiny_argv(*save, "--eval_only"))
    assert evaluated["test_acc"] == trained["test_acc"]
    assert evaluated["total_steps"] == 0 and evaluated["zero_shot_acc"] == trained["zero_shot_acc"]


def test_eval_only_refuses_a_missing_or_mismatched_adapter(tiny_argv, tmp_path):
    save = ["--save_path", str(tmp_path / "ckpt")]
    with pytest.raises(UserError, match=r"--eval_only: no saved adapter at .*Train with the same flags"):
        main.main(tiny_argv(*save, "--eval_only"))
    main.main(tiny_argv(*save))
    with pytest.raises(UserError, match=r"saved with other settings \(lora-.*: --r 2 \(flags: 4\)\)"):
        main.main(tiny_argv(*save, "--eval_only", "--r", "4"))
    with pytest.raises(UserError, match=r"--params \['q', 'k', 'v'\] \(flags: \['q'\]\)"):
        main.main(tiny_argv(*save, "--eval_only", "--params", "q"))


def test_worker_processes_load_the_same_images(tiny_argv):
    serial = main.main(tiny_argv("--n_iters", "0"))
    parallel = main.main(tiny_argv("--n_iters", "0", "--num_workers", "2"))
    assert parallel["config"]["num_workers"] == 2 and parallel["test_acc"] == serial["test_acc"]


def test_precision_is_decided_once():
    assert resolve_precision("auto", CPU).dtype == torch.float32
    assert resolve_precision("auto", torch.device("cuda")).dtype == torch.float16
    bf16 = resolve_precision("bf16", CPU)
    with bf16.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert not bf16.grad_scaler().is_enabled()
    assert resolve_precision("fp16", CPU).grad_scaler().is_enabled()


@pytest.mark.parametrize("encoder, passes", [("text", 1), ("both", 2)])
def test_frozen_vision_tower_encodes_the_test_images_once(encoder, passes, tiny_argv, monkeypatch):
    encoded = []
    image_features = evaluator.image_features

    def counting(model, images):
        encoded.append(len(images))
        return image_features(model, images)
    monkeypatch.setattr(evaluator, "image_features", counting)
    record = main.main(tiny_argv("--encoder", encoder, "--n_iters", "0", "--no_zero_shot_cache"))
    assert sum(encoded) == passes * 16  # the colour folder's test split has 16 images
    assert record["test_acc"] == record["zero_shot_acc"]


def saved_adapter(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    [path] = list(folder.rglob("adapter_model.safetensors"))
    return load_file(path)


@pytest.mark.parametrize("dtype, half", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_trains_end_to_end_under_cpu_autocast(dtype, half, tiny_argv, tmp_path, monkeypatch):
    """--compute_dtype fp16/bf16 on the CPU: base stored in that dtype, autocast in the step, fp32 adapters."""
    autocast_dtypes = []
    real_train = main.train

    def spying_train(model, loader, prompts, config, precision, *args, **kwargs):
        with precision.autocast():
            autocast_dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        layer = model.base_model.model.vision_model.encoder.layers[0].self_attn.q_proj
        assert layer.base_layer.weight.dtype == precision.dtype and layer.lora_A["default"].weight.dtype == torch.float32
        return real_train(model, loader, prompts, config, precision, *args, **kwargs)

    monkeypatch.setattr(main, "train", spying_train)
    run = ["--n_iters", "2", "--lr", "1e-2", "--dropout_rate", "0"]
    full = main.main(tiny_argv(*run, "--compute_dtype", "fp32", "--save_path", str(tmp_path / "fp32")))
    record = main.main(tiny_argv(*run, "--compute_dtype", dtype, "--save_path", str(tmp_path / dtype)))
    assert autocast_dtypes == [None, half]
    assert record["compute_dtype"] == dtype and record["total_steps"] == full["total_steps"] == 8
    assert math.isfinite(record["final_loss"])
    ours, reference = saved_adapter(tmp_path / dtype), saved_adapter(tmp_path / "fp32")
    trained = [k for k in ours if "lora_B" in k]
    assert all(ours[k].abs().sum() > 0 and torch.isfinite(ours[k]).all() for k in trained)  # B left zero
    # The same run in lower precision computes something else (AdamW amplifies the difference).
    assert any(not torch.equal(ours[k], reference[k]) for k in ours)


def test_dataset_template_reaches_the_prompts_through_main(tmp_path, monkeypatch):
    import dataset_trees as trees

    trees.build("dtd", tmp_path / "data")
    seen = []
    real_prompts = main.ClassPrompts

    def recording(tokenizer, prompts, device, *args, **kwargs):
        seen.append(list(prompts))
        return real_prompts(tokenizer, prompts, device, *args, **kwargs)

    monkeypatch.setattr(main, "ClassPrompts", recording)
    argv = ["--backbone", "tiny", "--dataset", "dtd", "--root_path", str(tmp_path / "data"), "--shots", "1",
            "--n_iters", "0", "--results_file", str(tmp_path / "r.jsonl")]
    main.main(argv)
    record = main.main(argv + ["--template", "dataset"])
    assert seen == [["a photo of a banded.", "a photo of a blotchy.", "a photo of a braided."],
                    ["banded texture.", "blotchy texture.", "braided texture."]]
    assert record["config"]["template"] == "dataset"


def test_two_loader_workers_train_the_same_weights_as_none(tiny_argv, tmp_path):
    run = ["--n_iters", "2", "--lr", "1e-2"]
    serial = main.main(tiny_argv(*run, "--num_workers", "0", "--save_path", str(tmp_path / "w0")))
    parallel = main.main(tiny_argv(*run, "--num_workers", "2", "--save_path", str(tmp_path / "w2")))
    a, b = saved_adapter(tmp_path / "w0"), saved_adapter(tmp_path / "w2")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert parallel["final_loss"] == serial["final_loss"] and parallel["test_acc"] == serial["test_acc"]


def test_on_step_callbacks_see_every_optimizer_step(color_folder):
    config, model, prompts, loader = setup_run("--n_iters", "2", "--shots", "2", root=color_folder)
    seen = []
    result = trainer.train(model, loader, prompts, config, resolve_precision("fp32", CPU), on_step=[seen.append])
    assert [r.step for r in seen] == [1, 2, 3, 4] and all(r.total_steps == 4 for r in seen)
    assert [r.loss for r in seen] == result.losses and seen[0].lr == pytest.approx(2e-4)
    assert seen[-1].lr < seen[0].lr and all(r.images == 8 and r.seconds > 0 and r.grad_scale is None for r in seen)
