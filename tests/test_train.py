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


@pytest.mark.slow
def test_epochs_lower_the_loss_and_raise_accuracy(subset):
  x, y, xt, yt = subset
  config = TrainConfig(batch_size=64)
  trainer = train.make_trainer(config, train_size=x.shape[0])
  state = trainer.init(*train.seed_keys(config))
  before = trainer.evaluate(state, xt, yt)
  epoch = jax.jit(trainer.train_epoch)
  losses = []
  for _ in range(3):
    state, metrics = epoch(state, train.hyperparameters(config), x, y)
    losses.append(float(metrics['train_loss']))
  after = trainer.evaluate(state, xt, yt)
  assert losses[0] > losses[1] > losses[2]
  assert float(after['test_loss']) < float(before['test_loss']) / 3
  assert int(after['test_correct']) > 800 > int(before['test_correct'])
  assert int(state.epoch) == 3 and int(state.opt_state[0].count) == 3 * 32


@pytest.mark.slow
def test_last_partial_batch_is_dropped(subset):
  x, y, _, _ = subset
  trainer = train.make_trainer(TrainConfig(batch_size=100), train_size=x.shape[0])
  assert trainer.steps_per_epoch == 20 and trainer.examples_per_epoch == 2000
  state = trainer.init(*train.seed_keys(TrainConfig()))
  hparams = train.hyperparameters(TrainConfig())
  state, metrics = jax.jit(trainer.train_epoch)(state, hparams, x, y)
  assert int(state.opt_state[0].count) == 20
  assert 0 <= int(metrics['train_correct']) <= 2000


@pytest.mark.slow
def test_train_epoch_is_a_pure_function_of_its_state(subset):
  x, y, _, _ = subset
  trainer = train.make_trainer(TrainConfig(batch_size=256), train_size=x.shape[0])
  state = trainer.init(*train.seed_keys(TrainConfig()))
  hparams = train.hyperparameters(TrainConfig())
  a, _ = trainer.train_epoch(state, hparams, x, y)
  b, _ = trainer.train_epoch(state, hparams, x, y)
  assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_seed_keys_separate_initialisation_from_data_order():
  base = TrainConfig(seed=3)
  init3, order3, noise3 = train.seed_keys(base)
  init_fixed, order_fixed, noise_fixed = train.seed_keys(base.replace(init_seed=9))
  assert np.array_equal(order3, order_fixed) and np.array_equal(noise3, noise_fixed)
  assert not np.array_equal(init3, init_fixed)
  assert np.array_equal(init_fixed, train.seed_keys(TrainConfig(seed=9))[0])
  init_d, order_d, noise_d = train.seed_keys(base.replace(data_seed=9))
  assert np.array_equal(init3, init_d)
  assert not np.array_equal(order3, order_d) and not np.array_equal(noise3, noise_d)
  assert len({bytes(np.asarray(k)) for k in (init3, order3, noise3)}) == 3


def test_epoch_metrics_are_exact_fractions():
  m = train.epoch_metrics({'train_loss': np.float32(0.5), 'train_correct': np.int32(59904)},
                          {'test_loss': np.float32(0.25), 'test_correct': np.int32(9520)},
                          59904, 10000)
  assert m == {'train_loss': 0.5, 'train_accuracy': 1.0, 'test_loss': 0.25,
               'test_accuracy': 0.952}
  assert isinstance(m['train_loss'], np.float32)


@pytest.mark.parametrize('options', [
    {}, {'dropout': 0.3}, {'batch_norm': True}, {'augment': True},
    {'lr_schedule': 'warmup_cosine', 'dropout': 0.2, 'batch_norm': True},
    {'model': 'cnn', 'batch_norm': True, 'dropout': 0.25, 'augment': True},
])
@pytest.mark.slow
def test_every_option_trains_reproducibly(options, subset):
  """Same state in, same bits out, for each model option; and the loss goes down."""
  x, y, xt, yt = subset
  config = TrainConfig(batch_size=128, epochs=4, **options)
  trainer = train.make_trainer(config, train_size=1024)
  epoch = jax.jit(trainer.train_epoch)
  state = trainer.init(*train.seed_keys(config))
  hparams = train.hyperparameters(config)
  first, m1 = epoch(state, hparams, x[:1024], y[:1024])
  again, m2 = epoch(state, hparams, x[:1024], y[:1024])
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves((first, m1)),
                                                  jax.tree.leaves((again, m2))))
  second, m3 = epoch(first, hparams, x[:1024], y[:1024])
  assert float(m3['train_loss']) < float(m1['train_loss'])
  evaluated = [trainer.evaluate(second, xt, yt) for _ in range(2)]
  assert np.array_equal(evaluated[0]['test_loss'], evaluated[1]['test_loss'])


@pytest.mark.slow
def test_batch_norm_statistics_are_carried_in_the_state(subset):
  x, y, xt, yt = subset
  config = TrainConfig(batch_norm=True)
  trainer = train.make_trainer(config, train_size=1024)
  state = trainer.init(*train.seed_keys(config))
  stats = state.model_state['batch_stats']
  trained, _ = trainer.train_epoch(state, train.hyperparameters(config), x[:1024],
                                    y[:1024])
  # Training updates the running averages ...
  assert not np.array_equal(jax.tree.leaves(trained.model_state)[0], jax.tree.leaves(stats)[0])
  # ... and evaluation reads them without changing the state.
  before = jax.tree.map(np.asarray, trained.model_state)
  trainer.evaluate(trained, xt, yt)
  assert jax.tree.all(jax.tree.map(np.array_equal, before, jax.tree.map(np.asarray,
                                                                        trained.model_state)))


def test_evaluation_counts_every_example_once(subset):
  """The evaluation's padding to whole chunks counts nothing extra."""
  x, y, xt, yt = subset
  trainer = train.make_trainer(TrainConfig(), train_size=1024)
  state = trainer.init(*train.seed_keys(TrainConfig()))
  odd = trainer.evaluate(state, xt[:777], yt[:777])
  from mlp_jax.models import create_model  # pylint: disable=g-import-not-at-top
  reference = create_model(TrainConfig()).apply({'params': state.params},
                                                train.to_pixels(xt[:777]))
  assert int(odd['test_correct']) == int(np.sum(np.argmax(reference, -1) == np.asarray(yt[:777])))


def test_random_shifts_move_whole_images_by_at_most_two_pixels():
  image = np.zeros((28, 28), np.uint8)
  image[10:14, 12:15] = 200
  batch = jnp.asarray(np.stack([image.reshape(784)] * 64))
  shifted = np.asarray(train.random_shifts(jax.random.PRNGKey(0), batch)).reshape(64, 28, 28)
  offsets = set()
  for out in shifted:
    assert out.sum() == image.sum()  # nothing lost at this distance from the border
    rows, cols = np.nonzero(out)
    offsets.add((rows.min() - 10, cols.min() - 12))
  assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in offsets)
  assert len(offsets) > 10  # many different shifts across the batch


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'warmup_cosine'])
def test_learning_rate_schedules(schedule):
  config = TrainConfig(epochs=10, lr_schedule=schedule)
  optimizer = train.make_optimizer(config, steps_per_epoch=100)
  params = {'w': jnp.ones(3)}
  state = optimizer.init(params)
  grads = {'w': jnp.ones(3)}
  sizes = []
  for _ in range(1000):
    updates, state = optimizer.update(grads, state, params)
    sizes.append(float(-updates['w'][0]))
  if schedule == 'constant':
    assert sizes[0] == pytest.approx(1e-3, rel=1e-3) and sizes[-1] == pytest.approx(1e-3, rel=1e-3)
  else:
    assert sizes[-1] < 1e-5  # decayed to (almost) zero by the last step
  if schedule == 'warmup_cosine':
    assert sizes[0] < 1e-5 and max(sizes) == pytest.approx(1e-3, rel=1e-2)
    assert int(np.argmax(sizes)) in range(95, 105)  # peak after one epoch of warm-up


@pytest.mark.parametrize('n', [1, 2, 10, 1000, 60_000])
def test_permutation_is_jax_random_permutation_bit_for_bit(n):
  for seed in range(4):
    for epoch in range(3):
      key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
      expected = jax.random.permutation(key, n)
      got = jax.jit(train.permutation, static_argnums=1)(key, n)
      assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_permutation_agrees_under_vmap():
  keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(4))
  got = jax.jit(jax.vmap(lambda k: train.permutation(k, 60_000)))(keys)
  assert np.array_equal(got, jax.vmap(lambda k: jax.random.permutation(k, 60_000))(keys))


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'warmup_cosine'])
def test_the_program_cache_key_leaves_out_epochs_only_where_no_program_reads_them(schedule):
  """Runs of 1 and 20 epochs share cached programs exactly when their traced
  epoch programs are the same: with a constant learning rate."""
  short, long = (TrainConfig(epochs=e, lr_schedule=schedule) for e in (1, 20))
  images = jax.ShapeDtypeStruct((512, 784), jnp.uint8)
  labels = jax.ShapeDtypeStruct((512,), jnp.uint8)

  def epoch_program(config):
    trainer = train.make_trainer(config, train_size=512)
    state = jax.eval_shape(trainer.init, *train.seed_keys(config))
    hparams = {k: jax.ShapeDtypeStruct((), jnp.float32) for k in train.TRACED_SETTINGS}
    return jax.jit(trainer.train_epoch).lower(state, hparams, images, labels).as_text()
  same_programs = epoch_program(short) == epoch_program(long)
  same_keys = train.program_cache_config(short) == train.program_cache_config(long)
  assert same_programs == same_keys == (schedule == 'constant')
  # Chunks still group by program_config, which keeps the epochs apart.
  assert train.program_config(short) != train.program_config(long)


@pytest.mark.slow
def test_evaluate_measures_each_split_it_is_given(subset):
  """With a validation split the compiled evaluation returns both splits' metrics; the
  test split's are those of an evaluation of the test set alone."""
  x, y, xt, yt = subset
  config = TrainConfig()
  trainer = train.make_trainer(config, train_size=1024)
  both = train.make_trainer(config, train_size=1024, eval_splits=('test', 'validation'))
  state = trainer.init(*train.seed_keys(config))
  alone = jax.jit(trainer.evaluate)(state, xt, yt)
  together = jax.jit(both.evaluate)(state, xt, yt, x[:300], y[:300])
  assert sorted(together) == ['test_correct', 'test_loss', 'validation_correct',
                              'validation_loss']
  assert all(np.asarray(together[k]).tobytes() == np.asarray(alone[k]).tobytes() for k in alone)
  assert int(together['validation_correct']) == int(
      trainer.evaluate(state, x[:300], y[:300])['test_correct'])
  with pytest.raises(ValueError, match='images and labels of test, validation'):
    both.evaluate(state, xt, yt)
