"""mlp_jax.cli: the entry points' preamble (data loaded meanwhile, the garbage
collector) and a console whose failures never stop a run (the entry points
themselves: test_main, test_sweep, test_workdir)."""

import errno
import gc
import io
import threading

import pytest

from mlp_jax import cli


def test_in_background_returns_the_result_or_raises_in_the_caller():
  import threading  # pylint: disable=g-import-not-at-top
  from mlp_jax import cli  # pylint: disable=g-import-not-at-top
  from mlp_jax.errors import DataError  # pylint: disable=g-import-not-at-top
  started = threading.Event()
  release = threading.Event()

  def slow(x):
    started.set()
    release.wait(10)
    return x * 2

  result = cli.in_background(slow, 21)
  assert started.wait(10)         # running before anyone asks for it
  release.set()
  assert result() == 42

  def fails():
    raise DataError('data/x: content checksum mismatch')

  with pytest.raises(DataError, match='checksum mismatch'):
    cli.in_background(fails)()


def test_only_the_bundled_mnist_loads_during_the_imports(mnist):
  """A TFDS dataset is left to run.train: tensorflow-datasets' lazy imports swap the
  interpreter's import function for every thread, and broke JAX imported meanwhile."""
  import sys  # pylint: disable=g-import-not-at-top
  from mlp_jax import cli  # pylint: disable=g-import-not-at-top
  from mlp_jax.config import TrainConfig  # pylint: disable=g-import-not-at-top
  loaded = cli.load_data_meanwhile(TrainConfig())()
  assert loaded.sha256 == mnist.sha256 and loaded.train_images.shape == (60_000, 28, 28)
  tfds_imported = 'tensorflow_datasets' in sys.modules
  assert cli.load_data_meanwhile(TrainConfig(dataset='fashion_mnist'))() is None
  assert ('tensorflow_datasets' in sys.modules) == tfds_imported



def test_in_background_names_its_thread_and_returns_each_result_once_done():
  names = []

  def record(x, y):
    names.append(threading.current_thread().name)
    return x + y

  assert cli.in_background(record, 2, 3)() == 5
  assert names == ['background record']


def test_settling_the_collector_enables_it_with_its_threshold():
  before, enabled = gc.get_threshold(), gc.isenabled()
  gc.disable()
  try:
    cli.settle_garbage_collector()
    assert gc.isenabled() and gc.get_threshold() == (cli.GC_THRESHOLD, *before[1:])
    assert gc.get_freeze_count() > 0
  finally:
    gc.unfreeze()
    gc.set_threshold(*before)
    (gc.enable if enabled else gc.disable)()


class _Failing(io.StringIO):
  """A console that fails from its second write on (a reader gone: EPIPE)."""

  def write(self, text):
    if self.getvalue():
      raise BrokenPipeError(errno.EPIPE, 'Broken pipe')
    return super().write(text)


def test_a_failing_console_swallows_every_later_write():
  stream = cli.ConsoleStream(_Failing())
  assert stream.write('first\n') == 6 and stream.failed is None
  assert stream.write('second\n') == 7  # as if written
  assert stream.failed.errno == errno.EPIPE
  stream.writelines(['third\n'])
  stream.flush()
  assert stream.getvalue() == 'first\n'  # the rest vanished; attributes pass through
  assert not stream.isatty()


def test_a_closed_console_is_a_bad_descriptor():
  closed = io.StringIO()
  closed.close()
  stream = cli.ConsoleStream(closed)
  assert stream.write('x') == 1
  assert stream.failed.errno == errno.EBADF
