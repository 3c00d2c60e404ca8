#!/usr/bin/env bash
# The baselines of the field's tables over the paper's protocol: 11 datasets x shots 1 2 4 8 16 x seeds 1 2 3,
# ViT-B/16, on the same draws and test sets as the adapters (docs/baselines.md). One sweep over them, in the
# methods table's order: the first run on a dataset encodes its test set once, every later run reads the
# stored embeddings.
#   BASELINES  the baselines to run (default: every baseline of the methods table, the group `baselines`)
# Resumable like run_lora.sh, with the same environment variables (DATASETS, SHOTS, SEEDS, BACKBONE,
# ROOT_PATH, RESULTS_FILE, LOG_DIR, EXTRA_ARGS, JOBS, DEVICES, ...); arguments go to sweep.py, e.g.
# --dry-run. Baselines save no adapter, so SAVE_PATH is not passed on. Tables: python summarize.py RESULTS_FILE.
set -euo pipefail
SAVE_PATH="" exec python "$(dirname "$0")/sweep.py" --modes ${BASELINES:-baselines} "$@"
