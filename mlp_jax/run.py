"""train_and_evaluate: one seed's run, from config to a complete workdir.

The pure training functions live in mlp_jax.train; this module does the I/O
around them: load and verify data, place it on the device, compile, loop over
epochs, and write the records (mlp_jax.records) as each epoch finishes.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any, Dict, NamedTuple, Optional

import jax

from mlp_jax import environment, plots, records
from mlp_jax.config import TrainConfig
from mlp_jax.data import Dataset, load_mnist
from mlp_jax.errors import UsageError
from mlp_jax.progress import Progress
from mlp_jax.train import epoch_metrics, make_trainer, seed_keys


class DeviceData(NamedTuple):
  """The dataset on the device, images flattened to uint8[N, 784]."""
  train_images: jax.Array
  train_labels: jax.Array
  test_images: jax.Array
  test_labels: jax.Array


def to_device(dataset: Dataset) -> DeviceData:
  flat = lambda images: images.reshape(images.shape[0], -1)
  return DeviceData(*jax.device_put((flat(dataset.train_images), dataset.train_labels,
                                     flat(dataset.test_images), dataset.test_labels)))


def load_data(config: TrainConfig) -> Dataset:
  """Validates `config`, loads its data and checks the config against it."""
  config.validate()
  dataset = load_mnist(config.data_dir)
  config.validate(train_size=len(dataset.train_labels))
  return dataset


def default_workdir(seed: int, prefix: str = 'seed') -> str:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  path = os.path.join('runs', f'{stamp}-{prefix}{seed}')
  suffix = 1
  while os.path.exists(path):
    suffix += 1
    path = os.path.join('runs', f'{stamp}-{prefix}{seed}-{suffix}')
  return path


def prepare_workdir(workdir: str, config: TrainConfig, env: Dict[str, Any]) -> None:
  """Creates `workdir` and writes config.json and environment.json into it.

  Raises UsageError if it cannot be created or already holds a run.
  """
  if os.path.exists(os.path.join(workdir, records.CONFIG_FILE)):
    raise UsageError(f'--workdir={workdir} already holds a run; choose another --workdir')
  try:
    os.makedirs(workdir, exist_ok=True)
    records.write_bytes_atomic(os.path.join(workdir, records.CONFIG_FILE),
                               config.to_json().encode())
    records.write_json(os.path.join(workdir, records.ENVIRONMENT_FILE), env)
  except OSError as e:
    raise UsageError(f'--workdir={workdir}: cannot write: {e.strerror}') from None


def epoch_line(epoch: int, epochs: int, metrics: Dict[str, Any], epoch_seconds: float,
               eval_seconds: float, prefix: str = '') -> str:
  return (f'{prefix}epoch {epoch:>{len(str(epochs))}}/{epochs}  '
          f'train loss {metrics["train_loss"]:.4f} acc {metrics["train_accuracy"]:.4f}  '
          f'test loss {metrics["test_loss"]:.4f} acc {metrics["test_accuracy"]:.4f}  '
          f'{epoch_seconds:.2f}s + eval {eval_seconds:.2f}s')


def finish_records(workdir: str, params: Any, title: str) -> None:
  """Writes the trained parameters and the curves of a finished run."""
  records.save_params(os.path.join(workdir, records.PARAMS_FILE), params)
  history = records.history_columns(records.read_history(
      os.path.join(workdir, records.HISTORY_FILE)))
  plots.plot_history(history, os.path.join(workdir, records.CURVES_FILE), title)


def train_and_evaluate(config: TrainConfig, workdir: Optional[str] = None,
                       started: Optional[float] = None) -> Dict[str, Any]:
  """Trains one seed as `config` says, writing every record into `workdir`.

  Args:
    config: the run's settings.
    workdir: where to write; default a new folder under runs/.
    started: time.perf_counter() at process start, for timing.json.

  Returns:
    The final epoch's metrics and the workdir.
  """
  started = time.perf_counter() if started is None else started
  dataset = load_data(config)
  workdir = workdir or default_workdir(config.seed)
  prepare_workdir(workdir, config, environment.describe(dataset))
  print(f'mlp_jax: writing to {workdir}', flush=True)

  data = to_device(dataset)
  trainer = make_trainer(config, train_size=data.train_images.shape[0])
  compile_start = time.perf_counter()
  state = jax.jit(trainer.init)(*seed_keys(config))
  train_epoch = jax.jit(trainer.train_epoch, donate_argnums=0).lower(
      state, data.train_images, data.train_labels).compile()
  evaluate = jax.jit(trainer.evaluate).lower(
      state.params, data.test_images, data.test_labels).compile()
  compile_seconds = time.perf_counter() - compile_start
  startup_seconds = time.perf_counter() - started

  history_path = os.path.join(workdir, records.HISTORY_FILE)
  progress = Progress(config.epochs, bar=sys.stderr)
  first_epoch_done = None
  for epoch in range(1, config.epochs + 1):
    tick = time.perf_counter()
    state, train_metrics = train_epoch(state, data.train_images, data.train_labels)
    train_metrics = jax.device_get(train_metrics)
    epoch_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    test_metrics = jax.device_get(evaluate(state.params, data.test_images, data.test_labels))
    eval_seconds = time.perf_counter() - tick
    metrics = epoch_metrics(train_metrics, test_metrics, trainer.examples_per_epoch,
                            data.test_labels.shape[0])
    records.append_history(history_path,
                           records.history_row(epoch, metrics, epoch_seconds, eval_seconds))
    first_epoch_done = first_epoch_done or time.perf_counter() - started
    progress.advance(epoch_line(epoch, config.epochs, metrics, epoch_seconds, eval_seconds))
  progress.close()

  finish_records(workdir, state.params, f'MLP {config.hidden_sizes}, seed {config.seed}')
  timing = {'startup_seconds': startup_seconds, 'compile_seconds': compile_seconds,
            'first_epoch_done_seconds': first_epoch_done,
            'total_seconds': time.perf_counter() - started}
  records.write_json(os.path.join(workdir, records.TIMING_FILE), timing)
  final = {k: float(v) for k, v in metrics.items()}
  print(f'mlp_jax: final test accuracy {final["test_accuracy"]:.4f} after {config.epochs} '
        f'epochs; start-up {startup_seconds:.1f}s, total {timing["total_seconds"]:.1f}s; '
        f'records in {workdir}', flush=True)
  return {**final, 'workdir': workdir}
