"""environment.py: the XLA options the project compiles with, and what environment.json says."""

import hashlib
import json
import os

from conftest import read
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
