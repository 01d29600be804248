"""mlp_jax.tensorboard: the events files hold exactly the values and steps written."""

import glob
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
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
