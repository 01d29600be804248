import jax
import jax.numpy as jnp

from mlp_jax.config import TrainConfig
from mlp_jax.models import MLP, create_model


def test_seed_config_mlp_shapes_and_parameter_count():
  model = create_model(TrainConfig())
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 784)))['params']
  shapes = jax.tree.map(jnp.shape, params)
  assert shapes == {'Dense_0': {'kernel': (784, 128), 'bias': (128,)},
                    'Dense_1': {'kernel': (128, 128), 'bias': (128,)},
                    'Dense_2': {'kernel': (128, 10), 'bias': (10,)}}
  assert sum(p.size for p in jax.tree.leaves(params)) == 118_282
  logits = model.apply({'params': params}, jnp.zeros((5, 28, 28)))
  assert logits.shape == (5, 10) and logits.dtype == jnp.float32


def test_hidden_sizes_set_the_layers():
  model = MLP(hidden_sizes=(32, 16, 8))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 784)))['params']
  assert [params[f'Dense_{i}']['kernel'].shape for i in range(4)] == [
      (784, 32), (32, 16), (16, 8), (8, 10)]
