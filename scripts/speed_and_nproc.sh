#!/usr/bin/env bash
# Synthesis speed before/after a change, then the main job on one process (2 threads) and on two
# (one thread each), one after another on an otherwise idle machine (docs/results.md):
#   scripts/speed_and_nproc.sh BEFORE_COMMIT   ->  runs/speed/*.md, runs/main-nproc{1,2}/, runs/main-nproc{1,2}.log
set -u
cd "$(dirname "$0")/.."
before=$1
mkdir -p runs/speed
rm -rf /tmp/fastad-before && git worktree add -f --detach /tmp/fastad-before "$before" >/dev/null
for round in 1 2; do
  PYTHONPATH=/tmp/fastad-before/src .venv/bin/python benchmarks/synthesis_speed.py > "runs/speed/before-$round.md" 2>&1
  .venv/bin/python benchmarks/synthesis_speed.py > "runs/speed/after-$round.md" 2>&1
done
git worktree remove --force /tmp/fastad-before
for n in 1 2; do
  rm -rf "runs/main-nproc$n"
  start=$(date +%s)
  .venv/bin/fastad distill --nproc "$n" --set run.threads=$((2 / n)) --out "runs/main-nproc$n" > "runs/main-nproc$n.log" 2>&1
  echo "rc=$? wall=$(( $(date +%s) - start ))s" >> "runs/main-nproc$n.log"
done
