import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp_jax.config import TrainConfig
from mlp_jax.models import CNN, MLP, Conv3x3, create_model, num_classes_of


def _init(model, batch=1):
  return jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((batch, 784)))


def _apply(model, variables, x, **kwargs):
  """model.apply(variables, x, **kwargs) compiled as one program (not op by op: each
  op's own compile makes the eager call take seconds); `rngs` is traced, the rest static."""
  rngs = kwargs.pop('rngs', None)
  return jax.jit(lambda v, x, r: model.apply(v, x, rngs=r, **kwargs))(variables, x, rngs)


def test_seed_config_mlp_shapes_and_parameter_count():
  model = create_model(TrainConfig())
  variables = _init(model)
  assert set(variables) == {'params'}
  shapes = jax.tree.map(jnp.shape, variables['params'])
  assert shapes == {'Dense_0': {'kernel': (784, 128), 'bias': (128,)},
                    'Dense_1': {'kernel': (128, 128), 'bias': (128,)},
                    'Dense_2': {'kernel': (128, 10), 'bias': (10,)}}
  assert sum(p.size for p in jax.tree.leaves(variables)) == 118_282
  logits = _apply(model, variables, jnp.zeros((5, 28, 28)))
  assert logits.shape == (5, 10) and logits.dtype == jnp.float32
  assert num_classes_of(variables) == 10


def test_hidden_sizes_set_the_layers():
  params = _init(MLP(hidden_sizes=(32, 16, 8)))['params']
  assert [params[f'Dense_{i}']['kernel'].shape for i in range(4)] == [
      (784, 32), (32, 16), (16, 8), (8, 10)]


def test_cnn_shapes():
  variables = _init(CNN(num_classes=37))
  assert variables['params']['Conv3x3_0']['Dense_0']['kernel'].shape == (9, 32)
  assert variables['params']['Conv3x3_1']['Dense_0']['kernel'].shape == (288, 64)
  assert variables['params']['Dense_0']['kernel'].shape == (3136, 256)
  assert _apply(CNN(num_classes=37), variables, jnp.zeros((3, 784))).shape == (3, 37)
  assert num_classes_of(variables) == 37


def test_conv3x3_is_the_same_function_as_nn_conv():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 7, 3))
  ours = Conv3x3(5)
  params = jax.jit(ours.init)(jax.random.PRNGKey(0), x)['params']
  kernel = params['Dense_0']['kernel'].reshape(3, 3, 3, 5)  # (dy, dx, in, out)
  reference = _apply(nn.Conv(5, (3, 3)),
                     {'params': {'kernel': kernel, 'bias': params['Dense_0']['bias']}}, x)
  np.testing.assert_allclose(_apply(ours, {'params': params}, x), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('model', [MLP(dropout=0.5), CNN(dropout=0.5)])
def test_dropout_only_in_training(model):
  variables = _init(model)
  x = jax.random.uniform(jax.random.PRNGKey(2), (4, 784))
  evals = [_apply(model, variables, x, train=False) for _ in range(2)]
  np.testing.assert_array_equal(evals[0], evals[1])
  train = [_apply(model, variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(k)})
           for k in (0, 1)]
  assert not np.array_equal(train[0], train[1])
  assert not np.array_equal(train[0], evals[0])


@pytest.mark.parametrize('model', [MLP(batch_norm=True), CNN(batch_norm=True)])
def test_batch_norm_updates_in_training_and_freezes_in_evaluation(model):
  variables = _init(model, batch=2)
  x = jax.random.uniform(jax.random.PRNGKey(3), (16, 784))
  _, updated = _apply(model, variables, x, train=True, mutable=['batch_stats'])
  before, after = jax.tree.leaves(variables['batch_stats']), jax.tree.leaves(updated['batch_stats'])
  assert any(not np.array_equal(a, b) for a, b in zip(before, after))
  # Evaluation normalises with the running averages: one example's output does not
  # depend on what else is in the batch.
  alone = _apply(model, variables, x[:1], train=False)
  together = _apply(model, variables, x, train=False)[:1]
  np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)
  train_alone = _apply(model, variables, x[:2], train=True, mutable=['batch_stats'])[0][:1]
  train_together = _apply(model, variables, x, train=True, mutable=['batch_stats'])[0][:1]
  assert not np.allclose(train_alone, train_together)
