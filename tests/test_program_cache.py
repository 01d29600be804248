"""Traced programs kept across processes (mlp_jax.program_cache): hits, misses, keys,
damaged entries, and that a run from the cache computes the same bits."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import read, without_timing
from mlp_jax import environment, program_cache, records
from mlp_jax.config import TrainConfig
from mlp_jax.program_cache import ProgramCache, trace
from mlp_jax.run import Layout, RunOptions, epoch_line, train

ARGS = ({'w': jax.ShapeDtypeStruct((3, 4), jnp.float32)}, jax.ShapeDtypeStruct((4,), jnp.float32))


def _affine(params, x):
  return {'y': jnp.tanh(params['w'] @ x), 'n': jnp.sum(x > 0)}


def _inputs():
  rng = np.random.default_rng(0)
  return {'w': rng.normal(size=(3, 4)).astype(np.float32)}, rng.normal(size=4).astype(np.float32)


def _bytes(tree):
  return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)]


def test_a_second_cache_loads_the_program_and_computes_the_same_bits(tmp_path):
  first = ProgramCache(str(tmp_path))
  traced = trace('affine', _affine, ARGS, first)
  second = ProgramCache(str(tmp_path))
  loaded = trace('affine', _affine, ARGS, second)
  assert (first.hits, first.misses, second.hits, second.misses) == (0, 1, 1, 0)
  assert len(os.listdir(tmp_path)) == 1
  inputs = _inputs()
  direct = jax.jit(_affine)(*inputs)
  assert _bytes(jax.jit(loaded)(*inputs)) == _bytes(traced(*inputs)) == _bytes(direct)
  assert jax.tree.structure(loaded.out_shapes) == jax.tree.structure(direct)
  assert loaded.out_shapes['y'].shape == (3,) and loaded.out_shapes['n'].dtype == jnp.int32


def test_what_the_program_is_traced_for_is_in_its_key(tmp_path):
  cache = ProgramCache(str(tmp_path))
  key = cache.key('affine', ARGS)[0]
  assert cache.key('affine', ARGS)[0] == key
  assert cache.key('affine of another config', ARGS)[0] != key
  wider = ({'w': jax.ShapeDtypeStruct((3, 5), jnp.float32)}, jax.ShapeDtypeStruct((5,), jnp.float32))
  assert cache.key('affine', wider)[0] != key
  as_tuple = ((jax.ShapeDtypeStruct((3, 4), jnp.float32),), ARGS[1])
  assert cache.key('affine', as_tuple)[0] != key
  text = cache.key('affine', ARGS)[1]
  for part in ('mlp_jax source', 'jax ', 'flax ', 'optax ', 'jax config', 'backend cpu',
               'devices'):
    assert part in text, part


def test_the_source_digest_follows_every_module(tmp_path, monkeypatch):
  package = tmp_path / 'package'
  package.mkdir()
  (package / 'a.py').write_text('x = 1\n')
  monkeypatch.setattr(program_cache, '__file__', str(package / 'program_cache.py'))
  before = program_cache._source_digest()
  (package / 'a.py').write_text('x = 2\n')
  assert program_cache._source_digest() != before


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'other_key', 'empty'])
def test_a_damaged_entry_is_a_miss_and_is_written_again(tmp_path, damage):
  trace('affine', _affine, ARGS, ProgramCache(str(tmp_path)))
  [name] = os.listdir(tmp_path)
  path = tmp_path / name
  content = path.read_bytes()
  if damage == 'other_key':
    # Another program's entry under this name (as a hash collision would put it).
    other = ProgramCache(str(tmp_path / 'other'))
    trace('another', _affine, ARGS, other)
    [other_name] = os.listdir(tmp_path / 'other')
    path.write_bytes((tmp_path / 'other' / other_name).read_bytes())
  else:
    path.write_bytes({'truncated': content[:len(content) // 2], 'garbage': b'\x00' * 64,
                      'empty': b''}[damage])
  damaged = path.read_bytes()
  cache = ProgramCache(str(tmp_path))
  program = trace('affine', _affine, ARGS, cache)
  assert (cache.hits, cache.misses) == (0, 1)
  assert _bytes(program(*_inputs())) == _bytes(jax.jit(_affine)(*_inputs()))
  assert path.read_bytes() != damaged
  again = ProgramCache(str(tmp_path))
  trace('affine', _affine, ARGS, again)
  assert again.hits == 1


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  cache = ProgramCache(str(blocker / 'programs'))
  program = trace('affine', _affine, ARGS, cache)
  assert _bytes(program(*_inputs())) == _bytes(jax.jit(_affine)(*_inputs()))
  assert cache.misses == 1 and blocker.read_text() == 'not a directory'


def test_a_program_refuses_arguments_of_another_structure():
  program = trace('affine', _affine, ARGS)
  with pytest.raises(ValueError, match='differ from the traced'):
    program(*_inputs()[::-1])


def test_the_entry_points_keep_programs_beside_the_compilation_cache():
  assert environment.program_cache_dir('/cache/xla') == os.path.join('/cache/xla', 'programs')
  assert environment.program_cache_dir(None) is None
  assert environment.program_cache_dir('') is None


def _run_reading_cache(subset, tmp_path, config):
  """run(name, program_cache_dir, epochs=config's) -> (programs from the cache,
  programs traced, history without timing, params bytes)."""
  def run(name, program_cache_dir, epochs=config.epochs):
    options = RunOptions(tensorboard=False, checkpoint_every=0,
                         program_cache_dir=program_cache_dir)
    train(config.replace(epochs=epochs), [0], Layout(str(tmp_path / name), sweep=False),
          options, epoch_line, started=0.0, dataset=subset)
    timing = records.read_json_object(str(tmp_path / name / records.TIMING_FILE))
    return (timing['programs_from_cache'], timing['programs_traced'],
            without_timing(read(str(tmp_path / name / records.HISTORY_FILE))),
            read(str(tmp_path / name / records.PARAMS_FILE), 'rb'))
  return run


@pytest.mark.slow
def test_a_run_from_cached_programs_equals_one_that_traced_them(subset, tmp_path):
  run = _run_reading_cache(subset, tmp_path, TrainConfig(epochs=2, dropout=0.2,
                                                          batch_norm=True))
  cache_dir = str(tmp_path / 'programs')
  traced, loaded, uncached = run('a', cache_dir), run('b', cache_dir), run('c', None)
  assert traced[:2] == (0, 3) and loaded[:2] == (3, 0) and uncached[:2] == (None, None)
  assert traced[2:] == loaded[2:] == uncached[2:]


@pytest.mark.slow
def test_a_longer_run_loads_the_programs_of_a_shorter_one(subset, tmp_path):
  """With a constant learning rate no program reads the number of epochs."""
  run = _run_reading_cache(subset, tmp_path, TrainConfig(epochs=3))
  cache_dir = str(tmp_path / 'programs')
  assert run('short', cache_dir, epochs=1)[:2] == (0, 3)
  loaded, uncached = run('long', cache_dir), run('uncached', None)
  assert loaded[:2] == (3, 0)
  assert loaded[2:] == uncached[2:]


def test_without_flatbuffers_programs_are_traced_and_nothing_is_written(tmp_path, monkeypatch):
  # jax.export serializes with flatbuffers, which jax does not require.
  import sys  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, 'flatbuffers', None)
  monkeypatch.delitem(sys.modules, 'jax._src.export.serialization', raising=False)
  monkeypatch.delitem(sys.modules, 'jax._src.export.serialization_generated', raising=False)
  cache = ProgramCache(str(tmp_path))
  traced = trace('affine', _affine, ARGS, cache)
  assert trace('affine', _affine, ARGS, cache) is not None
  assert (cache.hits, cache.misses) == (0, 2) and os.listdir(tmp_path) == []
  inputs = _inputs()
  assert _bytes(traced(*inputs)) == _bytes(jax.jit(_affine)(*inputs))
