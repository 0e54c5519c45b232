#!/usr/bin/env bash
# The main job with one KD lever changed, scored on the validation half of the test split (test[0:5000];
# EVAL_RANGE="[5000,10000]" scores on the report half instead):
#   scripts/student_levers.sh SEED LEVER_SET...   e.g.  scripts/student_levers.sh 0 distillation.mix=mixup
# Each --set value runs as its own job (one torch thread each, all side by side; the main job is
# budgeted in rounds, so load changes its wall time, not its student) into runs/levers/<set>-s<SEED>/.
set -u
cd "$(dirname "$0")/.."
seed=$1; shift
mkdir -p runs/levers
for lever in "$@"; do
  name=$(echo "$lever" | tr '=/[], ' '-_____')-s$seed${EVAL_RANGE:+-report}
  rm -rf "runs/levers/$name"
  .venv/bin/fastad distill --seed "$seed" --set "$lever" --set "data.eval_range=${EVAL_RANGE:-[0,5000]}" --set run.threads=1 \
    --set logging.progress=false --out "runs/levers/$name" > "runs/levers/$name.log" 2>&1 &
done
wait
