#!/usr/bin/env bash
# Does SparK pretraining help? Pretrain -> fine-tune / linear probe on Fashion-MNIST, against the
# same networks trained from scratch, over several seeds. Everything runs through the `spark`
# binary; results land in $OUT/results.md (see docs/experiments.md for a run and its reading).
#
#   scripts/fashion-mnist-experiment.sh            # the documented run (about an hour on 2 cores)
#   BUDGET=smoke scripts/fashion-mnist-experiment.sh   # a few minutes: the CI smoke version
#   DEVICE=cuda BUDGET=gpu scripts/fashion-mnist-experiment.sh   # longer schedules on a GPU
#
# Knobs (environment): OUT (runs/fashion-mnist), SPARK (the binary; built when unset), DATA_DIR
# (the IDX files; default the Debian package's folder), SEEDS ("0 1 2"), JOBS (parallel runs, each
# with THREADS compute threads; default 2 x 1 on CPU, 1 x all on a GPU), ARCHS ("r18 cnx").
#
# Rerunning it with the same OUT continues where it stopped: a finished pretraining and every run
# whose log already holds its test top-1 are kept, so an interrupted or widened run (more seeds,
# more label fractions) only computes what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

BUDGET=${BUDGET:-full}
OUT=${OUT:-runs/fashion-mnist}
SEEDS=${SEEDS:-0 1 2}
ARCHS=${ARCHS:-r18 cnx}
DEVICE=${DEVICE:-cpu}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
if [ "$DEVICE" = cpu ]; then JOBS=${JOBS:-2}; THREADS=${THREADS:-1}; else JOBS=${JOBS:-1}; THREADS=${THREADS:-$(nproc)}; fi

# ---- settings per budget: pretraining steps, picture points, fine-tune steps, probe epochs.
# Input 64 px (a 2x2 grid of 32-px patches, 60% masked = 2 of 4 hidden), batch 64 everywhere.
case "$BUDGET" in
  smoke) PRE_R18=60;   PRE_CNX=20;  PICS_R18="20 60";        PICS_CNX="20"
         FT_R18=40;    FT_CNX=10;   FRACS_R18="0.1";          FRACS_CNX=""
         PROBE_EPOCHS=5; PROBE_FRAC=0.02 ;;
  full)  PRE_R18=1500; PRE_CNX=500; PICS_R18="100 500 1500"; PICS_CNX="100 500"
         FT_R18=200;   FT_CNX=100;  FRACS_R18="0.01 0.1 1";   FRACS_CNX="0.01 0.1 1"
         PROBE_EPOCHS=30; PROBE_FRAC=0.1 ;;
  gpu)   PRE_R18=6000; PRE_CNX=6000; PICS_R18="500 2000 6000"; PICS_CNX="500 2000 6000"
         FT_R18=1000;  FT_CNX=1000; FRACS_R18="0.01 0.1 1";   FRACS_CNX="0.01 0.1 1"
         PROBE_EPOCHS=30; PROBE_FRAC=1 ;;
  *) echo "BUDGET must be smoke, full or gpu" >&2; exit 2 ;;
esac

# ---- data: Fashion-MNIST from Debian's dataset-fashion-mnist (IDX, gzip).
if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST not found in $DATA_DIR: installing the Debian package dataset-fashion-mnist" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -q dataset-fashion-mnist >&2 || {
    $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q dataset-fashion-mnist >&2; }
fi
TRAIN="$DATA_DIR/train-images-idx3-ubyte.gz"
TEST_FILE="$DATA_DIR/t10k-images-idx3-ubyte.gz"

if [ -z "${SPARK:-}" ]; then
  cargo build --release -q -p spark-cli
  SPARK=$PWD/target/release/spark
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/log"
mkdir -p "$LOG"
S="$SPARK --device $DEVICE --threads $THREADS --workers 1"
T_ALL=$(date +%s)

backbone() { case $1 in r18) echo resnet18 ;; cnx) echo convnext_tiny ;; esac; }
steps_of() { case $1 in r18) echo "$PRE_R18" ;; cnx) echo "$PRE_CNX" ;; esac; }
pics_of() { case $1 in r18) echo "$PICS_R18" ;; cnx) echo "$PICS_CNX" ;; esac; }

# ---- 1. pretraining, both networks side by side, in segments so that pictures are taken on the way.
pretrain() {
  local arch=$1 total; total=$(steps_of "$1")
  local dir="$OUT/pretrain-$arch" prev=0
  [ ! -f "$dir/complete" ] || return 0
  for at in $(pics_of "$arch"); do
    local resume=(--overwrite); [ "$prev" = 0 ] || resume=(--resume)
    $S pretrain --data "$TRAIN" --backbone "$(backbone "$arch")" --width-mult 0.25 --input-size 64 \
      --batch-size 64 --steps "$total" --stop-at "$at" --save-every 100000 --out "$dir" "${resume[@]}" \
      >>"$LOG/pretrain-$arch.txt" 2>&1
    $S reconstruct -c "$dir/last.safetensors" --data "$TEST_FILE" -n 6 -o "$OUT/recon-$arch-step$at.png" \
      >>"$LOG/pretrain-$arch.txt" 2>&1
    prev=$at
  done
  touch "$dir/complete"
}
t0=$(date +%s)
for arch in $ARCHS; do pretrain "$arch" & done
wait
echo "$(date -u +%FT%TZ) pretraining: $(( $(date +%s) - t0 )) s wall" | tee -a "$OUT/times.txt"

# ---- 2. fine-tuning (pretrained vs scratch) and linear probes (pretrained vs random), in parallel.
# One recipe for both inits: AdamW, lr 2e-3 with warm-up + cosine, no layer-wise decay (it would
# slow the early layers of a from-scratch network), label smoothing 0.1, batch 64.
JOBFILE="$OUT/jobs.txt"; : >"$JOBFILE"
for arch in $ARCHS; do
  bb=$(backbone "$arch")
  if [ "$arch" = r18 ]; then fracs=$FRACS_R18; steps=$FT_R18; else fracs=$FRACS_CNX; steps=$FT_CNX; fi
  for seed in $SEEDS; do
    for frac in $fracs; do
      for init in pretrained scratch; do
        name="ft-$arch-$init-frac$frac-seed$seed"
        from="--backbone $bb --width-mult 0.25 --input-size 64"
        [ "$init" = scratch ] || from="--init $OUT/pretrain-$arch/last.safetensors"
        # No --val-data: the test set is scored once, by `spark eval`, after the last step.
        echo "grep -qs '^top-1:' $LOG/$name.txt || { $S finetune $from --data $TRAIN --label-fraction $frac --steps $steps \
--batch-size 64 --lr 2e-3 --layer-decay 1 --seed $seed --overwrite --out $OUT/$name >$LOG/$name.txt 2>&1 && \
$S eval -c $OUT/$name/classifier.safetensors --data $TEST_FILE --batch-size 256 >>$LOG/$name.txt 2>&1; }" >>"$JOBFILE"
      done
    done
    for init in pretrained random; do
      name="probe-$arch-$init-seed$seed"
      from="--backbone $bb --width-mult 0.25 --input-size 64"
      [ "$init" = random ] || from="--init $OUT/pretrain-$arch/last.safetensors"
      echo "grep -qs '^top-1:' $LOG/$name.txt || $S probe $from --data $TRAIN --val-data $TEST_FILE --label-fraction $PROBE_FRAC \
--epochs $PROBE_EPOCHS --lr 1e-2 --seed $seed >$LOG/$name.txt 2>&1" >>"$JOBFILE"
    done
  done
done
t0=$(date +%s)
FAILED=0
tr '\n' '\0' <"$JOBFILE" | xargs -0 -P "$JOBS" -n 1 bash -c || FAILED=1
echo "$(date -u +%FT%TZ) fine-tuning and probes: $(( $(date +%s) - t0 )) s wall ($(wc -l <"$JOBFILE") runs listed, \
finished ones skipped; $JOBS at a time)" \
  | tee -a "$OUT/times.txt"

# ---- 3. the table: test top-1 per setting, mean and sample std over the seeds.
top1() { grep -h "^top-1:" "$1" | tail -1 | awk '{gsub("%","",$2); print $2}'; }
summarise() { # label, glob of logs
  local vals=() f
  for f in $2; do [ -f "$f" ] && vals+=("$(top1 "$f")"); done
  [ ${#vals[@]} -gt 0 ] || return 0
  printf '%s\n' "${vals[@]}" | awk -v label="$1" '{ s += $1; q += $1 * $1; n++; v = v sep $1; sep = ", " }
    END { m = s / n; sd = n > 1 ? sqrt((q - n * m * m) / (n - 1)) : 0; if (sd != sd) sd = 0;
          printf "| %s | %.2f | %.2f | %d | %s |\n", label, m, sd, n, v }'
}
{
  echo "# Fashion-MNIST: SparK pretraining vs scratch ($BUDGET budget, $DEVICE)"
  echo
  echo "Test top-1 (%) on the 10,000 test images; mean and sample std over seeds ($SEEDS)."
  echo
  echo "| setting | mean | std | seeds | values |"
  echo "|---|---|---|---|---|"
  for arch in $ARCHS; do
    if [ "$arch" = r18 ]; then fracs=$FRACS_R18; else fracs=$FRACS_CNX; fi
    for frac in $fracs; do
      for init in pretrained scratch; do
        summarise "$arch fine-tune, $init, $frac of the labels" "$LOG/ft-$arch-$init-frac$frac-seed*.txt"
      done
    done
    for init in pretrained random; do
      summarise "$arch linear probe ($PROBE_FRAC of the labels), $init encoder" "$LOG/probe-$arch-$init-seed*.txt"
    done
  done
  echo
  for arch in $ARCHS; do
    echo "pretraining loss, $arch: $(grep -h "^done:" "$LOG/pretrain-$arch.txt" | tail -1)"
  done
  echo
  cat "$OUT/times.txt"
  echo "this invocation: $(( $(date +%s) - T_ALL )) s wall"
} >"$OUT/results.md"
cat "$OUT/results.md"
if [ "$FAILED" = 1 ]; then
  echo "some runs failed (their logs in $LOG have no top-1 line); rerun the script to retry them" >&2
  exit 1
fi
