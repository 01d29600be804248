"""The models: Flax Linen modules, found by name in the registry config.MODELS.

A model is a module class with two more methods, `from_config(config,
num_classes)` (the module a TrainConfig describes) and `title(config)` (its name
in plots), registered by one line of config.MODELS. It is called only as
`model.init(key, images)` and `model.apply(variables, images, train=...,
dropout_rate=..., rngs=...)`; the MLP and CNN here take float32 pixels in [0, 1]
of shape [N, 784] (or [N, 28, 28]) and return float32[N, num_classes] logits.

With `batch_norm`, the variables hold a 'batch_stats' collection: batch
statistics normalise in training (and update the running averages), the running
averages normalise in evaluation. With `dropout > 0`, training needs an rng named
'dropout'; evaluation drops nothing. The dropout rate may also be given at call
time as a traced value (`dropout_rate=`), so that runs differing only in it share
one compiled program.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Mapping, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax.config import MODELS, TrainConfig

# Running averages of batch statistics: 0.9 tracks a model that changes within an
# epoch of a few hundred steps (Flax's 0.99 lags by about 100 steps).
BATCH_NORM_MOMENTUM = 0.9


class _Block(nn.Module):
  """Dense or conv output -> [batch norm] -> ReLU, shared by both models."""
  batch_norm: bool

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM)(x)
    return nn.relu(x)


class Dropout(nn.Module):
  """nn.Dropout with the rate an argument, which may be traced (float32[])."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, rate: Any, train: bool) -> jnp.ndarray:
    if not train:
      return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, x.shape)
    # Times 1 / keep, as XLA computes nn.Dropout's x / keep for a constant keep: the
    # same bits as nn.Dropout. A division by a traced keep would be other bits, and
    # on XLA:CPU other bits on one device than on several (measured).
    return jax.lax.select(mask, x * (1.0 / keep), jnp.zeros_like(x))


class Conv3x3(nn.Module):
  """A 3x3 'SAME' convolution as im2col and one matmul: the nine shifted copies of
  the input, concatenated on channels, times a [9 * C, features] kernel.

  The same function and initialisation (LeCun normal over 9 * C inputs) as
  nn.Conv(features, (3, 3)); written this way because XLA:CPU runs the
  convolution's gradients an order of magnitude slower than this matmul
  (docs/performance.md).
  """
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """float32[N, H, W, C] -> float32[N, H, W, features]."""
    h, w = x.shape[1], x.shape[2]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([padded[:, i:i + h, j:j + w, :]
                               for i in range(3) for j in range(3)], axis=-1)
    return nn.Dense(self.features, use_bias=self.use_bias)(patches)


def avg_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """float32[N, H, W, C] -> float32[N, H/2, W/2, C], the mean of each 2x2 block."""
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class MLP(nn.Module):
  """A multilayer perceptron on flattened images.

  Attributes:
    hidden_sizes: widths of the hidden layers, each Dense -> [BatchNorm] -> ReLU
      -> [Dropout].
    num_classes: number of output logits.
    dropout: rate of dropout after each hidden layer (0: none); `dropout_rate`
      of a call replaces the rate (not whether there is dropout).
    batch_norm: batch normalisation before each ReLU.
  """
  hidden_sizes: Sequence[int] = (128, 128)
  num_classes: int = 10
  dropout: float = 0.0
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False, dropout_rate: Any = None
               ) -> jnp.ndarray:
    x = x.reshape((x.shape[0], -1))
    rate = self.dropout if dropout_rate is None else dropout_rate
    for width in self.hidden_sizes:
      # A bias before batch norm would be cancelled by its mean subtraction.
      x = nn.Dense(width, use_bias=not self.batch_norm)(x)
      x = _Block(self.batch_norm)(x, train)
      if self.dropout:
        x = Dropout()(x, rate, train)
    return nn.Dense(self.num_classes)(x)

  @classmethod
  def from_config(cls, config: TrainConfig, num_classes: int) -> 'MLP':
    return cls(hidden_sizes=config.hidden_sizes, num_classes=num_classes,
               dropout=config.dropout, batch_norm=config.batch_norm)

  @staticmethod
  def title(config: TrainConfig) -> str:
    return f'MLP {config.hidden_sizes}'


class CNN(nn.Module):
  """The Flax MNIST example's network: two 3x3 convolutions (32, 64 channels), each
  followed by ReLU and 2x2 average pooling, then Dense 256 -> ReLU -> Dense.

  Attributes:
    num_classes: number of output logits.
    dropout: rate of dropout before the output layer (0: none); `dropout_rate`
      of a call replaces the rate (not whether there is dropout).
    batch_norm: batch normalisation before each ReLU.
  """
  num_classes: int = 10
  dropout: float = 0.0
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False, dropout_rate: Any = None
               ) -> jnp.ndarray:
    rate = self.dropout if dropout_rate is None else dropout_rate
    x = x.reshape((x.shape[0], 28, 28, 1))
    for features in (32, 64):
      x = Conv3x3(features, use_bias=not self.batch_norm)(x)
      x = _Block(self.batch_norm)(x, train)
      x = avg_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(256, use_bias=not self.batch_norm)(x)
    x = _Block(self.batch_norm)(x, train)
    if self.dropout:
      x = Dropout()(x, rate, train)
    return nn.Dense(self.num_classes)(x)


  @classmethod
  def from_config(cls, config: TrainConfig, num_classes: int) -> 'CNN':
    return cls(num_classes=num_classes, dropout=config.dropout, batch_norm=config.batch_norm)

  @staticmethod
  def title(config: TrainConfig) -> str:
    del config
    return 'CNN'


def model_class(name: str) -> Any:
  """The module class registered as --model=`name` (config.MODELS)."""
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r} (config.MODELS has {", ".join(MODELS)})')
  model = MODELS[name]
  if isinstance(model, str):
    module, _, attribute = model.partition(':')
    model = getattr(importlib.import_module(module), attribute)
  return model


def create_model(config: TrainConfig, num_classes: int = 10) -> nn.Module:
  """The module a config describes."""
  return model_class(config.model).from_config(config, num_classes)


def _param_shapes(config: TrainConfig, num_classes: int) -> Dict[str, Tuple[int, ...]]:
  """{path: shape} of the parameters of `config`'s model for `num_classes` (no compute)."""
  model = create_model(config, num_classes)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 784), jnp.float32)))['params']
  return _shapes(params)


def _shapes(tree: Any) -> Dict[str, Tuple[int, ...]]:
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def num_classes_of(variables: Mapping[str, Any], config: TrainConfig) -> int:
  """The number of logits of trained variables of `config`'s model (any registered
  one): the size of the parameter axis that grows with the number of classes."""
  one, two = _param_shapes(config, 1), _param_shapes(config, 2)
  trained = _shapes(variables['params'])
  for path, shape in one.items():
    if shape != two[path] and path in trained:
      axis = next(i for i, (a, b) in enumerate(zip(shape, two[path])) if a != b)
      return int(trained[path][axis])
  raise ValueError(f'{config.model}: no parameter depends on the number of classes')


def describe(config: TrainConfig) -> str:
  """A short name for titles: 'MLP (128, 128)', 'CNN + BN + dropout 0.25'."""
  name = model_class(config.model).title(config)
  if config.batch_norm:
    name += ' + BN'
  if config.dropout:
    name += f' + dropout {config.dropout:g}'
  if config.augment:
    name += ' + shifts'
  return name
