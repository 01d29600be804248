import gzip
import os
import shutil

import numpy as np
import pytest

from mlp_jax import data
from mlp_jax.errors import DataError

SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'mnist')


def test_bundled_copy_has_the_known_facts(mnist):
  assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
  assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_images.dtype == np.uint8
  assert mnist.train_labels.tolist()[:10] == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
  assert mnist.test_labels.tolist()[:10] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
  assert np.bincount(mnist.train_labels).tolist() == [
      5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
  assert np.bincount(mnist.test_labels).tolist() == [
      980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
  assert mnist.train_images.max() == 255 and mnist.train_images.min() == 0
  assert mnist.sha256 == data.CANONICAL_SHA256


@pytest.mark.skipif(not os.path.isdir(SHARED), reason='../shared not beside the checkout')
def test_bundled_files_are_the_shared_canonical_files():
  for name in os.listdir(SHARED):
    if name.endswith('.gz'):
      with open(os.path.join(SHARED, name), 'rb') as a, \
          open(os.path.join(data.BUNDLED_DIR, name), 'rb') as b:
        assert a.read() == b.read(), name


def _raw_copy(tmp_path, mnist_dir=data.BUNDLED_DIR):
  """The four files decompressed into tmp_path: the raw-IDX form of --data_dir."""
  for name in data.CANONICAL_SHA256:
    with gzip.open(os.path.join(mnist_dir, name + '.gz')) as src, \
        open(tmp_path / name, 'wb') as dst:
      shutil.copyfileobj(src, dst)
  return tmp_path


def test_raw_and_gzipped_directories_read_the_same(tmp_path, mnist):
  raw = data.load_mnist(str(_raw_copy(tmp_path)))
  np.testing.assert_array_equal(raw.train_images, mnist.train_images)
  np.testing.assert_array_equal(raw.test_labels, mnist.test_labels)
  assert raw.sha256 == mnist.sha256


def test_parse_idx_rejects_bad_headers():
  good = bytes([0, 0, 8, 1]) + (3).to_bytes(4, 'big') + bytes([1, 2, 3])
  assert data.parse_idx(good).tolist() == [1, 2, 3]
  with pytest.raises(DataError, match='magic number'):
    data.parse_idx(bytes([0, 0, 9, 1]) + good[4:])
  with pytest.raises(DataError, match='truncated'):
    data.parse_idx(good[:-1])
  with pytest.raises(DataError, match='trailing'):
    data.parse_idx(good + b'\0')


def test_missing_directory(tmp_path):
  with pytest.raises(DataError, match='no such directory'):
    data.load_mnist(str(tmp_path / 'nope'))


def test_empty_directory(tmp_path):
  with pytest.raises(DataError, match='holds none of the four'):
    data.load_mnist(str(tmp_path))


def test_missing_one_file(tmp_path):
  _raw_copy(tmp_path)
  os.remove(tmp_path / 't10k-labels-idx1-ubyte')
  with pytest.raises(DataError, match='missing t10k-labels-idx1-ubyte'):
    data.load_mnist(str(tmp_path))


def test_truncated_gzip_names_the_file(tmp_path):
  for name in data.CANONICAL_SHA256:
    shutil.copy(os.path.join(data.BUNDLED_DIR, name + '.gz'), tmp_path)
  path = tmp_path / 'train-images-idx3-ubyte.gz'
  path.write_bytes(path.read_bytes()[:100_000])
  with pytest.raises(DataError, match='train-images-idx3-ubyte.gz: truncated'):
    data.load_mnist(str(tmp_path))


def test_truncated_raw_file_names_the_file(tmp_path):
  _raw_copy(tmp_path)
  path = tmp_path / 't10k-images-idx3-ubyte'
  path.write_bytes(path.read_bytes()[:-784])
  with pytest.raises(DataError, match='t10k-images-idx3-ubyte: truncated'):
    data.load_mnist(str(tmp_path))


def test_wrong_content_names_the_file_and_both_checksums(tmp_path):
  _raw_copy(tmp_path)
  path = tmp_path / 'train-labels-idx1-ubyte'
  content = bytearray(path.read_bytes())
  content[8] = (content[8] + 1) % 10  # relabel the first example: a valid IDX file, wrong data
  path.write_bytes(bytes(content))
  with pytest.raises(DataError) as info:
    data.load_mnist(str(tmp_path))
  message = str(info.value)
  assert 'train-labels-idx1-ubyte' in message and 'checksum mismatch' in message
  assert data.CANONICAL_SHA256['train-labels-idx1-ubyte'] in message
