"""Using trained models: `predict = load_trained(workdir); labels = predict(images)`,
and the ensemble of a sweep's seeds."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax import environment, records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.models import create_model, num_classes_of
from mlp_jax.train import EVAL_BATCH, to_pixels, with_matmul_precision

OUTPUTS = ('labels', 'probabilities')


def make_forward(config: TrainConfig, num_classes: int, output: str
                 ) -> Callable[[Any, np.ndarray], np.ndarray]:
  """`forward(variables, images)` for any trained variables of `config`'s model:
  uint8 images [N, 28, 28] -> int32[N] labels, or float32[N, num_classes] softmax
  probabilities. Compiled once (per batch shape), in batches of train.EVAL_BATCH
  under the run's matmul precision, as the run's evaluation computed them."""
  if output not in OUTPUTS:
    raise UsageError(f'output must be one of {", ".join(OUTPUTS)}, got {output!r}')
  model = create_model(config, num_classes)

  def batch(variables, images):
    logits = model.apply(variables, to_pixels(images.reshape(images.shape[0], -1)), train=False)
    if output == 'labels':
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.nn.softmax(logits, axis=-1)

  compiled = jax.jit(with_matmul_precision(config, batch),
                     compiler_options=environment.compiler_options())

  def forward(variables, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
      raise ValueError(f'predict wants uint8 images of shape (N, 28, 28), '
                       f'got {images.dtype} {images.shape}')
    parts = [compiled(variables, images[i:i + EVAL_BATCH])
             for i in range(0, images.shape[0], EVAL_BATCH)]
    return np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros(
        (0,) + ((num_classes,) if output == 'probabilities' else ()),
        np.float32 if output == 'probabilities' else np.int32)

  return forward


def _trained_variables(workdir: str) -> Tuple[TrainConfig, Dict[str, Any]]:
  config = records.load_config(workdir)
  params_path = os.path.join(workdir, records.PARAMS_FILE)
  if not os.path.isfile(params_path):
    raise UsageError(f'{workdir}: no trained parameters ({records.PARAMS_FILE}); '
                     'has the run finished?')
  return config, jax.device_put(records.load_params(params_path))


def load_trained(workdir: str, output: str = 'labels') -> Callable[[np.ndarray], np.ndarray]:
  """Returns `predict(images)` for the model a finished run saved in `workdir`.

  `predict` takes uint8 images of shape (N, 28, 28), pixels 0-255 as in the MNIST
  files, and returns, with output='labels', the predicted digits as int32 numpy
  of shape (N,); with output='probabilities', the softmax probabilities as
  float32 numpy of shape (N, classes). It works on a single run's workdir or on
  one run directory of a sweep (`seed_<k>/`, or `<setting>=<value>/seed_<k>/`),
  of any model registered in config.MODELS.
  """
  config, variables = _trained_variables(workdir)
  forward = make_forward(config, num_classes_of(variables, config), output)
  return lambda images: forward(variables, images)


def ensemble_correct(run_dirs: Sequence[str], images: np.ndarray, labels: np.ndarray) -> int:
  """How many of `images` the ensemble of the runs in `run_dirs` classifies right:
  each run's float32 softmax probabilities (load_trained(d, 'probabilities'))
  summed in float64 in the order given, then argmax (the first on a tie). The
  runs must share one model (a grid point's seeds)."""
  forward, total = None, None
  for run_dir in run_dirs:
    config, variables = _trained_variables(run_dir)
    if forward is None:
      forward = make_forward(config, num_classes_of(variables, config), 'probabilities')
    probabilities = forward(variables, images).astype(np.float64)
    total = probabilities if total is None else total + probabilities
  return int(np.sum(np.argmax(total, axis=-1) == np.asarray(labels)))
