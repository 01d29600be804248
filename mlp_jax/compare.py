"""Compare two runs, two sweeps, or a run and a sweep: `python -m mlp_jax.compare A B`
(`python -m experiments.compare A B` in a checkout is the same command).

    python -m mlp_jax.compare A B [--require_identical] [--output=compare.png]
        [--target_difference=D] [--json=PATH]

A and B are each a run directory (written by `python -m mlp_jax.main`; it holds
config.json) or a sweep directory (written by `python -m mlp_jax.sweep`; it
holds sweep.json and one run directory seed_<k>/ per seed). The report lists:

  * settings that differ, `name: A-value -> B-value` (values as JSON, nested
    keys dotted): config.json for two runs, sweep.json for two sweeps;
  * environment facts that differ (environment.json), the same way. Every fact
    is compared (versions, backend, devices, process_count, xla_flags,
    jax_config, platform, git.commit and git.dirty, data.sha256) except these,
    which describe how or from where a run was launched rather than what it
    computes: `command` (it names the workdir, so it always differs),
    `process_index`, `data.source` (the data's path; its checksums are
    compared) and `jax_config.jax_compilation_cache_dir`;
  * for every metric column of history.csv (every column but `epoch` and the
    timing columns, whose names end in `_seconds`): the largest per-epoch
    absolute difference |A - B| over all compared seeds and epochs, where it
    occurs, and how many cells differ out of how many compared; epochs, seeds
    and columns present on one side only;
  * the final test accuracy (the last recorded epoch) of each side: a sweep's
    as mean ± std over its seeds. For two sweeps (docs/statistics.md says what
    each number means; mlp_jax.stats computes them):
      - Welch's difference of the means A - B, 95% CI and p-value, over all
        seeds of each side; each side's IQM and a 95% CI of its mean inside
        [0, 1] (the t interval on the logit scale);
      - over the seeds both have (seed k of A and of B share initialisation
        and data order): the per-seed differences, their mean with the paired
        t 95% CI and p-value, the Wilcoxon signed-rank p-value and the
        correlation of A and B; without 2 common seeds, the unpaired versions;
      - a percentile bootstrap 95% CI of A - B (10,000 resamples, RNG seed 0)
        and the probability of improvement P(A > B) with its bootstrap CI;
      - the smallest difference the seeds detect with 80% power at alpha 0.05
        (paired t when paired) and, with --target_difference=D (a fraction of
        accuracy, > 0), how many seeds would detect D.
    For two single runs (or a run and the sweep's run of its seed): McNemar's
    exact test of their disagreement on the test images, from their saved
    models (params.msgpack) on the test set their config.json names. Both: the
    test set's own sampling error, the half-width of the 95% binomial
    interval of the accuracy measured (about ±0.0027 at 0.98 on 10,000 images);
  * the last line, the verdict:
      verdict: IDENTICAL (bit for bit: N seeds x M epochs, timing columns aside)
      verdict: DIFFERENT (reason; reason; ...)
    IDENTICAL means: the same seeds on both sides, the same epochs for every
    seed, the same metric columns, and every metric cell of history.csv equal
    AS TEXT (no numeric tolerance: '0.9676' and '0.96760005' differ), each
    compared run complete (every epoch its config.json asks for recorded: a run
    still training, or killed, is named as incomplete). Nothing to compare (no
    common seed, no epoch) is DIFFERENT. Settings and
    environment differences are listed but do not by themselves decide the
    verdict: the verdict is about the numbers a run produced.

Which runs are compared:

  * run vs run: the two runs (if their seeds differ, the verdict is DIFFERENT
    but the metrics are still compared);
  * sweep vs sweep: seed_<k> of A with seed_<k> of B for every seed k both
    have. A sweep's seeds are those listed in its sweep.json; a listed seed
    whose seed_<k>/ has no config.json or no history.csv yet (a sweep still
    running) has no records: it is reported, and is missing from that side;
  * run vs sweep (either order): the run with the sweep's seed_<k>, k the run's
    own seed (config.json), so IDENTICAL means the run reproduces that seed of
    the sweep; settings and environment are those of the run and of seed_<k>.
    The sweep's other seeds are not compared. If the sweep has no records for
    seed k that is said, settings are compared with sweep.json's `config`, and
    the verdict is DIFFERENT.

The picture (--output=FILE, a .png, .pdf or .svg ...; --output=DIR writes
DIR/compare.png; none without --output) overlays the train and test accuracy
and loss curves of A and B: a run as its curve, a
sweep as the mean over its seeds with a 95% band (over the epochs all its seeds
have reached).

--json=PATH also writes the whole report as one JSON object, atomically: keys
verdict (the verdict line's text after `verdict: `), identical, reasons, a, b,
settings, environment, history, final_test_accuracy, welch, paired, bootstrap
(with its resamples and RNG seed), probability_of_improvement, mcnemar,
detectable_difference, seeds_needed and test_set_error; a section that does not
apply is null, as is any NaN.

Exit status: 0; 1 with --require_identical when the verdict is DIFFERENT; 2 on
bad input (a missing directory, one that is neither a run nor a sweep, a
missing, unreadable or partial record, --target_difference <= 0, a --json
path whose directory does not exist), reported as one line `error: ...`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from absl import flags

from mlp_jax import cli
from mlp_jax import metrics as metric_spec
from mlp_jax.plots import SPLIT_STYLES
from mlp_jax.records import (CONFIG_FILE, ENVIRONMENT_FILE, HISTORY_FILE, POINTS_FILE,
                             SWEEP_FILE, History, SEED_DIR, TIMING_SUFFIX, read_history,
                             read_json_object, seed_dir, sweep_run_dirs, write_json)
from mlp_jax.errors import UsageError

FLAGS = flags.FLAGS

# Environment facts about how a run was launched, not what it computes (see the docstring).
IGNORED_ENVIRONMENT = ('command', 'process_index', 'data.source',
                       'jax_config.jax_compilation_cache_dir')
# Curves drawn in compare.png, every metric of mlp_jax.metrics a side records:
# (metric, axis 0 = accuracy / 1 = loss, line style of its split).
PLOTTED = tuple((m.name, 0 if m.kind == metric_spec.ACCURACY else 1, SPLIT_STYLES[m.split])
                for m in metric_spec.METRICS)


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines this tool's flags (called only when it runs, so importing it defines none)."""
  flags.DEFINE_bool('require_identical', False, 'Exit with status 1 unless the verdict is '
                    'IDENTICAL.', flag_values=flag_values)
  flags.DEFINE_string('output', '', 'Where to write the picture of both sides\' curves: a '
                      'file (.png, .pdf, .svg, ...) or a directory (DIR/compare.png). '
                      'Default: no picture.', flag_values=flag_values)
  flags.DEFINE_float('target_difference', None, 'A difference of final test accuracy to plan '
                     'for (a fraction, e.g. 0.002 for 0.2 points, > 0): prints how many seeds '
                     'detect it with 80% power at alpha 0.05.', flag_values=flag_values)
  flags.DEFINE_string('json', '', 'Also write the whole report as JSON to this path '
                      '(atomically); empty: none.', flag_values=flag_values)


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class Run:
  """A run directory's records."""
  path: str
  config: Dict[str, Any]
  environment: Dict[str, Any]
  history: History

  @property
  def seed(self) -> int:
    return self.config['seed']


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A sweep directory: its settings, environment, and the runs of its seeds with records."""
  path: str
  settings: Dict[str, Any]
  environment: Dict[str, Any]
  runs: Dict[int, Run]
  without_records: Tuple[int, ...]


Side = Union[Run, Sweep]


def load_run(path: str) -> Run:
  """A run directory's config.json, environment.json and history.csv."""
  config = read_json_object(os.path.join(path, CONFIG_FILE))
  seed = config.get('seed')
  if not isinstance(seed, int) or isinstance(seed, bool):
    raise UsageError(f'{os.path.join(path, CONFIG_FILE)}: no integer seed')
  return Run(path, config, read_json_object(os.path.join(path, ENVIRONMENT_FILE)),
             read_history(os.path.join(path, HISTORY_FILE)))


def load_sweep(path: str) -> Sweep:
  """A sweep directory; seeds whose seed_<k>/ has no config.json or history.csv yet are
  listed in `without_records`."""
  settings = read_json_object(os.path.join(path, SWEEP_FILE))
  if settings.get('grid'):
    raise UsageError(f'{path}: a grid sweep (its points are compared in its {POINTS_FILE}); '
                     'compare its members\' run directories, e.g. '
                     f'{os.path.join(path, sweep_run_dirs(settings)[0])}')
  seeds = settings.get('seeds')
  if (not isinstance(seeds, list) or
      not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
    raise UsageError(f'{os.path.join(path, SWEEP_FILE)}: `seeds` is not a list of integers')
  environment = read_json_object(os.path.join(path, ENVIRONMENT_FILE))
  runs, without = {}, []
  for seed in seeds:
    run_dir = seed_dir(path, seed)
    if all(os.path.exists(os.path.join(run_dir, name)) for name in (CONFIG_FILE, HISTORY_FILE)):
      runs[seed] = load_run(run_dir)
    else:
      without.append(seed)
  return Sweep(path, settings, environment, runs, tuple(without))


def load_side(path: str) -> Side:
  """A run or a sweep, whichever `path` holds (a sweep if it has sweep.json)."""
  if not os.path.isdir(path):
    raise UsageError(f'{path}: no such directory')
  if os.path.exists(os.path.join(path, SWEEP_FILE)):
    return load_sweep(path)
  if os.path.exists(os.path.join(path, CONFIG_FILE)):
    return load_run(path)
  raise UsageError(f'{path}: neither a run (no {CONFIG_FILE}) nor a sweep (no {SWEEP_FILE})')


# ----------------------------------------------------------------------------- describing


def plural(n: int, word: str) -> str:
  return f'{n} {word}' if n == 1 else f'{n} {word}s'


def ranges(numbers: Iterable[int]) -> str:
  """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
  parts, numbers = [], sorted(numbers)
  start = None
  for i, n in enumerate(numbers):
    start = n if start is None else start
    if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
      parts.append(str(n) if n == start else f'{start}-{n}')
      start = None
  return ', '.join(parts) or 'none'


def describe(side: Side) -> str:
  """One line naming a side: what it is and how much it holds."""
  if isinstance(side, Run):
    return f'run {side.path} (seed {side.seed}, {plural(len(side.history.rows), "epoch")})'
  seeds = sorted(side.runs)
  text = f'sweep {side.path} ({plural(len(seeds), "seed")} with records: {ranges(seeds)}'
  if side.without_records:
    text += f'; without records yet: {ranges(side.without_records)}'
  return text + ')'


def flatten(obj: Any, prefix: str = '') -> Dict[str, Any]:
  """Nested dicts -> {'a.b.c': value}; anything else (lists too) is a value."""
  if not isinstance(obj, dict) or (prefix and not obj):
    return {prefix: obj}
  flat = {}
  for key, value in obj.items():
    flat.update(flatten(value, f'{prefix}.{key}' if prefix else str(key)))
  return flat


def _show(value: Any) -> str:
  return json.dumps(value, sort_keys=True)


_ABSENT = object()


def differences(a: Mapping[str, Any], b: Mapping[str, Any],
                ignored: Sequence[str] = ()) -> List[str]:
  """`key: A-value -> B-value` for each (dotted) key whose values differ, sorted by key.

  Keys equal to or under one of `ignored` are skipped; a key on one side only
  shows `(absent)` on the other.
  """
  flat_a, flat_b = flatten(dict(a)), flatten(dict(b))
  lines = []
  for key in sorted(set(flat_a) | set(flat_b)):
    if any(key == i or key.startswith(i + '.') for i in ignored):
      continue
    va, vb = flat_a.get(key, _ABSENT), flat_b.get(key, _ABSENT)
    if va != vb or type(va) is not type(vb):
      show = lambda v: '(absent)' if v is _ABSENT else _show(v)
      lines.append(f'{key}: {show(va)} -> {show(vb)}')
  return lines


def differences_json(a: Mapping[str, Any], b: Mapping[str, Any],
                     ignored: Sequence[str] = ()) -> Dict[str, Dict[str, Any]]:
  """differences() for JSON: {dotted key: {'a': A-value, 'b': B-value}}, a side's
  entry left out where the key is absent on that side."""
  flat_a, flat_b = flatten(dict(a)), flatten(dict(b))
  result = {}
  for line in differences(a, b, ignored):
    key = line.split(': ', 1)[0]
    result[key] = {side: flat[key] for side, flat in (('a', flat_a), ('b', flat_b))
                   if key in flat}
  return result


# ----------------------------------------------------------------------------- pairing


@dataclasses.dataclass
class Pairing:
  """Which runs of A and B are compared, and which seeds only one side has."""
  pairs: List[Tuple[int, Run, Run]]
  only_a: List[int]
  only_b: List[int]
  notes: List[str]
  settings: Tuple[str, Dict[str, Any], Dict[str, Any]]
  environments: Tuple[Dict[str, Any], Dict[str, Any]]


def _run_vs_sweep(run: Run, sweep: Sweep, run_is_a: bool) -> Pairing:
  """The run against the sweep's run of the same seed (see the module docstring)."""
  order = (lambda x, y: (x, y)) if run_is_a else (lambda x, y: (y, x))
  seed_folder = SEED_DIR.format(run.seed)
  match = sweep.runs.get(run.seed)
  if match is None:
    note = f'the sweep has no records for seed {run.seed} (the run\'s seed); nothing compared'
    only = order([run.seed], [])
    return Pairing([], only[0], only[1], [note],
                   (f'{CONFIG_FILE} vs {SWEEP_FILE} config', *order(
                       run.config, sweep.settings.get('config', {}))),
                   order(run.environment, sweep.environment))
  others = len(sweep.runs) - 1
  notes = [f'the run is compared with the sweep\'s {seed_folder}'
           + (f'; its other {plural(others, "seed")} are not compared' if others else '')]
  return Pairing([(run.seed, *order(run, match))], [], [], notes,
                 (f'{CONFIG_FILE} vs {seed_folder}/{CONFIG_FILE}',
                  *order(run.config, match.config)),
                 order(run.environment, match.environment))


def pair(a: Side, b: Side) -> Pairing:
  """Pairs the runs of A and B to compare (see the module docstring)."""
  if isinstance(a, Run) and isinstance(b, Run):
    same = a.seed == b.seed
    return Pairing([(a.seed, a, b)], [] if same else [a.seed], [] if same else [b.seed], [],
                   (CONFIG_FILE, a.config, b.config), (a.environment, b.environment))
  if isinstance(a, Sweep) and isinstance(b, Sweep):
    common = sorted(set(a.runs) & set(b.runs))
    return Pairing([(s, a.runs[s], b.runs[s]) for s in common],
                   sorted(set(a.runs) - set(b.runs)), sorted(set(b.runs) - set(a.runs)), [],
                   (SWEEP_FILE, a.settings, b.settings), (a.environment, b.environment))
  if isinstance(a, Run):
    return _run_vs_sweep(a, b, run_is_a=True)
  return _run_vs_sweep(b, a, run_is_a=False)


# ----------------------------------------------------------------------------- histories


@dataclasses.dataclass
class MetricDiff:
  """One metric column compared over every paired seed and common epoch."""
  name: str
  largest: float = 0.0
  where: Optional[Tuple[int, int]] = None  # (seed, epoch) of the largest difference
  differing: int = 0
  cells: int = 0

  def add(self, seed: int, epoch: int, text_a: str, text_b: str) -> None:
    self.cells += 1
    if text_a == text_b:
      return
    self.differing += 1
    diff = abs(float(text_a) - float(text_b))
    if self.where is None or diff > self.largest or (math.isnan(diff) and
                                                     not math.isnan(self.largest)):
      self.largest, self.where = diff, (seed, epoch)


@dataclasses.dataclass
class HistoryComparison:
  metrics: List[MetricDiff]
  epochs_compared: Dict[int, int]        # seed -> number of common epochs
  only_a: Dict[int, List[int]]           # seed -> epochs only A has
  only_b: Dict[int, List[int]]
  columns_only_a: List[str]
  columns_only_b: List[str]


def compare_histories(pairs: Sequence[Tuple[int, Run, Run]]) -> HistoryComparison:
  """Compares the metric cells, as text, of every paired run on their common epochs."""
  columns_a = dict.fromkeys(c for _, ra, _ in pairs for c in ra.history.metrics)
  columns_b = dict.fromkeys(c for _, _, rb in pairs for c in rb.history.metrics)
  metrics = [MetricDiff(c) for c in columns_a if c in columns_b]
  result = HistoryComparison(metrics, {}, {}, {}, [c for c in columns_a if c not in columns_b],
                             [c for c in columns_b if c not in columns_a])
  for seed, ra, rb in pairs:
    rows_a, rows_b = ra.history.rows, rb.history.rows
    common = sorted(set(rows_a) & set(rows_b))
    result.epochs_compared[seed] = len(common)
    if set(rows_a) - set(rows_b):
      result.only_a[seed] = sorted(set(rows_a) - set(rows_b))
    if set(rows_b) - set(rows_a):
      result.only_b[seed] = sorted(set(rows_b) - set(rows_a))
    for metric in metrics:
      if metric.name not in ra.history.columns or metric.name not in rb.history.columns:
        continue
      for epoch in common:
        metric.add(seed, epoch, rows_a[epoch][metric.name], rows_b[epoch][metric.name])
  return result


def compared_size(comparison: HistoryComparison) -> str:
  """'N seeds x M epochs' (or 'N seeds, K epochs in all' if seeds had different epochs)."""
  seeds = len(comparison.epochs_compared)
  counts = set(comparison.epochs_compared.values())
  if len(counts) == 1:
    return f'{plural(seeds, "seed")} x {plural(next(iter(counts)), "epoch")}'
  return (f'{plural(seeds, "seed")}, '
          f'{plural(sum(comparison.epochs_compared.values()), "epoch")} in all')


def _epochs_by_seed(epochs: Mapping[int, List[int]], single: bool) -> str:
  if single:
    return ranges(next(iter(epochs.values())))
  return '; '.join(f'seed {s}: {ranges(e)}' for s, e in sorted(epochs.items()))


def history_lines(comparison: HistoryComparison, pairing: Pairing,
                  single: bool) -> Tuple[List[str], List[str]]:
  """The history section of the report, and the reasons (if any) it is not identical.

  Args:
    comparison: from compare_histories.
    pairing: from pair.
    single: whether one run is compared with one run (then no seed is named).
  """
  reasons = []
  cells = sum(comparison.epochs_compared.values())
  lines = [f'history.csv: {compared_size(comparison)} compared '
           f'(timing columns *{TIMING_SUFFIX} aside)']
  if comparison.metrics and cells:
    width = max(len(m.name) for m in comparison.metrics)
    lines.append(f'  {"metric":<{width}}  {"max |A-B|":>12}  {"differing cells":>17}  at')
    for m in comparison.metrics:
      at = '' if m.where is None else (f'epoch {m.where[1]}' if single
                                       else f'seed {m.where[0]}, epoch {m.where[1]}')
      lines.append(f'  {m.name:<{width}}  {m.largest:>12.6g}  '
                   f'{f"{m.differing} of {m.cells}":>17}  {at}'.rstrip())
      if m.differing:
        reasons.append(f'{m.name} differs in {m.differing} of {m.cells} cells')
  for side, only in (('A', comparison.only_a), ('B', comparison.only_b)):
    if only:
      text = f'epochs only in {side}: {_epochs_by_seed(only, single)}'
      lines.append(text)
      reasons.append(text)
  for side, columns in (('A', comparison.columns_only_a), ('B', comparison.columns_only_b)):
    if columns:
      text = f'columns only in {side}: {", ".join(columns)}'
      lines.append(text)
      reasons.append(text)
  for side, seeds_only in (('A', pairing.only_a), ('B', pairing.only_b)):
    if seeds_only:
      reasons.append(f'seeds only in {side}: {ranges(seeds_only)}')
  if not pairing.pairs:
    reasons.append('no common seed')
  elif not cells:
    reasons.append('no common epoch')
  elif not comparison.metrics:
    reasons.append('no common metric column')
  return lines, reasons


# ----------------------------------------------------------------------------- final accuracy


def final_accuracies(side: Side) -> Tuple[List[float], List[int]]:
  """Test accuracy at the last recorded epoch of each run of a side, and those epochs."""
  runs = [side] if isinstance(side, Run) else [side.runs[s] for s in sorted(side.runs)]
  values, epochs = [], []
  for run in runs:
    if run.history.rows and 'test_accuracy' in run.history.columns:
      last = max(run.history.rows)
      values.append(float(run.history.rows[last]['test_accuracy']))
      epochs.append(last)
  return values, epochs


def _final_accuracy(run: Run) -> Optional[float]:
  if not run.history.rows or 'test_accuracy' not in run.history.columns:
    return None
  return float(run.history.rows[max(run.history.rows)]['test_accuracy'])


def _signed(value: float) -> str:
  return 'nan' if math.isnan(value) else f'{value:+.6f}'


def _p(value: float) -> str:
  return 'nan' if math.isnan(value) else f'{value:.4g}'


def test_set_size(run: Run) -> Tuple[Optional[int], str]:
  """The number of test images of a run's dataset (None if unknown) and, if unknown, why.

  The bundled MNIST (and any --data_dir copy: its checksums are verified) has 10,000;
  another dataset is loaded as the run's config says."""
  from mlp_jax import data, records  # pylint: disable=g-import-not-at-top
  try:
    config = records.load_config(run.path)
    if config.dataset == data.BUNDLED_DATASET:
      return data.CANONICAL_SHAPE['t10k-labels-idx1-ubyte'][0], ''
    return len(data.load_data(config).test_labels), ''
  except Exception as e:  # pylint: disable=broad-except  (a statement beside the report)
    return None, f'{type(e).__name__}: {e}'


def mcnemar_of_runs(run_a: Run, run_b: Run) -> Tuple[Optional[Any], str]:
  """McNemar's exact test of two runs' saved models on their test set, or (None, why not).

  Each run's params.msgpack classifies the test images of the dataset its config.json
  names (mlp_jax.data.load_data); both must have the same test set."""
  from mlp_jax import records  # pylint: disable=g-import-not-at-top
  for name, run in (('A', run_a), ('B', run_b)):
    if not os.path.isfile(os.path.join(run.path, records.PARAMS_FILE)):
      return None, f'{name} has no {records.PARAMS_FILE} (a run still training?)'
  # Imported here: jax, for two single runs only.
  from mlp_jax import data, inference, stats  # pylint: disable=g-import-not-at-top
  datasets = [data.load_data(records.load_config(run.path)) for run in (run_a, run_b)]
  if not (np.array_equal(datasets[0].test_images, datasets[1].test_images) and
          np.array_equal(datasets[0].test_labels, datasets[1].test_labels)):
    return None, 'A and B were tested on different test sets'
  images, labels = datasets[0].test_images, datasets[0].test_labels
  correct = [inference.load_trained(run.path)(images) == labels for run in (run_a, run_b)]
  return stats.mcnemar_exact(*correct), ''


def _nan_to_none(obj: Any) -> Any:
  """JSON has no NaN: NaN floats become null, tuples lists, numpy scalars Python's."""
  if isinstance(obj, dict):
    return {str(k): _nan_to_none(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_nan_to_none(v) for v in obj]
  if isinstance(obj, (np.floating, float)):
    return None if math.isnan(obj) else float(obj)
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


def statistics_lines(a: Side, b: Side, pairing: Pairing, target_difference: Optional[float],
                     report: Dict[str, Any]) -> List[str]:
  """The final test accuracy of each side and their statistical comparison (see the
  module docstring); fills `report`'s welch, paired, bootstrap, probability_of_improvement,
  mcnemar, detectable_difference, seeds_needed, final_test_accuracy and test_set_error."""
  lines = ['final test accuracy (last recorded epoch):']
  for key in ('welch', 'paired', 'bootstrap', 'probability_of_improvement', 'mcnemar',
              'detectable_difference', 'seeds_needed', 'test_set_error'):
    report[key] = None
  report['final_test_accuracy'] = {}
  samples = {}
  for name, side in (('A', a), ('B', b)):
    values, epochs = final_accuracies(side)
    samples[name] = values
    if not values:
      lines.append(f'  {name}: none recorded')
      report['final_test_accuracy'][name] = None
    elif isinstance(side, Run):
      lines.append(f'  {name}: {values[0]:.6f} (epoch {epochs[0]})')
      report['final_test_accuracy'][name] = {'n': 1, 'values': values, 'mean': values[0]}
    else:
      from mlp_jax import stats  # pylint: disable=g-import-not-at-top  (scipy: for sweeps only)
      s = stats.summarize(values)
      ends = (f'epoch {epochs[0]}' if len(set(epochs)) == 1
              else f'epochs {ranges(sorted(set(epochs)))}, seeds differ')
      lines.append(f'  {name}: {s.mean:.6f} ± {s.std:.6f} (mean ± std, n={s.n}; {ends})')
      low, high = stats.accuracy_ci(values)
      report['final_test_accuracy'][name] = {
          'n': s.n, 'seeds': sorted(side.runs), 'values': values, 'mean': s.mean, 'std': s.std,
          'iqm': stats.iqm(values), 'ci95_low': low, 'ci95_high': high,
          'ci95_method': 't interval on the logit scale'}
  sweeps = isinstance(a, Sweep) and isinstance(b, Sweep)
  if sweeps:
    lines += _sweep_statistics(samples, pairing, target_difference, report)
  elif len(pairing.pairs) == 1:
    _, run_a, run_b = pairing.pairs[0]
    result, why = mcnemar_of_runs(run_a, run_b)
    if result is None:
      lines.append(f'  McNemar\'s exact test: not run ({why})')
    else:
      report['mcnemar'] = result._asdict()
      lines.append(f'  McNemar\'s exact test on the {result.n:,} test images: A right where B '
                   f'is wrong {result.a_only}, B right where A is wrong {result.b_only}; '
                   f'p = {_p(result.p_value)} (two-sided, binomial on the '
                   f'{result.a_only + result.b_only} discordant images)')
  if target_difference is not None and report['seeds_needed'] is None:
    lines.append(f'  seeds needed to detect {target_difference:g}: unknown (it needs the spread '
                 'over seeds: two sweeps of at least 2 seeds each)')
  lines += _test_set_error_lines(a, b, samples, report)
  return lines


def _sweep_statistics(samples: Mapping[str, List[float]], pairing: Pairing,
                      target_difference: Optional[float], report: Dict[str, Any]) -> List[str]:
  """Two sweeps: Welch on all seeds; paired statistics, bootstrap and probability of
  improvement on the common seeds (unpaired when fewer than 2 seeds are common)."""
  from mlp_jax import stats  # pylint: disable=g-import-not-at-top
  lines = []
  sample_a, sample_b = samples['A'], samples['B']
  if min(len(sample_a), len(sample_b)) < 2:
    lines.append('  A - B: Welch\'s t-test needs at least 2 seeds per sweep')
    return lines
  w = stats.welch(sample_a, sample_b)
  df = stats.welch_df(sample_a, sample_b)
  report['welch'] = {**w._asdict(), 'df': df, 'n_a': len(sample_a), 'n_b': len(sample_b)}
  lines.append(f'  A - B: {w.difference:+.6f}, 95% CI [{w.ci95_low:+.6f}, {w.ci95_high:+.6f}]'
               f' (Welch, df {df:.1f}); Welch\'s t-test p = {w.p_value:.6g}')
  fa, fb = report['final_test_accuracy']['A'], report['final_test_accuracy']['B']
  lines.append(f'  IQM: A {fa["iqm"]:.6f}, B {fb["iqm"]:.6f}; 95% CI of each mean (t on the '
               f'logit scale, inside [0, 1]): A [{fa["ci95_low"]:.6f}, {fa["ci95_high"]:.6f}], '
               f'B [{fb["ci95_low"]:.6f}, {fb["ci95_high"]:.6f}]')
  common = [(seed, _final_accuracy(ra), _final_accuracy(rb)) for seed, ra, rb in pairing.pairs]
  common = [(s, x, y) for s, x, y in common if x is not None and y is not None]
  matched = len(common) >= 2
  if matched:
    seeds = [s for s, _, _ in common]
    x = np.array([v for _, v, _ in common])
    y = np.array([v for _, _, v in common])
    p = stats.paired(x, y)
    report['paired'] = {**p._asdict(), 'seeds': seeds,
                        'differences': list(np.round(x - y, 12))}
    lines.append(f'  paired over the {len(seeds)} common seeds ({ranges(seeds)}; seed k of A '
                 'against seed k of B):')
    if len(seeds) <= 20:
      lines.append('    A - B per seed: ' + ', '.join(f'{s}: {d:+.4f}' for s, d in
                                                     zip(seeds, np.round(x - y, 12))))
    lines.append(f'    mean {_signed(p.difference)}, 95% CI [{_signed(p.ci95_low)}, '
                 f'{_signed(p.ci95_high)}] (paired t, df {p.n - 1}); paired t-test '
                 f'p = {_p(p.p_value)}; Wilcoxon signed-rank p = {_p(p.wilcoxon_p_value)}; '
                 f'correlation of A and B r = {_p(p.correlation)}')
  else:
    x, y = np.array(sample_a), np.array(sample_b)
    lines.append('  unpaired (fewer than 2 common seeds): Welch above, and:')
  boot = stats.bootstrap_difference(x, y, paired=matched)
  report['bootstrap'] = boot._asdict()
  what = 'of the seeds' if matched else 'of each side'
  lines.append(f'    bootstrap 95% CI of A - B [{_signed(boot.ci95_low)}, '
               f'{_signed(boot.ci95_high)}] ({boot.method}, {boot.resamples} resamples {what}, '
               f'RNG seed {boot.seed})')
  poi = stats.probability_of_improvement(x, y, paired=matched)
  report['probability_of_improvement'] = poi._asdict()
  lines.append(f'    P(A > B) = {poi.value:.3f}, 95% CI [{poi.ci95_low:.3f}, {poi.ci95_high:.3f}]'
               f' (probability of improvement over all pairs of runs; bootstrap '
               f'{what}, RNG seed {poi.seed})')
  if matched:
    n, std, test = len(x), float(np.std(x - y, ddof=1)), 'paired t'
    spread = f'std of the per-seed differences {std:.6f}'
  else:
    n = min(len(x), len(y))
    std = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)
    test, spread = 'two-sample t', f'pooled std {std:.6f}, {n} seeds per side'
  detectable = stats.detectable_difference(n, std, paired=matched)
  report['detectable_difference'] = {'difference': detectable, 'n': n, 'std': std,
                                     'paired': matched, 'power': stats.POWER,
                                     'alpha': stats.ALPHA}
  lines.append(f'  detectable difference: {detectable:.6f} with {n} seeds (80% power, '
               f'alpha 0.05, {test}; {spread})')
  if target_difference is not None:
    needed = stats.seeds_needed(target_difference, std, paired=matched)
    report['seeds_needed'] = {'target_difference': target_difference, 'seeds': needed,
                              'std': std, 'paired': matched, 'power': stats.POWER,
                              'alpha': stats.ALPHA}
    lines.append(f'  seeds needed to detect {target_difference:g}: {needed}'
                 f'{" per side" if not matched else ""} (80% power, alpha 0.05, {test}, '
                 f'the same std)')
  return lines


def _test_set_error_lines(a: Side, b: Side, samples: Mapping[str, List[float]],
                          report: Dict[str, Any]) -> List[str]:
  """The test set's own sampling error at the accuracy measured (see the module docstring)."""
  values = samples['A'] + samples['B']
  runs = [run for side in (a, b)
          for run in ([side] if isinstance(side, Run) else side.runs.values())]
  first = runs[0] if runs else None
  if not values or first is None:
    return []
  from mlp_jax import stats  # pylint: disable=g-import-not-at-top
  n_test, why = test_set_size(first)
  if n_test is None:
    return [f'  test-set sampling error: unknown (the test set\'s size: {why})']
  accuracy = float(np.mean(values))
  error = stats.test_set_error(accuracy, n_test)
  report['test_set_error'] = {'half_width': error, 'accuracy': accuracy, 'n_test': n_test}
  beside = ('; seed CIs above hold this test set fixed and leave it out'
            if isinstance(a, Sweep) and isinstance(b, Sweep) else '')
  return [f'  test-set sampling error: ±{error:.6f} (95% binomial interval of an accuracy of '
          f'{accuracy:.4f} on {n_test:,} test images{beside})']


# ----------------------------------------------------------------------------- picture


def side_curves(side: Side) -> Optional[Dict[str, np.ndarray]]:
  """{'epoch': int[epochs], metric: float[runs, epochs]} for the plotted metrics a side has,
  over the epochs all its runs have; None if there is nothing to draw."""
  runs = [side] if isinstance(side, Run) else [side.runs[s] for s in sorted(side.runs)]
  if not runs:
    return None
  epochs = sorted(set.intersection(*(set(r.history.rows) for r in runs)))
  if not epochs:
    return None
  curves = {'epoch': np.array(epochs)}
  for metric, _, _ in PLOTTED:
    if all(metric in r.history.columns for r in runs):
      curves[metric] = np.array([[float(r.history.rows[e][metric]) for e in epochs]
                                 for r in runs])
  return curves


# What --output may end in: the formats matplotlib's Agg, PDF, PS and SVG backends write.
OUTPUT_FORMATS = ('.png', '.pdf', '.svg', '.svgz', '.eps', '.ps', '.jpg', '.jpeg', '.tif',
                  '.tiff', '.webp')
# The picture's name in a directory given as --output.
OUTPUT_NAME = 'compare.png'


def output_path(value: str) -> Optional[str]:
  """--output made concrete before anything is read or written: the file the picture
  goes to (a directory's compare.png), or None for no picture.

  Raises:
    UsageError: an extension matplotlib does not write, or a directory that does
      not exist to hold the file (one line naming --output).
  """
  if not value:
    return None
  if os.path.isdir(value) or value.endswith(os.sep):
    if not os.path.isdir(value):
      raise UsageError(f'--output={value}: no such directory')
    return os.path.join(value, OUTPUT_NAME)
  extension = os.path.splitext(value)[1].lower()
  if extension not in OUTPUT_FORMATS:
    raise UsageError(f'--output={value}: expected a file ending in '
                     f'{", ".join(OUTPUT_FORMATS[:3])} (or {", ".join(OUTPUT_FORMATS[3:])}) '
                     f'or an existing directory, got {extension or "no extension"!r}')
  parent = os.path.dirname(os.path.abspath(value))
  if not os.path.isdir(parent):
    raise UsageError(f'--output={value}: its directory {parent} does not exist')
  return value


def write_plot(a: Side, b: Side, path: str) -> None:
  """Draws both sides' curves into one PNG (see the module docstring)."""
  from mlp_jax import plots, stats  # pylint: disable=g-import-not-at-top
  fig, acc_ax, loss_ax = plots.axes_pair(
      f'A: {_short(a)}   vs   B: {_short(b)}')
  lowest = []
  for name, side, color in (('A', a, 'tab:blue'), ('B', b, 'tab:red')):
    curves = side_curves(side)
    if curves is None:
      continue
    epochs = curves['epoch']
    marker = 'o' if len(epochs) <= 20 else None  # a curve of one epoch is a single point
    for metric, axis, style in PLOTTED:
      if metric not in curves:
        continue
      ax = (acc_ax, loss_ax)[axis]
      values = curves[metric]
      split = metric.split('_')[0]
      if values.shape[0] == 1:
        ax.plot(epochs, values[0], color=color, linestyle=style, marker=marker, markersize=4,
                label=f'{name} {split}')
        continue
      mean, low, high = stats.mean_ci(values)
      ax.plot(epochs, mean, color=color, linestyle=style, marker=marker, markersize=4,
              label=f'{name} {split} mean of {values.shape[0]}')
      ax.fill_between(epochs, low, high, color=color, alpha=0.2)
      if axis == 0:
        lowest.append(np.min(low))
    lowest += [np.min(curves[m.name]) for m in metric_spec.METRICS
               if m.kind == metric_spec.ACCURACY and m.name in curves]
  if lowest:
    acc_ax.set_ylim(max(0.0, float(np.nanmin(lowest)) - 0.01), 1.0005)
  for ax in (acc_ax, loss_ax):
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.tight_layout()
  try:
    fig.savefig(path, dpi=110)
  except OSError as e:
    raise UsageError(f'--output={path}: cannot write ({e.strerror or e})') from None


def _short(side: Side) -> str:
  name = os.path.basename(os.path.normpath(side.path))
  if isinstance(side, Run):
    return f'run {name} (seed {side.seed})'
  return f'sweep {name} ({plural(len(side.runs), "seed")})'


# Settings and environment facts that change a run's bits without changing what it
# computes (README, Reproducibility): (dotted key of config.json or of sweep.json's
# `config`, or of environment.json; what to call it).
NUMERICS_SETTINGS = (('vmap_width', 'vmap width'), ('matmul_precision', 'matmul precision'))
NUMERICS_ENVIRONMENT = (('backend', 'backend'), ('device_kind', 'device kind'),
                        ('platform.cpu', 'CPU'), ('platform.cpu_id', 'CPU id'),
                        ('platform.cpu_isa', 'CPU vector extensions'),
                        ('versions.jax', 'jax version'),
                        ('versions.jaxlib', 'jaxlib version'), ('versions.flax', 'flax version'),
                        ('versions.optax', 'optax version'),
                        ('compiler_options', 'compiler options'),
                        ('xla_flags', 'XLA_FLAGS'),
                        ('intra_op_threads.pool', 'XLA:CPU thread pool'),
                        ('jax_config.jax_default_matmul_precision', 'JAX matmul precision'))


def likely_causes(settings: Tuple[Mapping[str, Any], Mapping[str, Any]],
                  environments: Tuple[Mapping[str, Any], Mapping[str, Any]]) -> List[str]:
  """The differences between two sides that explain differing bits, e.g.
  'vmap width 1 -> 4'. A sweep's settings are read from its `config`."""
  def flat(side_settings):
    return flatten(dict(side_settings.get('config', side_settings)))
  causes = []
  for (a, b), keys in (((flat(settings[0]), flat(settings[1])), NUMERICS_SETTINGS),
                       ((flatten(dict(environments[0])), flatten(dict(environments[1]))),
                        NUMERICS_ENVIRONMENT)):
    for key, name in keys:
      value_a, value_b = (a.get(key, _ABSENT), b.get(key, _ABSENT))
      if value_a != value_b:
        show = lambda v: '(absent)' if v is _ABSENT else _show(v)
        causes.append(f'{name} {show(value_a)} -> {show(value_b)}')
  return causes


# ----------------------------------------------------------------------------- main


def compare(a: Side, b: Side, target_difference: Optional[float] = None,
            report: Optional[Dict[str, Any]] = None) -> Tuple[List[str], List[str], str]:
  """The report (lines), the reasons A and B are not identical (empty if they are), and
  the size of what was compared ('N seeds x M epochs'). `report`, if given, is filled with
  the report's machine-readable sections (see --json)."""
  report = {} if report is None else report
  pairing = pair(a, b)
  lines = [f'A: {describe(a)}', f'B: {describe(b)}'] + pairing.notes
  source, settings_a, settings_b = pairing.settings
  settings = differences(settings_a, settings_b)
  lines.append(f'settings ({source}): ' + ('differ' if settings else 'same'))
  lines += [f'  {line}' for line in settings]
  environment = differences(*pairing.environments, ignored=IGNORED_ENVIRONMENT)
  lines.append(f'environment ({ENVIRONMENT_FILE}; not compared: '
               f'{", ".join(IGNORED_ENVIRONMENT)}): ' + ('differs' if environment else 'same'))
  lines += [f'  {line}' for line in environment]
  report['settings'] = {'source': source, 'differences': differences_json(settings_a,
                                                                            settings_b)}
  report['environment'] = {'not_compared': list(IGNORED_ENVIRONMENT),
                           'differences': differences_json(*pairing.environments,
                                                           ignored=IGNORED_ENVIRONMENT)}
  comparison = compare_histories(pairing.pairs)
  single = isinstance(a, Run) and isinstance(b, Run)
  history, reasons = history_lines(comparison, pairing, single)
  report['history'] = {
      'compared': compared_size(comparison),
      'metrics': {m.name: {'max_abs_difference': m.largest, 'differing_cells': m.differing,
                           'cells': m.cells,
                           'at': None if m.where is None else {'seed': m.where[0],
                                                               'epoch': m.where[1]}}
                  for m in comparison.metrics}}
  incomplete = incomplete_records(pairing.pairs)
  reasons += incomplete
  lines += history + [f'records: {r}' for r in incomplete]
  lines += statistics_lines(a, b, pairing, target_difference, report)
  causes = likely_causes(pairing.settings[1:], pairing.environments) if reasons else []
  if causes:
    lines.append(f'likely reason for differing bits: {"; ".join(causes)}')
  return lines, reasons, compared_size(comparison)


def _missing_epochs(run: Run) -> Optional[str]:
  """'1 of 3 epochs recorded' if `run` has not recorded every epoch its config asks
  for (still training, or stopped), else None."""
  epochs = run.config.get('epochs')
  if not isinstance(epochs, int) or isinstance(epochs, bool):
    return None
  recorded = len(set(run.history.rows) & set(range(1, epochs + 1)))
  return None if recorded == epochs else f'{recorded} of {epochs} epochs recorded'


def incomplete_records(pairs: Sequence[Tuple[int, Run, Run]]) -> List[str]:
  """A reason per side with a compared run that is not complete: identity is
  claimed only of finished runs ('B incomplete: seed_3 1 of 3 epochs recorded')."""
  reasons = []
  for name, index in (('A', 1), ('B', 2)):
    found = [(pair[index], why) for pair in pairs
             if (why := _missing_epochs(pair[index])) is not None]
    if found:
      run, why = found[0]
      more = f' and {plural(len(found) - 1, "more run")}' if len(found) > 1 else ''
      reasons.append(f'{name} incomplete: {run.path} has {why}{more}')
  return reasons


def write_report(path: str, report: Mapping[str, Any]) -> None:
  """The report as JSON (NaN as null), written atomically."""
  try:
    write_json(path, _nan_to_none(dict(report)))
  except OSError as e:
    raise UsageError(f'--json={path}: cannot write ({e.strerror or e})') from None


def main(argv: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> None:
  """The command: argv[1:] the two directories, the flags parsed into `flag_values`."""
  paths = argv[1:]
  if len(paths) != 2:
    raise UsageError('expected two directories, each a run or a sweep: python -m '
                     'mlp_jax.compare A B [--require_identical] [--output=compare.png]')
  plot = output_path(flag_values.output)
  target = flag_values.target_difference
  if target is not None and not target > 0:
    raise UsageError(f'--target_difference={target:g}: expected a difference of accuracy '
                     '> 0 (a fraction, e.g. 0.002 for 0.2 points)')
  if flag_values.json and not os.path.isdir(os.path.dirname(os.path.abspath(flag_values.json))):
    raise UsageError(f'--json={flag_values.json}: its directory does not exist')
  a, b = load_side(paths[0]), load_side(paths[1])
  report = {'a': a.path, 'b': b.path}
  lines, reasons, size = compare(a, b, target, report)
  for line in lines:
    print(line)
  if plot:
    write_plot(a, b, plot)
    print(f'plot: {plot}')
  if reasons:
    verdict = f'DIFFERENT ({"; ".join(reasons)})'
  else:
    verdict = f'IDENTICAL (bit for bit: {size}, timing columns aside)'
  if flag_values.json:
    write_report(flag_values.json, {**report, 'verdict': verdict, 'identical': not reasons,
                                    'reasons': reasons})
    print(f'json: {flag_values.json}')
  print(f'verdict: {verdict}')
  sys.stdout.flush()
  if reasons and flag_values.require_identical:
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
