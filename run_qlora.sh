#!/usr/bin/env bash
# QLoRA (4-bit NF4 base, double quantization) over the paper's protocol: 11 datasets x shots 1 2 4 8 16 x seeds 1 2 3, ViT-B/16.
# Resumable: runs already in RESULTS_FILE are skipped. One run per visible GPU at once, or a SLURM
# job array (--launcher slurm). Settings come from environment variables (DATASETS, SHOTS, SEEDS,
# BACKBONE, ROOT_PATH, RESULTS_FILE, SAVE_PATH, LOG_DIR, EXTRA_ARGS, JOBS, DEVICES, GPUS_PER_RUN, ...);
# arguments go to sweep.py, e.g. --dry-run. See docs/workflows.md.
set -euo pipefail
exec python "$(dirname "$0")/sweep.py" --mode qlora "$@"
