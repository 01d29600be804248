"""Comparing runs and sweeps from a checkout: `python -m experiments.compare` is
`python -m mlp_jax.compare`.

The code lives in the installed package (mlp_jax.compare), so the command also works from
any directory after `pip install`; this module keeps the checkout's spelling.
"""

from absl import flags

from mlp_jax import cli
from mlp_jax import compare as _entry_point

__doc__ = _entry_point.__doc__  # what --help prints

if __name__ == '__main__':
  _entry_point.define_flags()
  flags.adopt_module_key_flags(_entry_point)  # --helpshort lists its flags here too
  cli.run(_entry_point.main)
