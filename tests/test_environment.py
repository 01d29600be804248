"""environment.py: the XLA options the project compiles with, and what environment.json says."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, read, without_timing
from mlp_jax import environment


def test_cpu_programs_prefer_512_bit_vectors(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert environment.compiler_options('cpu') == {'xla_cpu_prefer_vector_width': 512}
  assert environment.compiler_options('gpu') == {}
  assert environment.compiler_options('tpu') == {}


def test_an_option_named_in_xla_flags_is_left_to_xla_flags(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2 '
                                  '--xla_cpu_prefer_vector_width=256')
  assert environment.compiler_options('cpu') == {}
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  assert environment.compiler_options('cpu') == {'xla_cpu_prefer_vector_width': 512}


def test_runs_compile_with_the_options_and_record_them(tmp_path, run_module):
  """A batch-norm run's bits depend on the vector width: the CLI really uses the option.

  (The plain MLP computes the same bits at either width, so it could not tell.)
  """
  runs = {}
  for name, env in (('default', {'XLA_FLAGS': ''}),
                    ('width256', {'XLA_FLAGS': '--xla_cpu_prefer_vector_width=256'})):
    workdir = str(tmp_path / name)
    result = run_module('mlp_jax.main', '--epochs=1', '--batch_norm', f'--workdir={workdir}',
                        env=env)
    assert result.returncode == 0, result.stderr
    runs[name] = workdir
  recorded = {name: json.loads(read(os.path.join(w, 'environment.json')))
              for name, w in runs.items()}
  assert recorded['default']['compiler_options'] == {'xla_cpu_prefer_vector_width': 512}
  assert recorded['width256']['compiler_options'] == {}
  assert recorded['width256']['xla_flags'] == '--xla_cpu_prefer_vector_width=256'
  params = {name: hashlib.sha256(read(os.path.join(w, 'params.msgpack'), 'rb')).hexdigest()
            for name, w in runs.items()}
  assert params['default'] != params['width256']


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity') or len(os.sched_getaffinity(0)) < 2,
                    reason='needs Linux and at least two cores')
def test_the_bits_do_not_depend_on_the_number_of_cores(tmp_path, cache_dir):
  """Results compare across machines: one core computes what all of them do.

  (Moving the matmuls from YNNPACK to Eigen, 7% faster here, fails this: with
  `xla_cpu_experimental_ynn_fusion_type=reduce` one core and two disagree.)
  """
  # The child pins itself before importing JAX (a preexec_fn would fork this
  # multithreaded process).
  pinned_main = ('import os, runpy, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(","))); '
                 'sys.argv = ["mlp_jax.main", *sys.argv[2:]]; '
                 'runpy.run_module("mlp_jax.main", run_name="__main__", alter_sys=True)')
  digests = []
  for cores in (sorted(os.sched_getaffinity(0)), [min(os.sched_getaffinity(0))]):
    workdir = tmp_path / f'cores{len(cores)}'
    result = subprocess.run(
        [sys.executable, '-c', pinned_main, ','.join(map(str, cores)), '--epochs=1',
         '--batch_norm', '--dropout=0.2', f'--workdir={workdir}'],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'MLP_JAX_COMPILATION_CACHE': cache_dir})
    assert result.returncode == 0, result.stderr
    env = json.loads(read(workdir / 'environment.json'))
    assert env['platform']['usable_cores'] == len(cores)
    digests.append((hashlib.sha256(read(workdir / 'params.msgpack', 'rb')).hexdigest(),
                    without_timing(read(workdir / 'history.csv'))))
  assert digests[0] == digests[1]
