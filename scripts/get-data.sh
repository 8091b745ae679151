#!/usr/bin/env bash
# Make sure Fashion-MNIST (Debian package dataset-fashion-mnist) is installed. Nothing is downloaded
# from anywhere else; other datasets are read from a local --data-dir.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  echo "data: installing the Debian package dataset-fashion-mnist"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "data: Fashion-MNIST is missing; install it with: sudo apt-get install dataset-fashion-mnist" >&2
  echo "      (or pass --data-dir DIR pointing at the four IDX files)" >&2
  exit 1
fi
