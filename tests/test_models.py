import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import mnist_subset, run_options
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
  assert num_classes_of(variables, TrainConfig()) == 10


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
  assert num_classes_of(variables, TrainConfig(model='cnn')) == 37


def test_conv3x3_is_the_same_function_as_nn_conv():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 7, 3))
  ours = Conv3x3(5)
  params = jax.jit(ours.init)(jax.random.PRNGKey(0), x)['params']
  kernel = params['Dense_0']['kernel'].reshape(3, 3, 3, 5)  # (dy, dx, in, out)
  reference = _apply(nn.Conv(5, (3, 3)),
                     {'params': {'kernel': kernel, 'bias': params['Dense_0']['bias']}}, x)
  np.testing.assert_allclose(_apply(ours, {'params': params}, x), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
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


@pytest.mark.slow
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


class Tiny(nn.Module):
  """A model registered by a test: one layer, named unlike the MLP's and CNN's."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False, dropout_rate=None):
    del train, dropout_rate
    return nn.Dense(self.num_classes, name='logits')(x.reshape((x.shape[0], -1)))

  @classmethod
  def from_config(cls, config, num_classes):
    del config
    return cls(num_classes=num_classes)

  @staticmethod
  def title(config):
    return f'Tiny ({config.batch_size})'


@pytest.mark.slow
def test_a_registered_model_trains_describes_and_loads(monkeypatch, mnist, tmp_path):
  import mlp_jax  # pylint: disable=g-import-not-at-top
  from mlp_jax import config as settings, models, records  # pylint: disable=g-import-not-at-top
  from mlp_jax.errors import UsageError  # pylint: disable=g-import-not-at-top
  from mlp_jax.run import train_and_evaluate  # pylint: disable=g-import-not-at-top
  with pytest.raises(UsageError, match="--model must be one of mlp, cnn, got 'tiny'"):
    TrainConfig(model='tiny').validate()
  monkeypatch.setitem(settings.MODELS, 'tiny', Tiny)
  config = TrainConfig(model='tiny', epochs=1).validate()
  assert models.describe(config.replace(batch_norm=True)) == 'Tiny (128) + BN'
  assert isinstance(models.create_model(config, 7), Tiny)
  workdir = str(tmp_path / 'tiny')
  data = mnist_subset(mnist, 512, 300)
  train_and_evaluate(config, workdir, run_options(checkpoint_every=0, tensorboard=False),
                     dataset=data)
  labels = mlp_jax.load_trained(workdir)(data.test_images)
  assert labels.shape == (300,)
  assert np.mean(labels == data.test_labels) == float(records.final_row(workdir)['test_accuracy'])


def test_models_are_found_by_name_and_the_flag_lists_them(monkeypatch):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from mlp_jax import config as settings, models  # pylint: disable=g-import-not-at-top
  from mlp_jax.flags import define_training_flags  # pylint: disable=g-import-not-at-top
  assert models.model_class('mlp') is MLP and models.model_class('cnn') is CNN
  with pytest.raises(ValueError, match="unknown model 'rnn'"):
    models.model_class('rnn')
  monkeypatch.setitem(settings.MODELS, 'tiny', 'test_models:Tiny')  # 'module:Class' form
  assert models.model_class('tiny') is Tiny
  flag_values = flags.FlagValues()
  define_training_flags(flag_values)
  assert 'Network: mlp or cnn or tiny.' in flag_values['model'].help
