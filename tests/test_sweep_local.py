"""The local launcher's scheduling, with a stand-in for main.py (tests/fake_run.py) so that it is fast.

Real main.py runs through the launcher are in test_sweep.py.
"""
from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from qlora_clip.run.results import append_jsonl, read_results
from run_utils import build_parser, run_spec
from sweeps import local as local_module
from sweeps import progress as progress_module
from sweeps.claims import Claims
from sweeps.local import LocalSweep, local_slots
from sweeps.plan import Run, SweepError
from sweeps.progress import Progress

FAKE = Path(__file__).with_name("fake_run.py")


def fake_run(tmp_path: Path, seed: int, seconds: float = 0.0, failures: int = 0) -> Run:
    flags = ["--mode", "qlora", "--dataset", "dtd", "--shots", "1", "--seed", str(seed), "--backbone", "tiny"]
    spec = run_spec(build_parser().parse_args(flags))
    record = {"mode": "qlora", "dataset": "dtd", "shots": 1, "seed": seed, "backbone": "tiny", "config": spec.identity}
    cmd = (sys.executable, str(FAKE), str(tmp_path / "results.jsonl"), json.dumps(record), str(seconds),
           str(failures), str(tmp_path / f"attempts{seed}"))
    return Run(spec, cmd, tmp_path / "logs" / f"seed{seed}.log")


def by_seed(tmp_path: Path) -> dict[int, dict]:
    records, problems = read_results(tmp_path / "results.jsonl")
    assert problems == []
    assert len({r["seed"] for r in records}) == len(records), "a run was recorded twice"
    return {r["seed"]: r for r in records}


def markers(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "results.jsonl.claims").glob("*.json"))


def test_each_concurrent_run_gets_its_own_gpu_and_a_slot_is_refilled_as_soon_as_a_run_ends(tmp_path):
    runs = [fake_run(tmp_path, 1, 0.5), fake_run(tmp_path, 2, 5.0), fake_run(tmp_path, 3, 0.5)]
    assert LocalSweep(runs, [("0",), ("1",)], str(tmp_path / "results.jsonl"), retries=0).run() == []
    r = by_seed(tmp_path)
    assert r[1]["started"] < r[2]["ended"]
    assert r[2]["started"] < r[1]["ended"]  # 1 and 2 at once
    assert r[3]["started"] < r[2]["ended"]  # 3 took 1's slot while 2 still ran
    assert {r[1]["cuda_visible_devices"], r[2]["cuda_visible_devices"]} == {"0", "1"}
    assert r[3]["cuda_visible_devices"] == r[1]["cuda_visible_devices"]
    assert markers(tmp_path) == []


def test_failed_runs_are_retried_and_those_failing_for_good_are_returned(tmp_path):
    runs = [fake_run(tmp_path, 1, failures=1), fake_run(tmp_path, 2, failures=5)]
    failed = LocalSweep(runs, [()], str(tmp_path / "results.jsonl"), retries=1).run()
    assert [(o.run.spec.seed, o.attempts, o.detail) for o in failed] == [(2, 2, "exit status 3")]
    assert list(by_seed(tmp_path)) == [1]
    assert by_seed(tmp_path)[1]["cuda_visible_devices"] == ""  # a CPU slot hides any GPU
    bad = (tmp_path / "logs" / "seed2.log").read_text()
    assert "attempt 1 of 2: " in bad
    assert "attempt 2 of 2: " in bad
    assert bad.count("==> exit status 3") == 2
    good = (tmp_path / "logs" / "seed1.log").read_text()
    assert good.count("==> exit status 3") == 1
    assert good.count("==> exit status 0") == 1
    assert (tmp_path / "attempts2").read_text() == "2"


def test_runs_another_sweep_holds_are_waited_for_and_never_run_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(local_module, "RECHECK_S", 0.2)
    results = str(tmp_path / "results.jsonl")
    finished_there, given_up_there = fake_run(tmp_path, 1), fake_run(tmp_path, 2)
    other = Claims(results)  # another sweep, alive (this process), holds both runs
    tokens = {run: other.acquire(run)[0] for run in (finished_there, given_up_there)}

    def other_sweep() -> None:
        time.sleep(1.5)
        append_jsonl(results, {**json.loads(finished_there.cmd[3]), "started": 0, "ended": 0})
        for run, token in tokens.items():  # it finishes one run and is stopped before the other
            other.release(run, token)

    threading.Thread(target=other_sweep).start()
    assert LocalSweep([finished_there, given_up_there], [()], results, retries=0).run() == []
    assert not (tmp_path / "attempts1").exists()  # never started here
    assert (tmp_path / "attempts2").read_text() == "1"  # run here once the other sweep let it go
    assert sorted(by_seed(tmp_path)) == [1, 2]


def test_ctrl_c_stops_the_runs_in_progress_and_releases_their_claims(tmp_path):
    sweep = LocalSweep([fake_run(tmp_path, 1, seconds=60)], [()], str(tmp_path / "results.jsonl"), retries=2)
    threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sweep.run()
    assert time.monotonic() - started < 30
    assert markers(tmp_path) == []
    log = (tmp_path / "logs" / "seed1.log").read_text()
    assert log.count("==> interrupted") == 1
    assert "attempt 2" not in log  # an interruption is not retried
    assert not (tmp_path / "results.jsonl").exists()


def test_slots_are_gpu_groups_or_the_cpu(monkeypatch, caplog):
    four = ["0", "1", "2", "3"]
    assert local_slots(four, 1, None) == [("0",), ("1",), ("2",), ("3",)]
    assert local_slots(four, 1, 2) == [("0",), ("1",)]
    assert local_slots(four, 2, None) == [("0", "1"), ("2", "3")]
    assert local_slots(["0", "1", "2"], 2, None) == [("0", "1")]
    assert "GPU(s) 2 left unused" in caplog.text
    with pytest.raises(SweepError, match="--jobs 5: 4 GPU"):
        local_slots(four, 1, 5)
    with pytest.raises(SweepError, match="lists a GPU twice"):
        local_slots(["0", "0"], 1, None)

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb")  # the sweep's own GPUs, however named
    assert local_slots(None, 1, None) == [("GPU-aa",), ("GPU-bb",)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: the CPU, one run at a time unless told
    assert local_slots(None, 1, None) == [()]
    assert local_slots(None, 1, 3) == [(), (), ()]
    with pytest.raises(SweepError, match="--gpus_per_run 2: no GPU is visible"):
        local_slots(None, 2, None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert local_slots(None, 0, 2) == [(), ()]  # --gpus_per_run 0: CPU runs even beside GPUs
    with pytest.raises(SweepError, match="--gpus_per_run 0 runs on the CPU"):
        local_slots(four, 0, None)


def test_progress_line_counts_runs_and_estimates_the_time_left_from_finished_runs(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = Progress(total=5, slots=2, file=out, enabled=True)
    assert progress.line() == "done 0 | running 0 | failed 0 | left 5 | ETA ?"
    progress.start("a")
    progress.start("b")
    clock[0] += 100
    progress.finish("a", ok=True, seconds=100)
    progress.start("c")
    clock[0] += 40
    progress.finish("c", ok=False)
    # b has run 140 s of a 100 s mean: done any moment; 2 runs left at 100 s on 2 slots -> 100 s.
    assert progress.line() == "done 1 | running 1 | failed 1 | left 2 | ETA 0:01:40"
    progress.start("d")
    progress.start("e")
    # b (0 s left), d and e (100 s each) on 2 slots: the longest running run bounds it.
    assert progress.eta() == 100
    progress.close()
    assert "done 1 | running 1 | failed 1 | left 2 | ETA 0:01:40" in out.getvalue()
    assert "2/5" in out.getvalue()
