"""Train the MLP on MNIST: `python -m mlp_jax.main --epochs=100 --seed=0`.

Writes config.json, environment.json, history.csv, params.msgpack, timing.json,
curves.png, tensorboard/ and checkpoints/ into --workdir (default: a new folder
under runs/). Running the same command again on the same workdir resumes an
interrupted run. `--vmap_width=W` replays seed --seed of a width-W sweep.
"""

import gc
import time

_STARTED = time.perf_counter()
gc.disable()  # while importing: see cli.settle_garbage_collector

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from mlp_jax import cli
from mlp_jax.flags import (config_from_flags, define_entry_point_flags, define_run_flags,
                           define_training_flags, reject_extra_arguments, run_options_from_flags)

define_training_flags()
define_run_flags()
define_entry_point_flags('main')  # --seed
flags.DEFINE_string('workdir', None, 'Where to write the run\'s records. Default: a new '
                    'folder runs/<time>-seed<seed>.')
FLAGS = flags.FLAGS


def main(argv):
  reject_extra_arguments(argv)
  config = config_from_flags(FLAGS.seed)
  options = run_options_from_flags()
  dataset = cli.load_data_meanwhile(config)  # while JAX is imported
  # Imported after the flags are parsed, so that the data loads meanwhile; the
  # environment first: it fixes XLA:CPU's thread pool before JAX's backend starts.
  from mlp_jax import environment
  from mlp_jax.run import train_and_evaluate
  cli.settle_garbage_collector()
  options = options.replace(program_cache_dir=environment.prepare_process(
      options.deterministic, options.compilation_cache_dir))
  train_and_evaluate(config, FLAGS.workdir, options, started=_STARTED, dataset=dataset())


if __name__ == '__main__':
  cli.run(main)
