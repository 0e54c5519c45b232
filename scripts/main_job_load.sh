#!/usr/bin/env bash
# The main job idle or beside one single-threaded busy process, for the "does the result depend on
# load?" check (docs/results.md): scripts/main_job_load.sh NAME [busy]  ->  runs/NAME/, runs/NAME.log
set -u
cd "$(dirname "$0")/.."
name=$1; busy=${2:-}
rm -rf "runs/$name"
if [ -n "$busy" ]; then
  .venv/bin/python -c "
x = 0
while True:
    x += 1" &
  bp=$!
  sleep 3
fi
start=$(date +%s)
.venv/bin/fastad distill --out "runs/$name" > "runs/$name.log" 2>&1
rc=$?
[ -n "$busy" ] && kill "$bp"
echo "rc=$rc wall=$(( $(date +%s) - start ))s" >> "runs/$name.log"
