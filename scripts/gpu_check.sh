#!/usr/bin/env bash
# The whole GPU check of issue 10 in one run (tried end to end on the CPU first: GPU_CHECK_CPU=1).
#
#   bash scripts/gpu_check.sh [STAGES]   STAGES: any of finish,sweep,sweep-mps,profile,nb101,c100,cohort,cohort-mps,proxies
#                                        (default: sweep-mps,nb101,profile: what the next lease owes)
#
# GPU_CHECK_SECONDS (default 540) is the whole budget: set it 40 s under the call's timeout. Each stage is
# capped by the time left; c100 (resumable) takes what remains.
#
# - finish:  the whole NB201 CIFAR-10 space: resumes the run folder in runs/nb201-cifar10 (copied in from
#            ../shared/runs when there) and scores what is missing with 8 GPU actors (0.125 GPU, 2 CPUs each);
# - sweep:   `python -m tools.bench throughput`: the same 2,000-cell sample through `gradsign score`
#            with 1, 2, 4, 8 actors on one GPU (num_gpus_per_actor 1, 0.5, 0.25, 0.125);
# - profile: `python -m tools.bench gradsign --device cuda --count-ops`: per cell, net build vs one
#            batched forward+backward vs the production engine, with the device operations each dispatches
#            (where the time goes), and the engine with its probe on a CPU copy (hooks-hostprobe);
# - sweep-mps: the sweep under CUDA MPS (the actors' kernels may then run concurrently): 4 and 8 actors at
#            2 CPUs each (to set beside the plain sweep), then 16 actors at 1 CPU each;
# - nb101:   the profile on 8 NB101 cells (the GPU cost per cell that the whole-space projection needs);
#            the graph table comes from .gpu/cache (GRADSIGN_CACHE) if carried, else it is enumerated there
#            (about 35 s on one core; the 14 MB table does not fit the 64 MiB carry beside the Ray wheel);
# - c100:    the whole NB201 CIFAR-100 space, as for finish.
# - cohort:  issue 22: NB201 cells/s through `gradsign score` (`bench throughput`), per-cell engine (cohort 1)
#            vs the cohort engine at K = 128, 32, 8 (most informative first), actors 1, 2, 4 each, fractional
#            GPUs; every row appended to $RES/throughput.csv (results/gpu/README.md says what each column is);
#            COHORT_MEMORY_MB (default 16384) is what one chunk of a cohort's pass may use per actor;
# - cohort-mps: the same under CUDA MPS for K = 128, 32 at 2 and 4 actors (mps = 1 in the csv).
# - proxies: issue 28: seconds per cell of every registered proxy (GradSign in both BatchNorm modes) on the
#            device, NB201 and NB301 cells at batch 64 (`python -m tools.proxy_cost`).
#
# Inputs it expects beside the checkout (carried to the GPU machine, git-ignored): .whl/ (Ray and the
# packages the GPU image lacks, as wheels), .gpu/data/ (the batch files and ground-truth tables),
# .gpu/runs/ (run folders to resume). Everything it measures goes to $OUT (default /tmp/gpu_out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
RES=${RES:-$OUT/results}   # everything measured, written as each stage ends (a call cut short keeps it)
rm -rf "$RES" && mkdir -p "$RES"
exec > >(tee "$OUT/log.txt") 2>&1
STAGES=${1:-sweep-mps,nb101,profile}
START=$(date +%s)
log() { echo "[$(( $(date +%s) - START ))s] $*"; }
# seconds left before the last files must be written (GPU_CHECK_SECONDS is the whole budget of this script)
left() { echo $(( ${GPU_CHECK_SECONDS:-540} - 40 - ($(date +%s) - START) )); }

if [ -d .whl ] && ! python3 -c "import ray" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# The configs read ${GRADSIGN_DATA} (unset: ../shared/data beside the checkout); a run folder resumes wherever its data now lives
# (its identity is the batch's content, not the path).
if [ -z "${GRADSIGN_DATA:-}" ] && [ ! -d ../shared/data ] && [ -d .gpu/data ]; then export GRADSIGN_DATA=$PWD/.gpu/data; fi
DATA_DIR=${GRADSIGN_DATA:-../shared/data}
python3 -c "import ray, torch, sys; print('python', sys.version.split()[0], 'ray', ray.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi -L 2>/dev/null || true

if [ -n "${GPU_CHECK_CPU:-}" ]; then   # the CPU rehearsal: same commands, tiny sizes, no GPU
  ACT="--set ray.num_actors=2 --set ray.num_gpus_per_actor=0 --set ray.num_cpus_per_actor=1"
  SMALL="--set sample.size=40 --set data.batch_size=8"
  PREFIX=runs/rehearsal-
  SWEEP="--actors 1,2 --cpus-per-actor 1 --sample 16 --batch 8"
  PROFILE="--device cpu --cells 2 --batch 8 --threads 1 --engines loop,hooks,hooks-hostprobe --data $DATA_DIR/cifar10_train_1000.npz"
  SWEEP_MPS="--actors 2 --cpus-per-actor 1 --sample 16 --batch 8"
  SWEEP_MPS_WIDE="--actors 1 --cpus-per-actor 1 --sample 16 --batch 8"
  NB101="--device cpu --cells 1 --batch 8 --threads 1 --repeats 1"
  COHORT_SIZES="3 1"; COHORT_ACTORS="1,2"; COHORT_MPS_SIZES="3"; COHORT_MPS_ACTORS="2"; MIN_SHARD=3
  COHORT="--cpus-per-actor 1 --sample 12 --batch 8"
  PROXIES="--device cpu --batch 16"; PROXY_CELLS_NB201=1; PROXY_CELLS_DARTS=1   # swap takes 16 images
else
  ACT="--set ray.num_actors=8 --set ray.num_gpus_per_actor=0.125 --set ray.num_cpus_per_actor=2"
  SMALL=""
  PREFIX=runs/nb201-
  SWEEP="--gpu --actors 1,2,4,8 --cpus-per-actor 2 --sample 2000 --batch 64"
  PROFILE="--device cuda --cells 12 --batch 64 --threads 2 --engines hooks,hooks-hostprobe --data $DATA_DIR/cifar10_train_1000.npz"
  SWEEP_MPS="--gpu --actors 4,8 --cpus-per-actor 2 --sample 2000 --batch 64"
  SWEEP_MPS_WIDE="--gpu --actors 16 --cpus-per-actor 1 --sample 2000 --batch 64"
  NB101="--device cuda --cells 8 --batch 64 --threads 2 --repeats 2"
  COHORT_SIZES="128 32 8 1"; COHORT_ACTORS="1,2,4"; COHORT_MPS_SIZES="128 32"; COHORT_MPS_ACTORS="2,4"; MIN_SHARD=25
  COHORT="--gpu --cpus-per-actor 2 --sample 6000 --batch 64"
  PROXIES="--device cuda --batch 64 --threads 2"; PROXY_CELLS_NB201=8; PROXY_CELLS_DARTS=3
fi
DEVICE_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
[ -n "${GPU_CHECK_CPU:-}" ] || [ -z "$DEVICE_NAME" ] && DEVICE_NAME="cpu ($(nproc) cores, rehearsal)"

cohort_rows() {  # $1 mps (0|1), $2 sizes, $3 actor counts: one `bench throughput` per size, rows -> throughput.csv
  local mps=$1 sizes=$2 actors=$3 k n rows cap cmd engine
  n=$(echo "$sizes" | wc -w)
  for k in $sizes; do
    rows=$(( n * $(echo "$actors" | tr ',' ' ' | wc -w) ))
    cap=$(( $(left) / rows )); [ "$cap" -gt 90 ] && cap=90
    if [ "$cap" -lt 25 ]; then log "cohort K=$k skipped: too little time left"; n=$(( n - 1 )); continue; fi
    shard=$(( k > MIN_SHARD ? k : MIN_SHARD ))   # a cohort never spans shards
    engine=$([ "$k" -gt 1 ] && echo cohort || echo per-cell)
    cmd="python -m tools.bench throughput $COHORT --actors $actors --shard-size $shard --set cohort.size=$k --set cohort.memory_mb=${COHORT_MEMORY_MB:-16384}"
    log "$cmd (rows of at most $cap s)"
    # shellcheck disable=SC2086
    python3 -m tools.bench throughput $COHORT --actors "$actors" --shard-size "$shard" \
        --set cohort.size="$k" --set cohort.memory_mb="${COHORT_MEMORY_MB:-16384}" --max-seconds "$cap" \
        --out "runs/cohort-mps$mps-k$k" --json "$RES/cohort-mps$mps-k$k.json" 2>&1 | grep -v '^{'
    python3 -m tools.throughput_csv "$RES/throughput.csv" "$RES/cohort-mps$mps-k$k.json" \
        --device "$DEVICE_NAME" --engine "$engine" --cohort "$k" --mps "$mps" --command "$cmd"
    n=$(( n - 1 ))
  done
}

mps_start() {
  if [ -z "${GPU_CHECK_CPU:-}" ]; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d && log "MPS daemon started" || log "MPS daemon did not start"
  fi
}
mps_stop() {
  if [ -z "${GPU_CHECK_CPU:-}" ]; then
    echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
}

whole_space() {  # $1 dataset name in the configs
  local ds=$1 run=$PREFIX$1
  if [ ! -d "$run" ] && [ -d ".gpu/runs/nb201-$ds" ] && [ -z "${GPU_CHECK_CPU:-}" ]; then
    mkdir -p runs && cp -r ".gpu/runs/nb201-$ds" "$run"
  fi
  log "whole space $ds: $(ls "$run/scores" 2>/dev/null | wc -l) score shards already committed"
  # shellcheck disable=SC2086
  timeout --signal=INT --kill-after=30 "$(left)" python3 -m gradsign score "configs/nb201-$ds.yaml" \
      $ACT $SMALL --set output="$run" --set progress=false 2>&1 | tail -n 40
  log "whole space $ds: exit ${PIPESTATUS[0]}"
  cp "$run/summary.json" "$RES/summary-$ds.json" 2>/dev/null
  python3 -m gradsign.pipeline.outputs.results_table "$run" "$RES/gradsign-$ds.parquet" || true
}

for stage in ${STAGES//,/ }; do
  log "stage $stage ($(left) s left)"
  if [ "$(left)" -lt 45 ]; then log "stage $stage skipped: too little time left"; continue; fi
  case $stage in
    finish) whole_space cifar10 ;;
    c100) [ "$(left)" -gt 60 ] && whole_space cifar100 ;;
    sweep)
      # each of the 4 rows gets at most a quarter of the time left (a row stopped early still gives its rate)
      cap=$(( $(left) / 4 )); [ "$cap" -gt 110 ] && cap=110; [ "$cap" -lt 20 ] && cap=20
      # shellcheck disable=SC2086
      python3 -m tools.bench throughput $SWEEP --max-seconds "$cap" --out "runs/$stage" \
          --json "$RES/$stage.json" 2>&1 | grep -v '^{' ;;&
    sweep-mps)
      # rows of at most 75 s (a row stopped early still gives its steady rate); the 16-actor row only when
      # more than 300 s are left after the 4- and 8-actor rows
      cap=$(( $(left) / 6 )); [ "$cap" -gt 75 ] && cap=75; [ "$cap" -lt 20 ] && cap=20
      if [ -z "${GPU_CHECK_CPU:-}" ]; then
        export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        nvidia-cuda-mps-control -d && log "MPS daemon started" || log "MPS daemon did not start"
      fi
      # shellcheck disable=SC2086
      python3 -m tools.bench throughput $SWEEP_MPS --max-seconds "$cap" --out "runs/$stage" \
          --json "$RES/$stage.json" 2>&1 | grep -v '^{'
      if [ "$(left)" -gt 300 ]; then
        # shellcheck disable=SC2086
        python3 -m tools.bench throughput $SWEEP_MPS_WIDE --max-seconds "$cap" --out "runs/$stage-16" \
            --json "$RES/$stage-16.json" 2>&1 | grep -v '^{'
      fi
      if [ -z "${GPU_CHECK_CPU:-}" ]; then
        echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
      fi ;;&
    sweep|sweep-mps)
      python3 - "$RES/sweep-scores.parquet" <<'EOF'
import sys, pyarrow as pa, pyarrow.parquet as pq, glob
parts = [pq.read_table(p, columns=["arch_id", "arch", "gradsign", "nonfinite", "seconds"]) for p in sorted(glob.glob("runs/sweep*/actors-*/scores/*.parquet"))]
if parts:
    pq.write_table(pa.concat_tables(parts), sys.argv[1])
EOF
      ;;
    profile)
      # shellcheck disable=SC2086
      timeout 90 python3 -m tools.bench gradsign $PROFILE --count-ops --json "$RES/profile.json" 2>&1 \
          | grep -v '^{' ;;
    cohort) cohort_rows 0 "$COHORT_SIZES" "$COHORT_ACTORS" ;;
    cohort-mps) mps_start; cohort_rows 1 "$COHORT_MPS_SIZES" "$COHORT_MPS_ACTORS"; mps_stop ;;
    proxies)
      for sp in nb201 darts; do
        cells=$([ "$sp" = nb201 ] && echo "$PROXY_CELLS_NB201" || echo "$PROXY_CELLS_DARTS")
        # shellcheck disable=SC2086
        timeout "$(( $(left) / 2 ))" python3 -m tools.proxy_cost --space "$sp" --cells "$cells" $PROXIES \
            --data "$DATA_DIR" 2>&1 | tee "$RES/proxies-$sp.md"
        timeout "$(( $(left) / 2 ))" python3 -m tools.proxy_cost --space "$sp" --cells "$cells" $PROXIES \
            --data "$DATA_DIR" --proxies gradsign --options '{"gradsign": {"bn": "batch"}}' 2>&1 \
            | sed 's/`gradsign`/`gradsign (bn batch)`/' | tee -a "$RES/proxies-$sp.md"
      done ;;
    nb101)
      [ -d .gpu/cache ] && export GRADSIGN_CACHE=$PWD/.gpu/cache
      # shellcheck disable=SC2086
      timeout 150 python3 -m tools.bench gradsign --space nb101 $NB101 --engines hooks --count-ops \
          --data "$DATA_DIR/cifar10_train_1000.npz" --json "$RES/nb101.json" 2>&1 | grep -v '^{' ;;
  esac
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null | tee "$RES/gpu.txt"
python3 -m pip list 2>/dev/null | grep -iE "^(torch|ray|pyarrow|numpy|scipy) " > "$RES/software.txt"
for run in "$PREFIX"*; do   # the run folders themselves (scores, summary, config)
  [ -d "$run" ] && tar -C runs -czf "$RES/$(basename "$run").tar.gz" --exclude=shards --exclude=plots "$(basename "$run")"
done
log "done"
