"""Seed sweeps in one process: `python -m experiments.sweep --seeds=0-31 --workdir=DIR`.

Every training flag of `mlp_jax.main` works here too (same definitions); a list
for a sweepable flag makes a grid, every point training every seed:
`--learning_rate=1e-4,3e-4,1e-3 --seeds=0-9` (mlp_jax.grid). The seeds train in
chunks, each epoch of a chunk one compiled program (see mlp_jax.driver). Writes
into --workdir (see mlp_jax.records for the layout):

    sweep.json, environment.json   the sweep's settings (and grid) and where it ran
    seed_<k>/                      a complete run directory per seed
      (a grid: <flag>=<value>/.../seed_<k>/)
    summary.csv                    per epoch and metric: mean, std, min, max, 95% CI
    final.csv                      per seed: final and best test accuracy
    points.csv                     per grid point: ranked, Welch vs the best, ensemble
    curves.png, tensorboard/       mean and 95% band, each seed faint behind
    timing.json                    start-up, training, evaluation, host work

Re-running the same command resumes a killed sweep.
"""

import time

_STARTED = time.perf_counter()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from mlp_jax import cli
from mlp_jax.flags import (config_from_flags, define_run_flags, define_training_flags,
                           grid_from_flags, parse_seeds, reject_extra_arguments,
                           run_options_from_flags)

define_training_flags()
define_run_flags()
flags.DEFINE_string('seeds', '0-7', 'Seeds to train: ranges and lists, e.g. 0-7, 0,3,9, '
                    '0-3,10-12.')
flags.DEFINE_string('workdir', None, 'Where to write the sweep. Default: a new folder '
                    'runs/<time>-sweep<first seed>.')
flags.DEFINE_bool('seed_curves', False, 'Also draw each seed\'s curves.png (after training, '
                  'in parallel processes); the sweep\'s own curves.png is always drawn.')
FLAGS = flags.FLAGS


def main(argv):
  reject_extra_arguments(argv)
  seeds = parse_seeds(FLAGS.seeds)
  config = config_from_flags(seeds[0], grid=True)
  grid = grid_from_flags()
  grid.points(config)  # every point's settings checked before anything is written
  options = run_options_from_flags(seed_curves=FLAGS.seed_curves)
  dataset = cli.load_data_meanwhile(config)  # while JAX is imported
  from mlp_jax import environment
  from mlp_jax.run import train_sweep
  options = options.replace(program_cache_dir=environment.prepare_process(
      FLAGS.deterministic, FLAGS.compilation_cache_dir))
  train_sweep(config, seeds, FLAGS.workdir, options, _STARTED, grid, dataset())


if __name__ == '__main__':
  cli.run(main)
