"""qlora_clip/evaluation/selection.py: --select_on val chooses the reported step on the few-shot val images, reports
it in the protocol card, puts its weights back, and never reads the test set before training ends."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import main
from qlora_clip.evaluation.selection import ModelSelection, select_every
from qlora_clip.training.result import StepRecord


class Guarded:
    """The test set's images, which raise if read while training runs."""

    def __init__(self, loader, training: dict):
        self.loader, self.training = loader, training

    def __iter__(self):
        if self.training["now"]:
            raise AssertionError("the test images were read during training")
        return iter(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def guard_the_test_set(monkeypatch) -> dict:
    """While trainer.train runs, any pass over the run's test set (an evaluation, or its images) fails the run."""
    training = {"now": False, "test": None}
    real_train, real_build, real_evaluate = main.train, main.build_eval_set, main.Evaluator.evaluate

    def train(*args, **kwargs):
        training["now"] = True
        try:
            return real_train(*args, **kwargs)
        finally:
            training["now"] = False

    def build_eval_set(name, items, *args, **kwargs):
        built = real_build(name, items, *args, **kwargs)
        if training["test"] is None:  # main builds its test set first
            training["test"] = built
            built.loader = Guarded(built.loader, training)
        return built

    def evaluate(self, test, *args, **kwargs):
        # Also a frozen tower's embeddings kept from the zero-shot pass, which would not touch the loader.
        if training["now"] and test is training["test"]:
            raise AssertionError("the test set was evaluated during training")
        return real_evaluate(self, test, *args, **kwargs)
    monkeypatch.setattr(main, "train", train)
    monkeypatch.setattr(main, "build_eval_set", build_eval_set)
    monkeypatch.setattr(main.Evaluator, "evaluate", evaluate)
    return training


def test_select_on_val_reports_its_step_and_reads_no_test_image_before_training_ends(tiny_argv, monkeypatch):
    training = guard_the_test_set(monkeypatch)
    record = main.main(tiny_argv("--select_on", "val", "--select_every", "1", "--n_iters", "1", "--lr", "5e-2",
                                 "--eval_cache_dir", ""))
    card = record["protocol_card"]
    assert training["test"].name == "folder"
    assert card["selection"] == "best val accuracy"
    assert card["select_every"] == 1
    steps = [step for step, _ in card["val_checks"]]
    assert steps == [1, 2, 3, 4]  # 4 shots x 1 iteration
    # The chosen step has the best val accuracy (among equals, the lowest val NLL: the unit tests below).
    assert dict(card["val_checks"])[card["selected_step"]] == max(acc for _, acc in card["val_checks"])
    # The colour folder has 3 val images per class, 4 drawn for each (with repetition, as the protocol does).
    distinct = len({source for source, _ in json.loads(Path(record["subset_file"]).read_text())["val"]})
    assert distinct < 16
    assert card["validation"] == f"the few-shot val images (16, 4 per class, {distinct} distinct)"
    assert card["test_set_used_to_choose"] is False
    assert card["label"] == "flags changed from the defaults; best val accuracy; few-shot val images"


def test_the_guard_fails_a_run_that_chooses_on_the_test_set(tiny_argv, monkeypatch):
    """The guard above can fail: a selection whose 'val' set is the test set stops the run."""
    training = guard_the_test_set(monkeypatch)
    real_for_run = ModelSelection.for_run

    def on_the_test_set(settings, total_steps, evaluator, val_set, val_images):
        return real_for_run(settings, total_steps, evaluator, lambda: training["test"], val_images)
    monkeypatch.setattr(main.ModelSelection, "for_run", on_the_test_set)
    with pytest.raises(AssertionError, match="during training"):
        main.main(tiny_argv("--select_on", "val", "--eval_cache_dir", ""))


# --- the selection itself, on a one-weight model -------------------------------------------------------------------

def fake_run(accuracies: list[float], nlls: list[float], every: int = 1):
    """A selection over len(accuracies) steps whose val checks return these figures, on a model with one weight set to
    the step's number after each step."""
    model = torch.nn.Linear(1, 1, bias=False)
    adapted = SimpleNamespace(model=model)
    checks = iter(zip(accuracies, nlls))

    def evaluate():
        accuracy, nll = next(checks)
        return SimpleNamespace(accuracy=accuracy, calibration=SimpleNamespace(nll=nll))
    total = len(accuracies) * every
    selection = ModelSelection("val", total, every, 8, evaluate)
    [callback] = selection.callbacks(adapted)
    for step in range(1, total + 1):
        with torch.no_grad():
            model.weight.fill_(step)
        callback(StepRecord(step, total, 0.0, 0.0, 0.0, 1, None))
    return selection, adapted


def test_the_best_val_accuracy_wins_ties_go_to_the_lower_nll_then_the_earlier_step():
    selection, adapted = fake_run([50.0, 75.0, 75.0, 75.0, 25.0], [1.0, 0.9, 0.8, 0.8, 0.1])
    assert selection.selected_step == 3
    assert adapted.model.weight.item() == 5  # the last step's weights until restored
    selection.restore(adapted)
    assert adapted.model.weight.item() == 3
    assert selection.card()["val_checks"] == [[1, 50.0], [2, 75.0], [3, 75.0], [4, 75.0], [5, 25.0]]


def test_checks_every_n_steps_and_after_the_last():
    selection, _ = fake_run([10.0, 20.0, 30.0], [1.0, 1.0, 1.0], every=4)
    assert [check.step for check in selection.checks] == [4, 8, 12]
    assert select_every(0, 95) == 10  # 10 checks over the run by default
    assert select_every(7, 95) == 7


def test_the_last_step_selection_checks_nothing_and_reports_the_loops_last_step():
    selection = ModelSelection("last", 12)
    [on_step] = selection.callbacks(SimpleNamespace(model=None))
    # A recipe that counts epochs (the prompt learners') takes other steps than n_iters x shots: the loop's count wins.
    on_step(SimpleNamespace(step=1, total_steps=30))
    assert selection.checks == []
    assert selection.card() == {"selection": "last step", "selected_step": 30}
