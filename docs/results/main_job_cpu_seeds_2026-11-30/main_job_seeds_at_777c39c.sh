#!/usr/bin/env bash
# The main job over several seeds at once, side by side: the embedded default (10 steps of DDIM) against the
# same with 6 steps of DPM-Solver++(2M). Each student is scored on the validation half of the test split
# (its summary, data.eval_range) and on the report half (fastad evaluate --range); one JSON line per run.
#   SEEDS="0 1 2" DEVICE=cuda scripts/main_job_seeds.sh [OUT_DIR]      (DATA_ROOT=... if the data lie elsewhere)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
out=${1:-runs/main_job_seeds}
root=${DATA_ROOT:+--set data.root=$DATA_ROOT}
mkdir -p "$out"
run() {
  local name=$1 seed=$2; shift 2
  local o=$out/$name-s$seed
  "$PY" -m fastad distill --device "${DEVICE:-auto}" --seed "$seed" --set run.threads=1 $root \
    --set "data.eval_range=[0,5000]" --set logging.progress=false --set logging.tensorboard=false "$@" --out "$o" \
    > "$o.log" 2>&1 &&
  "$PY" -m fastad evaluate --checkpoint "$o/student.safetensors" ${DATA_ROOT:+--root $DATA_ROOT} --range 5000 10000 \
    --device "${DEVICE:-auto}" --json "$o/report_half.json" > /dev/null 2>&1 &&
  "$PY" -c 'import json, sys
o, name, seed = sys.argv[1:]
s, r = json.load(open(o + "/summary.json")), json.load(open(o + "/report_half.json"))
print(json.dumps({"run": name, "seed": int(seed), "validation": s["student_top1"], "report": r["top1"],
                  "synthesis_s": s["synthesis_seconds"], "training_s": s["training_seconds"]}), flush=True)' \
    "$o" "$name" "$seed" || echo "{\"run\": \"$name\", \"seed\": $seed, \"error\": \"see $o.log\"}"
}
for s in ${SEEDS:-0 1 2}; do
  run ddim10 "$s" &
  run dpm6 "$s" --set sampler.solver=dpmpp-2m --set fast_ad.ddim_steps=6 &
done
wait
