"""Flax Linen modules. Each is called only as `model.apply(variables, images)`."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlp_jax.config import TrainConfig

NUM_CLASSES = 10


class MLP(nn.Module):
  """A multilayer perceptron on flattened images.

  Attributes:
    hidden_sizes: widths of the hidden layers, each followed by a ReLU.
    num_classes: number of output logits.
  """
  hidden_sizes: Sequence[int] = (128, 128)
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """float32[N, ...] pixels in [0, 1] -> float32[N, num_classes] logits."""
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden_sizes:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


def create_model(config: TrainConfig) -> nn.Module:
  """The module a config describes."""
  return MLP(hidden_sizes=config.hidden_sizes)
