"""Training as pure functions of explicit state: the core every entry point shares.

The shape follows PureJaxRL: `make_trainer(config)` closes over the static settings
and returns pure functions of one seed,

    state = trainer.init(*seed_keys(config))
    state, train_metrics = trainer.train_epoch(state, hyperparameters(config),
                                               train_images, train_labels)
    eval_metrics = trainer.evaluate(state, test_images, test_labels)

Which numbers they compute and under which names is mlp_jax.metrics': each split
(train, test, validation) gives its metrics' kinds (`by_kind`).

`RunState` holds everything a run needs to continue (it is what a checkpoint
captures), so a seed sweep maps the same functions over a leading seed axis
(`map_over_seeds`) and a sharded sweep splits that axis over devices.

The settings that change no array shape (TRACED_SETTINGS: the learning rate, the
dropout rate) are not baked into the program: `train_epoch` takes them as
traced float32 values (`hyperparameters(config)`), so members of a grid that
differ only in them share one compiled program and vectorise like seeds, and a
single run computes exactly what its grid member computes.

One epoch is one compiled call: the training set lives on the device as uint8,
`jax.lax.scan` runs the optimizer steps, and each step gathers, casts (and, with
`augment`, shifts) its batch inside the program. The last partial batch of an
epoch is dropped (`steps_per_epoch = train_size // batch_size`); the data is
reshuffled every epoch, so every example is still seen.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlp_jax import metrics as metric_spec
# TRACED_SETTINGS: the settings that are inputs of the compiled program rather than
# part of it (the rows of config.SETTINGS marked `traced`).
from mlp_jax.config import TRACED_SETTINGS, TrainConfig
from mlp_jax.models import create_model

PyTree = Any
Metrics = Dict[str, jnp.ndarray]

# Domain-separation constants for deriving the run's keys from its seeds.
_INIT_STREAM = 0
_ORDER_STREAM = 1
_NOISE_STREAM = 2

# Test examples evaluated per step: bounds evaluation memory (a CNN's activations
# for 10,000 images at once would take about 1 GB).
EVAL_BATCH = 1000
# Random shifts of --augment: up to this many pixels in each direction.
MAX_SHIFT = 2


class RunState(NamedTuple):
  """Everything one seed's run carries from epoch to epoch.

  Attributes:
    epoch: int32[] number of epochs completed.
    params: the model parameters (float32 pytree).
    model_state: the model's other variables, e.g. {'batch_stats': ...} ({} if none).
    opt_state: optax state of the optimizer.
    order_key: uint32[2]; epoch e shuffles with `fold_in(order_key, e)`.
    noise_key: uint32[2]; step i of epoch e draws dropout masks and shifts from
      `fold_in(fold_in(noise_key, e), i)`. Keys are derived from the epoch, never
      carried forward, so an epoch's randomness does not depend on how the run got
      there (resumed or not).
  """
  epoch: jnp.ndarray
  params: PyTree
  model_state: PyTree
  opt_state: optax.OptState
  order_key: jnp.ndarray
  noise_key: jnp.ndarray


Hyperparameters = Dict[str, jnp.ndarray]


class Trainer(NamedTuple):
  """Pure per-seed functions built from one config; see the module docstring."""
  init: Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], RunState]
  train_epoch: Callable[[RunState, Hyperparameters, jnp.ndarray, jnp.ndarray],
                        Tuple[RunState, Metrics]]
  evaluate: Callable[..., Metrics]  # (state, images, labels of each evaluated split)
  steps_per_epoch: int
  examples_per_epoch: int


def seed_keys(config: TrainConfig) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """(init_key, order_key, noise_key), each uint32[2], for the run `config` describes.

  init_key = fold_in(PRNGKey(init_seed or seed), 0) draws the initial parameters;
  order_key = fold_in(PRNGKey(data_seed or seed), 1) draws the data order;
  noise_key = fold_in(PRNGKey(data_seed or seed), 2) draws dropout masks and
  augmentation shifts. Fixing `init_seed` or `data_seed` across a sweep holds
  that source of randomness fixed while the other varies with the seed.
  """
  return keys_from_seeds(*key_seeds(config))


def key_seeds(config: TrainConfig) -> Tuple[int, int]:
  """(init seed, data seed) of the run: `init_seed` and `data_seed`, else `seed`."""
  return (config.seed if config.init_seed is None else config.init_seed,
          config.seed if config.data_seed is None else config.data_seed)


def keys_from_seeds(init_seed: Any, data_seed: Any) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """seed_keys from the two seeds: Python ints, or uint32[] inside a traced
  program (the same bits for every seed in [0, 2**32): integer arithmetic)."""
  return (jax.random.fold_in(jax.random.PRNGKey(init_seed), _INIT_STREAM),
          jax.random.fold_in(jax.random.PRNGKey(data_seed), _ORDER_STREAM),
          jax.random.fold_in(jax.random.PRNGKey(data_seed), _NOISE_STREAM))


def hyperparameters(config: TrainConfig) -> Dict[str, np.ndarray]:
  """The config's TRACED_SETTINGS as float32 scalars, the per-seed input of
  `train_epoch` (numpy: stacked over seeds by the driver)."""
  return {name: np.float32(getattr(config, name)) for name in TRACED_SETTINGS}


def program_config(config: TrainConfig) -> TrainConfig:
  """`config` with everything that is an input of the compiled programs (seeds,
  TRACED_SETTINGS) set to fixed values: configs that agree here share programs.
  Whether there is dropout at all stays (a rate of 0 has no dropout layer)."""
  return config.replace(seed=0, init_seed=None, data_seed=None,
                        learning_rate=TrainConfig.learning_rate,
                        dropout=0.5 if config.dropout else 0.0)


def program_cache_config(config: TrainConfig) -> TrainConfig:
  """`program_config`, and with a constant learning rate also `epochs` fixed: only
  a schedule spanning the run reads it in a program, so runs of any length load
  the same traced programs (mlp_jax.program_cache). Not for grouping configs into
  chunks, whose members train for one number of epochs."""
  fixed = program_config(config)
  return fixed.replace(epochs=1) if fixed.lr_schedule == 'constant' else fixed


def permutation(key: jnp.ndarray, n: int) -> jnp.ndarray:
  """`jax.random.permutation(key, n)`, bit for bit, several times faster on CPU.

  jax.random.permutation stable-sorts (random uint32 key, position) pairs, in
  two rounds for n = 60,000, and XLA:CPU sorts pairs through a generic
  comparator, a noticeable part of a CPU epoch (docs/performance.md). A stable
  sort by key is a sort by (key, position), so sorting the one uint64 array
  `key << 32 | position`, whose entries are all distinct, gives the same order
  through XLA's fast sort of a single array. tests/test_train.py checks that the
  two agree.
  """
  rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
  x = jnp.arange(n)
  for _ in range(rounds):
    key, subkey = jax.random.split(key)
    sort_keys = jax.random.bits(subkey, (n,), jnp.uint32)
    with jax.enable_x64(True):
      composite = sort_keys.astype(jnp.uint64) << 32 | jnp.arange(n, dtype=jnp.uint64)
      order = (jax.lax.sort(composite) & 0xFFFFFFFF).astype(jnp.int32)
    x = x[order]
  return x


def to_pixels(images: jnp.ndarray) -> jnp.ndarray:
  """uint8[N, ...] -> float32[N, ...] in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def random_shifts(key: jnp.ndarray, images: jnp.ndarray, max_shift: int = MAX_SHIFT
                  ) -> jnp.ndarray:
  """Shifts each uint8 image of [N, 784] by up to `max_shift` pixels in x and y,
  filling with zeros (MNIST's background). Returns uint8[N, 784]."""
  n = images.shape[0]
  padded = jnp.pad(images.reshape(n, 28, 28), ((0, 0), (max_shift,) * 2, (max_shift,) * 2))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)
  crop = lambda image, offset: jax.lax.dynamic_slice(image, offset, (28, 28))
  return jax.vmap(crop)(padded, offsets).reshape(n, 784)


def loss_and_correct(logits: jnp.ndarray, labels: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Per-example softmax cross-entropy (float32[N]) and whether each prediction is
  right (bool[N]), for float32[N, C] logits and integer labels[N]."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
  return loss, jnp.argmax(logits, axis=-1) == labels


def epoch_metrics(train_metrics: Metrics, test_metrics: Metrics, train_examples: int,
                  test_examples: int) -> Dict[str, Any]:
  """Host-side: device metrics of one epoch -> the recorded numbers (mlp_jax.metrics).

  Accuracy leaves the device as a count, so the host divides exactly: 9520 of
  10,000 is recorded as 0.952, not float32 0.95199996. Losses stay float32
  (np.float32); accuracies are exact fractions (Python float).
  """
  logged = {**train_metrics, **test_metrics}
  examples = {metric_spec.TRAIN: train_examples, metric_spec.TEST: test_examples}
  return {m.name: (int(logged[m.log_column]) / examples[m.split]
                   if m.kind == metric_spec.ACCURACY else np.float32(logged[m.log_column]))
          for m in metric_spec.recorded(examples)}


def by_kind(split: str, kinds: Mapping[str, jnp.ndarray]) -> Metrics:
  """The device metrics of `split`: each of its metrics (mlp_jax.metrics) from the
  value of its kind, under its log column ('test_loss', 'test_correct')."""
  return {m.log_column: kinds[m.kind] for m in metric_spec.recorded([split])}


def make_optimizer(config: TrainConfig, steps_per_epoch: int,
                   learning_rate: Any = None) -> optax.GradientTransformation:
  """Adam with the config's learning-rate schedule (indexed by optimizer step).

  `learning_rate`: the peak rate, a float or a traced float32[] (default: the
  config's). The optimizer's state does not depend on it.
  """
  peak = config.learning_rate if learning_rate is None else learning_rate
  total = config.epochs * steps_per_epoch
  if config.lr_schedule == 'cosine':
    schedule = optax.cosine_decay_schedule(peak, decay_steps=total)
  elif config.lr_schedule == 'warmup_cosine':
    # optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total), written out:
    # that one compares the peak with 0 in Python, which a traced peak cannot do.
    warmup = min(steps_per_epoch, total // 2)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup),
         optax.cosine_decay_schedule(peak, decay_steps=total - warmup)], [warmup])
  else:
    schedule = peak
  return optax.adam(schedule)


def make_trainer(config: TrainConfig, train_size: int, num_classes: int = 10,
                 eval_splits: Sequence[str] = (metric_spec.TEST,)) -> Trainer:
  """Builds the pure per-seed training functions for `config`.

  Args:
    config: the run's settings (validated).
    train_size: number of training examples the epochs will see.
    num_classes: number of label values (logits of the model).
    eval_splits: the splits `evaluate` measures after each epoch, in this order
      (mlp_jax.metrics.EVALUATED_SPLITS).
  """
  model = create_model(config, num_classes)
  batch_size = config.batch_size
  steps_per_epoch = train_size // batch_size
  init_optimizer = make_optimizer(config, steps_per_epoch).init

  def init(init_key: jnp.ndarray, order_key: jnp.ndarray, noise_key: jnp.ndarray) -> RunState:
    variables = model.init(init_key, jnp.zeros((1, 784), jnp.float32))
    params = variables.pop('params')
    return RunState(epoch=jnp.zeros((), jnp.int32), params=params, model_state=dict(variables),
                    opt_state=init_optimizer(params), order_key=order_key,
                    noise_key=noise_key)

  def train_step(params, model_state, opt_state, hparams, images, labels, key):
    dropout_key, shift_key = jax.random.split(key)
    if config.augment:
      images = random_shifts(shift_key, images)

    def loss_fn(p):
      variables = {'params': p, **model_state}
      pixels, rngs = to_pixels(images), {'dropout': dropout_key}
      options = dict(train=True, rngs=rngs, dropout_rate=hparams['dropout'])
      if model_state:
        logits, updated = model.apply(variables, pixels, mutable=list(model_state), **options)
      else:
        logits, updated = model.apply(variables, pixels, **options), {}
      loss, correct = loss_and_correct(logits, labels)
      return loss.mean(), (correct.sum(dtype=jnp.int32), updated)

    (loss, (correct, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    optimizer = make_optimizer(config, steps_per_epoch, hparams['learning_rate'])
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), dict(model_state), opt_state, loss, correct

  def train_epoch(state: RunState, hparams: Hyperparameters, images: jnp.ndarray,
                  labels: jnp.ndarray) -> Tuple[RunState, Metrics]:
    """One pass over uint8 images[N, 784] / labels[N], with the float32[] values of
    TRACED_SETTINGS in `hparams` (`hyperparameters(config)`).

    Returns the new state and {'train_loss': mean of the batch losses (float32[]),
    'train_correct': correct predictions over the epoch (int32[])}.
    """
    order = permutation(jax.random.fold_in(state.order_key, state.epoch), images.shape[0])
    batches = order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
    epoch_noise = jax.random.fold_in(state.noise_key, state.epoch)

    def step(carry, inputs):
      params, model_state, opt_state = carry
      index, batch_indices = inputs
      params, model_state, opt_state, loss, correct = train_step(
          params, model_state, opt_state, hparams, images[batch_indices], labels[batch_indices],
          jax.random.fold_in(epoch_noise, index))
      return (params, model_state, opt_state), (loss, correct)

    (params, model_state, opt_state), (losses, corrects) = jax.lax.scan(
        step, (state.params, state.model_state, state.opt_state),
        (jnp.arange(steps_per_epoch), batches))
    new_state = state._replace(epoch=state.epoch + 1, params=params, model_state=model_state,
                               opt_state=opt_state)
    return new_state, by_kind(metric_spec.TRAIN, {metric_spec.LOSS: losses.mean(),
                                                  metric_spec.ACCURACY: corrects.sum()})

  def evaluate_split(state: RunState, split: str, images: jnp.ndarray, labels: jnp.ndarray
                     ) -> Metrics:
    """Mean loss and correct count on the whole of uint8 images[N, 784] / labels[N],
    in evaluation mode (no dropout, batch norm by its running averages)."""
    n = images.shape[0]
    chunks = -(-n // EVAL_BATCH)
    pad = chunks * EVAL_BATCH - n
    images = jnp.pad(images, ((0, pad), (0, 0))).reshape(chunks, EVAL_BATCH, -1)
    labels = jnp.pad(labels, (0, pad)).reshape(chunks, EVAL_BATCH)
    valid = (jnp.arange(chunks * EVAL_BATCH) < n).reshape(chunks, EVAL_BATCH)
    variables = {'params': state.params, **state.model_state}

    def chunk_sums(inputs):
      chunk_images, chunk_labels, chunk_valid = inputs
      logits = model.apply(variables, to_pixels(chunk_images), train=False)
      loss, correct = loss_and_correct(logits, chunk_labels)
      return (jnp.sum(loss, where=chunk_valid),
              jnp.sum(correct, where=chunk_valid, dtype=jnp.int32))

    losses, corrects = jax.lax.map(chunk_sums, (images, labels, valid))
    return by_kind(split, {metric_spec.LOSS: losses.sum() / n,
                           metric_spec.ACCURACY: corrects.sum()})

  def evaluate(state: RunState, *images_and_labels: jnp.ndarray) -> Metrics:
    """The metrics of every split of `eval_splits` (their log columns: 'test_loss',
    'test_correct', ...), given uint8 images[N, 784], labels[N] of each in turn."""
    if len(images_and_labels) != 2 * len(eval_splits):
      raise ValueError(f'evaluate takes images and labels of {", ".join(eval_splits)}, '
                       f'got {len(images_and_labels)} arrays')
    results = {}
    for i, split in enumerate(eval_splits):
      results.update(evaluate_split(state, split, *images_and_labels[2 * i:2 * i + 2]))
    return results

  return Trainer(init=init, train_epoch=with_matmul_precision(config, train_epoch),
                 evaluate=with_matmul_precision(config, evaluate),
                 steps_per_epoch=steps_per_epoch,
                 examples_per_epoch=steps_per_epoch * batch_size)


def with_matmul_precision(config: TrainConfig, fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn`, traced under the config's matmul precision (which jit then compiles in)."""
  if config.matmul_precision == 'default':
    return fn

  @functools.wraps(fn)
  def traced_with_precision(*args):
    with jax.default_matmul_precision(config.matmul_precision):
      return fn(*args)
  return traced_with_precision


def map_over_seeds(fn: Callable[..., Any], per_seed_args: int, vmap_width: int = 1
                   ) -> Callable[..., Any]:
  """`fn` of one seed -> the same function of a leading seed axis, in one program.

  The first `per_seed_args` arguments carry the seed axis; the rest (the data)
  are shared. Seeds run one after another inside the compiled program
  (`jax.lax.map`), so each seed executes exactly the computation of a run on its
  own and gets the same bits whatever other seeds share its program.
  `vmap_width > 1` vectorises groups of that many seeds with `jax.vmap`
  (`lax.map(..., batch_size=vmap_width)`): faster on accelerators, but XLA picks
  reduction orders by shape, so results depend on the width. The seed axis must
  be a multiple of the width (the driver pads it), so that every group has the
  full width and a seed's bits do not depend on how many seeds the sweep had.
  """
  def mapped(*args):
    seeded, shared = args[:per_seed_args], args[per_seed_args:]
    return jax.lax.map(lambda xs: fn(*xs, *shared), tuple(seeded),
                       batch_size=vmap_width if vmap_width > 1 else None)
  return mapped
