"""bench_data.py measures the real train and test loaders and reports one JSON line per setting."""
from __future__ import annotations

import json

import bench_data


def test_bench_reports_images_per_second_for_each_pipeline_and_worker_count(capsys):
    bench_data.main(["--images", "8", "--size", "64x48", "--num_workers", "0", "1",
                     "--batch_size", "4", "--repeats", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["pipeline"], r["num_workers"]) for r in lines] == [
        ("train", 0), ("test", 0), ("train", 1), ("test", 1)]
    assert all(r["images_per_s"] > 0 and r["images"] == 8 and r["nproc"] >= 1 for r in lines)
