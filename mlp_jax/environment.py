"""Where a run ran, and the JAX runtime settings the entry points apply.

`describe(dataset)` is what environment.json holds: exact library versions,
backend, devices, processes, XLA flags, the git commit of the code, and the
checksums of the data. Two runs can only be expected to agree bit for bit when
these agree.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any, Dict, Optional

import jax

from mlp_jax.data import Dataset

# Distributions whose exact versions decide the numbers a run produces.
_VERSIONED = ('mlp_jax', 'jax', 'jaxlib', 'flax', 'optax', 'numpy', 'absl-py',
              'orbax-checkpoint', 'tensorflow-datasets', 'scipy', 'matplotlib')

CACHE_DIR_ENV = 'MLP_JAX_COMPILATION_CACHE'
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'mlp_jax', 'xla')


def enable_compilation_cache(cache_dir: Optional[str] = None) -> Optional[str]:
  """Turns on JAX's persistent compilation cache, so a second run skips compiling.

  The directory is `cache_dir`, else $MLP_JAX_COMPILATION_CACHE, else
  ~/.cache/mlp_jax/xla; an empty string turns the cache off. Returns the
  directory in use (None when off).
  """
  if cache_dir is None:
    cache_dir = os.environ.get(CACHE_DIR_ENV, DEFAULT_CACHE_DIR)
  if not cache_dir:
    return None
  problem = unwritable(cache_dir)
  if problem:
    # JAX would warn with a traceback-like UserWarning at every program; one line instead.
    print(f'mlp_jax: warning: the compilation cache {cache_dir} cannot be written '
          f'({problem}); compiling without it (--compilation_cache_dir, '
          f'${CACHE_DIR_ENV})', file=sys.stderr, flush=True)
    return None
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  # Cache every program: even a one-second compile is most of this project's start-up.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return cache_dir


def unwritable(directory: str) -> Optional[str]:
  """Why files cannot be written in `directory` (made if missing), or None if they can."""
  try:
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f'.probe{os.getpid()}')
    with open(probe, 'wb'):
      pass
    os.remove(probe)
  except OSError as e:
    return e.strerror or str(e)
  return None


def program_cache_dir(compilation_cache_dir: Optional[str]) -> Optional[str]:
  """Where the entry points keep traced programs (mlp_jax.program_cache): in
  `programs/` of the compilation cache, and nowhere when that is off."""
  return os.path.join(compilation_cache_dir, 'programs') if compilation_cache_dir else None


def prepare_process(deterministic: bool, compilation_cache_dir: Optional[str]) -> Optional[str]:
  """What an entry point does before its backend starts, in this order:
  apply_determinism, initialize_distributed, enable_compilation_cache. Returns
  where traced programs are kept (program_cache_dir; None when the caches are off)."""
  apply_determinism(deterministic)
  initialize_distributed()
  return program_cache_dir(enable_compilation_cache(compilation_cache_dir))


# XLA:CPU vectorises with 256-bit registers unless told otherwise, even on CPUs with
# 512-bit units; 512 makes the seed config's epoch faster there (docs/performance.md).
# Without CSE: a program over several devices goes through the SPMD partitioner, whose
# clean-up merges common subexpressions before the first algebraic simplification,
# which a one-device program does not; at vmap width > 1 that rewrote Adam's per-seed
# bias correction differently (1 ulp apart), so a seed's bits depended on the device
# count. Without the pass both compile the same graph; width-1 bits are unchanged.
# Matmuls on Eigen: by default XLA:CPU hands YNNPACK the matmuls whose left operand is
# not transposed (the forward passes); with YNNPACK's fusions limited to the
# reductions, every matmul is an Eigen contraction, which is faster on CPUs without
# AVX-512 (docs/performance.md) and splits its work by the size of the intra-op pool,
# fixed below, so one core and all cores compute the same bits.
CPU_COMPILER_OPTIONS = {'xla_cpu_prefer_vector_width': 512, 'xla_disable_hlo_passes': 'cse',
                        'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}


def compiler_options(backend: Optional[str] = None) -> Dict[str, Any]:
  """XLA options every program that trains or evaluates a model is compiled with.

  Passed to `jax.jit(..., compiler_options=...)`, so the library, the CLI and the
  tests compile the same programs and get the same bits. An option also named in
  $XLA_FLAGS is left to $XLA_FLAGS (`--xla_cpu_prefer_vector_width=256` reproduces
  runs made before the option was adopted). Empty off the CPU.
  """
  if (backend or jax.default_backend()) != 'cpu':
    return {}
  user_flags = os.environ.get('XLA_FLAGS', '')
  return {name: value for name, value in CPU_COMPILER_OPTIONS.items()
          if f'--{name}' not in user_flags}


# XLA flags that make GPU execution run-to-run reproducible: deterministic
# reductions and scatters, and no autotuning, whose timing-based choice of kernels
# can differ from one compilation to the next. Parsed (and ignored) by every
# backend's XLA, so they are set whatever the machine.
DETERMINISTIC_XLA_FLAGS = ('--xla_gpu_deterministic_ops=true', '--xla_gpu_autotune_level=0')


def apply_determinism(deterministic: bool = True) -> str:
  """Adds DETERMINISTIC_XLA_FLAGS to $XLA_FLAGS, for the backend to read when it starts.

  Entry points call this before anything touches a device (XLA reads $XLA_FLAGS
  once). A flag the user already names in $XLA_FLAGS is left as they set it.
  `deterministic=False` (--nodeterministic) adds nothing. environment.json
  records the result as `xla_flags`. Returns $XLA_FLAGS as it now is.
  """
  user_flags = os.environ.get('XLA_FLAGS', '')
  if deterministic:
    added = [f for f in DETERMINISTIC_XLA_FLAGS if f.split('=')[0] not in user_flags]
    os.environ['XLA_FLAGS'] = ' '.join([user_flags, *added]).strip()
  return os.environ.get('XLA_FLAGS', '')


# The matmuls run as Eigen contractions on the CPU client's intra-op thread pool (all
# of them with CPU_COMPILER_OPTIONS; without, the weight gradients x^T g still do), and
# Eigen blocks a contraction by the size of that pool, so their last bits depend on
# it. The pool has max($PJRT_NPROC, local CPU devices) threads, and without
# PJRT_NPROC as many as the process may use cores: a run pinned to one core, one on
# two cores and one on 4 CPU devices could compute three different sets of
# parameters. A pool of a fixed size makes them one. 2, not more: with batches of 128
# a third or fourth thread buys nothing, and on 2 cores a pool of 4 is slower
# (docs/performance.md). A process with more CPU devices than that (each needs a
# thread of its own) has a larger pool.
INTRA_OP_THREADS_ENV = 'PJRT_NPROC'
INTRA_OP_THREADS = 2


def _fix_intra_op_threads() -> bool:
  """Sets $PJRT_NPROC to INTRA_OP_THREADS unless it is set already (a value of the
  user's is left to the user, like an option in $XLA_FLAGS).

  Returns whether $PJRT_NPROC sizes the pool: it only takes effect before JAX creates
  its CPU client (the first jax.devices(), jit or array), so this runs when this module
  is imported, which every entry point and every module that compiles does first.
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if os.environ.get(INTRA_OP_THREADS_ENV):
    return True
  if xla_bridge.backends_are_initialized():
    return False  # too late: the pool has its default size
  os.environ[INTRA_OP_THREADS_ENV] = str(INTRA_OP_THREADS)
  return True


_INTRA_OP_THREADS_FIXED = _fix_intra_op_threads()


def intra_op_threads() -> Dict[str, Any]:
  """What environment.json records of XLA:CPU's intra-op thread pool.

  {'PJRT_NPROC': the value that sized it (None when JAX's CPU client existed before
  this module was imported: then the pool has one thread per usable core),
  'pool': its size, max(PJRT_NPROC, local CPU devices) (None when not known, or off
  the CPU)}.
  """
  count = os.environ.get(INTRA_OP_THREADS_ENV) if _INTRA_OP_THREADS_FIXED else None
  pool = None
  if count and count.strip().isdigit() and jax.default_backend() == 'cpu':
    pool = max(int(count), jax.local_device_count())
  return {INTRA_OP_THREADS_ENV: count, 'pool': pool}


def initialize_distributed() -> None:
  """Joins JAX's distributed runtime when this process is one of several.

  Explicitly: COORDINATOR_ADDRESS (host:port), NUM_PROCESSES and PROCESS_ID, all three
  (`python -m mlp_jax.launch` sets them for local processes; set them yourself on any
  other cluster). Otherwise `jax.distributed.initialize()` without arguments, so that
  JAX finds the coordinator, the process count and this process's id itself, in a
  SLURM step of several tasks (SLURM_JOB_ID, SLURM_NTASKS > 1: started with `srun`),
  under Open MPI's `mpirun` (OMPI_COMM_WORLD_SIZE > 1), on a Cloud TPU VM (a pod
  slice's workers), or whenever MLP_JAX_DISTRIBUTED=auto. MLP_JAX_DISTRIBUTED=off
  keeps every process on its own (e.g. independent runs as the tasks of one job).
  With none of these, this is a single process and nothing happens.

  Raises:
    UsageError: some but not all of the three variables are set, or they are invalid,
      or a detected cluster does not give JAX what it needs.
  """
  from mlp_jax.errors import UsageError  # pylint: disable=g-import-not-at-top
  env = os.environ
  setting = env.get('MLP_JAX_DISTRIBUTED', '')
  if setting not in ('', 'auto', 'off'):
    raise UsageError(f"MLP_JAX_DISTRIBUTED must be 'auto' or 'off', got {setting!r}")
  if setting == 'off':
    return
  names = ('COORDINATOR_ADDRESS', 'NUM_PROCESSES', 'PROCESS_ID')
  given = [name for name in names if env.get(name)]
  explicit = None
  if given:
    if len(given) < len(names):
      missing = ', '.join(name for name in names if name not in given)
      raise UsageError('set all of COORDINATOR_ADDRESS, NUM_PROCESSES and PROCESS_ID, or none '
                       f'({missing} missing)')
    address, count, index = (env[name] for name in names)
    if ':' not in address or not address.rsplit(':', 1)[1].isdigit():
      raise UsageError(f'COORDINATOR_ADDRESS must be host:port, got {address!r}')
    if not (count.isdigit() and index.isdigit() and int(index) < int(count)):
      raise UsageError(f'need 0 <= PROCESS_ID < NUM_PROCESSES, got PROCESS_ID={index!r} '
                       f'NUM_PROCESSES={count!r}')
    explicit = dict(coordinator_address=address, num_processes=int(count),
                    process_id=int(index))
  try:
    # Set by `import jax` (the same flag JAX's own TPU cluster detection reads).
    from jax._src.cloud_tpu_init import (  # pylint: disable=g-import-not-at-top
        running_in_cloud_tpu_vm)
  except ImportError:
    running_in_cloud_tpu_vm = False

  def several(name):
    return env.get(name, '').isdigit() and int(env[name]) > 1

  detected = [reason for reason, present in (
      ('MLP_JAX_DISTRIBUTED=auto', setting == 'auto'),
      ('a SLURM step of several tasks', bool(env.get('SLURM_JOB_ID')) and several('SLURM_NTASKS')),
      ("Open MPI's mpirun", several('OMPI_COMM_WORLD_SIZE')),
      ('a Cloud TPU VM', running_in_cloud_tpu_vm)) if present]
  if explicit is None and not detected:
    return
  # JAX's preemption service would swallow SIGTERM until our own handler is in
  # place; the training loop handles SIGTERM itself (checkpoint, then exit).
  jax.config.update('jax_enable_preemption_service', False)
  if jax.config.jax_platforms in (None, '', 'cpu') or 'cpu' in str(jax.config.jax_platforms):
    # CPU devices of different processes talk through gloo (the default has no
    # cross-process collectives).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if explicit is not None:
    jax.distributed.initialize(**explicit)
    return
  try:
    jax.distributed.initialize()
  except (ValueError, RuntimeError) as e:  # e.g. a cluster JAX cannot read the coordinator of
    first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UsageError(f'{" and ".join(detected)} found, but jax.distributed.initialize() '
                     f'could not set up from it: {first_line} (start each task with srun '
                     'or mpirun, or set COORDINATOR_ADDRESS, NUM_PROCESSES and PROCESS_ID, '
                     'or MLP_JAX_DISTRIBUTED=off)') from e


def distribution_version(name: str) -> Optional[str]:
  """The installed version of distribution `name`, None if it is not installed."""
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def _versions() -> Dict[str, Optional[str]]:
  return {'python': platform.python_version(),
          **{name: distribution_version(name) for name in _VERSIONED}}


def _git_commit() -> Optional[Dict[str, Any]]:
  """The commit of the source tree mlp_jax was imported from, if it is a git checkout."""
  source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', '-C', source, 'rev-parse', 'HEAD'], capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(['git', '-C', source, 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True, timeout=10, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return {'commit': commit, 'dirty': bool(dirty.strip())}


# The vector extensions that decide which kernels XLA:CPU and YNNPACK run (and so
# a CPU run's speed and, across them, its last bits), as /proc/cpuinfo names them.
VECTOR_ISA = ('avx', 'avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16',
              'amx_tile', 'amx_bf16')


def cpu_description() -> Dict[str, Any]:
  """{'cpu': the model name, 'cpu_id': vendor, family, model and stepping, 'cpu_isa':
  the VECTOR_ISA extensions it has}. The model name alone can name different
  generations alike (a VM shows 'AMD EPYC' for Zen 3 and Zen 5); the id tells them
  apart. Off Linux only 'cpu' (platform.processor()), the others None."""
  fields: Dict[str, str] = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if not line.strip():
          break  # the first processor's block describes them all
        key, _, value = line.partition(':')
        fields[key.strip()] = value.strip()
  except OSError:
    pass
  if not fields:
    return {'cpu': platform.processor() or None, 'cpu_id': None, 'cpu_isa': None}
  cpu_id = ' '.join(f'{label} {fields[key]}' if label else fields[key] for key, label in (
      ('vendor_id', ''), ('cpu family', 'family'), ('model', 'model'),
      ('stepping', 'stepping')) if key in fields) or None
  flags = set(fields.get('flags', '').split())
  return {'cpu': fields.get('model name') or platform.processor() or None, 'cpu_id': cpu_id,
          'cpu_isa': [name for name in VECTOR_ISA if name in flags]}


def _usable_cores() -> Optional[int]:
  """The cores this process may run on (its affinity mask, e.g. under taskset or a
  batch scheduler), which sizes XLA's thread pool."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count()


def describe(dataset: Optional[Dataset] = None) -> Dict[str, Any]:
  """The facts environment.json records."""
  devices = jax.devices()
  info: Dict[str, Any] = {
      'versions': _versions(),
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': jax.device_count(),
      'local_device_count': jax.local_device_count(),
      'process_count': jax.process_count(),
      'process_index': jax.process_index(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'compiler_options': compiler_options(),
      'intra_op_threads': intra_op_threads(),
      'jax_config': {name: getattr(jax.config, name) for name in (
          'jax_enable_x64', 'jax_default_matmul_precision', 'jax_default_prng_impl',
          'jax_compilation_cache_dir')},
      'platform': {'system': platform.system(), 'release': platform.release(),
                   'machine': platform.machine(), **cpu_description(),
                   'cpu_count': os.cpu_count(), 'usable_cores': _usable_cores()},
      'command': [os.path.basename(sys.executable)] + sys.argv,
      'git': _git_commit(),
  }
  if dataset is not None:
    info['data'] = {'source': dataset.source, 'sha256': dict(dataset.sha256)}
  return info
