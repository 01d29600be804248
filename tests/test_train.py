import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp_jax import train
from mlp_jax.config import TrainConfig


@pytest.fixture(scope='module')
def subset(mnist):
  """The first 2,048 training and 1,000 test examples, flattened, on the device."""
  return (jnp.asarray(mnist.train_images[:2048].reshape(-1, 784)),
          jnp.asarray(mnist.train_labels[:2048]),
          jnp.asarray(mnist.test_images[:1000].reshape(-1, 784)),
          jnp.asarray(mnist.test_labels[:1000]))


def test_epochs_lower_the_loss_and_raise_accuracy(subset):
  x, y, xt, yt = subset
  config = TrainConfig(batch_size=64)
  trainer = train.make_trainer(config, train_size=x.shape[0])
  state = trainer.init(*train.seed_keys(config))
  before = trainer.evaluate(state.params, xt, yt)
  epoch = jax.jit(trainer.train_epoch)
  losses = []
  for _ in range(3):
    state, metrics = epoch(state, x, y)
    losses.append(float(metrics['train_loss']))
  after = trainer.evaluate(state.params, xt, yt)
  assert losses[0] > losses[1] > losses[2]
  assert float(after['test_loss']) < float(before['test_loss']) / 3
  assert int(after['test_correct']) > 800 > int(before['test_correct'])
  assert int(state.epoch) == 3 and int(state.opt_state[0].count) == 3 * 32


def test_last_partial_batch_is_dropped(subset):
  x, y, _, _ = subset
  trainer = train.make_trainer(TrainConfig(batch_size=100), train_size=x.shape[0])
  assert trainer.steps_per_epoch == 20 and trainer.examples_per_epoch == 2000
  state = trainer.init(*train.seed_keys(TrainConfig()))
  state, metrics = jax.jit(trainer.train_epoch)(state, x, y)
  assert int(state.opt_state[0].count) == 20
  assert 0 <= int(metrics['train_correct']) <= 2000


def test_train_epoch_is_a_pure_function_of_its_state(subset):
  x, y, _, _ = subset
  trainer = train.make_trainer(TrainConfig(batch_size=256), train_size=x.shape[0])
  state = trainer.init(*train.seed_keys(TrainConfig()))
  a, _ = trainer.train_epoch(state, x, y)
  b, _ = trainer.train_epoch(state, x, y)
  assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_seed_keys_separate_initialisation_from_data_order():
  base = TrainConfig(seed=3)
  init3, data3 = train.seed_keys(base)
  init_fixed, data_fixed = train.seed_keys(base.replace(init_seed=9))
  assert np.array_equal(data3, data_fixed) and not np.array_equal(init3, init_fixed)
  assert np.array_equal(init_fixed, train.seed_keys(TrainConfig(seed=9))[0])
  init_d, data_d = train.seed_keys(base.replace(data_seed=9))
  assert np.array_equal(init3, init_d) and not np.array_equal(data3, data_d)
  assert not np.array_equal(init3, data3)


def test_epoch_metrics_are_exact_fractions():
  m = train.epoch_metrics({'train_loss': np.float32(0.5), 'train_correct': np.int32(59904)},
                          {'test_loss': np.float32(0.25), 'test_correct': np.int32(9520)},
                          59904, 10000)
  assert m == {'train_loss': 0.5, 'train_accuracy': 1.0, 'test_loss': 0.25,
               'test_accuracy': 0.952}
  assert isinstance(m['train_loss'], np.float32)
