#!/usr/bin/env bash
# Every method of the table (docs/methods.md) under one protocol: the same few-shot draw, schedule,
# results line and tables, over 11 datasets x shots 1 2 4 8 16 x seeds 1 2 3, ViT-B/16, each method
# at its own defaults. MODES picks the methods (default: every method on the full-precision base,
# plus QLoRA, QDoRA and LoftQ; 'all' adds every -4bit entry). Resumable: runs already in RESULTS_FILE
# are skipped. Settings come from environment variables (DATASETS, SHOTS, SEEDS, BACKBONE, ROOT_PATH,
# RESULTS_FILE, SAVE_PATH, LOG_DIR, EXTRA_ARGS, JOBS, DEVICES, GPUS_PER_RUN, ...); arguments go to
# sweep.py, e.g. --dry-run. Then: python summarize.py "$RESULTS_FILE" --tables methods. See
# docs/methods.md.
set -euo pipefail
exec python "$(dirname "$0")/sweep.py" --modes ${MODES:-full-precision qlora qdora loftq} "$@"
