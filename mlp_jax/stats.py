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
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import optimize as _scipy_optimize
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95

SUMMARY_COLUMNS = ('epoch', 'metric', 'n', 'mean', 'std', 'min', 'max', 'ci95_low', 'ci95_high')


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


def mean_ci(values, accuracy: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-epoch mean of many runs and its 95% interval.

  Args:
    values: float[runs, epochs], runs >= 1.
    accuracy: the values are accuracies in [0, 1]: each epoch's interval is
      accuracy_ci's (the t interval on the logit scale), so it stays inside [0, 1];
      otherwise the plain t interval.

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
  if accuracy:
    bounds = np.array([accuracy_ci(x[:, i]) for i in range(x.shape[1])]).reshape(-1, 2)
    return mean, bounds[:, 0], bounds[:, 1]
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


# ----------------------------------------------------------------------------- paired designs


class Paired(NamedTuple):
  """Seed-matched comparison of a and b (a[k] and b[k] share seed k): see paired()."""
  n: int
  difference: float
  ci95_low: float
  ci95_high: float
  p_value: float
  wilcoxon_p_value: float
  correlation: float


def _pair(a, b) -> Tuple[np.ndarray, np.ndarray]:
  x, y = _sample(a, 'a'), _sample(b, 'b')
  if x.size != y.size:
    raise ValueError(f'paired samples must have the same length, got {x.size} and {y.size}')
  return x, y


def _differences(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  # Accuracies are multiples of 1/n_test: rounding away float noise (~1e-16) keeps equal
  # differences equal, so the signed-rank test sees their ties and zeros.
  return np.round(x - y, 12)


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
  """Paired comparison of two seed-matched samples.

  Args:
    a: float[n], a[k] the result of seed k on side A.
    b: float[n], b[k] the result of the same seed on side B.

  Returns:
    Paired(n, difference, ci95_low, ci95_high, p_value, wilcoxon_p_value, correlation):
    difference = mean(a - b); its 95% CI is difference ± t(0.975, n-1) * std(a - b) /
    sqrt(n) (the paired t interval); p_value is scipy.stats.ttest_rel(a, b)'s two-sided
    p-value; wilcoxon_p_value is scipy.stats.wilcoxon's two-sided signed-rank p-value of
    the differences (rounded to 12 decimals, zeros dropped: scipy's defaults; NaN when
    n < 2 or every difference is zero); correlation is Pearson's r of a and b (NaN when
    a side is constant or n < 2). With n < 2 the CI and p-value are NaN; with constant
    non-zero differences the CI has zero width and p is 0.

  Raises:
    ValueError: a or b empty or not 1-D, or of different lengths.
  """
  x, y = _pair(a, b)
  d = _differences(x, y)
  n = d.size
  difference = float(np.mean(d))
  if n < 2:
    return Paired(n, difference, math.nan, math.nan, math.nan, math.nan, math.nan)
  se = float(np.std(d, ddof=1)) / math.sqrt(n)
  half = float(_t_quantile(n - 1)) * se
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # constant differences or sides
    p_value = float(_scipy_stats.ttest_rel(x, y).pvalue)
    wilcoxon_p = (math.nan if not np.any(d) else
                  float(_scipy_stats.wilcoxon(d).pvalue))
    constant = np.ptp(x) == 0 or np.ptp(y) == 0
    correlation = math.nan if constant else float(np.corrcoef(x, y)[0, 1])
  return Paired(n, difference, difference - half, difference + half, p_value, wilcoxon_p,
                correlation)


# ----------------------------------------------------------------------------- bootstrap


BOOTSTRAP_METHOD = 'percentile'
# Resamples drawn at once: bounds the index array at ~64 MiB for long samples.
_BOOTSTRAP_CELLS = 8_000_000


class Bootstrap(NamedTuple):
  """Bootstrap 95% CI of mean(a) - mean(b): see bootstrap_difference()."""
  difference: float
  ci95_low: float
  ci95_high: float
  resamples: int
  seed: int
  method: str
  paired: bool


def _resample_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
  """How often each of n values is drawn in each resample: int64[resamples, n]."""
  counts = np.empty((resamples, n), dtype=np.int64)
  step = max(1, _BOOTSTRAP_CELLS // n)
  for start in range(0, resamples, step):
    stop = min(resamples, start + step)
    index = rng.integers(0, n, size=(stop - start, n))
    flat = (np.arange(stop - start)[:, None] * n + index).ravel()
    counts[start:stop] = np.bincount(flat, minlength=(stop - start) * n).reshape(-1, n)
  return counts


def _check_resamples(resamples: int) -> None:
  if resamples < 1:
    raise ValueError(f'resamples must be >= 1, got {resamples}')


def bootstrap_difference(a: Sequence[float], b: Sequence[float], paired: bool,
                         resamples: int = 10_000, seed: int = 0) -> Bootstrap:
  """Percentile bootstrap 95% CI of mean(a) - mean(b).

  Paired (a[k], b[k] share seed k): the seeds are resampled, the same draw for both
  sides, i.e. the differences a - b are resampled. Unpaired: a and b are resampled
  independently. The CI is the 2.5th and 97.5th percentiles (numpy's linear
  interpolation) of the resampled differences of means. The generator is
  numpy.random.default_rng(seed), so the same inputs and seed give the same CI.

  Args:
    a: float[na].
    b: float[nb] (nb == na when paired).
    paired: whether a and b are seed-matched.
    resamples: number of bootstrap resamples (>= 1; 10,000 by default).
    seed: the generator's seed, recorded in the result.

  Returns:
    Bootstrap(difference, ci95_low, ci95_high, resamples, seed, method='percentile',
    paired). With fewer than 2 values on a side the CI is NaN (one value has no spread
    to resample).

  Raises:
    ValueError: empty or non-1-D samples, different lengths when paired, resamples < 1.
  """
  _check_resamples(resamples)
  x, y = _pair(a, b) if paired else (_sample(a, 'a'), _sample(b, 'b'))
  difference = float(np.mean(x) - np.mean(y))
  if min(x.size, y.size) < 2:
    return Bootstrap(difference, math.nan, math.nan, resamples, seed, BOOTSTRAP_METHOD, paired)
  rng = np.random.default_rng(seed)
  if paired:
    d = x - y
    means = _resample_counts(rng, d.size, resamples) @ d / d.size
  else:
    means = (_resample_counts(rng, x.size, resamples) @ x / x.size -
             _resample_counts(rng, y.size, resamples) @ y / y.size)
  low, high = np.percentile(means, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
  return Bootstrap(difference, float(low), float(high), resamples, seed, BOOTSTRAP_METHOD,
                   paired)


class PoI(NamedTuple):
  """Probability of improvement P(A > B) and its bootstrap 95% CI."""
  value: float
  ci95_low: float
  ci95_high: float
  resamples: int
  seed: int
  paired: bool


def _wins(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """float64[nx, ny]: 1 where x[i] > y[j], 1/2 where equal, 0 where smaller."""
  return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])


def probability_of_improvement(a: Sequence[float], b: Sequence[float], paired: bool,
                               resamples: int = 10_000, seed: int = 0) -> PoI:
  """rliable's probability of improvement of A over B, with a percentile bootstrap CI.

  value = (1 / (na nb)) sum_i sum_j [a_i > b_j] + 1/2 [a_i == b_j]: the chance that a
  run of A, drawn at random, beats a run of B drawn at random (the Mann-Whitney U
  statistic over na nb; Agarwal et al. 2021). The value compares every run with every
  run whether or not the seeds match; `paired` decides the bootstrap: seed-matched
  samples are resampled by seed (one draw for both sides), others independently.

  Args:
    a: float[na].
    b: float[nb] (nb == na when paired).
    paired: whether a and b are seed-matched.
    resamples: bootstrap resamples (>= 1).
    seed: numpy.random.default_rng's seed, recorded in the result.

  Returns:
    PoI(value, ci95_low, ci95_high, resamples, seed, paired); the CI is NaN with fewer
    than 2 values on a side.

  Raises:
    ValueError: as bootstrap_difference.
  """
  _check_resamples(resamples)
  x, y = _pair(a, b) if paired else (_sample(a, 'a'), _sample(b, 'b'))
  wins = _wins(x, y)
  value = float(np.mean(wins))
  if min(x.size, y.size) < 2:
    return PoI(value, math.nan, math.nan, resamples, seed, paired)
  rng = np.random.default_rng(seed)
  counts_x = _resample_counts(rng, x.size, resamples)
  counts_y = counts_x if paired else _resample_counts(rng, y.size, resamples)
  # A resample's mean of wins over its pairs: counts_x^T wins counts_y / (nx ny).
  values = np.sum((counts_x @ wins) * counts_y, axis=1) / (x.size * y.size)
  low, high = np.percentile(values, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
  return PoI(value, float(low), float(high), resamples, seed, paired)


def iqm(values: Sequence[float]) -> float:
  """Interquartile mean: the mean of the middle half, scipy.stats.trim_mean(values, 0.25)
  (floor(n/4) values cut from each end, as rliable does). values: float[n], n >= 1."""
  return float(_scipy_stats.trim_mean(_sample(values), 0.25))


# Accuracies of exactly 0 or 1 have an infinite logit: they are moved this far inside.
_LOGIT_EPSILON = 1e-6


def accuracy_ci(values: Sequence[float]) -> Tuple[float, float]:
  """95% CI of the mean of accuracies, inside [0, 1]: the t interval on the logit scale.

  The t interval mean ± t(0.975, n-1) std / sqrt(n) is computed on logit(values) =
  log(v / (1 - v)) and its ends mapped back with the logistic function, so they lie in
  (0, 1) however few the seeds (a plain t interval on two seeds can pass 1.0). Values of
  exactly 0 or 1 are clipped to [1e-6, 1 - 1e-6] first. On values close together it
  agrees with the plain t interval to first order.

  Args:
    values: float[n] accuracies in [0, 1].

  Returns:
    (low, high); both NaN when n == 1. Constant values give (value, value).

  Raises:
    ValueError: empty, non-1-D, or values outside [0, 1].
  """
  x = _sample(values)
  if np.any((x < 0) | (x > 1)):
    raise ValueError(f'accuracies must lie in [0, 1], got {x.min()}..{x.max()}')
  if x.size == 1:
    return math.nan, math.nan
  if np.ptp(x) == 0:
    return float(x[0]), float(x[0])
  clipped = np.clip(x, _LOGIT_EPSILON, 1 - _LOGIT_EPSILON)
  logits = np.log(clipped) - np.log1p(-clipped)
  s = summarize(logits)
  low, high = _scipy_stats.logistic.cdf([s.ci95_low, s.ci95_high])
  return float(low), float(high)


# ----------------------------------------------------------------------------- multiplicity


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm–Bonferroni adjusted p-values.

  With the m non-NaN p-values sorted, p(1) <= ... <= p(m), the adjusted value of p(i)
  is max_{j <= i} min(1, (m - j + 1) p(j)); rejecting where the adjusted value is
  <= alpha controls the family-wise error rate at alpha. NaN entries stay NaN and are
  not counted in m.

  Args:
    p_values: float[k].

  Returns:
    float64[k], in the input's order.
  """
  p = np.asarray(p_values, dtype=np.float64).reshape(-1)
  adjusted = np.full_like(p, np.nan)
  valid = np.flatnonzero(~np.isnan(p))
  m = valid.size
  if m:
    order = valid[np.argsort(p[valid], kind='stable')]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
  return adjusted


# ----------------------------------------------------------------------------- one test set


class McNemar(NamedTuple):
  """Two models on the same n test images: see mcnemar_exact()."""
  n: int
  a_only: int
  b_only: int
  p_value: float


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
  """McNemar's exact test of two classifiers' disagreement on the same test images.

  Only the discordant images count: a_only (A right, B wrong) and b_only (B right, A
  wrong). Under the null hypothesis of equal accuracy each discordant image is a fair
  coin, so p = scipy.stats.binomtest(a_only, a_only + b_only, 0.5) two-sided; with no
  discordant image p is 1.

  Args:
    a_correct: bool[n], whether A classified each test image correctly.
    b_correct: bool[n], the same images for B.

  Returns:
    McNemar(n, a_only, b_only, p_value).

  Raises:
    ValueError: different lengths or not 1-D.
  """
  x = np.asarray(a_correct, dtype=bool)
  y = np.asarray(b_correct, dtype=bool)
  if x.ndim != 1 or x.shape != y.shape:
    raise ValueError(f'a_correct and b_correct must be bool[n] of one length, got shapes '
                     f'{x.shape} and {y.shape}')
  a_only, b_only = int(np.sum(x & ~y)), int(np.sum(~x & y))
  p_value = (1.0 if a_only + b_only == 0 else
             float(_scipy_stats.binomtest(a_only, a_only + b_only, 0.5).pvalue))
  return McNemar(int(x.size), a_only, b_only, p_value)


def test_set_error(accuracy: float, n_test: int) -> float:
  """Half-width of the 95% (normal-approximation) binomial interval of an accuracy
  measured on n_test images: z(0.975) * sqrt(p (1 - p) / n_test), e.g. 0.0027 for
  p = 0.98 on 10,000 images (its standard error, one sigma, is 0.0014)."""
  if n_test < 1:
    raise ValueError(f'n_test must be >= 1, got {n_test}')
  if not 0 <= accuracy <= 1:
    raise ValueError(f'accuracy must lie in [0, 1], got {accuracy}')
  z = _scipy_stats.norm.ppf(0.5 + CONFIDENCE / 2)
  return float(z * math.sqrt(accuracy * (1 - accuracy) / n_test))


# ----------------------------------------------------------------------------- planning

POWER = 0.8
ALPHA = 0.05


def t_test_power(difference: float, n: int, std: float, paired: bool = True,
                 alpha: float = ALPHA) -> float:
  """Power of the two-sided t-test at level alpha to detect a true difference.

  Paired: the one-sample t-test of n seed-matched differences whose std is `std`;
  df = n - 1, noncentrality difference * sqrt(n) / std. Unpaired: Student's two-sample
  t-test of n runs per side, each with std `std`; df = 2n - 2, noncentrality
  difference / (std sqrt(2 / n)). power = P(|T| > t(1 - alpha/2, df)) with T
  noncentral t (scipy.stats.nct). NaN when n < 2; 1 when std == 0 < |difference|.
  """
  if n < 2:
    return math.nan
  if std == 0:
    return 1.0 if difference else alpha
  df = n - 1 if paired else 2 * n - 2
  noncentrality = abs(difference) / (std * (1 / math.sqrt(n) if paired else math.sqrt(2 / n)))
  critical = _scipy_stats.t.ppf(1 - alpha / 2, df)
  wrong_side = _scipy_stats.nct.cdf(-critical, df, noncentrality)
  if math.isnan(wrong_side) and noncentrality > 7:
    # scipy's far tail can come out NaN; T < -critical needs Z + noncentrality < 0, so
    # the tail is below Phi(-7) = 1.3e-12 here.
    wrong_side = 0.0
  return float(_scipy_stats.nct.sf(critical, df, noncentrality) + wrong_side)


def detectable_difference(n: int, std: float, paired: bool = True, power: float = POWER,
                          alpha: float = ALPHA) -> float:
  """The smallest true difference the t-test detects with the given power.

  Solves t_test_power(difference, n, std, paired, alpha) == power for difference >= 0 with
  scipy.optimize.brentq on the noncentral t (see t_test_power()). For large n it approaches
  (z(1 - alpha/2) + z(power)) * std * sqrt(1/n or 2/n), 2.80 std / sqrt(n) when paired.

  Args:
    n: seeds (paired: seed-matched pairs; unpaired: runs per side).
    std: paired: the std of the per-seed differences; unpaired: each side's std.
    paired: which test (see t_test_power()).
    power: the target power, in (alpha, 1).
    alpha: the two-sided significance level.

  Returns:
    The difference, in the units of std; NaN when n < 2, 0 when std == 0.
  """
  if not alpha < power < 1:
    raise ValueError(f'power must lie in (alpha, 1), got {power}')
  if std < 0 or math.isnan(std):
    raise ValueError(f'std must be >= 0, got {std}')
  if n < 2:
    return math.nan
  if std == 0:
    return 0.0
  target = power
  gap = lambda d: t_test_power(d, n, std, paired, alpha) - target
  high = std
  while gap(high) < 0:
    high *= 2
  return float(_scipy_optimize.brentq(gap, 0.0, high, xtol=1e-12 * std, rtol=1e-12))


def seeds_needed(difference: float, std: float, paired: bool = True, power: float = POWER,
                 alpha: float = ALPHA) -> int:
  """The fewest seeds (>= 2) whose t-test detects `difference` with the given power.

  Args:
    difference: the true difference to detect, > 0.
    std: as in detectable_difference.
    paired, power, alpha: as in detectable_difference.

  Returns:
    The smallest n >= 2 with t_test_power(difference, n, std, paired, alpha) >= power (seeds
    per side when unpaired).

  Raises:
    ValueError: difference <= 0, std < 0, or power outside (alpha, 1).
  """
  if not difference > 0:
    raise ValueError(f'difference must be > 0, got {difference}')
  if not alpha < power < 1:
    raise ValueError(f'power must lie in (alpha, 1), got {power}')
  if std < 0 or math.isnan(std):
    raise ValueError(f'std must be >= 0, got {std}')
  reaches = lambda n: t_test_power(difference, n, std, paired, alpha) >= power
  low, high = 1, 2  # reaches(low) is False by convention (n = 1 has no test)
  while not reaches(high):
    low, high = high, high * 2
  while high - low > 1:
    middle = (low + high) // 2
    low, high = (low, middle) if reaches(middle) else (middle, high)
  return high


# ----------------------------------------------------------------------------- crossed designs


VARIANCE_COMPONENTS = ('initialisation', 'data_order', 'residual')


def _mls_bounds(ms1: float, df1: float, ms2: float, df2: float, c: float) -> Tuple[float, float]:
  """95% modified large-sample CI of (ms1 - ms2) / c, truncated at 0 (Burdick and
  Graybill 1992, the difference of two expected mean squares)."""
  lower_tail, upper_tail = (1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2
  chi2 = _scipy_stats.chi2.ppf
  f = _scipy_stats.f.ppf
  g1 = 1 - df1 / chi2(upper_tail, df1)
  h1 = df1 / chi2(lower_tail, df1) - 1
  g2 = 1 - df2 / chi2(upper_tail, df2)
  h2 = df2 / chi2(lower_tail, df2) - 1
  f_upper, f_lower = f(upper_tail, df1, df2), f(lower_tail, df1, df2)
  g12 = ((f_upper - 1)**2 - g1**2 * f_upper**2 - h2**2) / f_upper
  h12 = ((1 - f_lower)**2 - h1**2 * f_lower**2 - g2**2) / f_lower
  estimate = ms1 - ms2
  low = estimate - math.sqrt(max(0.0, g1**2 * ms1**2 + h2**2 * ms2**2 + g12 * ms1 * ms2))
  high = estimate + math.sqrt(max(0.0, h1**2 * ms1**2 + g2**2 * ms2**2 + h12 * ms1 * ms2))
  return max(0.0, low / c), max(0.0, high / c)


def variance_components(values) -> Dict[str, Any]:
  """Variance components of a crossed initialisation x data-order design.

  The two-way random-effects model without replication, y_ij = mu + I_i + D_j + e_ij
  (I_i ~ N(0, s_I^2) the i-th initialisation seed's effect, D_j ~ N(0, s_D^2) the j-th
  data seed's: data order and dropout; e_ij ~ N(0, s_e^2) their interaction and the
  rest). With MS_I = J sum_i (ybar_i. - ybar)^2 / (I - 1), MS_D likewise and MS_e the
  residual mean square on (I - 1)(J - 1) df, the method-of-moments (ANOVA) estimates
  are s_I^2 = (MS_I - MS_e) / J, s_D^2 = (MS_D - MS_e) / I, s_e^2 = MS_e; negative
  estimates are reported as 0 (`truncated` says so). CIs (95%): s_e^2 exact, SS_e /
  chi2 quantiles on (I - 1)(J - 1) df; s_I^2 and s_D^2 by the modified large-sample
  method (Burdick and Graybill 1992), also truncated at 0.

  Args:
    values: float[inits, datas], inits >= 2 and datas >= 2: one value (e.g. final test
      accuracy) per cell, row i the i-th initialisation seed, column j the j-th data seed.

  Returns:
    {'initialisation' | 'data_order' | 'residual': {'estimate', 'ci95_low', 'ci95_high',
    'std', 'share', 'truncated'} (variances; std = sqrt(estimate); share = estimate /
    sum of the three estimates), 'mean': grand mean, 'inits': I, 'datas': J,
    'mean_squares': {...}, 'df': {...}, 'method': text}.

  Raises:
    ValueError: values not 2-D with at least 2 rows and 2 columns.
  """
  y = np.asarray(values, dtype=np.float64)
  if y.ndim != 2 or min(y.shape) < 2:
    raise ValueError(f'values must be float[inits >= 2, datas >= 2], got shape {y.shape}')
  inits, datas = y.shape
  grand = float(np.mean(y))
  row_means, column_means = np.mean(y, axis=1), np.mean(y, axis=0)
  df_i, df_d, df_e = inits - 1, datas - 1, (inits - 1) * (datas - 1)
  ms_i = float(datas * np.sum((row_means - grand)**2) / df_i)
  ms_d = float(inits * np.sum((column_means - grand)**2) / df_d)
  residuals = y - row_means[:, None] - column_means[None, :] + grand
  ss_e = float(np.sum(residuals**2))
  ms_e = ss_e / df_e
  lower_tail, upper_tail = (1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2
  raw = {'initialisation': (ms_i - ms_e) / datas, 'data_order': (ms_d - ms_e) / inits,
         'residual': ms_e}
  bounds = {'initialisation': _mls_bounds(ms_i, df_i, ms_e, df_e, datas),
            'data_order': _mls_bounds(ms_d, df_d, ms_e, df_e, inits),
            'residual': (ss_e / _scipy_stats.chi2.ppf(upper_tail, df_e),
                         ss_e / _scipy_stats.chi2.ppf(lower_tail, df_e))}
  estimates = {k: max(0.0, v) for k, v in raw.items()}
  total = sum(estimates.values())
  result: Dict[str, Any] = {}
  for name in VARIANCE_COMPONENTS:
    low, high = bounds[name]
    result[name] = {'estimate': estimates[name], 'ci95_low': float(low),
                    'ci95_high': float(high), 'std': math.sqrt(estimates[name]),
                    'share': estimates[name] / total if total > 0 else math.nan,
                    'truncated': raw[name] < 0}
  result.update(mean=grand, inits=inits, datas=datas,
                mean_squares={'initialisation': ms_i, 'data_order': ms_d, 'residual': ms_e},
                df={'initialisation': df_i, 'data_order': df_d, 'residual': df_e},
                method='two-way random-effects ANOVA without replication; method-of-moments '
                       'estimates truncated at 0; 95% CIs: chi-square (residual), modified '
                       'large-sample (initialisation, data order)')
  return result


def _text(value: float) -> str:
  return repr(float(value))


def is_accuracy(metric: str) -> bool:
  """Whether a history column holds an accuracy (a fraction in [0, 1])."""
  from mlp_jax.metrics import ACCURACY, BY_NAME  # pylint: disable=g-import-not-at-top
  return metric in BY_NAME and BY_NAME[metric].kind == ACCURACY


def summary_rows(curves: Mapping[str, np.ndarray]) -> List[Dict[str, str]]:
  """Rows of summary.csv: one per epoch and metric, epoch by epoch.

  Args:
    curves: 'epoch' -> int[epochs], and metric name -> float[runs, epochs] for
      each metric (in the order the rows should list them).

  Returns:
    A list of dicts keyed by SUMMARY_COLUMNS, all values strings (floats as
    repr(); 'nan' for the std and CI of a single run). An accuracy's CI is
    accuracy_ci's, inside [0, 1]; other metrics' the t interval.
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
      if is_accuracy(name):
        low, high = accuracy_ci(values[:, i])
        s = s._replace(ci95_low=low, ci95_high=high)
      rows.append({'epoch': str(int(epoch)), 'metric': name, 'n': str(s.n),
                   **{field: _text(getattr(s, field)) for field in SUMMARY_COLUMNS[3:]}})
  return rows


# ----------------------------------------------------------------------------- sweep records


FINAL_COLUMNS = ('seed', 'final_test_accuracy', 'best_test_accuracy', 'best_epoch',
                 'selected_on')
FINAL_VALIDATION_COLUMNS = ('final_validation_accuracy', 'best_validation_accuracy')


def _curves(values, rows: int, name: str) -> np.ndarray:
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 2 or array.shape[0] != rows or array.shape[1] == 0:
    raise ValueError(f'{name} must be float[{rows}, epochs >= 1], got {array.shape}')
  return array


def final_rows(seeds: Sequence[int], test_accuracy,
               validation_accuracy=None) -> List[Dict[str, str]]:
  """Rows of final.csv: each seed's last accuracy and its best epoch's.

  Args:
    seeds: int[runs], the seed of each row of test_accuracy.
    test_accuracy: float[runs, epochs], epochs >= 1.
    validation_accuracy: float[runs, epochs] or None. Given, the best epoch is the one of
      highest validation accuracy and best_test_accuracy is the test accuracy AT that
      epoch (an estimate not biased by the choice); without it the best epoch is chosen
      on the test set itself, and selected_on says so.

  Returns:
    A list of dicts keyed by FINAL_COLUMNS (plus FINAL_VALIDATION_COLUMNS with a
    validation split), all values strings; selected_on is 'validation' or 'test'.
    best_epoch is 1-based; on a tie the earliest epoch wins.
  """
  test = _curves(test_accuracy, len(seeds), 'test_accuracy')
  validation = (None if validation_accuracy is None else
                _curves(validation_accuracy, len(seeds), 'validation_accuracy'))
  if validation is not None and validation.shape != test.shape:
    raise ValueError(f'validation_accuracy must have test_accuracy\'s shape {test.shape}, '
                     f'got {validation.shape}')
  chosen_on = test if validation is None else validation
  rows = []
  for i, seed in enumerate(seeds):
    best = int(np.argmax(chosen_on[i]))  # the first maximum: the earliest epoch on a tie
    row = {'seed': str(int(seed)), 'final_test_accuracy': _text(test[i, -1]),
           'best_test_accuracy': _text(test[i, best]), 'best_epoch': str(best + 1),
           'selected_on': 'test' if validation is None else 'validation'}
    if validation is not None:
      row.update(final_validation_accuracy=_text(validation[i, -1]),
                 best_validation_accuracy=_text(validation[i, best]))
    rows.append(row)
  return rows


POINT_COLUMNS = ('rank', 'n', 'mean', 'std', 'ci95_low', 'ci95_high', 'ensemble_test_accuracy',
                 'difference_to_best', 'welch_p_value', 'selected_on', 'iqm',
                 'paired_difference', 'paired_ci95_low', 'paired_ci95_high', 'paired_p_value',
                 'holm_p_value', 'tied_with_best', 'probability_of_improvement')
POINT_VALIDATION_COLUMNS = ('validation_mean', 'validation_std')


def point_rows(settings: Sequence[Mapping[str, str]],
               final_test_accuracy: Sequence[Sequence[float]],
               ensemble: Sequence[str],
               final_validation_accuracy: Optional[Sequence[Sequence[float]]] = None,
               alpha: float = ALPHA) -> List[Dict[str, str]]:
  """Rows of points.csv: one per grid point, ranked, each compared with the best.

  The selection metric is the final validation accuracy when given, else the final test
  accuracy (selected_on says which). Points are ranked by its mean, and every comparison
  with the best (differences, tests, ties, probability of improvement) is made on it:
  with a validation split no test figure takes part in choosing. The test columns
  (mean, std, iqm, ci95_*) are the estimate reported for each point.

  Args:
    settings: each point's swept settings as {flag: text} (empty without a grid).
    final_test_accuracy: float[points][seeds], each point's final test accuracy per seed,
      every point's seeds in the same order (seed k is the same initialisation and data
      order at every point, so the paired statistics apply).
    ensemble: each point's ensemble test accuracy, as text.
    final_validation_accuracy: float[points][seeds] or None.
    alpha: the family-wise level of the ties.

  Returns:
    Dicts keyed by the settings and POINT_COLUMNS (plus POINT_VALIDATION_COLUMNS with a
    split), best first (rank 1; ties of the mean keep the grid's order). mean, std, iqm
    and ci95_low/high are the point's test accuracy (the CI by accuracy_ci, inside
    [0, 1]). Against the best, on the selection metric (empty on the best's own row):
    difference_to_best and welch_p_value (Welch's t-test); paired_difference = mean of
    (point - best) per seed, paired_ci95_low/high and paired_p_value (paired t-test);
    holm_p_value, the paired p-values Holm-adjusted over the k - 1 comparisons;
    tied_with_best, 'true' when holm_p_value > alpha ('' if untestable: fewer than 2
    seeds), the best's own row 'true'; probability_of_improvement, P(point > best) as in
    probability_of_improvement(). Untestable p-values are written 'nan'.
  """
  test = [_sample(v, 'final_test_accuracy') for v in final_test_accuracy]
  validation = (None if final_validation_accuracy is None else
                [_sample(v, 'final_validation_accuracy') for v in final_validation_accuracy])
  chosen = test if validation is None else validation
  if len({v.size for v in chosen + test}) != 1:
    raise ValueError('every point needs the same number of seeds on every metric, got '
                     f'{sorted({v.size for v in chosen + test})}')
  means = [float(np.mean(v)) for v in chosen]
  order = sorted(range(len(chosen)), key=lambda i: -means[i])
  best = order[0]
  n = chosen[best].size
  compared = {i: paired(chosen[i], chosen[best]) for i in order[1:]}
  adjusted = dict(zip(compared, holm([c.p_value for c in compared.values()])))
  rows = []
  for rank, i in enumerate(order, start=1):
    s = summarize(test[i])
    low, high = accuracy_ci(test[i])
    row = {**settings[i], 'rank': str(rank), 'n': str(s.n), 'mean': _text(s.mean),
           'std': _text(s.std), 'ci95_low': _text(low), 'ci95_high': _text(high),
           'ensemble_test_accuracy': ensemble[i]}
    row.update(dict.fromkeys(POINT_COLUMNS[7:], ''))
    row.update(selected_on='test' if validation is None else 'validation',
               iqm=_text(iqm(test[i])), tied_with_best='true' if i == best else '')
    if validation is not None:
      v = summarize(validation[i])
      row.update(validation_mean=_text(v.mean), validation_std=_text(v.std))
    if i != best:
      c = compared[i]
      row.update(difference_to_best=_text(means[i] - means[best]),
                 welch_p_value=_text(welch(chosen[i], chosen[best]).p_value
                                     if n > 1 else math.nan),
                 paired_difference=_text(c.difference), paired_ci95_low=_text(c.ci95_low),
                 paired_ci95_high=_text(c.ci95_high), paired_p_value=_text(c.p_value),
                 holm_p_value=_text(adjusted[i]),
                 probability_of_improvement=_text(np.mean(_wins(chosen[i], chosen[best]))))
      if not math.isnan(adjusted[i]):
        row['tied_with_best'] = 'true' if adjusted[i] > alpha else 'false'
    rows.append(row)
  return rows
