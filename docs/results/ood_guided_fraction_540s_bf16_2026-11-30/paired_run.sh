#!/bin/bash
# routing.guided_fraction 0.25 beside 0.5 in one window: the shipped split, then the odd split; bf16, 540 s, one thread each.
cd /work/main
run_pair () {  # $1 = out dir, $2 = extra args
  R=$1; mkdir -p $R
  for F in 0.25 0.5; do
    .venv/bin/fastad bench --settings out-of-domain --config-size --comparisons time --budget-seconds 540 \
      --methods x0-routed-smooth --seeds 0 1 2 $2 \
      --set fast_ad.ddim_steps=10 --set run.threads=1 --set distillation.holdout_images=0 \
      --set distillation.autocast=bf16 --set routing.guided_fraction=$F --out $R/gf$F > $R/gf$F.log 2>&1 &
  done
  wait
}
run_pair runs/gf_pair_shipped ""
run_pair runs/gf_pair_odd "--ood-prior models/fmnist_prior_50k60k_classes0-2-4-6-8"
echo done > runs/gf_pairs.DONE
