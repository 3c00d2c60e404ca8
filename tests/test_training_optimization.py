"""The methods' recipes (qlora_clip/training/optimization.py): CLIP-LoRA's for every adapter, and Dassl's for the
prompt learners, whose learning rate the training loop holds for each epoch (the warm-up epoch at 1e-5, then
the per-epoch cosine) with SGD's momentum and weight decay, over n_iters epochs of full batches."""
from __future__ import annotations

import math

import pytest
import torch

import main
import trainer
from datasets import build_dataset
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.table import METHODS
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.optimization import CLIP_LORA, build_optimizer, build_schedule, dassl, dassl_lr
from qlora_clip.training.precision import resolve_precision
from run_utils import parse_run

CPU = torch.device("cpu")


def test_dassls_schedule_stepped_per_step_is_dassls_stepped_per_epoch():
    """Dassl: ConstantWarmupScheduler(CosineAnnealingLR(T_max=epochs)), stepped once per epoch (torch's own
    scheduler as the reference); ours holds each epoch's value for its steps."""
    epochs, per_epoch, base = 5, 3, 0.0035
    recipe = dassl(epochs, 4, "test")
    optimizer = build_optimizer(recipe, [torch.zeros(1, requires_grad=True)], base, CPU)
    assert isinstance(optimizer, torch.optim.SGD)
    assert (optimizer.defaults["momentum"], optimizer.defaults["weight_decay"]) == (0.9, 5e-4)
    schedule = build_schedule(recipe, optimizer, epochs * per_epoch, per_epoch)
    ours = []
    for _ in range(epochs * per_epoch):
        ours.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    reference_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference_optimizer, T_max=epochs)
    expected = [1e-5]
    for _ in range(epochs - 1):
        expected.append(cosine.get_last_lr()[0])
        reference_optimizer.step()
        cosine.step()
    assert ours == pytest.approx([lr for lr in expected for _ in range(per_epoch)], rel=1e-12)
    # MaPLe's epochs by hand: 1e-5, then 0.0035 (1 + cos(k pi / 5)) / 2 for k = 0 .. 3
    assert [round(lr, 6) for lr in ours[::per_epoch]] == [1e-5, 0.0035, 0.003166, 0.002291, 0.001209]


def test_the_adapters_recipe_is_clip_loras_and_the_prompt_learners_dassls():
    assert all(METHODS[m].optimization == CLIP_LORA for m in ("lora", "qlora", "dora", "vera", "bitfit"))
    for mode, epochs, batch in (("cocoop", 10, 1), ("kgcoop", 100, 128), ("maple", 5, 4), ("promptsrc", 20, 4)):
        recipe = METHODS[mode].optimization
        assert (recipe.optimizer, recipe.schedule, recipe.unit, recipe.drop_last) == ("sgd", "dassl", "epochs", True)
        assert (recipe.iterations, recipe.batch_size) == (epochs, batch)
    assert METHODS["promptsrc"].optimization.default_iterations("fewshot") == 50
    assert CLIP_LORA.total_steps(500, 4, steps_per_epoch=3) == 2000
    assert METHODS["maple"].optimization.total_steps(5, 4, steps_per_epoch=3) == 15
    assert dassl_lr(0, 0.002, 10, 1, 1e-5) == 1e-5
    assert dassl_lr(9, 0.002, 10, 1, 1e-5) == pytest.approx(0.001 * (1 + math.cos(math.pi * 8 / 10)))


def test_the_training_loop_runs_the_methods_epochs_at_their_learning_rates(color_folder):
    """KgCoOp for 3 epochs of 16 images in batches of 4 (--batch_size overrides its 128): 4 steps an epoch, the
    first epoch at 1e-5, then Dassl's cosine; SGD moves only its context."""
    spec = parse_run(["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder), "--shots", "4",
                      "--mode", "kgcoop", "--n_iters", "3", "--batch_size", "4"])
    data = build_dataset(spec.dataset, spec.data.root_path, spec.shots, spec.seed)
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    prompts = ClassPrompts(adapted.bundle.tokenizer, data.prompts(), CPU, classes=data)
    stream = main.build_train_stream(data, adapted.bundle, spec.train, spec, Distributed(0, 1, CPU), num_workers=0)
    seen = []
    result = trainer.train(adapted, stream, prompts, spec.train, resolve_precision("fp32", CPU), on_step=[seen.append])
    assert result.steps == 12
    assert [r.images for r in seen] == [4] * 12
    expected = [dassl_lr(epoch, 0.002, 3, 1, 1e-5) for epoch in range(3) for _ in range(4)]
    assert [r.lr for r in seen] == pytest.approx(expected, rel=1e-12)
    assert expected[4] == pytest.approx(0.002)
