"""Crossed designs: every initialisation seed trained with every data seed.

`python -m experiments.sweep --init_seeds=0-4 --data_seeds=0-4` trains 25 members,
member (i, j) being `python -m mlp_jax.main --init_seed=i --seed=j` bit for bit
(at the design's vmap width, as for any sweep): its parameters are drawn from
seed i, its data order and dropout masks (and augmentation shifts) from seed j.
The design is a grid over `init_seed` whose seeds are the data seeds, so a
member's records are in `<workdir>/init_seed=<i>/seed_<j>/` and the sweep's
summaries (summary.csv, final.csv, points.csv per initialisation seed) are a
grid's. Seeds are inputs of the compiled programs (train.program_config), so the
25 members share one.

What the design adds is `variance.csv`: the variance of final test accuracy split
into initialisation, data order and dropout, and residual (their interaction and
the rest), with 95% confidence intervals (stats.variance_components).
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from mlp_jax import records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.grid import Grid, point_name

# The grid axis of the initialisation seeds (a TrainConfig field: each point sets it).
INIT_AXIS = 'init_seed'
METRIC = 'final_test_accuracy'
# How the console and the docs name the components of stats.variance_components.
COMPONENT_NAMES = {'initialisation': 'initialisation', 'data_order': 'data order and dropout',
                   'residual': 'residual'}
VARIANCE_COLUMNS = ('metric', 'component', 'variance', 'ci95_low', 'ci95_high', 'std',
                    'std_ci95_low', 'std_ci95_high', 'share', 'truncated', 'mean_square', 'df',
                    'inits', 'datas', 'mean')


def check_design(init_seeds: Sequence[int], data_seeds: Sequence[int], config: TrainConfig,
                 grid: Grid) -> Grid:
  """The grid of a crossed design of `config` (the sweep's settings, from its flags);
  UsageError naming the flag for what it cannot be combined with."""
  for flag, seeds in (('init_seeds', init_seeds), ('data_seeds', data_seeds)):
    if len(seeds) < 2:
      raise UsageError(f'--{flag}: a crossed design needs at least 2 seeds on each side to '
                       f'split the variance, got {len(seeds)}')
  for flag, value in (('init_seed', config.init_seed), ('data_seed', config.data_seed)):
    if value is not None:
      raise UsageError(f'--{flag}={value} holds one seed fixed; a crossed design varies both '
                       '(--init_seeds, --data_seeds): leave it out')
  if grid:
    listed = ', '.join(f'--{flag}' for flag in grid.flags)
    raise UsageError(f'a crossed design (--init_seeds, --data_seeds) takes one value per '
                     f'setting, got a list for {listed}: run one crossed sweep per value')
  return Grid(((INIT_AXIS, tuple(init_seeds)),))


def accuracy_matrix(workdir: str, init_seeds: Sequence[int], data_seeds: Sequence[int]
                    ) -> np.ndarray:
  """float64[inits, datas]: each member's final test accuracy, from its history.csv."""
  run_dirs = [records.seed_dir(os.path.join(workdir, point_name(((INIT_AXIS, i),))), j)
              for i in init_seeds for j in data_seeds]
  final = records.read_curves(run_dirs)['test_accuracy'][:, -1]
  return final.reshape(len(init_seeds), len(data_seeds))


def variance_rows(components: Dict[str, Any]) -> List[Dict[str, str]]:
  """variance.csv's rows (VARIANCE_COLUMNS, text) from stats.variance_components."""
  rows = []
  for name in COMPONENT_NAMES:
    c = components[name]
    rows.append({
        'metric': METRIC, 'component': name, 'variance': repr(c['estimate']),
        'ci95_low': repr(c['ci95_low']), 'ci95_high': repr(c['ci95_high']),
        'std': repr(c['std']), 'std_ci95_low': repr(math.sqrt(max(0.0, c['ci95_low']))),
        'std_ci95_high': repr(math.sqrt(max(0.0, c['ci95_high']))),
        'share': repr(c['share']), 'truncated': str(bool(c['truncated'])).lower(),
        'mean_square': repr(components['mean_squares'][name]),
        'df': str(components['df'][name]), 'inits': str(components['inits']),
        'datas': str(components['datas']), 'mean': repr(components['mean'])})
  return rows


def variance_text(components: Dict[str, Any]) -> str:
  """The console lines of the variance components."""
  lines = [f'crossed: final test accuracy over {components["inits"]} init seeds x '
           f'{components["datas"]} data seeds: mean {components["mean"]:.4f}; where its '
           'variance comes from (std, 95% CI; share of the variance):']
  width = max(map(len, COMPONENT_NAMES.values()))
  for name, label in COMPONENT_NAMES.items():
    c = components[name]
    low, high = (math.sqrt(max(0.0, c[k])) for k in ('ci95_low', 'ci95_high'))
    share = '-' if math.isnan(c['share']) else f'{c["share"]:.0%}'
    note = '  (estimate below 0, shown as 0)' if c['truncated'] else ''
    lines.append(f'  {label:<{width}}  std {c["std"]:.4f} [{low:.4f}, {high:.4f}]  '
                 f'{share:>4}{note}')
  return '\n'.join(lines)


def write_variance(workdir: str, init_seeds: Sequence[int], data_seeds: Sequence[int]
                   ) -> Dict[str, Any]:
  """Computes the variance components of a finished crossed sweep, writes
  variance.csv and returns stats.variance_components' result."""
  from mlp_jax import stats  # pylint: disable=g-import-not-at-top  (scipy: not at start-up)
  components = stats.variance_components(accuracy_matrix(workdir, init_seeds, data_seeds))
  records.write_csv(os.path.join(workdir, records.VARIANCE_FILE), variance_rows(components))
  return components


def train_crossed(config: TrainConfig, init_seeds: Sequence[int], data_seeds: Sequence[int],
                  workdir: Optional[str] = None, options: Any = None,
                  started: Optional[float] = None, dataset: Any = None,
                  grid: Grid = Grid()) -> Optional[Dict[str, Any]]:
  """Trains (or resumes, or extends by data seeds) a crossed design of `config`
  into `workdir`, writes the sweep's summaries and variance.csv and prints the
  components; returns them (None on processes but 0).

  Args:
    config: the settings every member shares (init_seed and data_seed unset).
    init_seeds, data_seeds: int[inits], int[datas], at least 2 each.
    workdir: where to write; default a new folder runs/<time>-crossed.
    options: run.RunOptions (default: its defaults).
    started: time.perf_counter() at process start, for timing.json.
    dataset: the config's data, if already loaded.
    grid: the grid the flags list (a crossed design refuses one: check_design).
  """
  from mlp_jax import run  # pylint: disable=g-import-not-at-top  (imports jax)
  crossed = check_design(init_seeds, data_seeds, config, grid)
  workdir = workdir or run.default_workdir('crossed')
  points = run.train_sweep(config, list(data_seeds), workdir,
                           run.RunOptions() if options is None else options, started, crossed,
                           dataset)
  if points is None:
    return None
  components = write_variance(workdir, init_seeds, data_seeds)
  print(variance_text(components), flush=True)
  print(f'crossed: variance components in {os.path.join(workdir, records.VARIANCE_FILE)}',
        flush=True)
  return components
