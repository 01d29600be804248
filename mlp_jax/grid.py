"""Grids of settings: `--learning_rate=1e-4,3e-4,1e-3 --dropout=0,0.1` in a sweep.

A grid is the product of the lists given for sweepable flags (SWEEPABLE), in the
order the flags are listed there; every point of it trains every seed of the
sweep. Each (point, seed) member is a complete run in
`<workdir>/<setting>=<value>/.../seed_<k>/`, with its own config.json, and
computes what `mlp_jax.main --<setting>=<value> ... --seed=<k>` computes.

Settings that change no array shape (config.TRACED_SETTINGS: learning rate,
dropout rate) are inputs of the compiled program, so points differing only in
them share one program and vectorise like seeds; the others (batch size, hidden
sizes, model, schedule) make one program per value, trained one after another
in the same process. This module is configuration only (no jax).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Dict, List, Sequence, Tuple

from mlp_jax.config import SWEEPABLE as SWEEP_ORDER
from mlp_jax.config import TrainConfig, parse_hidden_sizes, setting
from mlp_jax.errors import UsageError


def _number(kind: Callable[[str], Any]) -> Callable[[str, str], Any]:
  def parse(flag: str, text: str) -> Any:
    try:
      return kind(text)
    except ValueError:
      expected = 'number' if kind is float else 'whole number'
      raise UsageError(f'--{flag}: {text!r} is not a {expected}') from None
  return parse


def _hidden_sizes(flag: str, text: str) -> Tuple[int, ...]:
  del flag
  return parse_hidden_sizes(text)


def _word(flag: str, text: str) -> str:
  del flag
  return text


_PARSERS: Dict[type, Callable[[str, str], Any]] = {
    float: _number(float), int: _number(int), tuple: _hidden_sizes, str: _word}

# Flag -> (parser of one value, separator of a list of values), in the order the
# grid nests them (config.SWEEPABLE: the rows of config.SETTINGS marked `sweep`).
# hidden_sizes is itself comma-separated, so its values are separated by '/':
# 64,64/128,128.
SWEEPABLE: Dict[str, Tuple[Callable[[str, str], Any], str]] = {
    name: (_PARSERS[setting(name, 'train').type], setting(name, 'train').sweep.separator)
    for name in SWEEP_ORDER}


def parse_values(flag: str, text: str) -> Tuple[Any, ...]:
  """The values a sweepable flag lists: '1e-4,3e-4' -> (0.0001, 0.0003).

  Raises UsageError for an empty value, one that does not parse, or one listed twice.
  """
  parse, separator = SWEEPABLE[flag]
  parts = [p.strip() for p in text.split(separator)]
  if not all(parts):
    raise UsageError(f'--{flag}={text}: an empty value in the list')
  values = tuple(parse(flag, p) for p in parts)
  repeated = [format_value(v) for i, v in enumerate(values) if v in values[:i]]
  if repeated:
    raise UsageError(f'--{flag}={text}: {repeated[0]} is listed twice')
  return values


def format_value(value: Any) -> str:
  """A setting's value as directory names, CSV cells and the console show it."""
  if isinstance(value, tuple):
    return ','.join(map(str, value))
  if isinstance(value, float):
    return repr(value)
  return str(value)


def point_name(settings: Sequence[Tuple[str, Any]]) -> str:
  """A grid point's directory within its sweep: 'learning_rate=0.001/dropout=0.1'
  ('' for no settings: a sweep without a grid)."""
  return '/'.join(f'{flag}={format_value(value)}' for flag, value in settings)


@dataclasses.dataclass(frozen=True)
class GridPoint:
  """One combination of the grid's settings.

  Attributes:
    settings: (flag, value) for each swept setting, in the grid's order.
    config: the sweep's config with these settings (its seed is the sweep's first).
  """
  settings: Tuple[Tuple[str, Any], ...]
  config: TrainConfig

  @property
  def name(self) -> str:
    return point_name(self.settings)

  @property
  def cells(self) -> Dict[str, str]:
    """{flag: value as text}, the point's columns in the sweep's CSV files."""
    return {flag: format_value(value) for flag, value in self.settings}


@dataclasses.dataclass(frozen=True)
class Grid:
  """The swept settings: ((flag, (value, ...)), ...), each with two or more values."""
  axes: Tuple[Tuple[str, Tuple[Any, ...]], ...] = ()

  @property
  def flags(self) -> List[str]:
    return [flag for flag, _ in self.axes]

  def __bool__(self) -> bool:
    return bool(self.axes)

  def points(self, base: TrainConfig) -> List[GridPoint]:
    """Every point, the last flag varying fastest; each config validated (a bad
    value is a UsageError naming its flag)."""
    points = []
    for values in itertools.product(*(v for _, v in self.axes)):
      settings = tuple(zip(self.flags, values))
      points.append(GridPoint(settings, base.replace(**dict(settings)).validate()))
    return points

  def to_json(self) -> List[List[Any]]:
    """What sweep.json records of the grid: [[flag, [value, ...]], ...] (a list, as
    JSON objects are written with sorted keys and the order names directories)."""
    return [[flag, [list(v) if isinstance(v, tuple) else v for v in values]]
            for flag, values in self.axes]


def sweepable_text() -> str:
  return ', '.join(f'--{flag}' for flag in SWEEPABLE)


def program_groups(items: Sequence[Any], key: Callable[[Any], Any]) -> List[List[Any]]:
  """`items` grouped by `key` (first appearance order; order kept within a group)."""
  groups: Dict[Any, List[Any]] = {}
  for item in items:
    groups.setdefault(key(item), []).append(item)
  return list(groups.values())
