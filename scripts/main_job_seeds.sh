#!/usr/bin/env bash
# The main job (the embedded default, optionally with overrides) over several seeds at once, side by side, one
# torch thread each. Each student is scored on the validation half of the test split (its summary,
# data.eval_range) and on the report half (fastad evaluate --range); one JSON line per run.
#   SEEDS="0 1 2" DEVICE=cuda scripts/main_job_seeds.sh OUT_DIR [NAME [SECTION.KEY=VALUE ...]]
#   scripts/main_job_seeds.sh runs/seeds ddim10 sampler.solver=ddim fast_ad.ddim_steps=10   # the previous default
# (DATA_ROOT=... if the data lie elsewhere). Runs land in OUT_DIR/NAME-sSEED (NAME defaults to "main").
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
out=${1:-runs/main_job_seeds}
name=${2:-main}
sets=(); for kv in "${@:3}"; do sets+=(--set "$kv"); done
root=${DATA_ROOT:+--set data.root=$DATA_ROOT}
mkdir -p "$out"
run() {
  local seed=$1 o=$out/$name-s$1
  "$PY" -m fastad distill --device "${DEVICE:-auto}" --seed "$seed" --set run.threads=1 $root \
    --set "data.eval_range=[0,5000]" --set logging.progress=false --set logging.tensorboard=false "${sets[@]}" \
    --out "$o" > "$o.log" 2>&1 &&
  "$PY" -m fastad evaluate --checkpoint "$o/student.safetensors" ${DATA_ROOT:+--root $DATA_ROOT} --range 5000 10000 \
    --device "${DEVICE:-auto}" --json "$o/report_half.json" > /dev/null 2>&1 &&
  "$PY" -c 'import json, sys
o, name, seed = sys.argv[1:]
s, r = json.load(open(o + "/summary.json")), json.load(open(o + "/report_half.json"))
print(json.dumps({"run": name, "seed": int(seed), "validation": s["student_top1"], "report": r["top1"],
                  "synthesis_s": s["synthesis_seconds"], "training_s": s["training_seconds"]}), flush=True)' \
    "$o" "$name" "$seed" || echo "{\"run\": \"$name\", \"seed\": $seed, \"error\": \"see $o.log\"}"
}
for s in ${SEEDS:-0 1 2}; do run "$s" & done
wait
