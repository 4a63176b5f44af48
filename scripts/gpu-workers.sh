#!/usr/bin/env bash
# The plain Dask commands behind `dtune worker`, for starting workers yourself (e.g. in a
# batch job script). One worker process per GPU, each seeing only its own GPU.
#
#   on the scheduler host:  dask scheduler --host 0.0.0.0 --port 8786
#   on each GPU host:       bash scripts/gpu-workers.sh tcp://SCHEDULER:8786 0 1 2 3
set -euo pipefail
scheduler=${1:?usage: gpu-workers.sh SCHEDULER_ADDRESS GPU_ID...}
shift
export CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER:-PCI_BUS_ID}          # ids as nvidia-smi numbers them
export TF_FORCE_GPU_ALLOW_GROWTH=${TF_FORCE_GPU_ALLOW_GROWTH:-true} # TF takes memory as needed
pids=()
for gpu in "$@"; do
    CUDA_VISIBLE_DEVICES=$gpu dask worker "$scheduler" \
        --nworkers 1 --nthreads 1 --resources GPU=1 --name "$(hostname)-gpu$gpu" &
    pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' INT TERM
wait
