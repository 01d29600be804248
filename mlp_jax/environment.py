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
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  # Cache every program: even a one-second compile is most of this project's start-up.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return cache_dir


# XLA:CPU vectorises with 256-bit registers unless told otherwise, even on CPUs with
# 512-bit units; 512 makes the seed config's epoch about 7% faster (README, Performance).
CPU_COMPILER_OPTIONS = {'xla_cpu_prefer_vector_width': 512}


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


def initialize_distributed() -> None:
  """Joins JAX's distributed runtime when this process is one of several.

  launch.sh sets COORDINATOR_ADDRESS (host:port), NUM_PROCESSES and PROCESS_ID
  (from its own --local_processes, from SLURM's variables, or passed through);
  MLP_JAX_DISTRIBUTED=auto lets JAX detect the cluster itself (TPU pod slices).
  With neither, this is a single process and nothing happens.
  """
  address = os.environ.get('COORDINATOR_ADDRESS')
  if address or os.environ.get('MLP_JAX_DISTRIBUTED') == 'auto':
    # JAX's preemption service would swallow SIGTERM until our own handler is in
    # place; the training loop handles SIGTERM itself (checkpoint, then exit).
    jax.config.update('jax_enable_preemption_service', False)
  if address:
    if jax.config.jax_platforms in (None, '', 'cpu') or 'cpu' in str(jax.config.jax_platforms):
      # CPU devices of different processes talk through gloo (the default has no
      # cross-process collectives).
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=address,
                               num_processes=int(os.environ['NUM_PROCESSES']),
                               process_id=int(os.environ['PROCESS_ID']))
  elif os.environ.get('MLP_JAX_DISTRIBUTED') == 'auto':
    jax.distributed.initialize()


def _versions() -> Dict[str, Optional[str]]:
  versions: Dict[str, Optional[str]] = {'python': platform.python_version()}
  for name in _VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


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


def _cpu_model() -> Optional[str]:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or None


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
      'jax_config': {name: getattr(jax.config, name) for name in (
          'jax_enable_x64', 'jax_default_matmul_precision', 'jax_default_prng_impl',
          'jax_compilation_cache_dir')},
      'platform': {'system': platform.system(), 'release': platform.release(),
                   'machine': platform.machine(), 'cpu': _cpu_model(),
                   'cpu_count': os.cpu_count(), 'usable_cores': _usable_cores()},
      'command': [os.path.basename(sys.executable)] + sys.argv,
      'git': _git_commit(),
  }
  if dataset is not None:
    info['data'] = {'source': dataset.source, 'sha256': dict(dataset.sha256)}
  return info
