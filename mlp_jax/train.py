"""Training as pure functions of explicit state: the core every entry point shares.

The shape follows PureJaxRL: `make_trainer(config)` closes over the static settings
and returns pure functions of one seed,

    state = trainer.init(init_key, data_key)
    state, train_metrics = trainer.train_epoch(state, train_images, train_labels)
    test_metrics = trainer.evaluate(state.params, test_images, test_labels)

`RunState` holds everything a run needs to continue (it is what a checkpoint
captures), so a seed sweep is `jax.vmap` of the same functions over a leading seed
axis and a sharded sweep splits that axis over devices.

One epoch is one compiled call: the training set lives on the device as uint8,
`jax.lax.scan` runs the optimizer steps, and each step gathers and casts its
batch inside the program. The last partial batch of an epoch is dropped
(`steps_per_epoch = train_size // batch_size`); the data is reshuffled every
epoch, so every example is still seen.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlp_jax.config import TrainConfig
from mlp_jax.models import create_model

PyTree = Any
Metrics = Dict[str, jnp.ndarray]

# Domain-separation constants for deriving the run's keys from its seeds.
_INIT_STREAM = 0
_DATA_STREAM = 1


class RunState(NamedTuple):
  """Everything one seed's run carries from epoch to epoch.

  Attributes:
    epoch: int32[] number of epochs completed.
    params: the model parameters (float32 pytree).
    opt_state: optax state of the optimizer.
    data_key: uint32[2] key of the data order; epoch e shuffles with
      `fold_in(data_key, e)`, so the order of an epoch does not depend on how
      the run got there (resumed or not).
  """
  epoch: jnp.ndarray
  params: PyTree
  opt_state: optax.OptState
  data_key: jnp.ndarray


class Trainer(NamedTuple):
  """Pure per-seed functions built from one config; see the module docstring."""
  init: Callable[[jnp.ndarray, jnp.ndarray], RunState]
  train_epoch: Callable[[RunState, jnp.ndarray, jnp.ndarray], Tuple[RunState, Metrics]]
  evaluate: Callable[[PyTree, jnp.ndarray, jnp.ndarray], Metrics]
  steps_per_epoch: int
  examples_per_epoch: int


def seed_keys(config: TrainConfig) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """(init_key, data_key), each uint32[2], for the run `config` describes.

  init_key = fold_in(PRNGKey(init_seed or seed), 0) draws the initial parameters;
  data_key = fold_in(PRNGKey(data_seed or seed), 1) draws the data order. Fixing
  `init_seed` or `data_seed` across a sweep holds that source of randomness fixed.
  """
  init_seed = config.seed if config.init_seed is None else config.init_seed
  data_seed = config.seed if config.data_seed is None else config.data_seed
  return (jax.random.fold_in(jax.random.PRNGKey(init_seed), _INIT_STREAM),
          jax.random.fold_in(jax.random.PRNGKey(data_seed), _DATA_STREAM))


def to_pixels(images: jnp.ndarray) -> jnp.ndarray:
  """uint8[N, ...] -> float32[N, ...] in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def loss_and_correct(logits: jnp.ndarray, labels: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Mean softmax cross-entropy (float32[]) and number of correct predictions (int32[])
  of float32[N, C] logits on integer labels[N].

  Accuracy leaves the device as a count, so the host divides exactly: 9520 of
  10,000 is recorded as 0.952, not float32 0.95199996.
  """
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
  correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels, dtype=jnp.int32)
  return loss.mean(), correct


def epoch_metrics(train_metrics: Metrics, test_metrics: Metrics, train_examples: int,
                  test_examples: int) -> Dict[str, Any]:
  """Host-side: device metrics of one epoch -> the four recorded numbers.

  Losses stay float32 (np.float32); accuracies are exact fractions (Python float).
  """
  return {
      'train_loss': np.float32(train_metrics['train_loss']),
      'train_accuracy': int(train_metrics['train_correct']) / train_examples,
      'test_loss': np.float32(test_metrics['test_loss']),
      'test_accuracy': int(test_metrics['test_correct']) / test_examples,
  }


def make_trainer(config: TrainConfig, train_size: int) -> Trainer:
  """Builds the pure per-seed training functions for `config`.

  Args:
    config: the run's settings (validated).
    train_size: number of training examples the epochs will see.
  """
  model = create_model(config)
  optimizer = optax.adam(config.learning_rate)
  batch_size = config.batch_size
  steps_per_epoch = train_size // batch_size

  def init(init_key: jnp.ndarray, data_key: jnp.ndarray) -> RunState:
    dummy = jnp.zeros((1, 784), jnp.float32)
    params = model.init(init_key, dummy)['params']
    return RunState(epoch=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), data_key=data_key)

  def train_step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = model.apply({'params': p}, to_pixels(images))
      return loss_and_correct(logits, labels)
    (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, correct

  def train_epoch(state: RunState, images: jnp.ndarray, labels: jnp.ndarray
                  ) -> Tuple[RunState, Metrics]:
    """One pass over uint8 images[N, 784] / labels[N].

    Returns the new state and {'train_loss': mean of the batch losses (float32[]),
    'train_correct': correct predictions over the epoch (int32[])}.
    """
    order = jax.random.permutation(jax.random.fold_in(state.data_key, state.epoch),
                                   images.shape[0])
    batches = order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)

    def step(carry, batch_indices):
      params, opt_state = carry
      params, opt_state, loss, correct = train_step(
          params, opt_state, images[batch_indices], labels[batch_indices])
      return (params, opt_state), (loss, correct)

    (params, opt_state), (losses, corrects) = jax.lax.scan(
        step, (state.params, state.opt_state), batches)
    new_state = state._replace(epoch=state.epoch + 1, params=params, opt_state=opt_state)
    return new_state, {'train_loss': losses.mean(), 'train_correct': corrects.sum()}

  def evaluate(params: PyTree, images: jnp.ndarray, labels: jnp.ndarray) -> Metrics:
    """Mean loss and correct count on the whole of uint8 images[N, 784] / labels[N]."""
    logits = model.apply({'params': params}, to_pixels(images))
    loss, correct = loss_and_correct(logits, labels)
    return {'test_loss': loss, 'test_correct': correct}

  return Trainer(init=init, train_epoch=train_epoch, evaluate=evaluate,
                 steps_per_epoch=steps_per_epoch,
                 examples_per_epoch=steps_per_epoch * batch_size)


def map_over_seeds(fn: Callable[..., Any], per_seed_args: int, vmap_width: int = 1
                   ) -> Callable[..., Any]:
  """`fn` of one seed -> the same function of a leading seed axis, in one program.

  The first `per_seed_args` arguments carry the seed axis; the rest (the data)
  are shared. Seeds run one after another inside the compiled program
  (`jax.lax.map`), so each seed executes exactly the computation of a run on its
  own and gets the same bits whatever other seeds share its program.
  `vmap_width > 1` vectorises groups of that many seeds with `jax.vmap`
  (`lax.map(..., batch_size=vmap_width)`): faster on accelerators, but XLA picks
  reduction orders by shape, so results then differ from single runs in the
  last bits (measured on XLA:CPU; see the README).
  """
  def mapped(*args):
    seeded, shared = args[:per_seed_args], args[per_seed_args:]
    return jax.lax.map(lambda xs: fn(*xs, *shared), tuple(seeded),
                       batch_size=vmap_width if vmap_width > 1 else None)
  return mapped
