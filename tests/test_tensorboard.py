"""mlp_jax.tensorboard: the events files hold exactly the values and steps written."""

import glob
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_options
from mlp_jax.tensorboard import EpochWriter

TAGS = {'train_loss': 'loss/train', 'train_accuracy': 'accuracy/train',
        'test_loss': 'loss/test', 'test_accuracy': 'accuracy/test'}


def _read_events(logdir):
  """Every event of the one events file in `logdir`, checking the record framing and CRCs
  the way TensorBoard does (a TFRecord file of Event protos)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=g-import-not-at-top
  paths = glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))
  assert len(paths) == 1, paths
  with open(paths[0], 'rb') as f:
    data = f.read()
  events, at = [], 0
  while at < len(data):
    header = data[at:at + 8]
    (length,) = struct.unpack('<Q', header)
    (header_crc,) = struct.unpack('<I', data[at + 8:at + 12])
    record = data[at + 12:at + 12 + length]
    (record_crc,) = struct.unpack('<I', data[at + 12 + length:at + 16 + length])
    assert (header_crc, record_crc) == (masked_crc32c(header), masked_crc32c(record))
    events.append(event_pb2.Event.FromString(record))
    at += 16 + length
  return events


def _scalars(logdir):
  """{tag: [(step, value), ...]} of the scalars in `logdir`'s events file."""
  events = _read_events(logdir)
  assert events[0].file_version == 'brain.Event:2'
  out = {}
  for event in events[1:]:
    for value in event.summary.value:
      out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def _metrics(epoch, seeds):
  rng = np.random.default_rng(epoch)
  return {'train_loss': rng.random(seeds, dtype=np.float32),
          'train_accuracy': rng.integers(0, 59904, seeds) / 59904,
          'test_loss': rng.random(seeds, dtype=np.float32) + 0.1,
          'test_accuracy': rng.integers(0, 10000, seeds) / 10000}


def test_each_seed_and_the_mean_read_back_exactly(tmp_path):
  seeds = [str(tmp_path / f'seed_{k}' / 'tensorboard') for k in range(3)]
  mean = str(tmp_path / 'tensorboard')
  epochs = [1, 2, 3, 4]
  with EpochWriter(seeds, mean_logdir=mean) as writer:
    for epoch in epochs:
      writer.write(epoch, _metrics(epoch, 3))
  for k, logdir in enumerate(seeds):
    scalars = _scalars(logdir)
    assert sorted(scalars) == sorted(TAGS.values())
    for name, tag in TAGS.items():
      # TensorBoard stores scalars as float32.
      assert scalars[tag] == [(e, float(np.float32(_metrics(e, 3)[name][k]))) for e in epochs]
  scalars = _scalars(mean)
  for name, tag in TAGS.items():
    assert scalars[tag] == [
        (e, float(np.float32(np.mean(_metrics(e, 3)[name].astype(np.float64))))) for e in epochs]


def test_files_are_flushed_on_close_and_every_flush_secs(tmp_path):
  logdir = str(tmp_path / 'a')
  writer = EpochWriter([logdir], flush_secs=3600)
  writer.write(1, {'test_loss': np.array([0.5])})
  assert len(_read_events(logdir)) == 0  # still in the file's buffer: no write per epoch
  writer.close()
  assert _scalars(logdir) == {'loss/test': [(1, 0.5)]}
  logdir = str(tmp_path / 'b')
  with EpochWriter([logdir], flush_secs=0) as writer:
    writer.write(7, {'test_loss': np.array([0.25])})
    assert _scalars(logdir) == {'loss/test': [(7, 0.25)]}


def test_a_metric_of_the_wrong_shape_is_refused(tmp_path):
  with EpochWriter([str(tmp_path / 'a'), str(tmp_path / 'b')]) as writer:
    with pytest.raises(ValueError, match=r"'test_loss' has shape \(3,\), expected \(2,\)"):
      writer.write(1, {'test_loss': np.zeros(3)})


def test_importing_the_module_loads_neither_tensorboardx_nor_jax():
  code = ('import sys, mlp_jax.tensorboard; '
          'print(sorted(m for m in ("jax", "tensorboardX") if m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
  assert result.stdout.strip() == '[]'


def _hparams_table(logdir):
  """(experiment, groups of runs) as TensorBoard's HParams plugin serves them for
  `logdir`, read through TensorBoard's own event multiplexer and data provider."""
  # pylint: disable=g-import-not-at-top
  from tensorboard import context
  from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
  from tensorboard.plugins import base_plugin
  from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(logdir)
  multiplexer.Reload()
  tb = backend_context.Context(base_plugin.TBContext(
      logdir=logdir, multiplexer=multiplexer,
      data_provider=data_provider.MultiplexerDataProvider(multiplexer, logdir)))
  request = context.RequestContext()
  experiment = tb.experiment_from_metadata(request, '', True, tb.hparams_metadata(request, ''),
                                           tb.hparams_from_data_provider(request, '', None))
  groups = list_session_groups.Handler(request, tb, '', api_pb2.ListSessionGroupsRequest(
      allowed_statuses=[api_pb2.STATUS_SUCCESS], start_index=0, slice_size=10_000,
      aggregation_type=api_pb2.AGGREGATION_AVG)).run().session_groups
  return experiment, groups


def _metric_values(run):
  return {value.name.tag: value.value for value in run.metric_values}


@pytest.mark.slow  # a grid of 4 members trained in-process: ~30 s on 2 busy cores
def test_a_grid_sweep_reads_as_an_hparams_table_in_tensorboard(subset, tmp_path):
  from mlp_jax import records  # pylint: disable=g-import-not-at-top
  from mlp_jax.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from mlp_jax.grid import Grid  # pylint: disable=g-import-not-at-top
  from mlp_jax.run import Layout, sweep_line, train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'grid')
  train(TrainConfig(epochs=1), [0, 1], Layout(workdir, sweep=True),
        run_options(checkpoint_every=0, tensorboard=True), sweep_line, 0.0, subset,
        grid=Grid((('learning_rate', (1e-3, 3e-3)),)))
  experiment, groups = _hparams_table(workdir)
  [info] = experiment.hparam_infos
  assert info.name == 'learning_rate'
  assert [v.number_value for v in info.domain_discrete.values] == [1e-3, 3e-3]
  tags = ['hparams/final_test_accuracy', 'hparams/best_test_accuracy',
          'hparams/ensemble_test_accuracy']  # no validation split: no validation metric
  assert [m.name.tag for m in experiment.metric_infos] == tags
  final = {(row['learning_rate'], row['seed']): row
           for row in records.read_csv(os.path.join(workdir, records.FINAL_FILE))}
  points = {row['learning_rate']: row
            for row in records.read_csv(os.path.join(workdir, records.POINTS_FILE))}
  assert sorted(g.name for g in groups) == ['learning_rate=0.001', 'learning_rate=0.003']
  for group in groups:
    rate = group.name.split('=')[1]
    assert group.hparams['learning_rate'].number_value == float(rate)
    # One run per member, each the directory of its per-epoch scalars.
    assert [s.name for s in group.sessions] == [
        f'learning_rate={rate}/seed_{k}/tensorboard' for k in (0, 1)]
    for k, run in enumerate(group.sessions):
      values = _metric_values(run)
      assert sorted(values) == sorted(tags)
      row = final[(rate, str(k))]
      # TensorBoard stores scalars as float32.
      assert values['hparams/final_test_accuracy'] == np.float32(row['final_test_accuracy'])
      assert values['hparams/best_test_accuracy'] == np.float32(row['best_test_accuracy'])
      assert values['hparams/ensemble_test_accuracy'] == np.float32(
          points[rate]['ensemble_test_accuracy'])
    assert _metric_values(group)['hparams/final_test_accuracy'] == pytest.approx(
        np.mean([float(final[(rate, str(k))]['final_test_accuracy']) for k in (0, 1)]),
        abs=1e-6)  # the group's average, which TensorBoard computes in float32


def _fake_curves(members, epochs=3, validation=False, offset=0.0):
  rng = np.random.default_rng(members)
  curves = {'epoch': np.arange(1, epochs + 1),
            'test_accuracy': rng.integers(0, 1000, (members, epochs)) / 1000 + offset}
  if validation:
    curves['validation_accuracy'] = rng.integers(0, 500, (members, epochs)) / 500
  return curves


def _write_fake_grid(tmp_path, members, every_member, validation=False):
  """Two points of `members` fake members each, through write_grid_hparams."""
  from mlp_jax.tensorboard import write_grid_hparams  # pylint: disable=g-import-not-at-top
  logdir = str(tmp_path / 'tensorboard')
  settings = [(('learning_rate', 1e-3), ('hidden_sizes', (64, 64))),
              (('learning_rate', 3e-3), ('hidden_sizes', (64, 64)))]
  names = ['learning_rate=0.001/hidden_sizes=64,64', 'learning_rate=0.003/hidden_sizes=64,64']
  curves = [_fake_curves(members, validation=validation, offset=i / 10) for i in range(2)]
  write_grid_hparams(logdir, settings,
                     [[str(tmp_path / name / f'seed_{k}' / 'tensorboard')
                       for k in range(members)] for name in names],
                     [os.path.join(logdir, name) for name in names], curves, [0.97, 0.98],
                     every_member)
  return names, curves


def test_the_validation_metrics_are_written_only_when_the_runs_have_them(tmp_path):
  _write_fake_grid(tmp_path / 'with', 2, every_member=True, validation=True)
  experiment, groups = _hparams_table(str(tmp_path / 'with'))
  assert [m.name.tag for m in experiment.metric_infos] == [
      'hparams/final_test_accuracy', 'hparams/best_test_accuracy',
      'hparams/final_validation_accuracy', 'hparams/best_validation_accuracy',
      'hparams/ensemble_test_accuracy']
  assert all(len(_metric_values(s)) == 5 for g in groups for s in g.sessions)
  # A string setting keeps its values as text in the domain.
  [sizes] = [i for i in experiment.hparam_infos if i.name == 'hidden_sizes']
  assert [v.string_value for v in sizes.domain_discrete.values] == ['64,64']
  _write_fake_grid(tmp_path / 'without', 2, every_member=True)
  experiment, _ = _hparams_table(str(tmp_path / 'without'))
  assert not any('validation' in m.name.tag for m in experiment.metric_infos)


def test_beyond_64_members_a_point_is_one_run_of_means_unless_asked(tmp_path):
  from mlp_jax.tensorboard import member_runs  # pylint: disable=g-import-not-at-top
  assert member_runs(64, requested=False) and not member_runs(65, requested=False)
  assert member_runs(65, requested=True)
  names, curves = _write_fake_grid(tmp_path / 'means', 65, member_runs(65, False))
  _, groups = _hparams_table(str(tmp_path / 'means'))
  assert sorted(g.name for g in groups) == names
  for group, point_curves in zip(sorted(groups, key=lambda g: g.name), curves):
    [run] = group.sessions
    assert run.name == f'tensorboard/{group.name}'  # beside the point's mean scalars
    values = _metric_values(run)
    assert values['hparams/final_test_accuracy'] == np.float32(
        point_curves['test_accuracy'][:, -1].mean())
    assert values['hparams/best_test_accuracy'] == np.float32(
        point_curves['test_accuracy'].max(axis=1).mean())
  names, _ = _write_fake_grid(tmp_path / 'members', 65, member_runs(65, True))
  _, groups = _hparams_table(str(tmp_path / 'members'))
  assert sorted(len(g.sessions) for g in groups) == [65, 65]
  assert {s.name for g in groups for s in g.sessions} == {
      f'{name}/seed_{k}/tensorboard' for name in names for k in range(65)}


def test_writing_the_table_again_replaces_it(tmp_path):
  _write_fake_grid(tmp_path, 2, every_member=True)
  _write_fake_grid(tmp_path, 2, every_member=True)
  member = tmp_path / 'learning_rate=0.001/hidden_sizes=64,64' / 'seed_0' / 'tensorboard'
  assert len(glob.glob(str(member / 'events.out.tfevents.*.hparams'))) == 1
  assert len(glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*.hparams'))) == 1
  _, groups = _hparams_table(str(tmp_path))
  assert sorted(len(g.sessions) for g in groups) == [2, 2]


def test_without_tensorboardx_the_files_are_written_with_tensorboards_own_protos(tmp_path):
  """A machine with TensorBoard but without tensorboardX (no package registry to get
  it) writes the same files."""
  code = '''import sys
sys.modules['tensorboardX'] = None  # not installed
import numpy as np
from mlp_jax.tensorboard import EpochWriter, HParamsRun, write_hparams
root = sys.argv[1]
with EpochWriter([root + '/a/seed_0/tensorboard'], mean_logdir=root + '/mean') as writer:
  writer.write(1, {'test_loss': np.array([0.5])})
write_hparams(root + '/tensorboard', [('learning_rate', (0.001,))], [HParamsRun(
    root + '/a/seed_0/tensorboard', 'learning_rate=0.001', {'learning_rate': 0.001},
    {'final_test_accuracy': 0.75}, 1)])
print(sorted(m for m, v in sys.modules.items() if m.startswith('tensorboardX') and v))
'''
  result = subprocess.run([sys.executable, '-c', code, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'
  assert _scalars(str(tmp_path / 'mean')) == {'loss/test': [(1, 0.5)]}
  experiment, [group] = _hparams_table(str(tmp_path))
  assert [m.name.tag for m in experiment.metric_infos] == ['hparams/final_test_accuracy']
  [run] = group.sessions
  assert run.name == 'a/seed_0/tensorboard'
  assert _metric_values(run) == {'hparams/final_test_accuracy': 0.75}
  assert group.hparams['learning_rate'].number_value == 0.001
