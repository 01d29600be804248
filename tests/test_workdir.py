"""What a run may touch and what it may not: only folders and files it can prove it
wrote; settings only from its own records; a console that fails is not a workdir
that fails; every phase interruptible. In-process on a tiny subset where the point
is a workdir's files; in a process of its own where it is a process's (pipes,
signals)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, mnist_subset, read
from mlp_jax import records
from mlp_jax.config import TrainConfig
from mlp_jax.run import Layout, RunOptions, epoch_line, sweep_line, train

CONFIG = TrainConfig(epochs=2, batch_size=128)


@pytest.fixture(scope='module')
def tiny(mnist):
  """512 training and 200 test images: 4 steps an epoch."""
  return mnist_subset(mnist, 512, 200)


def _train(tiny, path, seeds=(0,), sweep=False, config=CONFIG, **options):
  options.setdefault('tensorboard', False)
  options.setdefault('checkpoint_every', 1)
  return train(config, list(seeds), Layout(str(path), sweep=sweep), RunOptions(**options),
               sweep_line if sweep else epoch_line, started=0.0, dataset=tiny)


def test_a_closed_or_failing_console_costs_no_record(tmp_path, cache_dir):
  """stdout a pipe nobody reads (`| head -1` once head has exited), stderr /dev/full:
  the run trains to the end, writes every record and exits 0."""
  workdir = tmp_path / 'run'
  with open('/dev/full', 'w') as full:
    process = subprocess.Popen(
        [sys.executable, '-m', 'mlp_jax.main', '--epochs=1', f'--workdir={workdir}'],
        cwd=REPO, stdout=subprocess.PIPE, stderr=full,
        env={**os.environ, 'MLP_JAX_COMPILATION_CACHE': cache_dir})
    process.stdout.close()  # the reader is gone before the first line
    assert process.wait(timeout=300) == 0
  assert records.is_complete(str(workdir))
  assert len(records.read_history(str(workdir / records.HISTORY_FILE)).rows) == 1
