#!/usr/bin/env bash
# Runs an mlp_jax entry point from this checkout: as one process (alone, or as one member
# of a cluster job), or as N local processes through `python -m mlp_jax.launch`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./launch.sh [--local_processes=N] MODULE [FLAGS...]

Runs `python -m MODULE FLAGS...` (e.g. experiments.sweep, mlp_jax.main) with this
checkout's modules. A sweep's seeds are split over every device of every process.

  --local_processes=N  N processes on this machine, joined over 127.0.0.1 exactly as
                       N hosts would be: `python -m mlp_jax.launch --processes=N`
                       (output prefixed "[p<i>] ", signals forwarded, one failure
                       stops the rest; see `python -m mlp_jax.launch --help`).
                       CPU: one CPU device each unless
                         XLA_FLAGS=--xla_force_host_platform_device_count=K;
                       GPU: CUDA_VISIBLE_DEVICES (else all GPUs) split evenly.
  -h, --help           This help.

Without --local_processes this script becomes the module's process (exec), and the
module joins a cluster through jax.distributed.initialize(), which detects it:
  SLURM     a step of several tasks (`srun ./launch.sh ...`; one task per GPU)
  Open MPI  `mpirun -n N ./launch.sh ...`
  TPU VM    a pod slice: the same command on every worker
  Your own  COORDINATOR_ADDRESS (host:port), NUM_PROCESSES, PROCESS_ID on every host
MLP_JAX_DISTRIBUTED=auto asks JAX to detect any other cluster it knows; =off keeps each
process on its own. With none of these it is a single process with every local device.

On a GPU machine (nvidia-smi lists a GPU) XLA_PYTHON_CLIENT_PREALLOCATE=false is set
unless set already: JAX then takes GPU memory as needed instead of 75% up front.
PYTHON names the interpreter (default: python on PATH).

Examples:
  ./launch.sh experiments.sweep --seeds=0-63 --epochs=100 --workdir=runs/sweep64
  ./launch.sh --local_processes=8 experiments.sweep --seeds=0-63 --workdir=runs/sweep64
  srun --nodes=4 --ntasks-per-node=8 --gpus-per-task=1 \
      ./launch.sh experiments.sweep --seeds=0-1023 --workdir=/shared/s1024
  gcloud compute tpus tpu-vm ssh NAME --worker=all --command \
      "cd CHECKOUT && ./launch.sh experiments.sweep --seeds=0-255 --workdir=DIR"

Exit status: the module's (or mlp_jax.launch's); 2 for bad usage of launch.sh.
EOF
}

die() {
  echo "launch.sh: error: $* (see ./launch.sh --help)" >&2
  exit 2
}

local_processes=
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --local_processes=*) local_processes=${1#*=} ;;
    --local_processes)
      (($# >= 2)) || die "--local_processes needs a value, e.g. --local_processes=2"
      local_processes=$2
      shift ;;
    --) shift; break ;;
    -*) die "unknown option '$1'" ;;
    *) break ;;
  esac
  shift
done
(($#)) || die "no MODULE given, e.g. ./launch.sh experiments.sweep --seeds=0-7"
[[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$ ]] ||
  die "MODULE must be a Python module like experiments.sweep, got '$1'"
if [[ -n $local_processes ]] && ! [[ $local_processes =~ ^[1-9][0-9]{0,3}$ ]]; then
  die "--local_processes must be a whole number from 1 to 9999, got '$local_processes'"
fi

py=${PYTHON:-python}
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's modules

if [[ -z ${XLA_PYTHON_CLIENT_PREALLOCATE+x} ]] && command -v nvidia-smi >/dev/null 2>&1 &&
  timeout 20 nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
fi

if [[ -n $local_processes ]]; then
  exec "$py" -m mlp_jax.launch --processes="$local_processes" "$@"
fi
exec "$py" -m "$@"
