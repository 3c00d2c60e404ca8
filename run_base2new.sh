#!/usr/bin/env bash
# Base-to-novel generalization (CoCoOp's protocol) for one method: 11 datasets x 16 shots x seeds 1 2 3,
# ViT-B/16; each run trains on the base half of the classes and tests base and new classes apart.
#   ./run_base2new.sh METHOD [sweep.py arguments]    METHOD: any --mode of docs/methods.md (lora, qlora, coop, ...)
# Resumable like run_lora.sh, with the same environment variables (DATASETS, SHOTS, SEEDS, BACKBONE,
# ROOT_PATH, RESULTS_FILE, SAVE_PATH, LOG_DIR, EXTRA_ARGS); SHOTS defaults to 16 (adapters and logs
# go to <dataset>/base2new/..., apart from the few-shot runs'). Table: python summarize.py RESULTS_FILE --tables base2new --reference. See docs/workflows.md.
set -euo pipefail
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: $0 METHOD [sweep.py arguments], METHOD: any --mode of main.py (python main.py --help lists them)" >&2
  exit 2
fi
mode="$1"
shift
SHOTS="${SHOTS:-16}" EXTRA_ARGS="--protocol base2new ${EXTRA_ARGS:-}" \
  exec python "$(dirname "$0")/sweep.py" --mode "$mode" "$@"
