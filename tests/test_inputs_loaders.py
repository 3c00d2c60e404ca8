"""qlora_clip/inputs/loaders.py: augmented train images seeded per image, DataLoader workers that change
nothing the run computes, and how many workers a run gets by default."""
from __future__ import annotations

import torch
from saved_weights import saved_adapter

import main
from qlora_clip.inputs.loaders import default_num_workers

CPU = torch.device("cpu")


def test_augmentation_seeds_no_device_generator_and_leaves_the_global_one_alone(monkeypatch):
    from qlora_clip.inputs.loaders import AugmentedImages
    from qlora_clip.inputs.train_images import DecodedImages

    device_seeds = []
    for name in ("manual_seed", "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda seed, name=name: device_seeds.append((name, seed)))
    pixels = torch.randint(0, 256, (30 * 40 * 3,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images = DecodedImages(pixels, torch.tensor([0]), torch.tensor([[30, 40]]))
    augmented = AugmentedImages(images, [7], size=16)
    before = torch.get_rng_state()
    first, label = augmented[(0, 123)]
    again, _ = augmented[(0, 123)]
    other, _ = augmented[(0, 124)]
    assert device_seeds == []
    assert label == 7
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_worker_processes_load_the_same_images(tiny_argv):
    serial = main.main(tiny_argv("--n_iters", "0"))
    parallel = main.main(tiny_argv("--n_iters", "0", "--num_workers", "2"))
    assert parallel["config"]["num_workers"] == 2
    assert parallel["test_acc"] == serial["test_acc"]


def test_two_loader_workers_train_the_same_weights_as_none(tiny_argv, tmp_path):
    run = ["--n_iters", "2", "--lr", "1e-2"]
    serial = main.main(tiny_argv(*run, "--num_workers", "0", "--save_path", str(tmp_path / "w0")))
    parallel = main.main(tiny_argv(*run, "--num_workers", "2", "--save_path", str(tmp_path / "w2")))
    a, b = saved_adapter(tmp_path / "w0"), saved_adapter(tmp_path / "w2")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert parallel["final_loss"] == serial["final_loss"]
    assert parallel["test_acc"] == serial["test_acc"]


def test_workers_default_to_none_on_the_cpu_and_to_the_free_cpus_on_a_gpu(monkeypatch):
    assert default_num_workers(CPU) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert default_num_workers(torch.device("cuda")) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four GPU processes share the 16 CPUs
    assert default_num_workers(torch.device("cuda")) == 3
