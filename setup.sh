#!/usr/bin/env bash
# Installs everything qlora-clip needs on a fresh Debian/Ubuntu machine: the pinned Python
# packages and the Fashion-MNIST demo data. Safe to run again: it skips what is present.
set -euo pipefail
cd "$(dirname "$0")"

python3 -m pip install --quiet --disable-pip-version-check -r requirements.txt

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ ! -d DATA/fashion_mnist ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
