"""Seed sweeps in one process: `python -m mlp_jax.sweep --seeds=0-31 --workdir=DIR`
(`python -m experiments.sweep` in a checkout is the same command).

Every training flag of `mlp_jax.main` works here too (same definitions); a list
for a sweepable flag makes a grid, every point training every seed:
`--learning_rate=1e-4,3e-4,1e-3 --seeds=0-9` (mlp_jax.grid). The seeds train in
chunks, each epoch of a chunk one compiled program (see mlp_jax.driver). Writes
into --workdir (see mlp_jax.records for the layout):

    sweep.json, environment.json   the sweep's settings (and grid) and where it ran
    seed_<k>/                      a complete run directory per seed
      (a grid: <flag>=<value>/.../seed_<k>/)
    summary.csv                    per epoch and metric: mean, std, min, max, 95% CI
    final.csv                      per seed: final and best test accuracy (the best epoch
                                   chosen on validation with --validation_size)
    points.csv                     per grid point: ranked (on validation with a split),
                                   paired and Holm-adjusted tests vs the best, ensemble
    curves.png, tensorboard/       mean and 95% band, each seed faint behind
    timing.json                    start-up, training, evaluation, host work
    variance.csv                   a crossed design's variance components

Re-running the same command resumes a killed sweep; more seeds on a finished
sweep (`--seeds=0-9`, then `--seeds=0-19`) extend it: only the new seeds train.
`--init_seeds=0-4 --data_seeds=0-4` instead of --seeds trains a crossed design
(mlp_jax.crossed): member init_seed=<i>/seed_<j>/ is `mlp_jax.main --init_seed=i
--seed=j`, and variance.csv splits the variance of final test accuracy into
initialisation, data order and dropout, and residual.
"""

import gc
import time

_STARTED = time.perf_counter()
gc.disable()  # while importing: see cli.settle_garbage_collector

# pylint: disable=g-import-not-at-top,wrong-import-position
from typing import List, Optional, Tuple

from absl import flags

from mlp_jax import cli
from mlp_jax.errors import UsageError
from mlp_jax import flags as setting_flags
from mlp_jax.flags import parse_seeds

setting_flags.define_training_flags()
setting_flags.define_run_flags()
setting_flags.define_entry_point_flags('sweep')  # --seed_curves
flags.DEFINE_string('seeds', '0-7', 'Seeds to train: ranges and lists, e.g. 0-7, 0,3,9, '
                    '0-3,10-12.')
flags.DEFINE_string('init_seeds', None, 'With --data_seeds, instead of --seeds: a crossed '
                    'design, every initialisation seed trained with every data seed (data '
                    'order and dropout), written to init_seed=<i>/seed_<j>/; variance.csv '
                    'splits the variance of final test accuracy between them. Ranges and '
                    'lists as in --seeds, at least 2 seeds.')
flags.DEFINE_string('data_seeds', None, 'With --init_seeds: the data seeds of a crossed '
                    'design (member i, j is mlp_jax.main --init_seed=i --seed=j).')
flags.DEFINE_string('workdir', None, 'Where to write the sweep. Default: a new folder '
                    'runs/<time>-sweep<first seed> (a crossed design: runs/<time>-crossed).')
flags.adopt_module_key_flags(setting_flags)  # --helpshort lists them all
FLAGS = flags.FLAGS


def crossed_seeds() -> Optional[Tuple[List[int], List[int]]]:
  """(init seeds, data seeds) of a crossed design, or None for a sweep of --seeds."""
  given = [name for name in ('init_seeds', 'data_seeds') if FLAGS[name].value is not None]
  if not given:
    return None
  if len(given) == 1:
    other = 'data_seeds' if given[0] == 'init_seeds' else 'init_seeds'
    raise UsageError(f'--{given[0]} makes a crossed design together with --{other}, which '
                     'is missing')
  if FLAGS['seeds'].present:
    raise UsageError('--seeds: a crossed design trains the seeds of --init_seeds and '
                     '--data_seeds; leave --seeds out')
  return (parse_seeds(FLAGS.init_seeds, 'init_seeds'),
          parse_seeds(FLAGS.data_seeds, 'data_seeds'))


def main(argv):
  crossed = crossed_seeds()
  seeds = parse_seeds(FLAGS.seeds) if crossed is None else crossed[1]
  check = None
  if crossed is not None:
    from mlp_jax.crossed import check_design
    check = lambda config, grid: check_design(*crossed, config, grid)
  start = cli.start_training(argv, seeds[0], grid=True, check=check)
  if crossed is None:
    from mlp_jax.run import train_sweep
    train_sweep(start.config, seeds, FLAGS.workdir, start.options, _STARTED, start.grid,
                start.dataset)
  else:
    from mlp_jax.crossed import train_crossed
    train_crossed(start.config, *crossed, FLAGS.workdir, start.options, _STARTED,
                  start.dataset)


if __name__ == '__main__':
  cli.run(main)
