#!/bin/bash
# routing.guided_fraction 0 (only the balanced targets of uncovered classes guided, half of each batch) on the three
# splits, bf16, 540 s, one thread each, two processes at a time; the shipped split beside unguided sampling (`none`).
cd /work/main
# (run after paired_run.sh had finished)
bench () {  # $1 out dir, $2 method, $3 extra args
  .venv/bin/fastad bench --settings out-of-domain --config-size --comparisons time --budget-seconds 540 \
    --methods $2 --seeds 0 1 2 $3 --set fast_ad.ddim_steps=10 --set run.threads=1 --set distillation.holdout_images=0 \
    --set distillation.autocast=bf16 --out $1 > $1.log 2>&1
}
mkdir -p runs/gf0
bench runs/gf0/split04 x0-routed-smooth "--ood-prior models/fmnist_prior_50k60k_classes5-9 --set routing.guided_fraction=0" &
bench runs/gf0/odd x0-routed-smooth "--ood-prior models/fmnist_prior_50k60k_classes0-2-4-6-8 --set routing.guided_fraction=0" &
wait
bench runs/gf0/shipped x0-routed-smooth "--set routing.guided_fraction=0" &
bench runs/gf0/shipped_none none "" &
wait
echo done > runs/gf0.DONE
