"""The flag tables of the docs match the flags: a row per flag each entry point takes
(no more, no fewer), with the flag's default."""

import os
import re

import pytest

from conftest import REPO
from test_help import entry_point_flags

# Entry point -> (page, text its tables' headings contain): each table under such a
# heading lists flags of that entry point ('| `--name` | default | meaning |').
TABLES = {
    'mlp_jax.main': ('usage.md', '`mlp_jax.main`'),
    'experiments.sweep': ('usage.md', '`experiments.sweep`'),
    'experiments.compare': ('usage.md', '`experiments.compare`'),
    'experiments.benchmark': ('performance.md', 'How to measure'),
}
# How the tables write a default that is no value (None or empty): any text says it
# (unset, bundled, `runs/<time>-seed<seed>`, ...) but for an empty string.
EMPTY = ('none', 'empty', 'unset')


def flag_rows(page: str, heading_text: str):
  """{flag: default cell, backticks removed} of the tables under headings holding
  `heading_text`; a flag listed twice is an error."""
  rows, heading = {}, ''
  with open(os.path.join(REPO, 'docs', page), encoding='utf-8') as f:
    for line in f:
      if line.startswith('#'):
        heading = line
        continue
      match = re.match(r'^\|\s*`--(?:\[no\])?(\w+)`\s*\|\s*([^|]*?)\s*\|', line)
      if match and heading_text in heading:
        assert match.group(1) not in rows, f'{page}: --{match.group(1)} listed twice'
        rows[match.group(1)] = match.group(2).replace('`', '').strip()
  return rows


def documents(default, cell: str) -> bool:
  """Whether a table's default cell says the flag's default."""
  if isinstance(default, bool):
    return cell == ('on' if default else 'off')
  if default is None:
    return bool(cell)
  if default == '':
    return cell in EMPTY
  try:
    return float(cell.split()[0]) == float(default)
  except ValueError:
    return cell == str(default)


@pytest.mark.parametrize('module', sorted(TABLES))
def test_each_flag_has_its_row_with_its_default(module):
  _, defaults = entry_point_flags(module)
  rows = flag_rows(*TABLES[module])
  page = TABLES[module][0]
  assert not set(defaults) - set(rows), f'flags without a row in docs/{page}: ' + ', '.join(
      sorted(set(defaults) - set(rows)))
  assert not set(rows) - set(defaults), f'rows in docs/{page} of no flag: ' + ', '.join(
      sorted(set(rows) - set(defaults)))
  wrong = {name: (rows[name], default) for name, default in defaults.items()
           if not documents(default, rows[name])}
  assert not wrong, f'docs/{page}: (row, flag) defaults differ: {wrong}'


def test_documents_reads_the_tables_defaults():
  assert documents(True, 'on') and documents(False, 'off') and not documents(False, 'on')
  assert documents('0.001', '0.001') and documents('0.0', '0') and documents(3, '3')
  assert documents(None, 'unset') and documents('', 'none') and not documents('', 'x')
  assert documents('auto', 'auto') and not documents('128,128', '128')
  assert documents('1e-4,3e-4,1e-3', '1e-4,3e-4,1e-3')
