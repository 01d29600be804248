"""Seed sweeps in one process: `python -m experiments.sweep --seeds=0-31 --workdir=DIR`.

Every training flag of `mlp_jax.main` works here too (same definitions). The
seeds train in chunks of --chunk_size, each epoch of a chunk one compiled
program (see mlp_jax.run.train_seeds). Writes into --workdir:

    sweep.json, environment.json   the sweep's settings and where it ran
    seed_<k>/                      a complete run directory per seed
    summary.csv                    per epoch and metric: mean, std, min, max, 95% CI
    final.csv                      per seed: final and best test accuracy
    curves.png                     mean and 95% band, each seed faint behind
    timing.json                    compile, training and total seconds

Re-running the same command resumes a killed sweep.
"""

import time

_STARTED = time.perf_counter()

# pylint: disable=g-import-not-at-top,wrong-import-position
import collections
import hashlib
import os
import sys
from typing import Any, Dict, List, Sequence

from absl import flags
import jax
import numpy as np

from mlp_jax import cli, environment, models, plots, records, stats
from mlp_jax.checkpoints import CHECKPOINT_DIR
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.flags import (config_from_flags, define_run_flags, define_training_flags,
                           reject_extra_arguments, run_options_from_flags)
from mlp_jax.progress import Progress
from mlp_jax.run import (EpochReport, RunOptions, default_workdir, load_data, sync_processes,
                         train_seeds, write_timing)
from mlp_jax.workdir import (WorkdirError, describe_os_error, lock, refuse_other_settings,
                             remove_entries)

SWEEP_FILE = 'sweep.json'
SUMMARY_FILE = 'summary.csv'
FINAL_FILE = 'final.csv'
SWEEP_ENTRIES = (SWEEP_FILE, records.ENVIRONMENT_FILE, SUMMARY_FILE, FINAL_FILE,
                 records.CURVES_FILE, records.TIMING_FILE, CHECKPOINT_DIR)


def parse_seeds(text: str) -> List[int]:
  """'0-3,10,12-13' -> [0, 1, 2, 3, 10, 12, 13]; UsageError on anything else.

  Ranges are inclusive; seeds must be non-negative, below 2**32, and listed once.
  """
  seeds: List[int] = []
  for part in text.split(','):
    part = part.strip()
    low, sep, high = part.partition('-')
    try:
      first, last = int(low), int(high if sep else low)
    except ValueError:
      raise UsageError(f'--seeds: {part!r} is not a seed or a range like 0-7 '
                       f'(in {text!r})') from None
    if first < 0 or last >= 2**32:
      raise UsageError(f'--seeds: {part!r} is outside [0, 2**32)')
    if last < first:
      raise UsageError(f'--seeds: range {part!r} runs backwards')
    seeds.extend(range(first, last + 1))
  repeated = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
  if repeated:
    raise UsageError(f'--seeds lists seed(s) more than once: {repeated[:10]}')
  return seeds


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f'seed_{seed}')


def chunk_checkpoint_dir(workdir: str, seeds: Sequence[int]) -> str:
  """Where the checkpoints of a chunk of seeds go: named by its seeds, so the same
  command finds them again."""
  digest = hashlib.sha1(','.join(map(str, seeds)).encode()).hexdigest()[:12]
  return os.path.join(workdir, CHECKPOINT_DIR, f'seeds-{seeds[0]}-{seeds[-1]}-{digest}')


def sweep_settings(config: TrainConfig, seeds: Sequence[int], options: RunOptions
                   ) -> Dict[str, Any]:
  """What sweep.json holds: everything that decides the sweep's numbers."""
  shared = config.to_dict()
  del shared['seed']
  return {'seeds': list(seeds), 'config': shared, 'vmap_width': options.vmap_width}


def sweep_line(report: EpochReport) -> str:
  """One console line per chunk epoch: how far, and how much the seeds disagree."""
  runs, metrics = report.seeds, report.metrics
  accuracy = np.array([m['test_accuracy'] for m in metrics])
  loss = np.array([m['train_loss'] for m in metrics], np.float64)
  epochs = runs[0].config.epochs
  seeds = [r.config.seed for r in runs]
  spread = (f' ± {accuracy.std(ddof=1):.4f} [{accuracy.min():.4f}, {accuracy.max():.4f}]'
            if len(seeds) > 1 else '')
  return (f'epoch {max(r.epoch for r in runs):>{len(str(epochs))}}/{epochs}  '
          f'{len(seeds)} seed(s) {seeds[0]}..{seeds[-1]}  '
          f'test acc mean {accuracy.mean():.4f}{spread}  train loss mean {loss.mean():.4f}  '
          f'{report.epoch_seconds:.2f}s + eval {report.eval_seconds:.2f}s')


def read_curves(workdir: str, seeds: Sequence[int]) -> Dict[str, np.ndarray]:
  """Every metric of every seed's history.csv: [seeds, epochs] arrays, and 'epoch'."""
  histories = [records.history_columns(records.read_history(
      os.path.join(seed_dir(workdir, s), records.HISTORY_FILE))) for s in seeds]
  curves = {m: np.stack([h[m] for h in histories]) for m in records.METRIC_COLUMNS}
  curves['epoch'] = histories[0]['epoch'].astype(int)
  return curves


def write_summaries(workdir: str, seeds: Sequence[int], config: TrainConfig,
                    curves: Dict[str, np.ndarray]) -> None:
  """summary.csv, final.csv and curves.png from the seeds' curves."""
  records.write_csv(os.path.join(workdir, SUMMARY_FILE), stats.summary_rows(curves))
  records.write_csv(os.path.join(workdir, FINAL_FILE),
                    stats.final_rows(list(seeds), curves['test_accuracy']))
  plots.plot_band(curves, os.path.join(workdir, records.CURVES_FILE),
                  f'{models.describe(config)}, {len(seeds)} seeds: mean final test accuracy '
                  f'{curves["test_accuracy"][:, -1].mean():.4f}')


def remove_previous_sweep(workdir: str, seeds: Sequence[int]) -> None:
  """--overwrite: deletes the sweep's summaries and checkpoints, and the seed
  directories of seeds the previous sweep listed that this one does not (the listed
  ones are started over by the driver)."""
  sweep_path = os.path.join(workdir, SWEEP_FILE)
  previous = records.read_json(sweep_path).get('seeds', []) if os.path.exists(sweep_path) else []
  dropped = sorted(set(previous) - set(seeds))
  remove_entries(workdir, [*SWEEP_ENTRIES, *(os.path.basename(seed_dir(workdir, s))
                                             for s in dropped)])


def run_sweep(config: TrainConfig, seeds: Sequence[int], workdir: str, options: RunOptions,
              started: float) -> Any:
  """Trains (or resumes) every seed of the sweep and writes its summaries."""
  dataset = load_data(config)
  env = environment.describe(dataset)
  settings = sweep_settings(config, seeds, options)
  with lock(workdir, jax.process_index()):
    sweep_path = os.path.join(workdir, SWEEP_FILE)
    try:
      if os.path.exists(sweep_path) and not options.overwrite:
        refuse_other_settings(workdir, records.read_json(sweep_path), settings)
      if jax.process_index() == 0:
        if options.overwrite:
          remove_previous_sweep(workdir, seeds)
        if not os.path.exists(sweep_path):
          records.write_json(sweep_path, settings)
          records.write_json(os.path.join(workdir, records.ENVIRONMENT_FILE), env)
    except OSError as e:
      raise WorkdirError(describe_os_error(workdir, e)) from None
    print(f'sweep: {len(seeds)} seeds x {config.epochs} epochs, chunks of '
          f'{options.chunk_size} over {jax.device_count()} device(s) in '
          f'{jax.process_count()} process(es); writing to {workdir}', flush=True)
    progress = Progress(len(seeds) * config.epochs, unit='seed-epochs', bar=sys.stderr)
    try:
      timing = train_seeds([config.replace(seed=s) for s in seeds],
                           [seed_dir(workdir, s) for s in seeds],
                           lambda chunk: chunk_checkpoint_dir(workdir, chunk), dataset, env,
                           options, sweep_line, progress, started)
    finally:
      progress.close()
    sync_processes('sweep: all seeds trained')
    if jax.process_index() != 0:
      return None
    try:
      curves = read_curves(workdir, seeds)
      if timing.seed_epochs or not os.path.exists(os.path.join(workdir, SUMMARY_FILE)):
        write_timing(os.path.join(workdir, records.TIMING_FILE), timing)
        write_summaries(workdir, seeds, config, curves)
      else:
        print(f'sweep: {workdir} holds a complete sweep; nothing to do', flush=True)
      final = stats.summarize(curves['test_accuracy'][:, -1])
    except OSError as e:
      raise WorkdirError(describe_os_error(workdir, e)) from None
  spread = (f' ± {final.std:.4f} (std), 95% CI [{final.ci95_low:.4f}, {final.ci95_high:.4f}]'
            if final.n > 1 else '')
  print(f'sweep: final test accuracy over {final.n} seed(s): mean {final.mean:.4f}{spread}; '
        f'{timing.seed_epochs} seed-epochs trained in {timing.train_seconds:.1f}s; '
        f'records in {workdir}', flush=True)
  return final


define_training_flags()
define_run_flags()
flags.DEFINE_string('seeds', '0-7', 'Seeds to train: ranges and lists, e.g. 0-7, 0,3,9, '
                    '0-3,10-12.')
flags.DEFINE_string('workdir', None, 'Where to write the sweep. Default: a new folder '
                    'runs/<time>-sweep<first seed>.')
flags.DEFINE_integer('chunk_size', RunOptions().chunk_size, 'Seeds held on the device and '
                     'trained by one program at a time (memory bound); changes no result.')
flags.DEFINE_integer('vmap_width', RunOptions().vmap_width, 'Seeds vectorised together '
                     'with jax.vmap inside a chunk. 1 (default): seeds run one after another '
                     'inside the program, bit-identical to single runs. >1: faster on '
                     'accelerators, but the last bits differ from single runs.')
FLAGS = flags.FLAGS


def main(argv):
  reject_extra_arguments(argv)
  seeds = parse_seeds(FLAGS.seeds)
  config = config_from_flags(seeds[0])
  options = run_options_from_flags(chunk_size=FLAGS.chunk_size, vmap_width=FLAGS.vmap_width)
  environment.initialize_distributed()
  environment.enable_compilation_cache(FLAGS.compilation_cache_dir)
  workdir = FLAGS.workdir or default_workdir(f'sweep{seeds[0]}')
  run_sweep(config, seeds, workdir, options, _STARTED)


if __name__ == '__main__':
  cli.run(main)
