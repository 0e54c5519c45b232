#!/usr/bin/env bash
# Seeds of the main job on one GPU: DDIM 10 steps (shipped) against DPM-Solver++(2M) 6 steps, scored on
# the validation half (summary) and the report half (evaluate --range).
cd "$(dirname "$0")/.."
N=${N:-5}
mkdir -p /tmp/runs
run() {
  name=$1 seed=$2; shift 2
  o=/tmp/runs/$name-s$seed
  timeout ${LIMIT:-200} python3 -m fastad distill --device cuda --seed "$seed" --set run.threads=1 --set data.root=.gpu/fmnist \
    --set "data.eval_range=[0,5000]" --set logging.progress=false --set logging.tensorboard=false "$@" --out "$o" > "$o.log" 2>&1
  timeout 60 python3 -m fastad evaluate --checkpoint "$o/student.safetensors" --root .gpu/fmnist --range 5000 10000 \
    --device cuda --json "$o.report.json" > /dev/null 2>&1
  python3 - "$name" "$seed" "$o" <<'PY'
import json, sys
name, seed, o = sys.argv[1:]
try:
    s = json.load(open(f"{o}/summary.json"))
    r = json.load(open(f"{o}.report.json"))
    print(json.dumps({"run": name, "seed": int(seed), "validation": s["student_top1"], "report": r["top1"],
                      "synthesis_s": s["synthesis_seconds"], "training_s": s["training_seconds"],
                      "wall_s": s["wall_seconds"], "images": s["images_synthesized"]}), flush=True)
except Exception as e:
    print(json.dumps({"run": name, "seed": int(seed), "error": repr(e)[:300]}))
    print(open(f"{o}.log").read()[-1500:])
PY
}
for s in $(seq 0 $((N - 1))); do
  run ddim10 "$s" &
  run dpm6 "$s" --set sampler.solver=dpmpp-2m --set fast_ad.ddim_steps=6 &
done
wait
