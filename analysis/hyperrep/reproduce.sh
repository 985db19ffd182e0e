#!/usr/bin/env bash
# Regenerates the hyper-representation and zero-shot numbers of docs/analysis.md: builds the two
# embedded 256-model zoos (original, MP, VD) under ROOT, trains zoo-hyperrep on each, evaluates
# it beside the weight-statistics baseline and runs zero-shot sparsification on digits_256 (VD epochs 10 and 3).
# Usage: analysis/hyperrep/reproduce.sh [ROOT [EPOCHS]]   (default: stores 40; seeds: the defaults, 0)
set -euo pipefail
root=${1:-stores}
epochs=${2:-40}
out=${root}/hyperrep-results
mkdir -p "$out"
for zoo in digits_256 digits_random_256; do
  zoo-build --zoo "$zoo" --root "$root" --stages original,mp,vd --resume --quiet
  zoo-hyperrep train --zoo "$zoo" --root "$root" --epochs "$epochs" --out "$out/$zoo-hyperrep.pt" \
    | tee "$out/$zoo-train.txt"
done
# the larger codes of the docs' table: 64 values per token (z 3072 values for the CNN-s's 2464 parameters),
# alone and with a wider transformer
zoo-hyperrep train --zoo digits_256 --root "$root" --epochs "$epochs" --token-latent 64 \
  --out "$out/digits_256-hyperrep-latent64.pt" | tee "$out/digits_256-train-latent64.txt"
zoo-hyperrep train --zoo digits_256 --root "$root" --epochs "$epochs" --token-latent 64 --d-model 128 \
  --out "$out/digits_256-hyperrep-d128.pt" | tee "$out/digits_256-train-d128.txt"
# the VD twins' last epoch (10, ~87 % sparse) and epoch 3 (~45 % sparse, where the twins keep the dense accuracy)
zoo-hyperrep zero-shot --zoo digits_256 --root "$root" --out "$out/digits_256-zero-shot" \
  | tee "$out/digits_256-zero-shot.txt"
zoo-hyperrep zero-shot --zoo digits_256 --root "$root" --vd-epoch 3 --out "$out/digits_256-zero-shot-epoch3" \
  | tee "$out/digits_256-zero-shot-epoch3.txt"
