#!/usr/bin/env bash
# Offline demo: set up, then zero-shot, LoRA, QLoRA and DoRA on Fashion-MNIST with the tiny
# random CLIP (or another family's tiny checkpoint; built locally, no download), then the baselines on the
# same draw (their papers' hyperparameters, docs/baselines.md; CLIP only), and the seed's efficiency table.
#
# The tiny model is random, so the demo trains harder than the paper protocol (lr 5e-3, r 8,
# 20 x 16 steps) to show a clear gain in a couple of minutes on 2 CPU cores.
#   DEMO_N_ITERS   iterations per shot (default 20; total steps = DEMO_N_ITERS x 16)
#   DEMO_RESULTS   results file (default: a new results/demo-<time>.jsonl)
#   DEMO_MODES     methods to run (default: lora qlora dora)
#   DEMO_BASELINES baselines to run after them (default: every one but zs_ensemble_dataset, which on
#                  Fashion-MNIST is the ImageNet ensemble: CLIP has no template set for it; '' = none)
#   DEMO_BACKBONE  the tiny checkpoint: tiny (CLIP, default), tiny-siglip, tiny-siglip2, tiny-metaclip2
#   SKIP_SETUP=1   skip setup.sh (pip and apt), for a machine set up beforehand
set -euo pipefail
cd "$(dirname "$0")"

if [ "${SKIP_SETUP:-0}" != 1 ]; then
  bash setup.sh
fi

N_ITERS="${DEMO_N_ITERS:-20}"
RESULTS="${DEMO_RESULTS:-results/demo-$(date +%Y%m%d-%H%M%S).jsonl}"
MODES="${DEMO_MODES:-lora qlora dora}"
BACKBONE="${DEMO_BACKBONE:-tiny}"
# The baselines are CLIP's (main.py refuses them on another family): by default they run with tiny only.
DEFAULT_BASELINES="zs_ensemble_imagenet linear_probe lp_plus_plus tip_adapter tip_adapter_f clip_adapter coop"
[ "$BACKBONE" = tiny ] || DEFAULT_BASELINES=""
BASELINES="${DEMO_BASELINES-$DEFAULT_BASELINES}"

for mode in $MODES; do
  echo "== $mode"
  python3 main.py --backbone "$BACKBONE" --dataset fashion_mnist --root_path DATA --shots 16 --seed 1 \
    --mode "$mode" --r 8 --lr 5e-3 --n_iters "$N_ITERS" --results_file "$RESULTS"
done
for mode in $BASELINES; do
  echo "== $mode"
  python3 main.py --backbone "$BACKBONE" --dataset fashion_mnist --root_path DATA --shots 16 --seed 1 \
    --mode "$mode" --results_file "$RESULTS"
done

echo
echo "Results: $RESULTS"
python3 summarize.py "$RESULTS" --tables efficiency
