"""environment.py: the XLA options the project compiles with, and what environment.json says."""

import functools
import hashlib
import json
import os
import re
import subprocess
import sys

import jax
import pytest

from conftest import REPO, read, side_by_side, without_timing
from mlp_jax import environment


DOTS_ON_EIGEN = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}
ALL = {'xla_cpu_prefer_vector_width': 512, 'xla_disable_hlo_passes': 'cse', **DOTS_ON_EIGEN}
WITHOUT_WIDTH = {'xla_disable_hlo_passes': 'cse', **DOTS_ON_EIGEN}


def test_cpu_programs_prefer_512_bit_vectors_skip_cse_and_keep_dots_off_ynnpack(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert environment.compiler_options('cpu') == ALL
  assert environment.compiler_options('gpu') == {}
  assert environment.compiler_options('tpu') == {}


def test_an_option_named_in_xla_flags_is_left_to_xla_flags(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2 '
                                  '--xla_cpu_prefer_vector_width=256')
  assert environment.compiler_options('cpu') == WITHOUT_WIDTH
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  assert environment.compiler_options('cpu') == ALL


def _has_512_bit_vectors():
  return 'avx512f' in (environment.cpu_description()['cpu_isa'] or [])


@pytest.mark.skipif(not os.path.exists('/proc/cpuinfo'), reason='needs /proc/cpuinfo')
def test_the_cpu_is_described_by_its_id_and_vector_extensions():
  """'AMD EPYC' names several generations: environment.json also records the
  family/model and the vector extensions, as /proc/cpuinfo gives them."""
  described = environment.describe()['platform']
  with open('/proc/cpuinfo') as f:
    first = f.read().split('\n\n')[0]
  fields = dict((k.strip(), v.strip()) for k, _, v in
                (line.partition(':') for line in first.splitlines()))
  flags = fields['flags'].split()
  assert described['cpu'] == fields['model name']
  assert described['cpu_id'] == (f"{fields['vendor_id']} family {fields['cpu family']} "
                                 f"model {fields['model']} stepping {fields['stepping']}")
  assert described['cpu_isa'] == [n for n in environment.VECTOR_ISA if n in flags]
  assert ('avx2' in described['cpu_isa']) == ('avx2' in flags)


def test_the_programs_are_compiled_with_the_options(monkeypatch, mnist):
  """An option XLA does not know fails the compile: the training and evaluation
  programs are compiled with `compiler_options()`, whatever the CPU."""
  from mlp_jax import driver  # pylint: disable=g-import-not-at-top
  from mlp_jax.config import TrainConfig  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setattr(environment, 'CPU_COMPILER_OPTIONS', {'xla_cpu_no_such_option': 1})
  with pytest.raises(Exception, match='xla_cpu_no_such_option'):
    driver.Context.create(TrainConfig(epochs=1), mnist).programs.get(1)


@pytest.mark.slow
def test_the_training_matmuls_run_on_eigen_not_ynnpack(monkeypatch, mnist):
  """With the options, no YNNPACK fusion of the seed config's epoch or evaluation
  holds a matmul: they are Eigen contractions, whose bits follow the fixed thread
  pool, not the cores. Without the option some do."""
  from mlp_jax import driver  # pylint: disable=g-import-not-at-top
  from mlp_jax.config import TrainConfig  # pylint: disable=g-import-not-at-top

  def matmuls_in_ynnpack(program):
    text = program.as_text()
    bodies = dict(re.findall(r'^(%[\w.]+) [^\n]*\{\n(.*?)^\}', text, re.M | re.S))
    fused = re.findall(r'%ynn_fusion[\w.]* = [^\n]*calls=(%[\w.]+)', text)
    return sum(' dot(' in bodies[name] for name in fused)

  monkeypatch.delenv('XLA_FLAGS', raising=False)
  _, epoch, evaluate = driver.Context.create(TrainConfig(epochs=1), mnist).programs.get(1)
  assert matmuls_in_ynnpack(epoch) == matmuls_in_ynnpack(evaluate) == 0
  monkeypatch.setattr(environment, 'CPU_COMPILER_OPTIONS',
                      {k: v for k, v in environment.CPU_COMPILER_OPTIONS.items()
                       if k not in DOTS_ON_EIGEN})
  _, epoch, _ = driver.Context.create(TrainConfig(epochs=1), mnist).programs.get(1)
  assert matmuls_in_ynnpack(epoch) > 0


@pytest.mark.slow
def test_runs_compile_with_the_options_and_record_them(tmp_path, run_module):
  """environment.json records the options; what the vector width does to the bits
  depends on the CPU.

  With 512-bit vectors (AVX-512) and jax 0.10, a batch-norm run's last bits change
  with the width (the plain MLP's do not). Without AVX-512, LLVM has no 512-bit
  registers to prefer: the option is a no-op, same bits with jax 0.10.2 and 0.12
  (measured on an AMD EPYC without AVX-512). Not measured: AVX-512 with jax 0.12.
  """
  runs = {name: str(tmp_path / name) for name in ('default', 'width256')}
  xla_flags = {'default': '', 'width256': '--xla_cpu_prefer_vector_width=256'}
  results = side_by_side(*(
      functools.partial(run_module, 'mlp_jax.main', '--epochs=1', '--batch_norm',
                        '--checkpoint_every=0', '--notensorboard', f'--workdir={runs[name]}',
                        env={'XLA_FLAGS': xla_flags[name]}) for name in runs))
  for result in results:
    assert result.returncode == 0, result.stderr
  recorded = {name: json.loads(read(os.path.join(w, 'environment.json')))
              for name, w in runs.items()}
  assert recorded['default']['compiler_options'] == ALL
  assert recorded['width256']['compiler_options'] == WITHOUT_WIDTH
  assert recorded['width256']['xla_flags'].startswith('--xla_cpu_prefer_vector_width=256')
  params = {name: hashlib.sha256(read(os.path.join(w, 'params.msgpack'), 'rb')).hexdigest()
            for name, w in runs.items()}
  if not _has_512_bit_vectors():
    assert params['default'] == params['width256']
  elif jax.__version__.startswith('0.10.'):
    assert params['default'] != params['width256']


@pytest.mark.slow
def test_the_intra_op_thread_pool_has_a_fixed_size(tmp_path):
  """Importing mlp_jax.environment sets $PJRT_NPROC before JAX's CPU client starts,
  unless the user set it; too late (a client already running), it records None."""
  code = ('import os, sys, json; {before}from mlp_jax import environment; import jax; '
          'jax.devices(); print(json.dumps([os.environ.get("PJRT_NPROC"), '
          'environment.intra_op_threads()]))')
  env = {k: v for k, v in os.environ.items() if k not in ('PJRT_NPROC', 'XLA_FLAGS')}

  def child(before='', **extra):
    result = subprocess.run([sys.executable, '-c', code.format(before=before)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**env, **extra})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])

  fixed = str(environment.INTRA_OP_THREADS)
  default, user_set, six_devices, too_late = side_by_side(
      child, functools.partial(child, PJRT_NPROC='3'),
      functools.partial(child, XLA_FLAGS='--xla_force_host_platform_device_count=6'),
      functools.partial(child, before='import jax; jax.devices(); '))
  assert default == [fixed, {'PJRT_NPROC': fixed, 'pool': environment.INTRA_OP_THREADS}]
  assert user_set == ['3', {'PJRT_NPROC': '3', 'pool': 3}]
  # One thread per device at least: XLA sizes the pool max(PJRT_NPROC, devices).
  assert six_devices == [fixed, {'PJRT_NPROC': fixed, 'pool': 6}]
  assert too_late == [None, {'PJRT_NPROC': None, 'pool': None}]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity') or len(os.sched_getaffinity(0)) < 2,
                    reason='needs Linux and at least two cores')
@pytest.mark.parametrize('flags', [[], ['--batch_norm', '--dropout=0.2']], ids=['mlp', 'bn_dropout'])
def test_the_bits_do_not_depend_on_the_number_of_cores(tmp_path, cache_dir, flags):
  """Results compare across machines: one core computes what all of them do.

  The weight gradients' matmuls run on Eigen, whose blocking follows the size of
  XLA:CPU's thread pool (one thread per usable core unless $PJRT_NPROC says): without
  the fixed pool of `environment.INTRA_OP_THREADS` one core and two disagree on an AMD
  EPYC without AVX-512, for both configs with jax 0.12 and for the plain MLP with jax
  0.10. (On AVX-512, moving the other matmuls from YNNPACK to Eigen with
  `xla_cpu_experimental_ynn_fusion_type=reduce` made them disagree too.)
  """
  # The child pins itself before importing JAX (a preexec_fn would fork this
  # multithreaded process). PJRT_NPROC is not inherited from this process (which
  # imported mlp_jax.environment): the child's own import must set it.
  pinned_main = ('import os, runpy, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(","))); '
                 'sys.argv = ["mlp_jax.main", *sys.argv[2:]]; '
                 'runpy.run_module("mlp_jax.main", run_name="__main__", alter_sys=True)')
  env = {k: v for k, v in os.environ.items() if k != environment.INTRA_OP_THREADS_ENV}
  core_sets = (sorted(os.sched_getaffinity(0)), [min(os.sched_getaffinity(0))])

  def pinned_run(cores):
    return subprocess.run(
        [sys.executable, '-c', pinned_main, ','.join(map(str, cores)), '--epochs=1',
         '--checkpoint_every=0', '--notensorboard', *flags,
         f'--workdir={tmp_path / f"cores{len(cores)}"}'],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**env, 'MLP_JAX_COMPILATION_CACHE': cache_dir})

  results = side_by_side(*(functools.partial(pinned_run, cores) for cores in core_sets))
  digests = []
  for cores, result in zip(core_sets, results):
    workdir = tmp_path / f'cores{len(cores)}'
    assert result.returncode == 0, result.stderr
    recorded = json.loads(read(workdir / 'environment.json'))
    assert recorded['platform']['usable_cores'] == len(cores)
    digests.append((hashlib.sha256(read(workdir / 'params.msgpack', 'rb')).hexdigest(),
                    without_timing(read(workdir / 'history.csv'))))
  assert digests[0] == digests[1]
  assert recorded['intra_op_threads'] == {'PJRT_NPROC': str(environment.INTRA_OP_THREADS),
                                          'pool': environment.INTRA_OP_THREADS}
