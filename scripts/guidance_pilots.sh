#!/usr/bin/env bash
# The pilots that chose cadr-routed-lowpass, x0-routed-lowpass and x0-routed-smooth (docs/guidance.md, "Pilots"):
# out-of-domain setting, equal images, held-out seeds 10-14 (the bench reports seeds 0-2), one `fastad bench` per
# pilot, PARALLEL at a time. They ran on an H100 and an H200 (device cuda, 2-3 minutes per batch of 12-15
# pilots); on a 2-core CPU each run takes one to two minutes of one core.
#
#   scripts/guidance_pilots.sh [DEVICE] [NAME ...]     # default: cuda, every pilot
#   python scripts/pilot_table.py runs/pilot           # the table
#   FASTAD="python -m fastad" SETS="data.root=DIR" ... # without an installed entry point; test split elsewhere
set -euo pipefail
DEVICE=${1:-cuda}; shift || true
SEEDS=${SEEDS:-"10 11 12 13 14"}
PARALLEL=${PARALLEL:-12}
FASTAD=${FASTAD:-fastad}
SETS=${SETS:-}   # extra config overrides for every pilot, e.g. SETS="data.root=/data/fmnist"
R="clip_x0=false guide_classes=uncovered guided_fraction=0.5"   # cadr-routed's routing, no clamp
C="guide_classes=uncovered guided_fraction=0.5 grad_pool=4 x0_step=0.3"  # rule x0 routed, clamp on
L="$R eta=0.3 grad_pool=4 view_augment=true"  # cadr-routed-lowpass
X="$C bn_weight=0 smooth_samples=4 smooth_sigma=0.6"  # the x0 rule on a randomised-smoothing teacher
X1="$X inner_steps=1"
PILOTS=(  # name;method;fast_ad overrides (later ones win)
  "none;none;" "none-noclip;none-noclip;" "cadr-routed;cadr-routed;"
  "routed-views;cadr;$R eta=0.3 view_augment=true" "routed-views-eta0.6;cadr;$R eta=0.6 view_augment=true"
  "routed-bn0;cadr;$R eta=0.3 bn_weight=0" "routed-bn3;cadr;$R eta=0.3 bn_weight=3"
  "routed-cov1;cadr;$R eta=0.3 coverage_threshold=1.0" "routed-frac0.3;cadr;$R eta=0.3 guided_fraction=0.3"
  "routed-frac0.7;cadr;$R eta=0.3 guided_fraction=0.7" "routed-clip;cadr;$R eta=0.3 clip_x0=true"
  "routed-fixed;fixed;$R eta=0.3" "routed-rec;cadr;$R eta=0.3 recurrence=1"
  "routed-late;cadr;$R eta=0.3 t_window=[0.0,0.5]" "routed-early;cadr;$R eta=0.3 t_window=[0.5,1.0]"
  "routed-x0;x0;$R" "routed-x0-views;x0;$R view_augment=true"
  "R-pool2;cadr;$R eta=0.3 grad_pool=2" "R-pool4;cadr;$R eta=0.3 grad_pool=4"
  "R-pool4-eta0.6;cadr;$R eta=0.6 grad_pool=4" "R-pool4-eta1;cadr;$R eta=1.0 grad_pool=4"
  "R-pool7-eta0.6;cadr;$R eta=0.6 grad_pool=7" "R-pool4-views-eta0.6;cadr;$R eta=0.6 grad_pool=4 view_augment=true"
  "R-views-eta1;cadr;$R eta=1.0 view_augment=true" "X0R-pool4;x0;$R grad_pool=4"
  "X0R-pool4-step0.3;x0;$R grad_pool=4 x0_step=0.3" "X0R-pool4-step0.3-clip;x0;$R grad_pool=4 x0_step=0.3 clip_x0=true"
  "R-pool4-eta0.6-bn3;cadr;$R eta=0.6 grad_pool=4 bn_weight=3"
  "R-pool4-eta0.6-ddim20;cadr;$R eta=0.6 grad_pool=4 ddim_steps=20"
  "R-pool4-views-eta0.3;cadr;$R eta=0.3 grad_pool=4 view_augment=true"
  "R-pool4-views-eta0.6-cov1;cadr;$R eta=0.6 grad_pool=4 view_augment=true coverage_threshold=1.0"
  "R-pool4-cov1;cadr;$R eta=0.3 grad_pool=4 coverage_threshold=1.0"
  "R-pool4-views-eta0.6-frac0.7;cadr;$R eta=0.6 grad_pool=4 view_augment=true guided_fraction=0.7"
  "X0C-inner5;x0;$C inner_steps=5" "X0C-step0.5;x0;$C x0_step=0.5" "X0C-pool7;x0;$C grad_pool=7"
  "X0C-views;x0;$C view_augment=true" "X0C-frac0.7;x0;$C guided_fraction=0.7" "X0C-early;x0;$C t_window=[0.5,1.0]"
  "X0C-bn0;x0;$C bn_weight=0" "X0C-cov1;x0;$C coverage_threshold=1.0"
  "X0C-bn0-views;x0;$C bn_weight=0 view_augment=true" "X0C-bn0-inner5;x0;$C bn_weight=0 inner_steps=5"
  "X0C-bn0-pool7;x0;$C bn_weight=0 grad_pool=7" "X0C-bn0-frac0.7;x0;$C bn_weight=0 guided_fraction=0.7"
  "X0C-bn0-step0.2;x0;$C bn_weight=0 x0_step=0.2"
  "X0C-bn0-inner5-views;x0;$C bn_weight=0 inner_steps=5 view_augment=true"
  "X0R-bn0;x0;$C bn_weight=0 clip_x0=false"
  "R-pool4-views-eta0.3-bn0;cadr;$R eta=0.3 grad_pool=4 view_augment=true bn_weight=0"
  "R-pool4-views-eta0.3-bn3;cadr;$R eta=0.3 grad_pool=4 view_augment=true bn_weight=3"
  "R-pool2-views-eta0.3;cadr;$R eta=0.3 grad_pool=2 view_augment=true"
  "X0C-bn0-pool2;x0;$C bn_weight=0 grad_pool=2" "X0C-bn0-inner5-pool7;x0;$C bn_weight=0 inner_steps=5 grad_pool=7"
  # On the 2-core CPU (device cpu), after the H100 time was spent: clamp for the guided samples only.
  "X0C-bn0-plainnoclip;x0;$C bn_weight=0 clip_x0=false clip_x0_guided=true"
  "X0C-bn0-frac0.7-plainnoclip;x0;$C bn_weight=0 guided_fraction=0.7 clip_x0=false clip_x0_guided=true"
  "R-pool4-views-eta0.3-adv1;cadr;$R eta=0.3 grad_pool=4 view_augment=true beta_adv=1.0"
  "R-pool4-views-eta0.3-adv3;cadr;$R eta=0.3 grad_pool=4 view_augment=true beta_adv=3.0"
  "T-pool4-views-eta0.3;routed-lowpass-target;"
  # Session 4 (H200): the teacher's loss averaged over noisy copies of the preview (randomised smoothing),
  # and best-of-n candidates per target, on top of cadr-routed-lowpass ($L).
  "S4-s0.3;cadr;$L smooth_samples=4 smooth_sigma=0.3" "S4-s0.6;cadr;$L smooth_samples=4 smooth_sigma=0.6"
  "S4-s1.0;cadr;$L smooth_samples=4 smooth_sigma=1.0" "S8-s0.6;cadr;$L smooth_samples=8 smooth_sigma=0.6"
  "S4-s0.6-nopool;cadr;$R eta=0.3 view_augment=true smooth_samples=4 smooth_sigma=0.6"
  "S4-s0.6-eta0.6;cadr;$L smooth_samples=4 smooth_sigma=0.6 eta=0.6"
  "S4-s0.6-bn0;cadr;$L smooth_samples=4 smooth_sigma=0.6 bn_weight=0"
  "S4-s0.6-frac0.7;cadr;$L smooth_samples=4 smooth_sigma=0.6 guided_fraction=0.7"
  "EOT4;cadr;$L smooth_samples=4" "BoN2;cadr;$L candidates=2" "BoN4;cadr;$L candidates=4"
  "S4-s0.6-BoN4;cadr;$L smooth_samples=4 smooth_sigma=0.6 candidates=4"
  "X0C-bn0-S4-s0.6;x0;$C bn_weight=0 smooth_samples=4 smooth_sigma=0.6"
  "X0C-bn0-frac0.7-S4-s0.6;x0;$C bn_weight=0 guided_fraction=0.7 smooth_samples=4 smooth_sigma=0.6"
  # The x0 rule with smoothing ($X) won the batch above; one lever at a time around it.
  "X0S-s0.4;x0;$X smooth_sigma=0.4" "X0S-s0.8;x0;$X smooth_sigma=0.8" "X0S-s1.0;x0;$X smooth_sigma=1.0"
  "X0S-n8;x0;$X smooth_samples=8" "X0S-step0.2;x0;$X x0_step=0.2" "X0S-step0.45;x0;$X x0_step=0.45"
  "X0S-inner1;x0;$X inner_steps=1" "X0S-inner5;x0;$X inner_steps=5" "X0S-pool2;x0;$X grad_pool=2"
  "X0S-pool7;x0;$X grad_pool=7" "X0S-views;x0;$X view_augment=true"
  "X0S-plainnoclip;x0;$X clip_x0=false clip_x0_guided=true" "X0S-bn1;x0;$X bn_weight=1"
  "X0S-frac0.6;x0;$X guided_fraction=0.6" "X0S-frac0.7-s0.8;x0;$X guided_fraction=0.7 smooth_sigma=0.8"
  # One gradient step per timestep ($X1, a third of the cost) did as well; levers around it.
  "X1-frac0.6;x0;$X1 guided_fraction=0.6" "X1-step0.45;x0;$X1 x0_step=0.45" "X1-step0.6;x0;$X1 x0_step=0.6"
  "X1-s0.4;x0;$X1 smooth_sigma=0.4" "X1-views;x0;$X1 view_augment=true" "X1-inner2;x0;$X1 inner_steps=2"
  "X1-cov1;x0;$X1 coverage_threshold=1.0" "X1-BoN2;x0;$X1 candidates=2" "X1-tw0.2;x0;$X1 t_window=[0.2,1.0]"
  "X1-tw0.8;x0;$X1 t_window=[0.0,0.8]" "X1-ddimeta0.3;x0;$X1 ddim_eta=0.3" "X1-n8;x0;$X1 smooth_samples=8"
  "X1-frac0.6-step0.45;x0;$X1 guided_fraction=0.6 x0_step=0.45" "X1-views-frac0.6;x0;$X1 view_augment=true guided_fraction=0.6"
  # Session 5 (2-core CPU, device cpu): DeepInversion draws a share of the guided (uncovered) targets.
  "X1-inv0.5;x0;$X1 inversion_fraction=0.5" "X1-inv1;x0;$X1 inversion_fraction=1.0"
  # Session 6 (H200): the same hybrid with DeepInversion's image priors (squared TV) and 300 Adam steps.
  "X1;x0;$X1"
  "X1-inv0.5-tv1;x0;$X1 inversion_fraction=0.5 distillation.deepinversion_tv_l2=1 distillation.deepinversion_iterations=300"
  "X1-inv0.5-tv5;x0;$X1 inversion_fraction=0.5 distillation.deepinversion_tv_l2=5 distillation.deepinversion_iterations=300"
  "X1-inv0.5-tv20;x0;$X1 inversion_fraction=0.5 distillation.deepinversion_tv_l2=20 distillation.deepinversion_iterations=300"
  "X1-inv0.3-tv5;x0;$X1 inversion_fraction=0.3 distillation.deepinversion_tv_l2=5 distillation.deepinversion_iterations=300"
  # Session 6 (2-core CPU): DeepInversion steps continuing from each guided sample (refine_steps), TV weight 5.
  "X1-ref10-tv5;x0;$X1 refine_steps=10 distillation.deepinversion_tv_l2=5"
  "X1-ref30-tv5;x0;$X1 refine_steps=30 distillation.deepinversion_tv_l2=5"
)
mkdir -p runs/pilot
for spec in "${PILOTS[@]}"; do
  IFS=';' read -r name method sets <<< "$spec"
  if [ $# -gt 0 ] && [[ ! " $* " == *" $name "* ]]; then continue; fi
  # A bare key is a fast_ad option; a dotted one (section.key=value) goes in as it is.
  extra=(); for kv in $sets; do k=${kv%%=*}; [[ $k == *.* ]] && extra+=(--set "$kv") || extra+=(--set "fast_ad.$kv"); done
  for kv in $SETS; do extra+=(--set "$kv"); done
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 1; done
  # shellcheck disable=SC2086
  $FASTAD bench --settings out-of-domain --comparisons images --seeds $SEEDS --sweep-seeds $SEEDS \
    --methods "$method" "${extra[@]}" --set run.device="$DEVICE" --set run.threads=1 \
    --out "runs/pilot/$name" > "runs/pilot/$name.log" 2>&1 &
done
wait
