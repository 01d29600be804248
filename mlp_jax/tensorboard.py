"""TensorBoard event files: per-epoch metrics, and a grid's HParams table.

`tensorboard --logdir runs/` then shows every run and seed (EpochWriter), and a grid
sweep as the HParams dashboard's sortable table (write_hparams): each member a run
whose group is its grid point, so TensorBoard aggregates a point's seeds. Written
with tensorboardX's protos (no TensorFlow), which are imported only when a writer
is made: importing this module loads neither tensorboardX nor jax. Where tensorboardX
is not installed (a machine with TensorBoard itself but no package registry), the
same protos and record framing come from the tensorboard package.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import resource
import secrets
import socket
import struct
import time
import types
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mlp_jax import metrics as metric_spec

# TensorBoard slows down at a few hundred runs: beyond this many members per grid point a
# sweep writes each point's mean and one HParams run per point, unless asked for every
# member (--tensorboard_members).
MAX_MEMBER_RUNS_PER_POINT = 64
# The HParams plugin's tags and version (tensorboard/plugins/hparams/metadata.py).
HPARAMS_PLUGIN = 'hparams'
EXPERIMENT_TAG = '_hparams_/experiment'
SESSION_START_TAG = '_hparams_/session_start_info'
SESSION_END_TAG = '_hparams_/session_end_info'
HPARAMS_PLUGIN_VERSION = 0
# The events file holding a run's HParams records is named with this suffix, so that
# writing them again (a resumed sweep) replaces it rather than adding a second one.
HPARAMS_SUFFIX = '.hparams'
# The HParams table's metrics: (name, description); each is a scalar tagged
# 'hparams/<name>' in its run. Validation exists only when the runs hold one.
HPARAMS_METRICS = (
    ('final_test_accuracy', 'Test accuracy after the last epoch.'),
    ('best_test_accuracy', 'Highest test accuracy of any epoch.'),
    ('final_validation_accuracy', 'Validation accuracy after the last epoch.'),
    ('best_validation_accuracy', 'Highest validation accuracy of any epoch.'),
    ('ensemble_test_accuracy', 'Test accuracy of the grid point\'s ensemble of seeds '
     '(argmax of their mean probabilities): the same for every seed of a point.'),
)


def _protos() -> types.SimpleNamespace:
  """The protos and CRC the event files are written with: tensorboardX's copies (a
  dependency of the project), else TensorBoard's own (the same messages)."""
  # pylint: disable=g-import-not-at-top
  try:
    from tensorboardX.proto import (api_pb2, event_pb2, plugin_hparams_pb2, summary_pb2,
                                    tensor_pb2, tensor_shape_pb2, types_pb2)
    from tensorboardX.record_writer import masked_crc32c
  except ImportError:
    from tensorboard.compat.proto import (event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2,
                                          types_pb2)
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2 as plugin_hparams_pb2
  return types.SimpleNamespace(
      api_pb2=api_pb2, event_pb2=event_pb2, plugin_hparams_pb2=plugin_hparams_pb2,
      summary_pb2=summary_pb2, tensor_pb2=tensor_pb2, tensor_shape_pb2=tensor_shape_pb2,
      types_pb2=types_pb2, masked_crc32c=masked_crc32c)


class _EventsFile:
  """One events file, `<directory>/events.out.tfevents.<time>.<host><suffix>`: a
  TFRecord file of Event protos, its first event the file version (what TensorBoard's
  and tensorboardX's writers write)."""

  def __init__(self, directory: str, suffix: str, protos: types.SimpleNamespace):
    self.path = os.path.join(directory, f'events.out.tfevents.{int(time.time())}.'
                                        f'{socket.gethostname()}{suffix}')
    self._crc = protos.masked_crc32c
    self._file = open(self.path, 'wb')  # pylint: disable=consider-using-with
    self.write(protos.event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def write(self, event: Any) -> None:
    data = event.SerializeToString()
    header = struct.pack('<Q', len(data))
    self._file.write(header + struct.pack('<I', self._crc(header)) + data +
                     struct.pack('<I', self._crc(data)))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def member_runs(members_per_point: int, requested: bool) -> bool:
  """Whether a sweep writes every member's TensorBoard scalars and HParams run
  (else each grid point's mean and one HParams run per point)."""
  return requested or members_per_point <= MAX_MEMBER_RUNS_PER_POINT


# TensorBoard shows a tag's prefix as a section, so 'train_loss' becomes 'loss/train' and
# the splits of a quantity share a section (mlp_jax.metrics.Metric.tag).
def _tag(metric: str) -> str:
  if metric in metric_spec.BY_NAME:
    return metric_spec.BY_NAME[metric].tag
  split, _, quantity = metric.partition('_')
  return f'{quantity}/{split}' if quantity else metric


def _allow_open_files(count: int) -> None:
  """Raises this process's soft limit on open files to fit `count` more, if the hard
  limit allows: a chunk of 1,000 seeds keeps 1,000 event files open, and a soft limit
  of 1,024 is common."""
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  wanted = len(os.listdir('/proc/self/fd')) + count + 64 if os.path.isdir('/proc/self/fd') \
      else count + 256
  if soft != resource.RLIM_INFINITY and soft < wanted:
    new_soft = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))


class EpochWriter:
  """Per-epoch scalars of several seeds, one events file per seed, and optionally their mean.

  Made for the records sink of a sweep's chunk: `write` is called once per epoch with
  the metrics of every seed, builds one event per seed (all its metrics in one summary)
  and appends it to that seed's open file. Files are not flushed per epoch; they are
  flushed every `flush_secs` seconds (so TensorBoard shows a long run as it goes) and
  on `close`.

  Args:
    logdirs: one directory per seed (e.g. `<seed_dir>/tensorboard`), made if missing.
    mean_logdir: if given, the mean over the seeds of each metric is written there too.
    flush_secs: at most this long between a `write` and its events reaching the files.
  """

  def __init__(self, logdirs: Sequence[str], mean_logdir: Optional[str] = None,
               flush_secs: float = 120.0):
    # pylint: disable=g-import-not-at-top
    protos = _protos()
    self._event_pb2, self._summary_pb2 = protos.event_pb2, protos.summary_pb2
    self._count = len(logdirs)
    self._flush_secs = flush_secs
    self._last_flush = time.monotonic()
    directories = list(logdirs) + ([mean_logdir] if mean_logdir is not None else [])
    _allow_open_files(len(directories))
    # Several writers may start in the same second in one directory (a resumed chunk, a
    # second process): the random suffix keeps their files apart.
    suffix = f'.{os.getpid()}.{secrets.token_hex(4)}'
    self._writers = []
    try:
      for directory in directories:
        os.makedirs(directory, exist_ok=True)
        self._writers.append(_EventsFile(directory, suffix, protos))
    except BaseException:
      self.close()
      raise
    self._with_mean = mean_logdir is not None

  def write(self, epoch: int, metrics: Mapping[str, np.ndarray]) -> None:
    """Appends one epoch's scalars of every seed (and their mean).

    Args:
      epoch: the step TensorBoard plots against (1 for the first epoch).
      metrics: name -> float array of shape [len(logdirs)], e.g. 'train_loss',
        'train_accuracy', 'test_loss', 'test_accuracy' (tagged 'loss/train',
        'accuracy/train', 'loss/test', 'accuracy/test').
    """
    tags, columns = [], []
    for name, values in metrics.items():
      values = np.asarray(values, dtype=np.float64)
      if values.shape != (self._count,):
        raise ValueError(f'metric {name!r} has shape {values.shape}, '
                         f'expected ({self._count},): one value per logdir')
      tags.append(_tag(name))
      columns.append(values)
    rows = np.stack(columns, axis=1).tolist() if columns else [[]] * self._count
    if self._with_mean:
      rows.append([float(np.mean(column)) for column in columns])
    wall_time = time.time()
    summary = self._summary_pb2.Summary
    event = self._event_pb2.Event
    for writer, row in zip(self._writers, rows):
      values = [summary.Value(tag=tag, simple_value=value) for tag, value in zip(tags, row)]
      writer.write(event(wall_time=wall_time, step=epoch, summary=summary(value=values)))
    if time.monotonic() - self._last_flush >= self._flush_secs:
      self.flush()

  def flush(self) -> None:
    """Writes every event so far to the files."""
    for writer in self._writers:
      writer.flush()
    self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and closes every file; the writer is unusable afterwards."""
    writers, self._writers = self._writers, []
    for writer in writers:
      writer.close()

  def __enter__(self) -> 'EpochWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


@dataclasses.dataclass(frozen=True)
class HParamsRun:
  """One row of the HParams table: a TensorBoard run.

  Attributes:
    logdir: the run's directory (its other events, e.g. the per-epoch scalars, stay).
    group: TensorBoard aggregates the runs of a group (a grid point's name).
    hparams: swept setting -> its value here (float, int, str or a tuple of ints).
    metrics: metric name (of HPARAMS_METRICS) -> value.
    step: the step the metrics are recorded at (the last epoch).
  """
  logdir: str
  group: str
  hparams: Mapping[str, Any]
  metrics: Mapping[str, float]
  step: int


def _hparam_value(value: Any) -> Any:
  """A setting as the HParams table holds it: numbers as numbers, the rest as text
  (hidden sizes (128, 128) -> '128,128')."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return ','.join(map(str, value)) if isinstance(value, tuple) else str(value)
  return float(value)


def _write_hparams_file(logdir: str, events: Sequence[Any],
                        protos: types.SimpleNamespace) -> None:
  """Replaces `logdir`'s HParams events file by one holding `events`."""
  os.makedirs(logdir, exist_ok=True)
  stale = glob.glob(os.path.join(logdir, f'events.out.tfevents.*{HPARAMS_SUFFIX}'))
  # Named after the current second, so it sorts after the per-epoch files already
  # there: a TensorBoard watching the directory reads files in name order only.
  writer = _EventsFile(logdir, HPARAMS_SUFFIX, protos)
  try:
    for event in events:
      writer.write(event)
  finally:
    writer.close()
  for old in stale:
    if old != writer.path:
      os.remove(old)


def write_hparams(experiment_logdir: str, domains: Sequence[Tuple[str, Sequence[Any]]],
                  runs: Sequence[HParamsRun]) -> None:
  """Writes a grid's HParams experiment and one HParams run per entry of `runs`.

  The experiment (the swept settings with their domains, and the metrics any run
  has) goes into `experiment_logdir`; each run's start (its hparams and group), its
  metrics as scalars tagged 'hparams/<name>', and its end (succeeded) go into its
  own logdir. Writing again replaces what an earlier call wrote there.

  Args:
    experiment_logdir: a directory of its own under TensorBoard's logdir (the
      sweep's tensorboard/).
    domains: (setting, its values) for each swept setting, in the grid's order.
    runs: the table's rows.
  """
  from google.protobuf import struct_pb2  # pylint: disable=g-import-not-at-top
  protos = _protos()
  api_pb2, event_pb2, summary_pb2 = protos.api_pb2, protos.event_pb2, protos.summary_pb2
  plugin_hparams_pb2, tensor_pb2 = protos.plugin_hparams_pb2, protos.tensor_pb2
  tensor_shape_pb2, types_pb2 = protos.tensor_shape_pb2, protos.types_pb2
  present = {name for run in runs for name in run.metrics}
  metrics = [(name, text) for name, text in HPARAMS_METRICS if name in present]
  unknown = present - {name for name, _ in HPARAMS_METRICS}
  if unknown:
    raise ValueError(f'unknown HParams metrics {sorted(unknown)}; known: '
                     f'{[name for name, _ in HPARAMS_METRICS]}')

  def summary(tag: str, data: Any) -> Any:
    # An empty float tensor, as TensorBoard's own hparams summaries carry: its data
    # provider lists a plugin's tags by their tensors.
    content = plugin_hparams_pb2.HParamsPluginData(version=HPARAMS_PLUGIN_VERSION, **data)
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name=HPARAMS_PLUGIN, content=content.SerializeToString()))
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=(
        tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=0)])))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata,
                                                                tensor=empty)])

  now = time.time()
  infos = []
  for name, values in domains:
    values = [_hparam_value(v) for v in values]
    numeric = all(isinstance(v, float) for v in values)
    listed = struct_pb2.ListValue()
    listed.extend(values)
    infos.append(api_pb2.HParamInfo(
        name=name, type=api_pb2.DATA_TYPE_FLOAT64 if numeric else api_pb2.DATA_TYPE_STRING,
        domain_discrete=listed, description=f'--{name}'))
  experiment = api_pb2.Experiment(
      hparam_infos=infos, time_created_secs=now,
      metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=f'hparams/{name}'),
                                       display_name=name, description=text)
                    for name, text in metrics])
  _write_hparams_file(experiment_logdir, [event_pb2.Event(
      wall_time=now, summary=summary(EXPERIMENT_TAG, {'experiment': experiment}))], protos)
  for run in runs:
    start = plugin_hparams_pb2.SessionStartInfo(group_name=run.group, start_time_secs=now)
    for name, value in run.hparams.items():
      value = _hparam_value(value)
      if isinstance(value, float):
        start.hparams[name].number_value = value
      else:
        start.hparams[name].string_value = value
    end = plugin_hparams_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=now)
    scalars = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=f'hparams/{name}', simple_value=float(value))
        for name, value in run.metrics.items()])
    _write_hparams_file(run.logdir, [
        event_pb2.Event(wall_time=now, summary=summary(SESSION_START_TAG,
                                                       {'session_start_info': start})),
        event_pb2.Event(wall_time=now, step=run.step, summary=scalars),
        event_pb2.Event(wall_time=now, summary=summary(SESSION_END_TAG,
                                                       {'session_end_info': end}))], protos)


def write_grid_hparams(logdir: str, settings: Sequence[Sequence[Tuple[str, Any]]],
                       member_logdirs: Sequence[Sequence[str]], point_logdirs: Sequence[str],
                       curves: Sequence[Mapping[str, np.ndarray]],
                       ensemble_accuracy: Sequence[float], every_member: bool) -> None:
  """A grid sweep's HParams table (write_hparams), in `logdir` (the sweep's tensorboard/).

  With `every_member` each member is a run of its point's group, its logdir that of
  its per-epoch scalars; else each point is one run (its mean's logdir) whose
  metrics are its members' means.

  Args:
    settings: per point, its (setting, value) pairs in the grid's order.
    member_logdirs: per point, its members' logdirs.
    point_logdirs: per point, the logdir of its mean.
    curves: per point, records.read_curves of its members: {metric: [members, epochs]}
      ('validation_accuracy' makes the validation metrics).
    ensemble_accuracy: per point, the test accuracy of its ensemble of seeds.
    every_member: one run per member (see member_runs), else one per point.
  """
  domains: Dict[str, List[Any]] = {}
  for point in settings:
    for name, value in point:
      if value not in domains.setdefault(name, []):
        domains[name].append(value)
  runs = []
  for point, members, mean_logdir, point_curves, ensemble in zip(
      settings, member_logdirs, point_logdirs, curves, ensemble_accuracy):
    group = '/'.join(f'{name}={_hparam_value(value)}' for name, value in point)
    metrics = {'final_test_accuracy': point_curves['test_accuracy'][:, -1],
               'best_test_accuracy': np.nanmax(point_curves['test_accuracy'], axis=1)}
    if 'validation_accuracy' in point_curves:
      metrics['final_validation_accuracy'] = point_curves['validation_accuracy'][:, -1]
      metrics['best_validation_accuracy'] = np.nanmax(point_curves['validation_accuracy'],
                                                      axis=1)
    step = int(point_curves['epoch'][-1])
    if every_member:
      runs += [HParamsRun(member, group, dict(point),
                          {**{k: float(v[i]) for k, v in metrics.items()},
                           'ensemble_test_accuracy': float(ensemble)}, step)
               for i, member in enumerate(members)]
    else:
      runs.append(HParamsRun(mean_logdir, group, dict(point),
                             {**{k: float(np.mean(v)) for k, v in metrics.items()},
                              'ensemble_test_accuracy': float(ensemble)}, step))
  write_hparams(logdir, list(domains.items()), runs)
