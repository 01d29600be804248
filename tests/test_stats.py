"""mlp_jax.stats against cases worked out by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mlp_jax import stats

# Two-sided 95% quantiles of Student's t, t(0.975, df), without scipy: df = 1 is the
# Cauchy distribution, t = tan(pi * (0.975 - 1/2)); df = 2 has the closed form
# t = (2p - 1) / sqrt(2p(1 - p)) = 0.95 / sqrt(0.04875); df = 3 from a printed table.
T_975 = {1: math.tan(math.pi * 0.475), 2: 0.95 / math.sqrt(2 * 0.975 * 0.025),
         3: 3.182446305284263}


def test_t_table_matches_scipy():
  for df, value in T_975.items():
    assert scipy_stats.t.ppf(0.975, df) == pytest.approx(value, rel=1e-12)


def test_summarize_by_hand():
  # values 1, 2, 3, 4: mean 10/4 = 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5;
  # sample variance 5/3, std sqrt(5/3) = 1.2909944...; half-width of the CI
  # t(0.975, 3) * std / sqrt(4) = 3.182446305284263 * 1.2909944 / 2 = 2.0542...
  s = stats.summarize([3.0, 1.0, 4.0, 2.0])
  std = math.sqrt(5 / 3)
  half = T_975[3] * std / 2
  assert s.n == 4 and isinstance(s.n, int)
  assert s.mean == 2.5 and s.min == 1.0 and s.max == 4.0
  assert s.std == pytest.approx(1.2909944487358056, rel=1e-14)
  assert half == pytest.approx(2.0542, abs=1e-4)
  assert s.ci95_low == pytest.approx(2.5 - half, rel=1e-12)
  assert s.ci95_high == pytest.approx(2.5 + half, rel=1e-12)
  assert tuple(s._fields) == ('n', 'mean', 'std', 'min', 'max', 'ci95_low', 'ci95_high')


def test_summarize_one_value_has_no_spread():
  s = stats.summarize([0.97])
  assert (s.n, s.mean, s.min, s.max) == (1, 0.97, 0.97, 0.97)
  assert math.isnan(s.std) and math.isnan(s.ci95_low) and math.isnan(s.ci95_high)


def test_summarize_rejects_nothing_and_matrices():
  with pytest.raises(ValueError):
    stats.summarize([])
  with pytest.raises(ValueError):
    stats.summarize([[1.0, 2.0]])


def test_mean_ci_by_hand():
  # runs x epochs = [[1, 2], [3, 4], [5, 9]].
  # epoch 1: values 1, 3, 5: mean 3, squared deviations 4 + 0 + 4 = 8, variance 8/2 = 4, std 2.
  # epoch 2: values 2, 4, 9: mean 5, squared deviations 9 + 1 + 16 = 26, variance 13, std sqrt(13).
  # half-width = t(0.975, 2) * std / sqrt(3).
  mean, low, high = stats.mean_ci(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]))
  half = T_975[2] * np.array([2.0, math.sqrt(13)]) / math.sqrt(3)
  np.testing.assert_allclose(mean, [3.0, 5.0], rtol=0, atol=1e-15)
  np.testing.assert_allclose(low, [3.0, 5.0] - half, rtol=1e-12)
  np.testing.assert_allclose(high, [3.0, 5.0] + half, rtol=1e-12)
  assert mean.shape == low.shape == high.shape == (2,)


def test_mean_ci_of_one_run_is_its_curve_without_band():
  mean, low, high = stats.mean_ci([[0.9, 0.95, 0.97]])
  np.testing.assert_array_equal(mean, [0.9, 0.95, 0.97])
  assert np.all(np.isnan(low)) and np.all(np.isnan(high))


def test_mean_ci_agrees_with_summarize_column_by_column():
  values = np.random.default_rng(0).normal(size=(7, 5))
  mean, low, high = stats.mean_ci(values)
  for epoch in range(5):
    s = stats.summarize(values[:, epoch])
    assert (mean[epoch], low[epoch], high[epoch]) == pytest.approx(
        (s.mean, s.ci95_low, s.ci95_high), rel=1e-12)


def test_welch_by_hand():
  # a = 1, 2, 3, 4: mean 2.5, variance 5/3, va/na = 5/12.
  # b = 2, 4, 6:    mean 4,   variance (4 + 0 + 4)/2 = 4, vb/nb = 4/3 = 16/12.
  # difference 2.5 - 4 = -1.5; standard error sqrt(5/12 + 16/12) = sqrt(7/4).
  # Welch–Satterthwaite df = (7/4)^2 / ((5/12)^2/3 + (16/12)^2/2)
  #                        = (49/16) / (25/432 + 384/432) = (49/16) * (432/409) = 1323/409.
  # t = -1.5 / sqrt(7/4) = -1.1338934...; p = 2 * P(T_df > 1.1338934).
  a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
  df = 1323 / 409
  assert stats.welch_df(a, b) == pytest.approx(df, rel=1e-12)
  se = math.sqrt(7 / 4)
  t = -1.5 / se
  assert t == pytest.approx(-1.1338934190276817, rel=1e-12)
  result = stats.welch(a, b)
  assert result.difference == -1.5
  half = scipy_stats.t.ppf(0.975, df) * se
  assert result.ci95_low == pytest.approx(-1.5 - half, rel=1e-12)
  assert result.ci95_high == pytest.approx(-1.5 + half, rel=1e-12)
  assert result.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-10)
  assert result.p_value == pytest.approx(0.33382, abs=1e-5)
  # An independent implementation: scipy's own Welch confidence interval.
  reference = scipy_stats.ttest_ind(a, b, equal_var=False)
  assert (result.ci95_low, result.ci95_high) == pytest.approx(
      tuple(reference.confidence_interval(0.95)), rel=1e-10)
  # The difference is a - b: swapping the samples mirrors everything.
  swapped = stats.welch(b, a)
  assert swapped.difference == 1.5 and swapped.p_value == pytest.approx(result.p_value)
  assert swapped.ci95_low == pytest.approx(-result.ci95_high)


def test_welch_of_constant_samples_has_a_zero_width_interval():
  result = stats.welch([0.97, 0.97], [0.96, 0.96, 0.96])
  assert result.difference == pytest.approx(0.01)
  assert result.ci95_low == result.ci95_high == result.difference
  assert result.p_value == 0.0
  assert math.isnan(stats.welch([1.0, 1.0], [1.0, 1.0]).p_value)


def test_welch_needs_two_values_per_sample():
  with pytest.raises(ValueError, match='at least 2'):
    stats.welch([1.0], [1.0, 2.0])


def test_summary_rows_by_hand():
  # epoch 1: 0.90, 0.92 -> mean 0.91, std sqrt(2 * 0.01**2 / 1) = 0.0141421...,
  #          half-width t(0.975, 1) * 0.0141421 / sqrt(2) = 12.7062047 * 0.01 = 0.127062...
  curves = {'epoch': np.array([1, 2]),
            'test_accuracy': np.array([[0.90, 0.95], [0.92, 0.97]]),
            'test_loss': np.array([[0.3, 0.2], [0.5, 0.1]])}
  rows = stats.summary_rows(curves)
  assert [(r['epoch'], r['metric']) for r in rows] == [
      ('1', 'test_accuracy'), ('1', 'test_loss'), ('2', 'test_accuracy'), ('2', 'test_loss')]
  assert all(list(r) == list(stats.SUMMARY_COLUMNS) for r in rows)
  first = rows[0]
  assert first['n'] == '2' and first['min'] == '0.9' and first['max'] == '0.92'
  assert float(first['mean']) == pytest.approx(0.91, abs=1e-15)
  assert float(first['std']) == pytest.approx(math.sqrt(2) * 0.01, rel=1e-12)
  assert float(first['ci95_high']) - float(first['mean']) == pytest.approx(
      T_975[1] * 0.01, rel=1e-9)
  # repr(): the text reads back to exactly the float computed.
  assert float(first['mean']) == np.mean([0.90, 0.92])


def test_summary_rows_of_one_run_write_nan():
  rows = stats.summary_rows({'epoch': np.array([1]), 'test_accuracy': np.array([[0.9]])})
  assert rows == [{'epoch': '1', 'metric': 'test_accuracy', 'n': '1', 'mean': '0.9',
                   'std': 'nan', 'min': '0.9', 'max': '0.9', 'ci95_low': 'nan',
                   'ci95_high': 'nan'}]


def test_summary_rows_rejects_a_shape_mismatch():
  with pytest.raises(ValueError, match='test_loss'):
    stats.summary_rows({'epoch': np.array([1, 2]), 'test_loss': np.zeros((3, 1))})


def test_final_rows_ties_pick_the_earliest_epoch():
  rows = stats.final_rows([5, 7], np.array([[0.90, 0.95, 0.95, 0.94],
                                            [0.80, 0.80, 0.80, 0.80]]))
  assert rows == [
      {'seed': '5', 'final_test_accuracy': '0.94', 'best_test_accuracy': '0.95',
       'best_epoch': '2'},
      {'seed': '7', 'final_test_accuracy': '0.8', 'best_test_accuracy': '0.8',
       'best_epoch': '1'},
  ]
  assert list(rows[0]) == list(stats.FINAL_COLUMNS)


def test_final_rows_rejects_mismatched_seeds():
  with pytest.raises(ValueError):
    stats.final_rows([1, 2, 3], np.zeros((2, 4)))
