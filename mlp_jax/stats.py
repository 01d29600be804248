"""Statistics of many seeds: summaries, 95% confidence intervals, Welch's t-test.

Pure numpy/scipy. Conventions used throughout:

  * std is the sample standard deviation (ddof=1).
  * The 95% confidence interval of a mean is mean ± t(0.975, n-1) * std / sqrt(n),
    Student's t with n-1 degrees of freedom.
  * With a single value (n == 1) there is no spread to estimate: std and both
    CI bounds are NaN (never an error, never a warning).
  * Rows meant for CSV files hold strings: integers as str(), floats as
    repr(float(x)), the shortest text that reads back to the same float64.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, NamedTuple, Sequence, Tuple

import numpy as np
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95

SUMMARY_COLUMNS = ('epoch', 'metric', 'n', 'mean', 'std', 'min', 'max', 'ci95_low', 'ci95_high')
FINAL_COLUMNS = ('seed', 'final_test_accuracy', 'best_test_accuracy', 'best_epoch')


class Summary(NamedTuple):
  """Summary of a sample of n values (see the module docstring for definitions)."""
  n: int
  mean: float
  std: float
  min: float
  max: float
  ci95_low: float
  ci95_high: float


class Welch(NamedTuple):
  """Difference of two means, its 95% CI (Welch–Satterthwaite) and the t-test p-value."""
  difference: float
  ci95_low: float
  ci95_high: float
  p_value: float


def _t_quantile(df):
  """t(0.975, df): the two-sided 95% quantile of Student's t; df scalar or array."""
  return _scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, df)


def _sample(values, name: str = 'values') -> np.ndarray:
  """values -> float64[n], n >= 1; raises ValueError for another shape or no values."""
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 1 or array.size == 0:
    raise ValueError(f'{name} must be a non-empty 1-D sequence, got shape {array.shape}')
  return array


def summarize(values: Sequence[float]) -> Summary:
  """n, mean, sample std, min, max and the 95% t-interval of the mean.

  Args:
    values: float[n], n >= 1.

  Returns:
    A Summary of Python floats (n an int). For n == 1, std, ci95_low and
    ci95_high are NaN.

  Raises:
    ValueError: values is empty or not 1-D.
  """
  x = _sample(values)
  n = x.size
  mean = float(np.mean(x))
  if n == 1:
    std = low = high = math.nan
  else:
    std = float(np.std(x, ddof=1))
    half = float(_t_quantile(n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
  return Summary(n=n, mean=mean, std=std, min=float(np.min(x)), max=float(np.max(x)),
                 ci95_low=low, ci95_high=high)


def mean_ci(values) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-epoch mean of many runs and its 95% t-interval.

  Args:
    values: float[runs, epochs], runs >= 1.

  Returns:
    (mean, ci_low, ci_high), each float64[epochs]. With one run the bounds are
    all NaN (matplotlib's fill_between then draws no band).

  Raises:
    ValueError: values is not 2-D or has no runs.
  """
  x = np.asarray(values, dtype=np.float64)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f'values must be float[runs, epochs] with runs >= 1, got shape {x.shape}')
  runs = x.shape[0]
  mean = np.mean(x, axis=0)
  if runs == 1:
    nan = np.full_like(mean, np.nan)
    return mean, nan, nan.copy()
  half = _t_quantile(runs - 1) * np.std(x, axis=0, ddof=1) / math.sqrt(runs)
  return mean, mean - half, mean + half


def welch_df(a: Sequence[float], b: Sequence[float]) -> float:
  """Welch–Satterthwaite degrees of freedom of mean(a) - mean(b).

  df = (va/na + vb/nb)**2 / ((va/na)**2/(na-1) + (vb/nb)**2/(nb-1)), with v the
  sample variances. NaN when both samples have zero variance.

  Args:
    a: float[na], na >= 2.
    b: float[nb], nb >= 2.
  """
  x, y = _two_samples(a, b)
  qa, qb = np.var(x, ddof=1) / x.size, np.var(y, ddof=1) / y.size
  denominator = qa**2 / (x.size - 1) + qb**2 / (y.size - 1)
  return float((qa + qb)**2 / denominator) if denominator > 0 else math.nan


def _two_samples(a, b) -> Tuple[np.ndarray, np.ndarray]:
  x, y = _sample(a, 'a'), _sample(b, 'b')
  if x.size < 2 or y.size < 2:
    raise ValueError(f'Welch\'s test needs at least 2 values per sample, got {x.size} and {y.size}')
  return x, y


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
  """Welch's comparison of two means (unequal variances).

  Args:
    a: float[na], na >= 2.
    b: float[nb], nb >= 2.

  Returns:
    Welch(difference, ci95_low, ci95_high, p_value): difference = mean(a) -
    mean(b); the CI is difference ± t(0.975, df) * sqrt(va/na + vb/nb) with the
    Welch–Satterthwaite df (welch_df); the p-value is two-sided, from
    scipy.stats.ttest_ind(a, b, equal_var=False). If both samples are constant
    the standard error is 0: the CI is [difference, difference] and the p-value
    is scipy's (NaN for equal constants, 0 for different ones).

  Raises:
    ValueError: a sample has fewer than 2 values or is not 1-D.
  """
  x, y = _two_samples(a, b)
  difference = float(np.mean(x) - np.mean(y))
  se = math.sqrt(np.var(x, ddof=1) / x.size + np.var(y, ddof=1) / y.size)
  half = float(_t_quantile(welch_df(x, y))) * se if se > 0 else 0.0
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # zero-variance samples
    p_value = float(_scipy_stats.ttest_ind(x, y, equal_var=False).pvalue)
  return Welch(difference, difference - half, difference + half, p_value)


def _text(value: float) -> str:
  return repr(float(value))


def summary_rows(curves: Mapping[str, np.ndarray]) -> List[Dict[str, str]]:
  """Rows of summary.csv: one per epoch and metric, epoch by epoch.

  Args:
    curves: 'epoch' -> int[epochs], and metric name -> float[runs, epochs] for
      each metric (in the order the rows should list them).

  Returns:
    A list of dicts keyed by SUMMARY_COLUMNS, all values strings (floats as
    repr(); 'nan' for the std and CI of a single run).
  """
  epochs = np.asarray(curves['epoch'])
  metrics = {name: np.asarray(v, dtype=np.float64) for name, v in curves.items()
             if name != 'epoch'}
  for name, values in metrics.items():
    if values.ndim != 2 or values.shape[1] != epochs.shape[0]:
      raise ValueError(f'{name}: expected float[runs, {epochs.shape[0]}], got {values.shape}')
  rows = []
  for i, epoch in enumerate(epochs):
    for name, values in metrics.items():
      s = summarize(values[:, i])
      rows.append({'epoch': str(int(epoch)), 'metric': name, 'n': str(s.n),
                   **{field: _text(getattr(s, field)) for field in SUMMARY_COLUMNS[3:]}})
  return rows


def final_rows(seeds: Sequence[int], test_accuracy) -> List[Dict[str, str]]:
  """Rows of final.csv: each seed's last and best test accuracy.

  Args:
    seeds: int[runs], the seed of each row of test_accuracy.
    test_accuracy: float[runs, epochs], epochs >= 1.

  Returns:
    A list of dicts keyed by FINAL_COLUMNS, all values strings. best_epoch is
    1-based; on a tie the earliest epoch wins.
  """
  values = np.asarray(test_accuracy, dtype=np.float64)
  if values.ndim != 2 or values.shape[0] != len(seeds) or values.shape[1] == 0:
    raise ValueError(f'test_accuracy must be float[{len(seeds)}, epochs >= 1], '
                     f'got {values.shape}')
  rows = []
  for seed, run in zip(seeds, values):
    best = int(np.argmax(run))  # the first maximum: the earliest epoch on a tie
    rows.append({'seed': str(int(seed)), 'final_test_accuracy': _text(run[-1]),
                 'best_test_accuracy': _text(run[best]), 'best_epoch': str(best + 1)})
  return rows


POINT_COLUMNS = ('rank', 'n', 'mean', 'std', 'ci95_low', 'ci95_high', 'ensemble_test_accuracy',
                 'difference_to_best', 'welch_p_value')


def point_rows(settings: Sequence[Mapping[str, str]],
               final_test_accuracy: Sequence[Sequence[float]],
               ensemble: Sequence[str]) -> List[Dict[str, str]]:
  """Rows of points.csv: one per grid point, ranked by mean final test accuracy.

  Args:
    settings: each point's swept settings as {flag: text} (empty without a grid).
    final_test_accuracy: each point's final test accuracy, one value per seed.
    ensemble: each point's ensemble test accuracy, as text.

  Returns:
    Dicts keyed by the settings and POINT_COLUMNS, best first (rank 1; ties keep
    the grid's order). difference_to_best and welch_p_value compare each point
    with the best (Welch's t-test); empty on the best's own row.
  """
  summaries = [summarize(values) for values in final_test_accuracy]
  order = sorted(range(len(summaries)), key=lambda i: -summaries[i].mean)
  best = order[0]
  rows = []
  for rank, i in enumerate(order, start=1):
    s = summaries[i]
    row = {**settings[i], 'rank': str(rank), 'n': str(s.n),
           **{field: _text(getattr(s, field)) for field in ('mean', 'std', 'ci95_low',
                                                            'ci95_high')},
           'ensemble_test_accuracy': ensemble[i], 'difference_to_best': '',
           'welch_p_value': ''}
    if i != best:
      testable = min(s.n, summaries[best].n) > 1  # else no variance to test with
      row['difference_to_best'] = _text(s.mean - summaries[best].mean)
      row['welch_p_value'] = _text(welch(final_test_accuracy[i], final_test_accuracy[best])
                                   .p_value if testable else math.nan)
    rows.append(row)
  return rows
