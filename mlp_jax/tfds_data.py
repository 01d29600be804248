"""MNIST-like datasets from TensorFlow Datasets (TFDS), read offline into numpy.

`load_tfds('fashion_mnist', data_dir)` reads any TFDS image-classification dataset
of 28x28x1 uint8 images with an integer class label (mnist, fashion_mnist,
kmnist, emnist/digits, emnist/letters, mnist_corrupted/..., ...) and returns the
project's `mlp_jax.data.Dataset`.

Reading never touches the network and never downloads: the dataset must already
be prepared under `data_dir`. It is read as `tfds.data_source(name,
data_dir=data_dir, download=False)` reads it (`builder.as_data_source`: array_record
files, random access, no TensorFlow needed), from the builder already checked
here. A dataset prepared in the TFRecord format (the default of `tfds.load` and
`tfds build`) is read as `tfds.load(..., batch_size=-1)` reads it, through
tf.data, and only when TensorFlow is importable.

tensorflow_datasets is imported inside `load_tfds` only: the default MNIST path
(`mlp_jax.data.load_mnist`) never imports it.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mlp_jax.data import Dataset
from mlp_jax.errors import DataError

# The image shape every dataset must have (height, width, channels).
IMAGE_SHAPE = (28, 28, 1)

# TFDS datasets known to fit: 28x28x1 uint8 images with a ClassLabel 'label' and
# 'train' and 'test' splits (checked against tensorflow-datasets 4.9.10).
KNOWN_28X28X1 = ('mnist', 'fashion_mnist', 'kmnist', 'emnist/digits', 'emnist/mnist',
                 'emnist/letters', 'emnist/balanced', 'mnist_corrupted/identity')

SPLITS = ('train', 'test')

# Records decoded per `__getitems__` call: one batched read, bounded memory.
_CHUNK = 8192


def load_tfds(name: str, data_dir: Optional[str] = None) -> Dataset:
  """Loads a prepared TFDS dataset of 28x28x1 images, without any network access.

  Args:
    name: TFDS name, optionally with config and version: 'mnist',
      'fashion_mnist:3.0.1', 'emnist/digits'.
    data_dir: the TFDS data directory holding `<name>/[<config>/]<version>/`;
      None means TFDS's default (`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`).

  Returns:
    A Dataset: train_images uint8[N, 28, 28], train_labels uint8[N] (a wider
    unsigned dtype only when num_classes > 256), test_images uint8[M, 28, 28],
    test_labels likewise; sha256 maps 'train_images', 'train_labels',
    'test_images', 'test_labels' to the hex SHA-256 of each array's bytes (in
    record order); source is like 'tfds:fashion_mnist:3.0.1 from /data/tfds';
    num_classes comes from the dataset's 'label' feature.

  Raises:
    DataError (one line): unknown name; images not 28x28x1 uint8, or no
      'image'/'label' feature, or no 'train'/'test' split; dataset not prepared
      in the data directory (says where it looked and how to prepare it on a
      machine with internet); or unreadable data.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  quiet_tfds_warnings()
  if data_dir is not None and '://' not in data_dir:
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  builder = _builder(tfds, name, data_dir)
  spec = _spec(builder)
  num_classes = _check_features(tfds, builder, spec)
  try:
    sources = builder.as_data_source(split=list(SPLITS))
    splits = [_read_source(source, num_classes, spec, split)
              for source, split in zip(sources, SPLITS)]
    via = ''
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Why the random-access path failed decides what to say, or what else to try.
    _check_prepared(builder, spec)
    _check_splits(builder, spec)
    if _has_random_access(tfds, builder) or not _tensorflow_importable():
      raise DataError(_no_data_source_message(tfds, builder, spec, e)) from None
    splits = _read_with_tensorflow(tfds, builder, num_classes, spec)
    via = ' (TFRecord, read with TensorFlow)'
  (train_images, train_labels), (test_images, test_labels) = splits
  arrays = {'train_images': train_images, 'train_labels': train_labels,
            'test_images': test_images, 'test_labels': test_labels}
  return Dataset(
      train_images=train_images,
      train_labels=train_labels,
      test_images=test_images,
      test_labels=test_labels,
      sha256={key: sha256_of(array) for key, array in arrays.items()},
      source=f'tfds:{spec}:{builder.version} from {builder.data_dir_root}{via}',
      num_classes=num_classes,
  )


class _TfdsWarningFilter(logging.Filter):
  """Drops tensorflow_datasets' own log records below ERROR: what goes wrong reaches
  load_tfds as an exception and is said in one line (DataError); its warnings
  ("Variant folder ... has no dataset_info.json") would come before that line."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.ERROR or
            f'{os.sep}tensorflow_datasets{os.sep}' not in record.pathname)


def quiet_tfds_warnings() -> None:
  """Installs (once) _TfdsWarningFilter on absl's logger, which TFDS logs through."""
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _TfdsWarningFilter) for f in absl_logger.filters):
    absl_logger.addFilter(_TfdsWarningFilter())


def sha256_of(array: np.ndarray) -> str:
  """Hex SHA-256 of the array's bytes in C order (dtype and shape not included)."""
  return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def label_dtype(num_classes: int) -> np.dtype:
  """The narrowest unsigned dtype holding labels 0..num_classes-1 (uint8 for MNIST)."""
  for dtype in (np.uint8, np.uint16, np.uint32):
    if num_classes - 1 <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  raise DataError(f'{num_classes} classes is too many')


def _one_line(text: str, limit: int = 300) -> str:
  """`text` with all whitespace runs collapsed to one space, cut to `limit` chars."""
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def _spec(builder: Any) -> str:
  """'mnist' or 'emnist/digits': what `tfds build` takes to build this dataset."""
  config = builder.builder_config
  return f'{builder.name}/{config.name}' if config is not None else builder.name


def _builder(tfds: Any, name: str, data_dir: Optional[str]) -> Any:
  """The TFDS DatasetBuilder for `name`, constructed from code or from files.

  Constructing a builder reads only local files (no download, no GCS lookup).
  Namespaced names ('huggingface:...', community datasets) are refused: they
  would need the network.
  """
  try:
    dataset_name, _ = tfds.core.naming.parse_builder_name_kwargs(name)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'TFDS dataset name {name!r} is malformed: {_one_line(e, 160)}') from None
  if dataset_name.namespace:
    raise DataError(f'TFDS dataset {name!r}: namespaced datasets '
                    f'({dataset_name.namespace}:...) need the network and are not '
                    f'supported; use one of {", ".join(KNOWN_28X28X1)}')
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(_unknown_message(tfds, name, dataset_name.name)) from None
  except Exception as e:  # pylint: disable=broad-except
    message = _one_line(e).rstrip(':')
    configs = [c.name for c in getattr(_builder_cls(tfds, dataset_name.name),
                                       'BUILDER_CONFIGS', None) or []]
    if configs:
      message += f' (configs: {", ".join(configs)})'
    raise DataError(f'TFDS dataset {name!r}: {message}') from None


def _builder_cls(tfds: Any, name: str) -> Any:
  """The registered builder class for `name`, or None."""
  try:
    return tfds.builder_cls(name)
  except Exception:  # pylint: disable=broad-except
    return None


def _unknown_message(tfds: Any, name: str, base_name: str) -> str:
  """One line: `name` is unknown, the closest registered names, and ones that fit."""
  close = difflib.get_close_matches(base_name, tfds.list_builders(
      with_community_datasets=False), n=3, cutoff=0.6)
  hint = f' (did you mean {" or ".join(close)}?)' if close else ''
  return (f'TFDS dataset {name!r} is unknown{hint}; 28x28x1 image-classification '
          f'datasets include {", ".join(KNOWN_28X28X1)}')


def _check_features(tfds: Any, builder: Any, spec: str) -> int:
  """Checks for a 28x28x1 uint8 'image' and a ClassLabel 'label'; returns num_classes.

  Uses the dataset's declared features, so it works before the data is prepared.
  """
  features = builder.info.features
  keys = sorted(features.keys()) if hasattr(features, 'keys') else []
  if 'image' not in keys or 'label' not in keys:
    found = ', '.join(keys) or type(features).__name__
    raise DataError(f"TFDS dataset {spec!r} has features {found}; need an 'image' "
                    "and a 'label' feature")
  image, label = features['image'], features['label']
  if not isinstance(image, tfds.features.Image):
    raise DataError(f"TFDS dataset {spec!r}: its 'image' feature is a "
                    f'{type(image).__name__}, not an image')
  shape, dtype = tuple(image.shape), np.dtype(image.np_dtype)
  if shape != IMAGE_SHAPE or dtype != np.uint8:
    found = 'x'.join('?' if s is None else str(s) for s in shape)
    raise DataError(f'TFDS dataset {spec!r} has {found} {dtype.name} images; only '
                    f'28x28x1 uint8 images are supported (e.g. {", ".join(KNOWN_28X28X1[:4])})')
  if not isinstance(label, tfds.features.ClassLabel) or not label.num_classes:
    raise DataError(f"TFDS dataset {spec!r}: its 'label' feature is a "
                    f'{type(label).__name__}, not a class label')
  return int(label.num_classes)


def _check_prepared(builder: Any, spec: str) -> None:
  """Raises the offline DataError when the dataset is not prepared in its data dir."""
  if builder.is_prepared():
    return
  root = str(builder.data_dir_root)
  missing = '' if os.path.isdir(root) or '://' in root else ', which does not exist'
  raise DataError(
      f'TFDS dataset {spec!r} is not prepared in {root}{missing} (looked for '
      f'{builder.data_dir}/dataset_info.json) and this machine cannot download it; '
      f'on a machine with internet run `pip install tensorflow tensorflow-datasets '
      f'&& tfds build {spec} --data_dir=tfds_data --file_format=array_record`, '
      f'copy the tfds_data folder here (its downloads/ subfolder is not needed) '
      f'and pass --tfds_data_dir=/path/to/tfds_data')


def _check_splits(builder: Any, spec: str) -> None:
  """Raises DataError unless the prepared dataset has both a 'train' and a 'test' split."""
  found = sorted(builder.info.splits.keys())
  missing = [s for s in SPLITS if s not in found]
  if missing:
    raise DataError(f"TFDS dataset {spec!r} in {builder.data_dir} has splits "
                    f"{', '.join(found) or 'none'}; need 'train' and 'test' "
                    f"(missing {', '.join(missing)})")


def _tensorflow_importable() -> bool:
  """Whether TensorFlow could be imported (without importing it)."""
  return importlib.util.find_spec('tensorflow') is not None


def _has_random_access(tfds: Any, builder: Any) -> bool:
  """Whether the prepared files are in a format `as_data_source` reads (array_record)."""
  random_access = tfds.core.file_adapters.FileFormat.with_random_access()
  return bool(builder.info.available_file_formats() & set(random_access))


def _no_data_source_message(tfds: Any, builder: Any, spec: str, error: Exception) -> str:
  """One line: why the prepared dataset cannot be read (TensorFlow is not importable)."""
  if not _has_random_access(tfds, builder):
    formats = sorted(f.value for f in builder.info.available_file_formats())
    return (f'TFDS dataset {spec!r} in {builder.data_dir} is stored as '
            f'{", ".join(formats) or "an unknown format"}, which needs TensorFlow to '
            f'read; rebuild it with `tfds build {spec} --data_dir=tfds_data '
            f'--file_format=array_record` on a machine with internet, or pip install '
            f'tensorflow')
  return f'TFDS dataset {spec!r} in {builder.data_dir} cannot be read: {_one_line(error)}'


def _read_records(source: Sequence[Any], start: int, stop: int) -> List[Any]:
  """Records start..stop-1 of a data source: one batched `__getitems__` read if it has one."""
  keys = list(range(start, stop))
  getitems = getattr(source, '__getitems__', None)
  return list(getitems(keys)) if getitems is not None else [source[k] for k in keys]


def _read_source(source: Sequence[Any], num_classes: int, spec: str,
                 split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Decodes a whole TFDS data source.

  Args:
    source: a `tfds.data_source` split: a sequence of {'image': uint8[28, 28, 1],
      'label': int} records.
    num_classes: labels must lie in [0, num_classes).
    spec: dataset name for messages.
    split: split name for messages.

  Returns:
    (uint8[N, 28, 28] images, label_dtype(num_classes)[N] labels).
  """
  n = len(source)
  images = np.empty((n,) + IMAGE_SHAPE[:2], np.uint8)
  labels = np.empty((n,), np.int64)
  for start in range(0, n, _CHUNK):
    stop = min(n, start + _CHUNK)
    records = _read_records(source, start, stop)
    if len(records) != stop - start:
      raise DataError(f'TFDS dataset {spec!r} split {split}: asked for {stop - start} '
                      f'records, got {len(records)}')
    images[start:stop] = _image_batch([r['image'] for r in records], spec, split)
    labels[start:stop] = [r['label'] for r in records]
  return _checked(images, labels, num_classes, spec, split)


def _image_batch(images: Any, spec: str, split: str) -> np.ndarray:
  """Checks decoded images and returns them as one array uint8[k, 28, 28].

  Args:
    images: a sequence of uint8[28, 28, 1] (data source records) or one array
      uint8[k, 28, 28, 1] (a whole tf.data batch).
    spec: dataset name for messages.
    split: split name for messages.
  """
  try:
    batch = images if isinstance(images, np.ndarray) else np.stack(
        [np.asarray(image) for image in images])
  except ValueError:
    shapes = sorted({np.shape(image) for image in images})
    raise DataError(f'TFDS dataset {spec!r} split {split}: images of shapes {shapes[:3]}, '
                    'expected 28x28x1') from None
  if batch.shape[1:] == IMAGE_SHAPE:
    batch = batch[..., 0]
  if batch.shape[1:] != IMAGE_SHAPE[:2] or batch.dtype != np.uint8:
    raise DataError(f'TFDS dataset {spec!r} split {split}: decoded images are '
                    f'{batch.dtype}{list(batch.shape[1:])}, expected uint8[28, 28, 1]')
  return batch


def _checked(images: np.ndarray, labels: np.ndarray, num_classes: int, spec: str,
             split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Checks the split is non-empty and labels in [0, num_classes); narrows the labels.

  Args:
    images: uint8[N, 28, 28].
    labels: integer[N].

  Returns:
    (images, labels as label_dtype(num_classes)[N]).
  """
  if len(images) == 0:
    raise DataError(f'TFDS dataset {spec!r} split {split} is empty')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise DataError(f'TFDS dataset {spec!r} split {split}: labels span '
                    f'[{labels.min()}, {labels.max()}], outside [0, {num_classes})')
  return images, labels.astype(label_dtype(num_classes))


def _read_with_tensorflow(tfds: Any, builder: Any, num_classes: int,
                          spec: str) -> List[Tuple[np.ndarray, np.ndarray]]:
  """Reads both splits whole through tf.data (TFRecord files); needs TensorFlow.

  Returns:
    [(train uint8[N, 28, 28], labels[N]), (test uint8[M, 28, 28], labels[M])].
  """
  try:
    splits = tfds.as_numpy(builder.as_dataset(split=list(SPLITS), batch_size=-1))
    batches: List[Dict[str, np.ndarray]] = list(splits)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'TFDS dataset {spec!r} in {builder.data_dir} cannot be read with '
                    f'TensorFlow: {_one_line(e)}') from None
  return [_checked(_image_batch(batch['image'], spec, split),
                   np.asarray(batch['label'], np.int64), num_classes, spec, split)
          for batch, split in zip(batches, SPLITS)]
