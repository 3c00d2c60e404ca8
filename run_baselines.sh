#!/usr/bin/env bash
# The baselines of the field's tables over the paper's protocol: 11 datasets x shots 1 2 4 8 16 x seeds 1 2 3,
# ViT-B/16, on the same draws and test sets as the adapters (docs/baselines.md). One sweep.py per baseline,
# in turn: the first run on a dataset encodes its test set once, every later run reads the cached features.
#   BASELINES  the baselines to run (default: all of them, in the order below)
# Resumable like run_lora.sh, with the same environment variables (DATASETS, SHOTS, SEEDS, BACKBONE,
# ROOT_PATH, RESULTS_FILE, LOG_DIR, EXTRA_ARGS, JOBS, DEVICES, ...); arguments go to every sweep.py, e.g.
# --dry-run. Baselines save no adapter, so SAVE_PATH is not passed on. Tables: python summarize.py RESULTS_FILE.
set -euo pipefail
BASELINES="${BASELINES:-zs_ensemble_imagenet zs_ensemble_dataset linear_probe lp_plus_plus tip_adapter tip_adapter_f clip_adapter coop}"
status=0
for mode in $BASELINES; do
  SAVE_PATH="" python "$(dirname "$0")/sweep.py" --mode "$mode" "$@" || status=$?
done
exit "$status"
