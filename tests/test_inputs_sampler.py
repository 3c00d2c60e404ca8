"""qlora_clip/inputs/sampler.py: the images of each step, CLIP-LoRA's epochs with their short last batch,
a stream that depends on the seed and the step only, and shares for several processes."""
from __future__ import annotations

from qlora_clip.inputs.sampler import TrainBatchSampler


def test_epochs_keep_their_short_last_batch():
    sampler = TrainBatchSampler(37, 32, 1, seed=1)  # 1-shot Oxford Pets at batch 32
    assert [sampler.step_images(s) for s in range(5)] == [32, 5, 32, 5, 32]
    assert sampler.images_seen(4) == 74
    assert sampler.images_seen(0) == 0
    for epoch in range(3):
        first, second = sampler.step_batch(2 * epoch), sampler.step_batch(2 * epoch + 1)
        assert sorted(i for i, _ in first + second) == list(range(37))  # each image once per epoch
    assert sampler.step_batch(0) != sampler.step_batch(2)  # a fresh shuffle each epoch


def test_a_train_set_smaller_than_a_batch_is_one_batch_every_step():
    sampler = TrainBatchSampler(12, 32, 1, seed=3)
    assert [sampler.step_images(s) for s in range(3)] == [12, 12, 12]
    assert sampler.images_seen(3) == 36
    assert sorted(i for i, _ in sampler.step_batch(1)) == list(range(12))


def test_dassls_epochs_drop_their_short_last_batch():
    """The prompt learners' recipe: an epoch is its full batches (Dassl's drop_last), a fresh shuffle each."""
    sampler = TrainBatchSampler(37, 16, 1, seed=1, drop_last=True)
    assert sampler.steps_per_epoch == 2
    assert [sampler.step_images(s) for s in range(5)] == [16] * 5
    assert sampler.images_seen(4) == 64
    first = [i for s in (0, 1) for i, _ in sampler.step_batch(s)]
    assert len(set(first)) == 32  # 5 of the 37 left out this epoch
    assert first != [i for s in (2, 3) for i, _ in sampler.step_batch(s)]
    small = TrainBatchSampler(12, 32, 1, seed=3, drop_last=True)  # fewer than a batch: still one batch
    assert (small.steps_per_epoch, small.step_images(0), small.images_seen(2)) == (1, 12, 24)


def test_the_stream_is_a_pure_function_of_seed_and_step():
    fresh = iter(TrainBatchSampler(37, 32, 2, seed=5))
    stream = [next(fresh) for _ in range(10)]  # 5 steps x 2 micro-batches
    resumed = TrainBatchSampler(37, 32, 2, seed=5)
    resumed.start_at_step(3)
    assert [next(iter(resumed)) for _ in range(1)] == stream[6:7]
    seeds = [seed for micro in stream for _, seed in micro]
    assert len(seeds) == 32 + 5 + 32 + 5 + 32  # one augmentation seed per image drawn
    assert len(set(seeds)) == len(seeds)  # none drawn twice


def test_a_later_stage_continues_the_runs_stream_where_the_offset_says():
    run = TrainBatchSampler(37, 32, 1, seed=2)
    stage = TrainBatchSampler(37, 32, 1, seed=2, offset=3)  # a method's second stage, after 3 steps
    assert [stage.step_batch(s) for s in range(4)] == [run.step_batch(s) for s in range(3, 7)]
    assert [stage.step_images(s) for s in range(3)] == [5, 32, 5]
    assert stage.images_seen(3) == run.images_seen(6) - run.images_seen(3) == 42
    assert next(iter(stage)) == run.step_batch(3)


def test_ranks_share_each_micro_batch_without_overlap_even_when_short():
    one = TrainBatchSampler(37, 32, 2, seed=1)
    ranks = [TrainBatchSampler(37, 32, 2, seed=1, rank=r, world=3) for r in range(3)]
    for step in range(4):
        for m, whole in enumerate(one.micro_batches(step)):
            shares = [r.micro_batches(step)[m] for r in ranks]
            assert sorted(x for share in shares for x in share) == sorted(whole)
    assert [len(r.micro_batches(1)[1]) for r in ranks] == [1, 1, 0]  # 5 images: micro-batches of 3 and 2
