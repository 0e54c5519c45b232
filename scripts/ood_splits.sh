#!/usr/bin/env bash
# Out-of-domain recipes on every class split, bench size, equal time, 3 seeds, one thread.
cd /work/main
for split in "$@"; do
  .venv/bin/fastad bench --settings out-of-domain --ood-prior models/fmnist_prior_50k60k_$split --comparisons time --set fast_ad.ddim_steps=10 \
    --methods none none-noclip cadr x0-routed-smooth --set run.threads=1 --set distillation.holdout_images=0 --out runs/ood_$split
done
