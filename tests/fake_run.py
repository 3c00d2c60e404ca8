"""A stand-in for main.py in the launcher tests: sleeps, then appends a results line (or fails first).

python fake_run.py RESULTS_FILE RUN_JSON SECONDS FAILURES ATTEMPTS_FILE
RUN_JSON holds the identity fields and the comparable config; the first FAILURES attempts (counted
in ATTEMPTS_FILE) exit with status 3 before writing anything.
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qlora_clip.run.results import append_jsonl  # noqa: E402

results_file, run_json, seconds, failures, attempts_file = sys.argv[1:]
attempts = Path(attempts_file)
attempt = int(attempts.read_text()) + 1 if attempts.exists() else 1
attempts.write_text(str(attempt))
print(f"fake run, attempt {attempt}", flush=True)
if attempt <= int(failures):
    sys.exit(3)
started = time.time()
time.sleep(float(seconds))
append_jsonl(results_file, {**json.loads(run_json), "started": started, "ended": time.time(),
                            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})
