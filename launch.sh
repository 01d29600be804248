#!/usr/bin/env bash
# Runs an mlp_jax entry point as a single process, as one process per host of a
# cluster (SLURM, TPU pod slice, or your own), or as N local processes joined by
# JAX's distributed runtime. `./launch.sh --help` says everything.
set -euo pipefail

readonly PROG=launch.sh
readonly DEFAULT_SLURM_PORT_BASE=12355

usage() {
  cat <<'EOF'
Usage: ./launch.sh [--local_processes=N] [--deterministic] [--dry_run] MODULE [FLAGS...]

Runs `python -m MODULE FLAGS...` (e.g. experiments.sweep, mlp_jax.main) with the
JAX runtime settings this machine wants, as one process or as several joined by
JAX's distributed runtime. A sweep's seeds are split over every device of every
process; each seed's records are bit for bit those of a 1-device run.

Options (before MODULE; everything after MODULE goes to the module):
  --local_processes=N  Start N processes on this machine, joined over 127.0.0.1
                       (a free port) exactly as N hosts would be. Each gets
                       COORDINATOR_ADDRESS, NUM_PROCESSES=N and PROCESS_ID=i; its
                       output lines are prefixed with "[p<i>] ". If one fails,
                       the others are stopped (SIGTERM, then SIGKILL after
                       $MLP_JAX_LAUNCH_GRACE seconds) and launch.sh exits with
                       the failed process's exit code, naming it.
                       CPU: each process has 1 CPU device unless you set
                         XLA_FLAGS=--xla_force_host_platform_device_count=K
                       (then K each; launch.sh does not change XLA_FLAGS for it).
                       GPU: the GPUs (CUDA_VISIBLE_DEVICES, else all that
                       nvidia-smi lists) are split evenly between the processes.
  --deterministic      Append --xla_gpu_deterministic_ops=true to XLA_FLAGS, so
                       GPU reductions are run-to-run reproducible (slower).
                       Elsewhere XLA accepts the flag and it changes nothing (on
                       CPU the bits are the same with and without it). XLA_FLAGS
                       is recorded in environment.json, so the setting is too.
  --dry_run            Print what would run, with which variables, and exit.
  -h, --help           This help.

How many processes, without --local_processes (first match wins):
  SLURM        SLURM_JOB_ID set and SLURM_NTASKS > 1 (started as `srun ./launch.sh`):
               COORDINATOR_ADDRESS=<first host of SLURM_JOB_NODELIST>:<port>,
               NUM_PROCESSES=SLURM_NTASKS, PROCESS_ID=SLURM_PROCID. The host comes
               from `scontrol show hostnames` (else a parse of the node list); the
               port is MLP_JAX_PORT, else 12355 + SLURM_JOB_ID % 1000 (so two jobs
               sharing a first node do not collide).
  Your own     COORDINATOR_ADDRESS (host:port), NUM_PROCESSES and PROCESS_ID all
               set: passed through unchanged (run the same command on every host,
               each with its own PROCESS_ID).
  TPU VM       a TPU found (see below): MLP_JAX_DISTRIBUTED=auto, so JAX detects
               the pod slice itself; run the same command on every worker.
  Single host  none of these: the module simply runs (exec), one process with
               every local device.

Accelerator (one line on stderr says what was found and what was set):
  GPU   `nvidia-smi -L` lists GPUs. Sets XLA_PYTHON_CLIENT_PREALLOCATE=false
        (unless set): JAX then takes GPU memory as needed instead of 75% up front.
  TPU   /dev/accel*, or TPU_WORKER_ID / TPU_NAME / TPU_ACCELERATOR_TYPE /
        TPU_WORKER_HOSTNAMES set, or /dev/vfio/<n> with libtpu installed.
  CPU   otherwise.
  MLP_JAX_ACCELERATOR=cpu|gpu|tpu skips the detection.

Environment read:
  PYTHON                     interpreter to run (default: python on PATH)
  MLP_JAX_COMPILATION_CACHE  persistent XLA compilation cache directory; kept as
                             it is (default ~/.cache/mlp_jax/xla, empty: off; the
                             module's --compilation_cache_dir wins over both)
  MLP_JAX_PORT               coordinator port (SLURM; --local_processes: default free)
  MLP_JAX_LAUNCH_GRACE       --local_processes: seconds the others get, after one
                             failed (or, after a forwarded signal, exited),
                             before SIGKILL (default 10)
  MLP_JAX_ACCELERATOR, XLA_FLAGS, XLA_PYTHON_CLIENT_PREALLOCATE, CUDA_VISIBLE_DEVICES,
  COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID, MLP_JAX_DISTRIBUTED,
  SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, SLURM_JOB_NODELIST
Environment set (for the module):
  COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID   (--local_processes, SLURM)
  MLP_JAX_DISTRIBUTED=auto                         (TPU VM)
  XLA_PYTHON_CLIENT_PREALLOCATE=false              (GPU, unless set)
  XLA_FLAGS += --xla_gpu_deterministic_ops=true    (--deterministic)
  CUDA_VISIBLE_DEVICES                             (GPU with --local_processes)
  PYTHONUNBUFFERED=1                               (--local_processes, unless set)
  PYTHONPATH = <this checkout>:$PYTHONPATH         (its mlp_jax and experiments)

Signals (--local_processes): SIGTERM and SIGINT (Ctrl-C) are forwarded to every
process (SIGHUP as SIGTERM); they checkpoint at the end of the epoch and exit,
and launch.sh exits with 128 + the signal number. Run the same command again to
resume. A third signal kills them at once. Without --local_processes launch.sh
becomes the module's process (exec), which handles the signals itself.

Examples:
  # One machine, one process with every device (8 GPUs: the seeds split 8 ways):
  ./launch.sh experiments.sweep --seeds=0-63 --epochs=100 --workdir=runs/sweep64
  # The same on an 8-GPU box as 8 processes of one GPU each, reproducible sums:
  ./launch.sh --local_processes=8 --deterministic experiments.sweep --seeds=0-63 \
      --epochs=100 --workdir=runs/sweep64
  # 2 processes x 2 CPU devices on this machine (what multi-host runs do):
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      ./launch.sh --local_processes=2 experiments.sweep --seeds=0-63 --workdir=DIR
  # TPU VM pod slice: the same command on every worker (DIR on shared storage):
  gcloud compute tpus tpu-vm ssh NAME --worker=all --command \
      "cd CHECKOUT && ./launch.sh experiments.sweep --seeds=0-255 --workdir=DIR"
  # SLURM, 4 nodes, one task per node (DIR on a shared file system); with several
  # tasks per node give each its own GPUs (e.g. --gpus-per-task=1):
  srun --nodes=4 --ntasks-per-node=1 ./launch.sh experiments.sweep --seeds=0-255 \
      --workdir=DIR

Exit status: the module's; with --local_processes, 0 if every process succeeded,
else the first failed process's exit code; 128+N after signal N was forwarded;
2 for bad usage of launch.sh.
EOF
}

die_usage() {
  echo "$PROG: error: $* (see ./launch.sh --help)" >&2
  exit 2
}

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}

# ---------------------------------------------------------------- arguments
local_processes=
deterministic=0
dry_run=0
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --local_processes=*) local_processes=${1#*=} ;;
    --local_processes)
      (($# >= 2)) || die_usage "--local_processes needs a value, e.g. --local_processes=2"
      local_processes=$2
      shift ;;
    --deterministic) deterministic=1 ;;
    --dry_run) dry_run=1 ;;
    --) shift; break ;;
    -*) die_usage "unknown option '$1'" ;;
    *) break ;;
  esac
  shift
done
(($#)) || die_usage "no MODULE given, e.g. ./launch.sh experiments.sweep --seeds=0-7"
module=$1
shift
[[ $module =~ ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$ ]] ||
  die_usage "MODULE must be a Python module like experiments.sweep, got '$module'"
if [[ -n $local_processes ]] && ! [[ $local_processes =~ ^[1-9][0-9]{0,3}$ ]]; then
  die_usage "--local_processes must be a whole number from 1 to 9999, got '$local_processes'"
fi
grace=${MLP_JAX_LAUNCH_GRACE:-10}
[[ $grace =~ ^[0-9]+$ ]] || die "MLP_JAX_LAUNCH_GRACE must be whole seconds, got '$grace'"
py=${PYTHON:-python}
# The modules are this checkout's, wherever launch.sh is started from.
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
command -v "$py" >/dev/null 2>&1 || die "cannot find the Python interpreter '$py' (set PYTHON)"

found=()    # what was detected
did=()      # what was set, for the one-line report

# ---------------------------------------------------------------- accelerator
gpu_count=0
with_timeout() {  # a hung driver must not hang the launch
  if command -v timeout >/dev/null 2>&1; then timeout 20 "$@"; else "$@"; fi
}

tpu_reason() {  # prints why this looks like a TPU VM; fails if it does not
  local name
  for name in TPU_WORKER_ID TPU_NAME TPU_ACCELERATOR_TYPE TPU_WORKER_HOSTNAMES; do
    if [[ -n ${!name:-} ]]; then echo "$name is set"; return 0; fi
  done
  if compgen -G '/dev/accel[0-9]*' >/dev/null; then echo "/dev/accel*"; return 0; fi
  if compgen -G '/dev/vfio/[0-9]*' >/dev/null &&
    "$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("libtpu") is None)' \
      >/dev/null 2>&1; then
    echo "/dev/vfio/* and libtpu"; return 0
  fi
  return 1
}

accelerator=${MLP_JAX_ACCELERATOR:-}
if [[ -n $accelerator ]]; then
  case $accelerator in cpu | gpu | tpu) ;; *)
    die "MLP_JAX_ACCELERATOR must be cpu, gpu or tpu, got '$accelerator'" ;;
  esac
  found+=("$accelerator (MLP_JAX_ACCELERATOR)")
else
  accelerator=cpu
  if command -v nvidia-smi >/dev/null 2>&1 &&
    gpu_list=$(with_timeout nvidia-smi -L 2>/dev/null) &&
    gpu_count=$(grep -c '^GPU ' <<<"$gpu_list") && ((gpu_count > 0)); then
    accelerator=gpu
    found+=("$gpu_count GPU(s) (nvidia-smi -L)")
  elif reason=$(tpu_reason); then
    accelerator=tpu
    found+=("TPU ($reason)")
  else
    gpu_count=0
    found+=("CPU only (no GPU from nvidia-smi, no TPU)")
  fi
fi

if [[ $accelerator == gpu ]]; then
  if [[ -z ${XLA_PYTHON_CLIENT_PREALLOCATE+x} ]]; then
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
    did+=("XLA_PYTHON_CLIENT_PREALLOCATE=false (memory as needed, not 75% up front)")
  else
    did+=("XLA_PYTHON_CLIENT_PREALLOCATE=$XLA_PYTHON_CLIENT_PREALLOCATE kept (yours)")
  fi
fi

if ((deterministic)); then
  if [[ " ${XLA_FLAGS:-} " == *" --xla_gpu_deterministic_ops=true "* ]]; then
    did+=("XLA_FLAGS already has --xla_gpu_deterministic_ops=true")
  else
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_deterministic_ops=true"
    if [[ $accelerator == gpu ]]; then
      did+=("XLA_FLAGS+=--xla_gpu_deterministic_ops=true (reproducible GPU reductions)")
    else
      did+=("XLA_FLAGS+=--xla_gpu_deterministic_ops=true (no effect on $accelerator, harmless)")
    fi
  fi
fi

# Which compilation cache the module will use (launch.sh changes nothing here).
cache_note=
for arg in "$@"; do
  if [[ $arg == --compilation_cache_dir=* ]]; then
    cache_note="${arg#*=}"
    cache_note="${cache_note:-off} (--compilation_cache_dir)"
  fi
done
if [[ -z $cache_note ]]; then
  if [[ -n ${MLP_JAX_COMPILATION_CACHE+x} ]]; then
    cache_note="${MLP_JAX_COMPILATION_CACHE:-off} (MLP_JAX_COMPILATION_CACHE)"
  else
    cache_note="$HOME/.cache/mlp_jax/xla (default; set MLP_JAX_COMPILATION_CACHE to move it)"
  fi
fi

join() {  # join SEPARATOR ITEMS...
  local sep=$1 out=$2
  shift 2
  for item in "$@"; do out+="$sep$item"; done
  printf '%s' "$out"
}

report() {  # the one line saying what was found and what was set
  echo "$PROG: found $(join ', ' "${found[@]}"); $(join '; ' ${did[@]+"${did[@]}"} \
    "compilation cache $cache_note")" >&2
}

quote() {  # a word as the shell reads it back, quoted only if it must be
  if [[ $1 =~ ^[A-Za-z0-9_.,:/=+@%-]+$ ]]; then printf '%s' "$1"; else printf '%q' "$1"; fi
}

command_line() {  # the variables launch.sh deals in (those set) and the command
  local name arg
  for name in COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID MLP_JAX_DISTRIBUTED \
    CUDA_VISIBLE_DEVICES XLA_PYTHON_CLIENT_PREALLOCATE XLA_FLAGS; do
    [[ -z ${!name+x} ]] || printf '%s=%s ' "$name" "$(quote "${!name}")"
  done
  printf '%s -m %s' "$(quote "$py")" "$module"
  for arg in "$@"; do printf ' %s' "$(quote "$arg")"; done
}

# ---------------------------------------------------------------- one process per host
first_slurm_host() {  # the first host name of a SLURM node list like a[01-04,07],b2
  local list=$1 host='' depth=0 c k pre rest inner post
  if command -v scontrol >/dev/null 2>&1 &&
    host=$(with_timeout scontrol show hostnames "$list" 2>/dev/null | head -n 1) &&
    [[ -n $host ]]; then
    echo "$host"; return
  fi
  host=''
  for ((k = 0; k < ${#list}; k++)); do
    c=${list:k:1}
    case $c in
      '[') depth=$((depth + 1)) ;;
      ']') depth=$((depth - 1)) ;;
      ,) ((depth > 0)) || break ;;
    esac
    host+=$c
  done
  while [[ $host == *'['*']'* ]]; do  # each [ranges] -> its first number
    pre=${host%%\[*}
    rest=${host#*\[}
    inner=${rest%%\]*}
    post=${rest#*\]}
    host=$pre${inner%%[,-]*}$post
  done
  echo "$host"
}

if [[ -z $local_processes ]]; then
  if [[ -n ${SLURM_JOB_ID:-} && ${SLURM_NTASKS:-1} =~ ^[0-9]+$ && ${SLURM_NTASKS:-1} -gt 1 ]]; then
    [[ ${SLURM_PROCID:-} =~ ^[0-9]+$ ]] ||
      die "SLURM_NTASKS=$SLURM_NTASKS but SLURM_PROCID is not set: start with 'srun ./launch.sh ...'"
    [[ -n ${SLURM_JOB_NODELIST:-} ]] || die "SLURM_JOB_NODELIST is not set"
    job_number=${SLURM_JOB_ID//[!0-9]/}
    ((${#job_number} <= 6)) || job_number=${job_number: -6}
    port=${MLP_JAX_PORT:-$((DEFAULT_SLURM_PORT_BASE + 10#${job_number:-0} % 1000))}
    [[ $port =~ ^[0-9]+$ ]] || die "MLP_JAX_PORT must be a port number, got '$port'"
    host=$(first_slurm_host "$SLURM_JOB_NODELIST")
    [[ -n $host ]] || die "cannot find the first host of SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"
    export COORDINATOR_ADDRESS=$host:$port NUM_PROCESSES=$SLURM_NTASKS PROCESS_ID=$SLURM_PROCID
    found+=("SLURM job $SLURM_JOB_ID, task $SLURM_PROCID of $SLURM_NTASKS")
    did+=("COORDINATOR_ADDRESS=$COORDINATOR_ADDRESS NUM_PROCESSES=$NUM_PROCESSES PROCESS_ID=$PROCESS_ID")
  elif [[ -n ${COORDINATOR_ADDRESS:-}${NUM_PROCESSES:-}${PROCESS_ID:-} ]]; then
    missing=()
    for name in COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID; do
      [[ -n ${!name:-} ]] || missing+=("$name")
    done
    ((${#missing[@]} == 0)) ||
      die "set all of COORDINATOR_ADDRESS, NUM_PROCESSES and PROCESS_ID, or none" \
        "($(join ', ' "${missing[@]}") missing)"
    [[ $COORDINATOR_ADDRESS == *:[0-9]* ]] ||
      die "COORDINATOR_ADDRESS must be host:port, got '$COORDINATOR_ADDRESS'"
    if ! [[ $NUM_PROCESSES =~ ^[1-9][0-9]*$ && $PROCESS_ID =~ ^[0-9]+$ ]] ||
      ((10#$PROCESS_ID >= 10#$NUM_PROCESSES)); then
      die "need 0 <= PROCESS_ID < NUM_PROCESSES, got PROCESS_ID='$PROCESS_ID' NUM_PROCESSES='$NUM_PROCESSES'"
    fi
    passed="COORDINATOR_ADDRESS=$COORDINATOR_ADDRESS NUM_PROCESSES=$NUM_PROCESSES"
    did+=("$passed PROCESS_ID=$PROCESS_ID passed through (yours)")
  elif [[ $accelerator == tpu ]]; then
    if [[ -n ${MLP_JAX_DISTRIBUTED:-} ]]; then
      did+=("MLP_JAX_DISTRIBUTED=$MLP_JAX_DISTRIBUTED kept (yours)")
    else
      export MLP_JAX_DISTRIBUTED=auto
      did+=("MLP_JAX_DISTRIBUTED=auto (JAX detects the pod slice; run this on every worker)")
    fi
  else
    if [[ -n ${MLP_JAX_DISTRIBUTED:-} ]]; then
      did+=("MLP_JAX_DISTRIBUTED=$MLP_JAX_DISTRIBUTED kept (yours)")
    else
      did+=("one process")
    fi
  fi
  report
  if ((dry_run)); then
    echo "$PROG: would run: $(command_line "$@")"
    exit 0
  fi
  exec "$py" -m "$module" "$@"
fi

# ---------------------------------------------------------------- N local processes
n=$local_processes
if [[ -n ${MLP_JAX_PORT:-} ]]; then
  port=$MLP_JAX_PORT
  [[ $port =~ ^[0-9]+$ ]] || die "MLP_JAX_PORT must be a port number, got '$port'"
else
  port=$("$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])') || die "cannot find a free port with $py (set MLP_JAX_PORT)"
fi
export COORDINATOR_ADDRESS=127.0.0.1:$port NUM_PROCESSES=$n
unset MLP_JAX_DISTRIBUTED PROCESS_ID
did+=("$n local processes: COORDINATOR_ADDRESS=$COORDINATOR_ADDRESS NUM_PROCESSES=$n PROCESS_ID=0..$((n - 1))")

gpu_share=()  # CUDA_VISIBLE_DEVICES of each process
case $accelerator in
  gpu)
    if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
      IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
    else
      gpus=()
      for ((k = 0; k < gpu_count; k++)); do gpus+=("$k"); done
    fi
    ((${#gpus[@]} > 0 && ${#gpus[@]} % n == 0)) ||
      die "--local_processes=$n does not divide the ${#gpus[@]} GPU(s) evenly"
    per=$((${#gpus[@]} / n))
    for ((i = 0; i < n; i++)); do
      gpu_share+=("$(join , "${gpus[@]:i*per:per}")")
    done
    did+=("CUDA_VISIBLE_DEVICES: $per GPU(s) per process") ;;
  tpu)
    die "--local_processes is for CPU and GPU machines; on a TPU VM run one process per worker" ;;
  cpu)
    if [[ ${XLA_FLAGS:-} =~ --xla_force_host_platform_device_count=([0-9]+) ]]; then
      did+=("${BASH_REMATCH[1]} CPU device(s) per process (XLA_FLAGS)")
    else
      did+=("1 CPU device per process (set XLA_FLAGS=--xla_force_host_platform_device_count=K for K)")
    fi ;;
esac
if [[ -z ${PYTHONUNBUFFERED+x} ]]; then
  export PYTHONUNBUFFERED=1
  did+=("PYTHONUNBUFFERED=1")
fi
report

if ((dry_run)); then
  for ((i = 0; i < n; i++)); do
    export PROCESS_ID=$i
    ((${#gpu_share[@]} == 0)) || export CUDA_VISIBLE_DEVICES="${gpu_share[i]}"
    echo "$PROG: would run [p$i]: $(command_line "$@")"
  done
  exit 0
fi

prefix() {  # copies stdin to stdout, each line prefixed; outlives signals to its group
  # (a read loop: awk and sed may hold lines back in their buffers)
  trap '' INT TERM HUP
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    printf '[p%s] %s\n' "$1" "$line"
  done
}

exec 3>&2
say() { echo "$PROG: $*" >&3; }

pids=()         # pid of each process (= its process group)
launched=0
codes=()        # exit code of each finished process
running=0
failed=         # index of the first process that failed
signal_name=    # the signal launch.sh was stopped by
signals=0
kill_at=        # $SECONDS after which the remaining processes are killed

alive() { [[ -z ${codes[$1]:-} ]]; }

signal_all() {  # signal_all SIGNAL [group]: to each running process (or its whole group)
  local i
  for ((i = 0; i < launched; i++)); do
    if alive "$i"; then
      if [[ ${2:-} == group ]]; then
        kill -s "$1" -- "-${pids[i]}" 2>/dev/null || true
      else
        kill -s "$1" "${pids[i]}" 2>/dev/null || true
      fi
    fi
  done
}

# shellcheck disable=SC2317  # on_signal and cleanup run from traps
on_signal() {  # on_signal NAME [FORWARDED]: SIGNAME arrived; FORWARDED (default NAME) is sent
  local forwarded=${2:-$1}
  if ((running == 0)); then
    say "got SIG$1 after every process had finished"
    return
  fi
  signals=$((signals + 1))
  [[ -n $signal_name ]] || signal_name=$1
  if ((signals >= 3)); then
    say "SIG$1 again: killing the $running running process(es)"
    signal_all KILL group
  else
    say "got SIG$1; sending SIG$forwarded to the $running running process(es)" \
      "(they checkpoint and stop after this epoch; a third signal kills them)"
    signal_all "$forwarded"
  fi
}

# shellcheck disable=SC2317
cleanup() {  # whatever ends launch.sh, no process outlives it
  local i k
  if ((running > 0)); then
    signal_all TERM group
    sleep 1
    signal_all KILL group
  fi
  for ((i = 0; i < launched; i++)); do  # let the prefixers print the last lines
    for ((k = 0; k < 50; k++)); do
      kill -0 -- "-${pids[i]}" 2>/dev/null || break
      sleep 0.1
    done
  done
}
trap cleanup EXIT
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP TERM' HUP  # the modules stop cleanly on TERM and INT

set -m  # each child in a process group of its own: signalled and killed as a whole
for ((i = 0; i < n; i++)); do
  (
    export PROCESS_ID=$i
    ((${#gpu_share[@]} == 0)) || export CUDA_VISIBLE_DEVICES="${gpu_share[i]}"
    exec "$py" -m "$module" "$@" </dev/null > >(prefix "$i") 2> >(prefix "$i" >&2)
  ) &
  pids[i]=$!
  launched=$((i + 1))
  running=$((running + 1))
done
set +m  # no job status lines ("Terminated ...") from here on

describe_code() {
  local code=$1
  if ((code > 128)) && name=$(kill -l "$((code - 128))" 2>/dev/null); then
    echo "exit code $code (SIG$name)"
  else
    echo "exit code $code"
  fi
}

# Bash reports children killed by a signal ("... Killed  ( export PROCESS_ID ...").
# That line says nothing ours does not, so the watch loop's stderr is dropped and
# launch.sh speaks through fd 3.
watch() {
  local i code newly
  while ((running > 0)); do
    newly=()
    for ((i = 0; i < n; i++)); do
      alive "$i" || continue
      kill -0 "${pids[i]}" 2>/dev/null && continue
      code=0
      wait "${pids[i]}" || code=$?
      codes[i]=$code
      running=$((running - 1))
      newly+=("$i")
    done
    for i in ${newly[@]+"${newly[@]}"}; do
      if ((codes[i] != 0)) && [[ -z $failed && -z $signal_name ]]; then
        failed=$i
        if ((running > 0)); then
          say "process $i (pid ${pids[i]}) failed with $(describe_code "${codes[i]}");" \
            "stopping the other $running process(es)"
          signal_all TERM group
        fi
      fi
    done
    # After a failure, or once a process has exited after a signal, the rest get
    # $grace seconds.
    if ((running > 0)) && [[ -z $kill_at ]] &&
      [[ -n $failed || (-n $signal_name && ${#newly[@]} -gt 0) ]]; then
      kill_at=$((SECONDS + grace))
    fi
    if ((running > 0)) && [[ -n $kill_at ]] && ((SECONDS >= kill_at)); then
      say "killing the $running process(es) still running ${grace}s later (MLP_JAX_LAUNCH_GRACE)"
      signal_all KILL group
      kill_at=$((SECONDS + 3600))
    fi
    ((${#newly[@]} > 0)) || sleep 0.2
  done
}
watch 2>/dev/null

summary=()
for ((i = 0; i < n; i++)); do summary+=("p$i=${codes[i]}"); done
if [[ -n $failed ]]; then
  say "failed: process $failed exited with $(describe_code "${codes[failed]}")" \
    "(exit codes: $(join ' ' "${summary[@]}"))"
  exit "${codes[failed]}"
fi
if [[ -n $signal_name ]]; then
  say "stopped by SIG$signal_name (exit codes: $(join ' ' "${summary[@]}"));" \
    "run the same command again to resume"
  exit $((128 + $(kill -l "$signal_name")))
fi
exit 0
