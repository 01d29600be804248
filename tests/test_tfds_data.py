"""mlp_jax.tfds_data: TFDS datasets read offline, checked, fingerprinted.

Two kinds of data, neither downloaded:
- `tfds.testing.mock_data`: TFDS's own mock, random records for any registered
  dataset (exercises name resolution, feature checks and conversion);
- tiny datasets really prepared in array_record format under tmp_path by the
  real dataset builder classes, with only the example generator replaced (the
  whole read path: dataset_info.json, array_record files, PNG decoding).

Every test runs with the network blocked (see `no_network`): any attempt to
resolve or connect fails the test.

tensorflow_datasets is imported inside the tests, not at collection, so that
collecting this file does not import it into the other tests' process.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from mlp_jax import tfds_data
from mlp_jax.errors import DataError, UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Fails any DNS lookup or connection attempt made in the test's process."""
  attempts = []

  def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError('network access attempted in a test')

  monkeypatch.setattr(socket, 'getaddrinfo', refuse)
  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket.socket, 'connect_ex', refuse)
  yield
  assert not attempts, f'network access attempted: {attempts}'


@pytest.fixture(scope='module')
def tfds():
  import tensorflow_datasets  # pylint: disable=g-import-not-at-top
  tensorflow_datasets.disable_progress_bar()
  return tensorflow_datasets


def prepare(tfds, data_dir, name, splits, config=None):
  """Really prepares dataset `name` (array_record) in data_dir from given arrays.

  Args:
    tfds: the tensorflow_datasets module.
    data_dir: TFDS data dir to write `<name>/[<config>/]<version>/` into.
    name: a registered dataset, e.g. 'mnist'; its builder class is used as is
      except that the examples come from `splits` instead of a download.
    splits: {'train': (uint8[N, 28, 28], int[N]), ...}.
    config: builder config name, if the dataset has configs.
  """
  import PIL.Image  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import registered  # pylint: disable=g-import-not-at-top

  def examples(images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      # A PIL image is PNG-encoded by PIL: no TensorFlow needed (ndarrays need it).
      yield i, {'image': PIL.Image.fromarray(image), 'label': int(label)}

  base = tfds.builder_cls(name)
  with registered.skip_registration():

    class Local(base):  # pylint: disable=unused-variable
      """The real builder, fed from arrays."""
      name = base.name

      def _split_generators(self, dl_manager):
        return {split: examples(*arrays) for split, arrays in splits.items()}

  builder = Local(data_dir=str(data_dir), config=config, file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def random_split(seed, n, num_classes=10):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
          rng.integers(0, num_classes, n))


def as_rows(images, labels):
  """The examples as a sorted list: TFDS stores records in its own shuffled order."""
  return sorted(x.tobytes() + int(y).to_bytes(2, 'big') for x, y in zip(images, labels))


def assert_well_formed(ds, n_train, n_test, num_classes):
  assert ds.train_images.shape == (n_train, 28, 28) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (n_test, 28, 28) and ds.test_images.dtype == np.uint8
  assert ds.train_labels.shape == (n_train,) and ds.train_labels.dtype == np.uint8
  assert ds.test_labels.shape == (n_test,) and ds.test_labels.dtype == np.uint8
  assert ds.num_classes == num_classes
  assert ds.train_labels.max() < num_classes and ds.test_labels.max() < num_classes
  for key in ('train_images', 'train_labels', 'test_images', 'test_labels'):
    assert ds.sha256[key] == hashlib.sha256(getattr(ds, key).tobytes()).hexdigest()
  assert set(ds.sha256) == {'train_images', 'train_labels', 'test_images', 'test_labels'}


# --- TFDS's mock data -------------------------------------------------------------


@pytest.fixture
def mock_data(tfds, monkeypatch):
  """`tfds.testing.mock_data` with code-only metadata and batched reads repaired.

  In tensorflow-datasets 4.9.10 the mock's data source gets `__getitems__` as a
  plain MagicMock attribute, so it is called without `self` and fails with
  "_getitems() missing 1 required positional argument: 'record_keys'" (its
  `__getitem__`, a real magic method, is fine). The replacement accepts that call.
  """
  from tensorflow_datasets.testing import mocking  # pylint: disable=g-import-not-at-top

  def getitems(*args, generator, serialized=False):
    assert not serialized
    return [generator[key] for key in args[-1]]

  monkeypatch.setattr(mocking, '_getitems', getitems)

  def mock(**kwargs):
    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, **kwargs)

  return mock


@pytest.mark.parametrize('name, num_classes, version', [
    ('mnist', 10, '3.0.1'),
    ('fashion_mnist', 10, '3.0.1'),
    ('emnist/letters', 37, '3.1.0'),
])
def test_mock_datasets_load_into_the_right_shapes(mock_data, name, num_classes, version):
  with mock_data(num_examples=6):
    ds = tfds_data.load_tfds(name, data_dir='/unused')
  assert_well_formed(ds, 6, 6, num_classes)
  assert ds.source.startswith(f'tfds:{name}:{version} from /')
  assert 'tensorflow' not in sys.modules


def test_fingerprint_follows_the_data(mock_data):
  # The mock draws record i from a generator seeded with i: same records, same
  # fingerprint; more records, or labels drawn from 37 classes instead of 10,
  # change exactly the arrays that changed.
  with mock_data(num_examples=5):
    a = tfds_data.load_tfds('mnist')
    again = tfds_data.load_tfds('mnist')
    letters = tfds_data.load_tfds('emnist/letters')
  with mock_data(num_examples=6):
    longer = tfds_data.load_tfds('mnist')
  assert a.sha256 == again.sha256
  assert all(a.sha256[key] != longer.sha256[key] for key in a.sha256)
  np.testing.assert_array_equal(a.train_images, letters.train_images)
  assert a.sha256['train_images'] == letters.sha256['train_images']
  assert not np.array_equal(a.train_labels, letters.train_labels)
  assert a.sha256['train_labels'] != letters.sha256['train_labels']


def test_mock_cifar10_is_rejected_for_its_image_shape(mock_data):
  with mock_data(num_examples=2):
    with pytest.raises(DataError, match=r"'cifar10' has 32x32x3 uint8 images; only 28x28x1"):
      tfds_data.load_tfds('cifar10')


# --- datasets really prepared on disk (array_record) ------------------------------


def test_prepared_datasets_read_back_exactly(tfds, tmp_path):
  train, test = random_split(0, 40), random_split(1, 12)
  prepare(tfds, tmp_path, 'mnist', {'train': train, 'test': test})
  fashion = random_split(2, 9), random_split(3, 7)
  prepare(tfds, tmp_path, 'fashion_mnist', {'train': fashion[0], 'test': fashion[1]})

  ds = tfds_data.load_tfds('mnist', data_dir=str(tmp_path))
  assert_well_formed(ds, 40, 12, 10)
  assert as_rows(ds.train_images, ds.train_labels) == as_rows(*train)
  assert as_rows(ds.test_images, ds.test_labels) == as_rows(*test)
  assert ds.source == f'tfds:mnist:3.0.1 from {tmp_path}'

  other = tfds_data.load_tfds('fashion_mnist', data_dir=str(tmp_path))
  assert_well_formed(other, 9, 7, 10)
  assert as_rows(other.train_images, other.train_labels) == as_rows(*fashion[0])
  assert other.source == f'tfds:fashion_mnist:3.0.1 from {tmp_path}'
  assert 'tensorflow' not in sys.modules


def test_fingerprint_changes_with_one_pixel(tfds, tmp_path):
  (images, labels), test = random_split(0, 10), random_split(1, 4)
  prepare(tfds, tmp_path / 'a', 'mnist', {'train': (images, labels), 'test': test})
  changed = images.copy()
  changed[3, 14, 14] ^= 1
  prepare(tfds, tmp_path / 'b', 'mnist', {'train': (changed, labels), 'test': test})
  a = tfds_data.load_tfds('mnist', str(tmp_path / 'a'))
  b = tfds_data.load_tfds('mnist', str(tmp_path / 'b'))
  assert a.sha256['train_images'] != b.sha256['train_images']
  for key in ('train_labels', 'test_images', 'test_labels'):
    assert a.sha256[key] == b.sha256[key]


def test_missing_test_split_is_named(tfds, tmp_path):
  prepare(tfds, tmp_path, 'mnist', {'train': random_split(0, 5)})
  with pytest.raises(DataError, match=r"has splits train; need 'train' and 'test' \(missing test\)"):
    tfds_data.load_tfds('mnist', str(tmp_path))


def test_missing_shard_is_one_line_error(tfds, tmp_path):
  prepare(tfds, tmp_path, 'mnist', {'train': random_split(0, 5), 'test': random_split(1, 2)})
  (tmp_path / 'mnist' / '3.0.1' / 'mnist-test.array_record-00000-of-00001').unlink()
  with pytest.raises(DataError, match=r"'mnist' in .* cannot be read: .*No such file") as raised:
    tfds_data.load_tfds('mnist', str(tmp_path))
  assert '\n' not in str(raised.value)


def _as_tfrecord(version_dir):
  """Relabels a prepared array_record dataset as TFRecord, the default format of `tfds build`."""
  info_path = version_dir / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'
  info_path.write_text(json.dumps(info))
  for path in version_dir.iterdir():
    if '.array_record-' in path.name:
      path.rename(version_dir / path.name.replace('.array_record-', '.tfrecord-'))


def test_tfrecord_dataset_needs_tensorflow(tfds, tmp_path, monkeypatch):
  train, test = random_split(0, 6), random_split(1, 3)
  builder = prepare(tfds, tmp_path, 'mnist', {'train': train, 'test': test})
  _as_tfrecord(tmp_path / 'mnist' / '3.0.1')
  monkeypatch.setattr(tfds_data, '_tensorflow_importable', lambda: False)
  with pytest.raises(DataError, match=r'stored as tfrecord, which needs TensorFlow.*'
                     r'--file_format=array_record'):
    tfds_data.load_tfds('mnist', str(tmp_path))
  del builder

  # With TensorFlow, the same data is read whole through tf.data instead (stubbed:
  # TensorFlow is not installed here; the stub returns what `batch_size=-1` gives).
  def as_dataset(self, split, batch_size):
    assert split == ['train', 'test'] and batch_size == -1
    return [{'image': x[..., None], 'label': y} for x, y in (train, test)]

  monkeypatch.setattr(tfds_data, '_tensorflow_importable', lambda: True)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'as_dataset', as_dataset)
  monkeypatch.setattr(tfds, 'as_numpy', lambda tree: tree)
  ds = tfds_data.load_tfds('mnist', str(tmp_path))
  assert_well_formed(ds, 6, 3, 10)
  np.testing.assert_array_equal(ds.train_images, train[0])
  assert ds.source.endswith('(TFRecord, read with TensorFlow)')


# --- errors ---------------------------------------------------------------------


def test_not_prepared_says_where_it_looked_and_how_to_prepare(tfds, tmp_path):
  with pytest.raises(DataError) as raised:
    tfds_data.load_tfds('fashion_mnist', data_dir=str(tmp_path))
  message = str(raised.value)
  assert '\n' not in message
  assert f'not prepared in {tmp_path} ' in message
  assert f'{tmp_path}/fashion_mnist/3.0.1/dataset_info.json' in message
  assert 'cannot download' in message
  assert 'tfds build fashion_mnist --data_dir=tfds_data --file_format=array_record' in message
  assert '--tfds_data_dir=' in message
  assert isinstance(raised.value, UsageError)
  assert not list(tmp_path.iterdir())  # looked, wrote nothing

  with pytest.raises(DataError, match=r"'emnist/digits' is not prepared in .*which does not exist"
                     r'.*tfds build emnist/digits '):
    tfds_data.load_tfds('emnist/digits', data_dir=str(tmp_path / 'nowhere'))


def test_default_data_dir_is_resolved_in_the_message(tfds, tmp_path, monkeypatch):
  monkeypatch.setattr(tfds.core.constants, 'DATA_DIR', str(tmp_path))
  with pytest.raises(DataError, match=f"'kmnist' is not prepared in {tmp_path} "):
    tfds_data.load_tfds('kmnist')


def test_unknown_dataset(tfds):
  with pytest.raises(DataError, match=r"'mnistt' is unknown \(did you mean mnist.*\); "
                     r'28x28x1 image-classification datasets include mnist, fashion_mnist'):
    tfds_data.load_tfds('mnistt')
  with pytest.raises(DataError, match='namespaced datasets'):
    tfds_data.load_tfds('huggingface:mnist')
  with pytest.raises(DataError, match='cannot be loaded at version 1.0.0, only: 3.0.1'):
    tfds_data.load_tfds('mnist:1.0.0')


def test_datasets_that_do_not_fit_are_rejected_before_reading(tfds, tmp_path):
  with pytest.raises(DataError, match=r"'cifar10' has 32x32x3 uint8 images"):
    tfds_data.load_tfds('cifar10', str(tmp_path))
  with pytest.raises(DataError, match=r"'binarized_mnist' has features image; "
                     r"need an 'image' and a 'label'"):
    tfds_data.load_tfds('binarized_mnist', str(tmp_path))


def test_label_dtype():
  assert tfds_data.label_dtype(10) == np.uint8
  assert tfds_data.label_dtype(256) == np.uint8
  assert tfds_data.label_dtype(257) == np.uint16


def test_default_mnist_path_never_imports_tfds():
  code = ('import sys, mlp_jax.data, mlp_jax.tfds_data; mlp_jax.data.load_mnist(); '
          "assert 'tensorflow_datasets' not in sys.modules, 'imported'")
  done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_training_on_a_prepared_tfds_dataset_end_to_end(tfds, tmp_path, mnist):
  """`--dataset=fashion_mnist --tfds_data_dir=DIR` through the real loader and CLI."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / 'tfds'
  prepare(tfds, data_dir, 'fashion_mnist', {
      'train': (mnist.train_images[:2000], mnist.train_labels[:2000]),
      'test': (mnist.test_images[:500], mnist.test_labels[:500])})
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-m', 'mlp_jax.main', '--dataset=fashion_mnist', f'--tfds_data_dir={data_dir}',
       '--epochs=3', '--batch_size=100', f'--workdir={workdir}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  rows = (workdir / 'history.csv').read_text().splitlines()
  assert len(rows) == 4 and float(rows[-1].split(',')[4]) > 0.8  # digits relabelled as clothes
  env = json.loads((workdir / 'environment.json').read_text())
  assert env['data']['source'].startswith('tfds:fashion_mnist')
  assert set(env['data']['sha256']) == {'train_images', 'train_labels', 'test_images', 'test_labels'}
