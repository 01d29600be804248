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
from mlp_jax import flags as setting_flags

setting_flags.define_training_flags()
setting_flags.define_run_flags()
setting_flags.define_entry_point_flags('main')  # --seed
flags.DEFINE_string('workdir', None, 'Where to write the run\'s records. Default: a new '
                    'folder runs/<time>-seed<seed>.')
flags.adopt_module_key_flags(setting_flags)  # --helpshort lists them all
FLAGS = flags.FLAGS


def main(argv):
  start = cli.start_training(argv, FLAGS.seed)
  from mlp_jax.run import train_and_evaluate
  train_and_evaluate(start.config, FLAGS.workdir, start.options, started=_STARTED,
                     dataset=start.dataset)


if __name__ == '__main__':
  cli.run(main)
