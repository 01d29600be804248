"""mlp_jax.inference: predictions of a saved run, checked against the model computed
in numpy from its saved parameters (trained runs: test_main, test_grid, test_faults)."""

import os

import numpy as np
import pytest

import mlp_jax
from mlp_jax import inference, records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError

CONFIG = TrainConfig(hidden_sizes=(16,))


def _saved_run(path, classes=10, seed=0):
  """A run directory holding CONFIG and random parameters of its MLP with `classes`
  outputs; returns the parameters as float64 numpy (w1, b1, w2, b2)."""
  rng = np.random.default_rng(seed)
  w1, b1 = rng.normal(0, 0.1, (784, 16)), rng.normal(0, 0.1, 16)
  w2, b2 = rng.normal(0, 1.0, (16, classes)), rng.normal(0, 0.1, classes)
  as32 = lambda a: a.astype(np.float32)
  os.makedirs(path, exist_ok=True)
  records.write_json(os.path.join(path, records.CONFIG_FILE), CONFIG.to_dict())
  records.save_params(os.path.join(path, records.PARAMS_FILE), {'params': {
      'Dense_0': {'kernel': as32(w1), 'bias': as32(b1)},
      'Dense_1': {'kernel': as32(w2), 'bias': as32(b2)}}})
  return [as32(a).astype(np.float64) for a in (w1, b1, w2, b2)]


def _logits(params, images):
  w1, b1, w2, b2 = params
  x = images.reshape(len(images), -1).astype(np.float64) / 255.0
  return np.maximum(x @ w1 + b1, 0.0) @ w2 + b2


def _softmax(logits):
  e = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


IMAGES = np.random.default_rng(1).integers(0, 256, (1003, 28, 28), dtype=np.uint8)


def test_load_trained_refuses_a_directory_without_a_run(tmp_path):
  with pytest.raises(mlp_jax.errors.UsageError, match='not a run directory'):
    mlp_jax.load_trained(str(tmp_path))



def test_labels_and_probabilities_are_the_saved_models(tmp_path):
  params = _saved_run(str(tmp_path))
  logits = _logits(params, IMAGES)  # 1003 images: a whole batch of 1000 and a part
  labels = mlp_jax.load_trained(str(tmp_path))(IMAGES)
  assert labels.dtype == np.int32 and labels.shape == (1003,)
  np.testing.assert_array_equal(labels, np.argmax(logits, axis=-1))
  probabilities = inference.load_trained(str(tmp_path), 'probabilities')(IMAGES[:5])
  assert probabilities.dtype == np.float32 and probabilities.shape == (5, 10)
  np.testing.assert_allclose(probabilities, _softmax(logits[:5]), rtol=1e-4, atol=1e-6)


def test_the_number_of_classes_comes_from_the_parameters(tmp_path):
  _saved_run(str(tmp_path), classes=3)
  assert inference.load_trained(str(tmp_path), 'probabilities')(IMAGES[:2]).shape == (2, 3)
  assert inference.load_trained(str(tmp_path), 'probabilities')(IMAGES[:0]).shape == (0, 3)
  assert inference.load_trained(str(tmp_path))(IMAGES[:0]).dtype == np.int32


def test_bad_images_outputs_and_runs_are_refused(tmp_path):
  _saved_run(str(tmp_path / 'run'))
  predict = inference.load_trained(str(tmp_path / 'run'))
  with pytest.raises(ValueError, match=r'uint8 images of shape \(N, 28, 28\), got uint8 '
                     r'\(2, 784\)'):
    predict(IMAGES[:2].reshape(2, 784))
  with pytest.raises(UsageError, match="output must be one of labels, probabilities, got 'logits'"):
    inference.load_trained(str(tmp_path / 'run'), 'logits')
  os.remove(tmp_path / 'run' / records.PARAMS_FILE)
  with pytest.raises(UsageError, match='no trained parameters .*has the run finished'):
    inference.load_trained(str(tmp_path / 'run'))


def test_the_ensemble_sums_each_runs_probabilities(tmp_path):
  runs = [str(tmp_path / f'seed_{s}') for s in range(3)]
  probabilities = sum(_softmax(_logits(_saved_run(run, seed=s), IMAGES))
                      for s, run in enumerate(runs))
  labels = np.argmax(probabilities, axis=-1) % 10
  labels[::2] = (labels[::2] + 1) % 10  # every other image labelled wrong
  expected = int(np.sum(np.argmax(probabilities, axis=-1) == labels))
  assert expected == len(IMAGES) // 2
  assert inference.ensemble_correct(runs, IMAGES, labels) == expected
  first = np.argmax(_logits(_saved_run(runs[0], seed=0), IMAGES), axis=-1)
  assert inference.ensemble_correct(runs[:1], IMAGES, labels) == int(np.sum(first == labels))
