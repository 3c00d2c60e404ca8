#!/usr/bin/env bash
# Cross-dataset transfer and domain generalization for one method: train on ImageNet (16 shots, all
# classes, seeds 1 2 3, ViT-B/16), then evaluate each adapter on the full test sets of the other 10
# datasets and of ImageNet-V2, -Sketch, -A and -R, zero-shot beside it.
#   ./run_cross_dataset.sh METHOD [sweep.py arguments]  METHOD: any --mode of docs/methods.md (lora, qlora, coop, ...)
# Resumable like run_lora.sh, with the same environment variables; DATASETS (the sources) defaults to
# imagenet, SHOTS to 16, LOG_DIR to logs/cross_dataset, and TARGETS (the --eval_datasets) to the 14
# above; a source other than ImageNet needs TARGETS without itself. Tables: python summarize.py
# RESULTS_FILE --tables cross_dataset,domain_generalization. See docs/workflows.md.
set -euo pipefail
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: $0 METHOD [sweep.py arguments], METHOD: any --mode of main.py (python main.py --help lists them)" >&2
  exit 2
fi
mode="$1"
shift
here="$(dirname "$0")"
targets="${TARGETS:-$(PYTHONPATH="$here" python -c 'from qlora_clip import paper as p; print(*p.CROSS_DATASET_TARGETS, *p.DOMAIN_TARGETS)')}"
DATASETS="${DATASETS:-imagenet}" SHOTS="${SHOTS:-16}" LOG_DIR="${LOG_DIR:-logs/cross_dataset}" \
  EXTRA_ARGS="--eval_datasets $targets ${EXTRA_ARGS:-}" \
  exec python "$here/sweep.py" --mode "$mode" "$@"
