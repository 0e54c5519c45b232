#!/usr/bin/env bash
# The sequence that made this folder's tables, 2026-11-30 16:48-17:13 UTC, on the 2-core Intel Xeon with AMX.
# /tmp/before: a worktree of c7d2810 (before the scale work); /tmp/after/src: a copy of the package at faf457d with
# bf16 autocast allowed on the CPU (the arithmetic of 03764bd). Three rounds, each variant once per round, in turn.
# python3 summarise.py .   prints the medians and ratios quoted in docs/results.md.
cd /work/main
O=runs/speed_bf16
common="--recipes none cadr x0-routed-smooth --set fast_ad.ddim_steps=10"
for r in 1 2 3; do
  PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/synthesis_speed.py --config /tmp/before/configs/fashion_mnist.yaml $common > $O/before-$r.md 2>&1
  PYTHONPATH=/tmp/after/src .venv/bin/python benchmarks/synthesis_speed.py $common > $O/after-$r.md 2>&1
  PYTHONPATH=/tmp/after/src .venv/bin/python benchmarks/synthesis_speed.py $common --warmup 3 --set distillation.compile=true > $O/after-compile-$r.md 2>&1
  PYTHONPATH=/tmp/after/src .venv/bin/python benchmarks/synthesis_speed.py $common --warmup 3 --set distillation.compile=true --set distillation.autocast=bf16 > $O/after-bf16-compile-$r.md 2>&1
  PYTHONPATH=/tmp/after/src .venv/bin/python benchmarks/synthesis_speed.py $common --set distillation.autocast=bf16 > $O/after-bf16-$r.md 2>&1
done
echo done > $O/DONE
