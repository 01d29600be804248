"""Using a trained model: `predict = load_trained(workdir); labels = predict(images)`."""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax import environment, records
from mlp_jax.errors import UsageError
from mlp_jax.models import create_model, num_classes_of
from mlp_jax.train import to_pixels, with_matmul_precision


def load_trained(workdir: str) -> Callable[[np.ndarray], np.ndarray]:
  """Returns `predict(images) -> labels` for the model a finished run saved in `workdir`.

  `predict` takes uint8 images of shape (N, 28, 28), pixels 0-255 as in the MNIST
  files, and returns the predicted digits as int32 numpy of shape (N,).
  It works on a single run's workdir or on one `seed_<k>/` folder of a sweep.
  """
  config = records.load_config(workdir)
  params_path = os.path.join(workdir, records.PARAMS_FILE)
  if not os.path.isfile(params_path):
    raise UsageError(f'{workdir}: no trained parameters ({records.PARAMS_FILE}); '
                     'has the run finished?')
  variables = jax.device_put(records.load_params(params_path))
  model = create_model(config, num_classes_of(variables))

  def labels_of(images):
    logits = model.apply(variables, to_pixels(images.reshape(images.shape[0], -1)), train=False)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  # The run's matmul precision, as its evaluation used.
  _predict = jax.jit(with_matmul_precision(config, labels_of),
                     compiler_options=environment.compiler_options())

  def predict(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
      raise ValueError(f'predict wants uint8 images of shape (N, 28, 28), '
                       f'got {images.dtype} {images.shape}')
    return np.asarray(_predict(images))

  return predict
