#!/bin/bash
# routing.guided_fraction 0.25 against the recipe's 0.5 on the three splits, bf16, 540 s, one thread per run, two side by side.
cd /work/main
R=runs/gf25
mkdir -p $R
b() { # out prior seeds...
  local out=$1 prior=$2; shift 2
  .venv/bin/fastad bench --settings out-of-domain --config-size --comparisons time --budget-seconds 540 \
    --methods x0-routed-smooth --seeds "$@" ${prior:+--ood-prior $prior} --set fast_ad.ddim_steps=10 \
    --set run.threads=1 --set distillation.holdout_images=0 --set distillation.autocast=bf16 \
    --set routing.guided_fraction=0.25 --out $R/$out > $R/$out.log 2>&1
}
( b shipped "" 0 1 2; b odd_a models/fmnist_prior_50k60k_classes0-2-4-6-8 0 ) &
( b split04 models/fmnist_prior_50k60k_classes5-9 0 1 2; b odd_b models/fmnist_prior_50k60k_classes0-2-4-6-8 1 2 ) &
wait
echo done > $R/DONE
