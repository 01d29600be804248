"""Shared fixtures: the dataset, and running the entry points as a user does."""

import concurrent.futures
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def mnist():
  from mlp_jax.data import load_mnist
  return load_mnist()


def mnist_subset(mnist, train: int, test: int):
  """The first `train` training and `test` test images of the dataset."""
  return dataclasses.replace(mnist, train_images=mnist.train_images[:train],
                             train_labels=mnist.train_labels[:train],
                             test_images=mnist.test_images[:test],
                             test_labels=mnist.test_labels[:test])


@pytest.fixture(scope='session')
def subset(mnist):
  """2,048 training and 1,000 test images: 16 steps an epoch of batch 128, for
  in-process runs whose point is mechanics (bits, records, resume), not accuracy."""
  return mnist_subset(mnist, 2048, 1000)


@pytest.fixture(scope='session')
def tiny(mnist):
  """512 training and 200 test images: 4 steps an epoch."""
  return mnist_subset(mnist, 512, 200)


def train_tiny(tiny, path, seeds=(0,), sweep=False, config=None, **options):
  """run.train of `seeds` (a sweep if `sweep`) on `tiny` into `path`: checkpoints every
  epoch and no TensorBoard unless `options` say otherwise; returns its Outcome."""
  from mlp_jax.run import Layout, epoch_line, sweep_line, train  # pylint: disable=g-import-not-at-top
  options.setdefault('tensorboard', False)
  options.setdefault('checkpoint_every', 1)
  return train(config, list(seeds), Layout(str(path), sweep=sweep), run_options(**options),
               sweep_line if sweep else epoch_line, started=0.0, dataset=tiny)


# The test run's compilation cache, and in its programs/ the traced programs, where
# the entry points keep theirs: subprocesses find it through $MLP_JAX_COMPILATION_CACHE
# (run_module), in-process runs through run_options, so that each program is traced
# and compiled once per pytest (as a user's second run is warm too). Named here, made
# by the cache_dir fixture: a module-level RunOptions needs the name at import.
CACHE_DIR = os.path.join(tempfile.gettempdir(), f'mlp_jax_tests_{os.getpid()}_cache')


def run_options(**options):
  """RunOptions(**options) of an in-process run, keeping its traced programs in the
  test run's cache (the library traces every run's programs again without one)."""
  from mlp_jax import environment  # pylint: disable=g-import-not-at-top
  from mlp_jax.config import RunOptions  # pylint: disable=g-import-not-at-top
  return RunOptions(**{'program_cache_dir': environment.program_cache_dir(CACHE_DIR),
                       **options})


@pytest.fixture(scope='session')
def cache_dir():
  """The test run's compilation and program cache (CACHE_DIR), removed at its end."""
  shutil.rmtree(CACHE_DIR, ignore_errors=True)
  os.makedirs(CACHE_DIR)
  yield CACHE_DIR
  shutil.rmtree(CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope='session', autouse=True)
def in_process_compilation_cache(cache_dir):
  """In-process tests compile the same programs many times: cache them as a user's runs do."""
  from mlp_jax import environment  # pylint: disable=g-import-not-at-top
  environment.enable_compilation_cache(cache_dir)


@pytest.fixture
def run_module(cache_dir):
  """run_module('mlp_jax.main', '--epochs=1', ...) -> CompletedProcess (text, never raises)."""

  def run(module, *args, env=None, timeout=600):
    full_env = {**os.environ, 'MLP_JAX_COMPILATION_CACHE': cache_dir, **(env or {})}
    return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)

  return run


# A process that a test checks, long but mostly one core's work (a check that runs a
# dozen processes one after another, a program compiled for two devices):
# `@pytest.mark.started_early(*python_args, env={...})` starts `python python_args`
# ('{directory}' in an argument replaced by a directory of its own) as soon as the tests
# are collected and runs its test last, so that the rest of the suite runs meanwhile;
# the test gets it from the `started_early` fixture.
_STARTED = pytest.StashKey()


class StartedEarly:
  """A process started at collection, in a directory of its own (removed at the end)."""

  def __init__(self, *python_args, env=None):
    self.directory = tempfile.mkdtemp(prefix='mlp_jax_test_early_')
    # Read by result(), closed by close(). pylint: disable-next=consider-using-with
    self._log = open(os.path.join(self.directory, 'log.txt'), 'w+')
    self.process = subprocess.Popen(
        [sys.executable, *(a.replace('{directory}', self.directory) for a in python_args)],
        cwd=REPO, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
        stdout=self._log, stderr=subprocess.STDOUT, text=True)

  def result(self, timeout):
    """(exit code, everything it printed), once it has ended."""
    try:
      self.process.wait(timeout=timeout)
    finally:
      self._end()
    self._log.seek(0)
    return self.process.returncode, self._log.read()

  def close(self):
    self._end()
    self._log.close()
    shutil.rmtree(self.directory, ignore_errors=True)

  def _end(self):
    """Kills the process if it still runs (a timeout, a test run cut short)."""
    self.process.kill()
    self.process.wait()


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: item.get_closest_marker('started_early') is not None)


def pytest_collection_finish(session):
  if session.config.option.collectonly:
    return
  for item in session.items:
    marker = item.get_closest_marker('started_early')
    if marker is not None:
      item.stash[_STARTED] = StartedEarly(*marker.args, **marker.kwargs)


def pytest_sessionfinish(session):
  for item in session.items:
    started = item.stash.get(_STARTED, None)
    if started is not None:
      started.close()


@pytest.fixture
def started_early(request):
  """The StartedEarly of this test's `started_early` marker."""
  return request.node.stash[_STARTED]


def side_by_side(*calls):
  """Calls each of `calls` (functions of no argument, each running a process and
  waiting for it) at once; returns their results in order. Independent processes
  overlap: a process spends its start-up on one core (imports)."""
  with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
    return list(pool.map(lambda call: call(), calls))


def read(path, mode='r'):
  """The whole content of a file (text, or bytes with mode='rb')."""
  with open(path, mode) as f:
    return f.read()


def without_timing(history_text):
  """history.csv with the *_seconds columns removed: what must match bit for bit."""
  lines = history_text.splitlines()
  header = lines[0].split(',')
  keep = [i for i, name in enumerate(header) if not name.endswith('_seconds')]
  return [[row.split(',')[i] for i in keep] for row in lines]


def crash_at_epoch(monkeypatch, epoch):
  """Makes sink.RecordSink.write raise RuntimeError('crash') from epoch `epoch` on: a
  run dies before that epoch's records, keeping what it wrote and checkpointed before.
  `monkeypatch`: the test's fixture, or a pytest.MonkeyPatch (undo() restores the sink)."""
  from mlp_jax import sink  # pylint: disable=g-import-not-at-top
  real_write = sink.RecordSink.write

  def write(self, at, metrics):
    if at >= epoch:
      raise RuntimeError('crash')
    real_write(self, at, metrics)

  monkeypatch.setattr(sink.RecordSink, 'write', write)


# What a script started by started_on_cpu_devices begins with: `subset` as the
# fixture's, `root` the directory to write in, a compilation cache of its own there.
_DEVICES_PREAMBLE = """
import os, sys
sys.path.insert(0, os.path.join(sys.argv[3], 'tests'))
import jax
from conftest import mnist_subset
from mlp_jax import environment
from mlp_jax.config import TrainConfig
from mlp_jax.data import load_mnist
from mlp_jax.run import Layout, RunOptions, epoch_line, sweep_line, train
assert jax.device_count() == int(sys.argv[2]), jax.devices()
root = sys.argv[1]
environment.enable_compilation_cache(os.path.join(root, 'xla_cache'))
subset = mnist_subset(load_mnist(), 2048, 1000)
"""


def started_on_cpu_devices(devices: int, script: str):
  """The started_early marker of `script` run in a new Python with `devices` CPU
  devices (XLA_FLAGS), after a preamble defining `subset`, `root` (the process's
  directory) and the training imports."""
  return pytest.mark.started_early(
      '-c', _DEVICES_PREAMBLE + script, '{directory}', str(devices), REPO,
      env={'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'})
