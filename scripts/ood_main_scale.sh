#!/usr/bin/env bash
# Out-of-domain at the main job's size (EPOCHS rounds x 64 images, 50 KD steps of batch 128), equal images,
# one `fastad bench` process per (method, seed), all in parallel; then the table (markdown + JSON) of
# student top-1, the unseen classes' mean, per-class top-1, images and wall time.
#
#   scripts/ood_main_scale.sh [DEVICE] [OUTDIR]       # default: cuda, runs/ood_main_scale
#   METHODS="none x0-routed-smooth" SEEDS="0 1 2" EPOCHS=60 SETS="data.root=DIR" FASTAD="python -m fastad" ...
set -u
DEVICE=${1:-cuda}; OUTDIR=${2:-runs/ood_main_scale}
FASTAD=${FASTAD:-fastad}; EPOCHS=${EPOCHS:-60}; SEEDS=${SEEDS:-"0 1 2"}
METHODS=${METHODS:-"none none-noclip x0-routed-smooth"}
extra=(); for kv in ${SETS:-}; do extra+=(--set "$kv"); done
mkdir -p "$OUTDIR"
for m in $METHODS; do for s in $SEEDS; do
  # shellcheck disable=SC2086
  $FASTAD bench --config-size --settings out-of-domain --comparisons images --seeds "$s" --methods "$m" \
    --set distillation.epochs="$EPOCHS" --set distillation.max_seconds=0 --set run.device="$DEVICE" \
    --set run.threads=1 --set logging.tensorboard=false "${extra[@]}" --out "$OUTDIR/$m-s$s" \
    > "$OUTDIR/$m-s$s.log" 2>&1 &
done; done
wait
for f in "$OUTDIR"/*.log; do grep -q "Traceback\|rror" "$f" && { echo "failed: $f"; tail -n 3 "$f"; }; done
python3 "$(dirname "$0")/main_scale_table.py" "$OUTDIR" --json "$OUTDIR/table.json" --md "$OUTDIR/table.md"
