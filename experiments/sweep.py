"""Seed sweeps and grids from a checkout: `python -m experiments.sweep` is
`python -m mlp_jax.sweep`.

The code lives in the installed package (mlp_jax.sweep), so the command also works from
any directory after `pip install`; this module keeps the checkout's spelling.
"""

from absl import flags

from mlp_jax import cli
from mlp_jax import sweep as _entry_point

flags.adopt_module_key_flags(_entry_point)  # --helpshort lists its flags here too
__doc__ = _entry_point.__doc__  # what --help prints

if __name__ == '__main__':
  cli.run(_entry_point.main)
