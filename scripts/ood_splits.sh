#!/usr/bin/env bash
# The out-of-domain recipes on each class split's prior: bench size, equal time (60 s), seeds 0-2, one torch
# thread, every student scored on the validation and the report half (docs/research/student.md). The figures
# there were measured with 10 DDIM steps, pinned here.
#   scripts/ood_splits.sh classes0-4 classes5-9 classes0-2-4-6-8     (-> runs/ood_<split>/bench.md)
set -euo pipefail
cd "$(dirname "$0")/.."
FASTAD=${FASTAD:-.venv/bin/fastad}
for split in "$@"; do
  "$FASTAD" bench --settings out-of-domain --ood-prior "models/fmnist_prior_50k60k_$split" --comparisons time \
    --methods none none-noclip cadr x0-routed-smooth --set fast_ad.ddim_steps=10 --set run.threads=1 \
    --set distillation.holdout_images=0 --out "runs/ood_$split"
done
