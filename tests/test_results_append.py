"""Concurrent appends to one results file: what several sweeps on several GPUs or machines do."""
from __future__ import annotations

import hashlib
import multiprocessing

from qlora_clip.run.results import append_jsonl, read_results

WRITERS = 8
LINES = 150


def _record(writer: int, i: int) -> dict:
    # Sizes up to ~256 KB: far above the pipe-buffer size below which small writes are atomic anyway.
    payload = f"{writer}-{i}-" * (1 + (i * 7919 + writer * 104729) % 20000)
    return {"mode": "lora", "dataset": "dtd", "shots": 1, "seed": writer, "backbone": "tiny",
            "writer": writer, "i": i, "payload": payload, "sha": hashlib.sha256(payload.encode()).hexdigest()}


def _append_many(path: str, writer: int, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()  # every writer begins at the same moment
    for i in range(LINES):
        append_jsonl(path, _record(writer, i))


def test_many_processes_appending_at_once_lose_and_tear_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    writers = [context.Process(target=_append_many, args=(str(path), w, start)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=300)
        assert process.exitcode == 0

    records, problems = read_results(path)
    assert problems == []
    assert len(records) == WRITERS * LINES
    assert len(path.read_bytes().splitlines()) == WRITERS * LINES  # no blank or extra lines either
    for record in records:
        assert hashlib.sha256(record["payload"].encode()).hexdigest() == record["sha"]
    for writer in range(WRITERS):  # each writer's lines all there, in the order it wrote them
        assert [r["i"] for r in records if r["writer"] == writer] == list(range(LINES))
    # The writers really overlapped: the file does not hold them one after another.
    order = [r["writer"] for r in records]
    assert sum(a != b for a, b in zip(order, order[1:])) > WRITERS
