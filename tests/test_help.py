"""Every entry point's --helpshort lists every flag it takes."""

import functools
import json
import re
import subprocess
import sys

import pytest

from conftest import REPO

ENTRY_POINTS = ('mlp_jax.main', 'mlp_jax.sweep', 'mlp_jax.compare', 'experiments.sweep',
                'experiments.compare', 'experiments.benchmark')

# Runs the module as `python -m MODULE --helpshort` does, in a fresh interpreter, and
# prints what --helpshort printed and every flag the module defined (not absl's own),
# with its default.
_PROBE = r'''
import contextlib, io, json, runpy, sys
module = sys.argv[1]
sys.argv = [module, '--helpshort']
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
  try:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
  except SystemExit:
    pass
from absl import flags
defaults = {}
for owner, defined in flags.FLAGS.flags_by_module_dict().items():
  if not owner.startswith('absl.'):
    for flag in defined:
      default = flag.default
      defaults[flag.name] = ','.join(default) if isinstance(default, list) else default
print(json.dumps({'help': printed.getvalue(), 'defaults': defaults}))
'''


@functools.lru_cache(maxsize=None)
def entry_point_flags(module: str):
  """(the text --helpshort prints, {flag: default} of every flag `module` takes)."""
  result = subprocess.run([sys.executable, '-c', _PROBE, module], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=True)
  probed = json.loads(result.stdout.strip().splitlines()[-1])
  return probed['help'], probed['defaults']


def listed_flags(help_text: str):
  """The flags a --helpshort text describes: lines '  --name: ...' or '  --[no]name: ...'."""
  return set(re.findall(r'^\s+--(?:\[no\])?(\w+):', help_text, re.MULTILINE))


@pytest.mark.parametrize('module', ENTRY_POINTS)
def test_helpshort_lists_every_flag(module):
  help_text, defaults = entry_point_flags(module)
  listed = listed_flags(help_text)
  assert defaults and set(defaults) <= listed, sorted(set(defaults) - listed)


def test_the_training_entry_points_list_the_settings():
  from mlp_jax.config import SETTINGS  # pylint: disable=g-import-not-at-top
  for module, entry_point in (('mlp_jax.main', 'main'), ('experiments.sweep', 'sweep')):
    listed = listed_flags(entry_point_flags(module)[0])
    assert {'epochs', 'workdir', 'learning_rate', 'chunk_size'} <= listed
    assert {s.name for s in SETTINGS if s.flag in ('all', entry_point)} <= listed


def test_listed_flags_reads_absl_help():
  assert listed_flags('  --epochs: Passes.\n    (default: 100)\n  --[no]augment: Shifts.\n'
                      'mlp_jax.flags:\n') == {'epochs', 'augment'}
