"""MNIST from the canonical IDX files: read, verify, return numpy arrays.

The four files ship inside the package (`mlp_jax/mnist_idx/`, see its README for
provenance and licence), so the default path never touches the network and never
imports tensorflow-datasets. Every file is checked on load: IDX magic number and
dimensions, length, and the SHA-256 of its decompressed content against the
published canonical value.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

from mlp_jax.config import BUNDLED_DATASET, TrainConfig
from mlp_jax.errors import DataError

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mnist_idx')

# SHA-256 of each file's decompressed content: the widely published canonical values.
CANONICAL_SHA256 = {
    'train-images-idx3-ubyte': 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
    'train-labels-idx1-ubyte': '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
    't10k-images-idx3-ubyte': '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
    't10k-labels-idx1-ubyte': 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
}

# Shape each canonical file must have.
CANONICAL_SHAPE = {
    'train-images-idx3-ubyte': (60_000, 28, 28),
    'train-labels-idx1-ubyte': (60_000,),
    't10k-images-idx3-ubyte': (10_000, 28, 28),
    't10k-labels-idx1-ubyte': (10_000,),
}

_GZIP_MAGIC = b'\x1f\x8b'
_IDX_UBYTE = 0x08


@dataclasses.dataclass(frozen=True)
class Dataset:
  """MNIST as host arrays.

  Attributes:
    train_images: uint8[60000, 28, 28]
    train_labels: uint8[60000]
    test_images: uint8[10000, 28, 28]
    test_labels: uint8[10000]
    sha256: SHA-256 of each file's content, keyed by file name (for MNIST IDX
      files, of the decompressed content, keyed by canonical name).
    source: where the data was read from.
    num_classes: number of label values.
    validation_images, validation_labels: training images held out as a
      validation split, and their labels (hold_out; None: no split); then
      train_images/train_labels are the others.
    validation_sha256: SHA-256 of the held-out indices (validation_checksum).
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  sha256: Dict[str, str]
  source: str
  num_classes: int = 10
  validation_images: Optional[np.ndarray] = None
  validation_labels: Optional[np.ndarray] = None
  validation_sha256: Optional[str] = None

  @property
  def full_train_size(self) -> int:
    """Training images before any were held out."""
    held_out = 0 if self.validation_labels is None else len(self.validation_labels)
    return len(self.train_labels) + held_out


def parse_idx(content: bytes, name: str = '<bytes>',
              expected_ndim: Optional[int] = None) -> np.ndarray:
  """Decodes uint8 IDX content (already decompressed) into an array of its shape.

  Raises DataError naming `name` when the magic number, dimensions or length are
  wrong; `expected_ndim`: the number of dimensions the file must have (its magic number's
  last byte), so that a file of another kind (labels for images) is named as that,
  not as one whose length cannot match dimensions read from its data.
  """
  if len(content) < 4:
    raise DataError(f'{name}: truncated IDX file ({len(content)} bytes, no header)')
  zero, dtype_code, ndim = int.from_bytes(content[:2], 'big'), content[2], content[3]
  if zero != 0 or dtype_code != _IDX_UBYTE or not 1 <= ndim <= 3:
    raise DataError(f'{name}: not a uint8 IDX file (magic number 0x{content[:4].hex()})')
  if expected_ndim is not None and ndim != expected_ndim:
    raise DataError(f'{name}: magic number 0x{content[:4].hex()} is that of a {ndim}-dimensional '
                    f'IDX file, expected {expected_ndim} dimension(s) '
                    f'(0x0000{_IDX_UBYTE:02x}{expected_ndim:02x}): another kind of file?')
  header = 4 + 4 * ndim
  if len(content) < header:
    raise DataError(f'{name}: truncated IDX header ({len(content)} bytes)')
  shape = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  expected = header + int(np.prod(shape))
  if len(content) != expected:
    kind = 'truncated' if len(content) < expected else 'has trailing bytes'
    raise DataError(f'{name}: {kind}: dimensions {shape} need {expected} bytes, '
                    f'file has {len(content)}')
  return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_file(path: str, canonical_name: Optional[str] = None) -> Tuple[np.ndarray, str]:
  """Reads one IDX file, gzipped or raw (told apart by content, not by name).

  Args:
    path: the file.
    canonical_name: if given, the content's SHA-256 and shape must be the canonical ones.

  Returns:
    (uint8 array, hex SHA-256 of the decompressed content).
  """
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f'{path}: cannot read: {e.strerror}') from None
  if raw[:2] == _GZIP_MAGIC:
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(f'{path}: truncated or corrupt gzip data ({e})') from None
  digest = hashlib.sha256(raw).hexdigest()
  array = parse_idx(raw, path, None if canonical_name is None
                    else len(CANONICAL_SHAPE[canonical_name]))
  if canonical_name is not None:
    if array.shape != CANONICAL_SHAPE[canonical_name]:
      raise DataError(f'{path}: expected shape {CANONICAL_SHAPE[canonical_name]}, '
                      f'got {array.shape}')
    if digest != CANONICAL_SHA256[canonical_name]:
      raise DataError(f'{path}: content checksum mismatch: expected SHA-256 '
                      f'{CANONICAL_SHA256[canonical_name]}, got {digest}')
  return array, digest


def find_idx_file(directory: str, name: str) -> str:
  """The path of `name` or `name.gz` in `directory`; DataError if neither exists."""
  for candidate in (name + '.gz', name):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  raise DataError(f'{directory}: missing {name}.gz (or {name})')


def load_mnist(data_dir: Optional[str] = None) -> Dataset:
  """Loads and verifies MNIST from `data_dir` (default: the bundled copy).

  Raises:
    DataError: the directory does not exist or holds no MNIST files, or a file is
      missing, truncated, malformed, or differs from the canonical content.
  """
  directory = BUNDLED_DIR if data_dir is None else data_dir
  if not os.path.isdir(directory):
    raise DataError(f'--data_dir={directory}: no such directory')
  present = set(os.listdir(directory))
  if not any(n in present or n + '.gz' in present for n in CANONICAL_SHA256):
    raise DataError(f'--data_dir={directory}: holds none of the four MNIST IDX files '
                    f'({", ".join(CANONICAL_SHA256)}, optionally .gz)')
  arrays, digests = {}, {}
  for name in CANONICAL_SHA256:
    arrays[name], digests[name] = read_idx_file(find_idx_file(directory, name), name)
  return Dataset(
      train_images=arrays['train-images-idx3-ubyte'],
      train_labels=arrays['train-labels-idx1-ubyte'],
      test_images=arrays['t10k-images-idx3-ubyte'],
      test_labels=arrays['t10k-labels-idx1-ubyte'],
      sha256=digests,
      source=os.path.abspath(directory),
  )


def load_data(config: TrainConfig) -> Dataset:
  """Validates `config`, loads its data (the bundled MNIST or a TFDS dataset) and
  checks the config against it."""
  config.validate()
  if config.dataset == BUNDLED_DATASET:
    dataset = load_mnist(config.data_dir)
  else:
    from mlp_jax.tfds_data import load_tfds  # pylint: disable=g-import-not-at-top
    dataset = load_tfds(config.dataset, config.tfds_data_dir)
  config.validate(train_size=len(dataset.train_labels))
  return dataset


# The seed of the permutation that picks held-out images. Fixed, and independent of
# --seed, so that every seed, grid point, device and process holds out the same ones.
VALIDATION_PERMUTATION_SEED = 0x5EED_7E57


def validation_indices(train_size: int, validation_size: int) -> np.ndarray:
  """The indices of the training images held out as a validation split: the first
  `validation_size` of a fixed permutation of range(train_size), sorted.

  numpy's legacy RandomState draws it: its stream is frozen across numpy versions
  (Generator's is not promised to be), so the held-out images never change.

  Returns:
    int64[validation_size], increasing.
  """
  permutation = np.random.RandomState(VALIDATION_PERMUTATION_SEED).permutation(train_size)
  return np.sort(permutation[:validation_size]).astype(np.int64)


def validation_checksum(indices: np.ndarray) -> str:
  """SHA-256 of held-out indices (as little-endian int64), recorded in config.json."""
  return hashlib.sha256(np.asarray(indices, dtype='<i8').tobytes()).hexdigest()


def hold_out(dataset: Dataset, validation_size: int) -> Dataset:
  """`dataset` with `validation_size` of its training images held out (0: as it is).

  The held-out images are `validation_indices(train size, validation_size)`, in
  index order; the training images keep their order without them. A dataset
  already split that way is returned as it is.

  Raises:
    DataError: the dataset is already split another way, or has too few images.
  """
  if dataset.validation_labels is not None:
    if len(dataset.validation_labels) != validation_size:
      raise DataError(f'--validation_size={validation_size}: the dataset already holds out '
                      f'{len(dataset.validation_labels)} images')
    return dataset
  if not validation_size:
    return dataset
  train_size = len(dataset.train_labels)
  if validation_size >= train_size:
    raise DataError(f'--validation_size={validation_size} must be smaller than the training '
                    f'set ({train_size} images)')
  held = validation_indices(train_size, validation_size)
  kept = np.ones(train_size, bool)
  kept[held] = False
  return dataclasses.replace(
      dataset, train_images=dataset.train_images[kept], train_labels=dataset.train_labels[kept],
      validation_images=dataset.train_images[held], validation_labels=dataset.train_labels[held],
      validation_sha256=validation_checksum(held))
