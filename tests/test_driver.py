"""The driver in-process, on a subset of MNIST: chunks, padding, records, checkpoints, resume."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import (crash_at_epoch, read, run_options, started_on_cpu_devices,
                      without_timing)
from mlp_jax import driver, records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.run import Layout, epoch_line, sweep_line, train
from mlp_jax.train import make_trainer, map_over_seeds, seed_keys

CONFIG = TrainConfig(epochs=3, batch_size=128)


def _train(subset, workdir, seeds, sweep=True, config=CONFIG, **options):
  options.setdefault('tensorboard', False)
  return train(config, seeds, Layout(str(workdir), sweep=sweep), run_options(**options),
               sweep_line if sweep else epoch_line, started=0.0, dataset=subset)


def _history(run_dir):
  return read(os.path.join(run_dir, records.HISTORY_FILE))


def test_plan_chunks_pads_every_group_to_the_full_width():
  members = [driver.Member(CONFIG.replace(seed=s), f'seed_{s}') for s in range(10)]
  chunks = driver.plan_chunks(members, chunk_size=6, unit=4, checkpoint_dir=str)
  assert [len(c.members) for c in chunks] == [8, 2]     # capacity 6 rounded up to 8
  assert [c.size for c in chunks] == [8, 4]
  assert [c.seed for c in chunks[1].row_configs] == [8, 9, 8, 8]  # padding repeats seed 8
  assert chunks[1].checkpoint_dir == '[8, 9]'


@pytest.mark.slow
def test_a_sweep_writes_complete_records_and_times_its_host_work(subset, tmp_path):
  outcome = _train(subset, tmp_path, [0, 1, 2], chunk_size=2)
  for seed in (0, 1, 2):
    run_dir = records.seed_dir(str(tmp_path), seed)
    history = records.read_history(os.path.join(run_dir, records.HISTORY_FILE))
    assert sorted(history.rows) == [1, 2, 3] and history.columns == records.HISTORY_COLUMNS
    assert records.is_complete(run_dir) and records.load_config(run_dir).seed == seed
    assert not os.path.exists(os.path.join(run_dir, records.CURVES_FILE))  # on request only
  assert outcome.final_test_accuracy.shape == (3,) and outcome.final_test_accuracy.min() > 0.7
  timing = records.read_json_object(str(tmp_path / records.TIMING_FILE))
  assert timing['seed_epochs'] == 9 and timing['train_seconds'] > 0
  assert timing['host_seconds'] == pytest.approx(
      timing['records_seconds'] + timing['checkpoint_seconds'] + timing['summary_seconds'])
  for name in (records.SUMMARY_FILE, records.FINAL_FILE, records.CURVES_FILE):
    assert os.path.exists(tmp_path / name)


@pytest.mark.slow
def test_seed_curves_on_request(subset, tmp_path):
  _train(subset, tmp_path, [0, 1], seed_curves=True, checkpoint_every=0)
  for seed in (0, 1):
    assert os.path.getsize(os.path.join(records.seed_dir(str(tmp_path), seed),
                                        records.CURVES_FILE)) > 10_000


@pytest.mark.slow
@pytest.mark.parametrize('width', [1, 4])
def test_a_seed_never_depends_on_its_neighbours_chunk_or_position(subset, tmp_path, width):
  """Seed 9 of seeds 0-9 (a padded remainder group), of seeds 8-11 (a full group),
  in chunks of 4, and alone (a single run padded to the width): the same bits."""
  sweeps = {'0-9': list(range(10)), '8-11': [8, 9, 10, 11], 'chunks': list(range(10))}
  for name, seeds in sweeps.items():
    _train(subset, tmp_path / name, seeds, vmap_width=width, checkpoint_every=0,
           chunk_size=4 if name == 'chunks' else None)
  _train(subset, tmp_path / 'single', [9], sweep=False, vmap_width=width, checkpoint_every=0)
  expected = without_timing(_history(tmp_path / 'single'))
  params = read(tmp_path / 'single' / records.PARAMS_FILE, 'rb')
  for name in sweeps:
    run_dir = records.seed_dir(str(tmp_path / name), 9)
    assert without_timing(_history(run_dir)) == expected, name
    assert read(os.path.join(run_dir, records.PARAMS_FILE), 'rb') == params, name
  assert records.load_config(str(tmp_path / 'single')).vmap_width == width


@pytest.mark.slow
def test_interrupted_then_resumed_equals_uninterrupted_and_repairs_history(
    subset, tmp_path, monkeypatch):
  """A crash before epoch 3's records: the rerun resumes from the checkpoint of
  epoch 2, rewrites rows 1-2 from it (repairing a garbled one) and ends with the
  bits of a run never interrupted."""
  _train(subset, tmp_path / 'reference', [5, 6], checkpoint_every=0)
  crash_at_epoch(monkeypatch, 3)
  with pytest.raises(RuntimeError, match='crash'):
    _train(subset, tmp_path / 'resumed', [5, 6], checkpoint_every=1)
  monkeypatch.undo()
  seed_5 = records.seed_dir(str(tmp_path / 'resumed'), 5)
  history_path = os.path.join(seed_5, records.HISTORY_FILE)
  written = _history(seed_5)
  assert len(written.splitlines()) == 3  # header and epochs 1-2
  with open(history_path, 'w') as f:
    f.write(written.replace(written.splitlines()[1], 'GARBAGE,,,,,,'))
  _train(subset, tmp_path / 'resumed', [5, 6], checkpoint_every=1)
  assert _history(seed_5).startswith(written)  # the rows the checkpoint covers, byte for byte
  for seed in (5, 6):
    a, b = (records.seed_dir(str(tmp_path / n), seed) for n in ('reference', 'resumed'))
    assert without_timing(_history(a)) == without_timing(_history(b))
    assert read(os.path.join(a, records.PARAMS_FILE), 'rb') == read(
        os.path.join(b, records.PARAMS_FILE), 'rb')


def test_import_matplotlib_imports_what_a_picture_needs():
  """In a fresh interpreter (this one may have imported matplotlib already):
  mlp_jax.plots alone imports none of it; import_matplotlib imports both modules."""
  code = ('import sys; from mlp_jax import plots; '
          'assert not any(m.startswith("matplotlib") for m in sys.modules); '
          'plots.import_matplotlib(); '
          'assert {"matplotlib.figure", "matplotlib.backends.backend_agg"} <= set(sys.modules)')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_initial_states_derive_each_seeds_keys_as_seed_keys_does(subset):
  """The chunk's init program derives the keys from the seeds inside; the states
  are those of trainer.init(*seed_keys(config)), bit for bit, up to 2**32 - 1."""
  configs = [CONFIG.replace(seed=s) for s in (0, 7, 2**31, 2**32 - 1)]
  configs += [CONFIG.replace(seed=3, init_seed=9), CONFIG.replace(seed=3, data_seed=2**32 - 2)]
  ctx = driver.Context.create(CONFIG, subset)
  states = jax.device_get(ctx.programs.initial_states(configs))
  trainer = make_trainer(CONFIG, train_size=len(subset.train_labels))
  expected = jax.jit(map_over_seeds(trainer.init, 3))(
      *[np.stack(keys) for keys in zip(*(seed_keys(c) for c in configs))])
  for got, want in zip(jax.tree.leaves(states), jax.tree.leaves(jax.device_get(expected))):
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.slow
def test_the_memory_a_seed_needs_is_measured_from_the_compiled_program(subset):
  ctx = driver.Context.create(CONFIG.replace(vmap_width=2), subset)
  per_seed, fixed = ctx.programs.bytes_per_seed(4)
  state_bytes = 4 * 3 * (784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10)  # params, mu, nu
  assert state_bytes <= per_seed < 20 * state_bytes
  assert fixed == ctx.data.nbytes


def test_a_single_run_and_a_sweep_never_share_a_workdir(subset, tmp_path):
  _train(subset, tmp_path / 'run', [0], sweep=False, checkpoint_every=0,
         config=CONFIG.replace(epochs=1))
  with pytest.raises(UsageError, match='holds a single run'):
    _train(subset, tmp_path / 'run', [0, 1], config=CONFIG.replace(epochs=1))
  _train(subset, tmp_path / 'sweep', [0, 1], checkpoint_every=0, config=CONFIG.replace(epochs=1))
  with pytest.raises(UsageError, match='holds a sweep'):
    _train(subset, tmp_path / 'sweep', [0], sweep=False, config=CONFIG.replace(epochs=1))


_TWO_DEVICES = '''
options = RunOptions(vmap_width=4, checkpoint_every=0, tensorboard=False)
for name, seeds in (('0-9', list(range(10))), ('8-11', [8, 9, 10, 11])):
  train(TrainConfig(epochs=2), seeds, Layout(os.path.join(root, name), sweep=True), options,
        sweep_line, 0.0, subset)
train(TrainConfig(epochs=2, seed=9), [9], Layout(os.path.join(root, 'single'), sweep=False),
      options, epoch_line, 0.0, subset)
'''


@pytest.mark.slow
@started_on_cpu_devices(2, _TWO_DEVICES)
def test_a_seed_is_the_same_in_any_sweep_on_one_or_two_devices(subset, tmp_path, started_early):
  """Seed 9 at width 4 on 2 host devices (the chunk's groups split over them): in the
  padded sweep 0-9, in the sweep 8-11 and alone, the same bits as alone on one device.
  (XLA's CSE pass is off on the CPU for this: environment.CPU_COMPILER_OPTIONS. More
  CPU devices than environment.INTRA_OP_THREADS would enlarge the thread pool.)"""
  single = str(tmp_path / 'one')
  _train(subset, single, [9], sweep=False, config=TrainConfig(epochs=2), vmap_width=4,
         checkpoint_every=0)
  returncode, printed = started_early.result(timeout=600)
  assert returncode == 0, printed[-3000:]
  two = started_early.directory
  expected = (without_timing(_history(single)),
              read(os.path.join(single, records.PARAMS_FILE), 'rb'))
  for run_dir in (os.path.join(two, 'single'), records.seed_dir(os.path.join(two, '0-9'), 9),
                  records.seed_dir(os.path.join(two, '8-11'), 9)):
    assert (without_timing(_history(run_dir)),
            read(os.path.join(run_dir, records.PARAMS_FILE), 'rb')) == expected, run_dir


def test_tensorboard_events_hold_each_seeds_history_and_the_sweeps_mean(subset, tmp_path):
  from test_tensorboard import TAGS, _scalars  # pylint: disable=g-import-not-at-top
  _train(subset, tmp_path, [0, 1], checkpoint_every=0, tensorboard=True,
         config=CONFIG.replace(epochs=2))
  curves = records.read_curves([records.seed_dir(str(tmp_path), s) for s in (0, 1)])
  for index, seed in enumerate((0, 1)):
    events = _scalars(os.path.join(records.seed_dir(str(tmp_path), seed),
                                   records.TENSORBOARD_DIR))
    for metric, tag in TAGS.items():
      assert events[tag] == [(e, pytest.approx(curves[metric][index, e - 1], rel=1e-6))
                             for e in (1, 2)], (seed, tag)
  mean = _scalars(str(tmp_path / records.TENSORBOARD_DIR))
  for metric, tag in TAGS.items():
    assert mean[tag] == [(e, pytest.approx(curves[metric][:, e - 1].mean(), rel=1e-6))
                         for e in (1, 2)], tag
