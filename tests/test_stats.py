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
  # An accuracy's interval is the t interval of the logits, mapped back: inside [0, 1].
  logits = np.log(np.array([0.90, 0.92]) / np.array([0.10, 0.08]))
  half = T_975[1] * np.std(logits, ddof=1) / math.sqrt(2)
  assert float(first['ci95_low']) == pytest.approx(1 / (1 + math.exp(half - logits.mean())),
                                                   rel=1e-9)
  assert float(first['ci95_high']) == pytest.approx(
      1 / (1 + math.exp(-half - logits.mean())), rel=1e-9)
  assert 0 < float(first['ci95_low']) and float(first['ci95_high']) < 1
  loss = rows[1]  # a loss keeps the plain t interval
  assert float(loss['ci95_high']) - float(loss['mean']) == pytest.approx(T_975[1] * 0.1,
                                                                         rel=1e-9)
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
       'best_epoch': '2', 'selected_on': 'test'},
      {'seed': '7', 'final_test_accuracy': '0.8', 'best_test_accuracy': '0.8',
       'best_epoch': '1', 'selected_on': 'test'},
  ]
  assert list(rows[0]) == list(stats.FINAL_COLUMNS)


def test_final_rows_choose_the_epoch_on_validation_and_report_its_test_accuracy():
  test = np.array([[0.90, 0.99, 0.93], [0.80, 0.81, 0.82]])
  validation = np.array([[0.91, 0.90, 0.95], [0.85, 0.85, 0.84]])
  rows = stats.final_rows([0, 1], test, validation)
  assert rows == [
      {'seed': '0', 'final_test_accuracy': '0.93', 'best_test_accuracy': '0.93',
       'best_epoch': '3', 'selected_on': 'validation', 'final_validation_accuracy': '0.95',
       'best_validation_accuracy': '0.95'},
      {'seed': '1', 'final_test_accuracy': '0.82', 'best_test_accuracy': '0.8',
       'best_epoch': '1', 'selected_on': 'validation', 'final_validation_accuracy': '0.84',
       'best_validation_accuracy': '0.85'},
  ]
  assert list(rows[0]) == list(stats.FINAL_COLUMNS + stats.FINAL_VALIDATION_COLUMNS)
  # The test figures never choose: any test curve gives the same epochs.
  shuffled = stats.final_rows([0, 1], test[:, ::-1], validation)
  assert [r['best_epoch'] for r in shuffled] == ['3', '1']
  with pytest.raises(ValueError, match='validation_accuracy'):
    stats.final_rows([0, 1], test, validation[:, :2])


def test_final_rows_rejects_mismatched_seeds():
  with pytest.raises(ValueError):
    stats.final_rows([1, 2, 3], np.zeros((2, 4)))


# ----------------------------------------------------------------------------- paired, scipy

# Fixed seed-matched accuracies (multiples of 1/10,000 as on MNIST's test set): the
# differences have neither zeros nor ties, so scipy's exact signed-rank test applies.
A = np.array([0.9712, 0.9731, 0.9698, 0.9744, 0.9720, 0.9709, 0.9737, 0.9715, 0.9726, 0.9702])
B = np.array([0.9701, 0.9725, 0.9700, 0.9730, 0.9712, 0.9695, 0.9729, 0.9716, 0.9710, 0.9698])


def test_paired_matches_scipy():
  result = stats.paired(A, B)
  reference = scipy_stats.ttest_rel(A, B)
  ci = reference.confidence_interval(0.95)
  assert result.n == 10
  assert result.difference == pytest.approx(np.mean(A - B), abs=1e-12)
  assert result.ci95_low == pytest.approx(ci.low, abs=1e-9)
  assert result.ci95_high == pytest.approx(ci.high, abs=1e-9)
  assert result.p_value == pytest.approx(reference.pvalue, abs=1e-9)
  assert result.wilcoxon_p_value == pytest.approx(
      scipy_stats.wilcoxon(np.round(A - B, 12)).pvalue, abs=1e-9)
  assert result.wilcoxon_p_value == pytest.approx(scipy_stats.wilcoxon(A, B).pvalue, abs=1e-9)
  assert result.correlation == pytest.approx(scipy_stats.pearsonr(A, B).statistic, abs=1e-9)
  # The pairing matters: Welch on the same numbers sees far less.
  assert result.p_value < 0.01 < stats.welch(A, B).p_value


def test_welch_matches_scipy_to_1e9():
  result = stats.welch(A, B[:7])
  reference = scipy_stats.ttest_ind(A, B[:7], equal_var=False)
  ci = reference.confidence_interval(0.95)
  assert result.p_value == pytest.approx(reference.pvalue, abs=1e-9)
  assert (result.ci95_low, result.ci95_high) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_paired_undefined_cases_are_nan():
  one = stats.paired([0.97], [0.96])
  assert one.difference == pytest.approx(0.01) and one.n == 1
  assert all(math.isnan(v) for v in one[2:])
  same = stats.paired(A, A)
  assert same.difference == 0 and same.ci95_low == same.ci95_high == 0
  assert math.isnan(same.p_value) and math.isnan(same.wilcoxon_p_value)
  assert same.correlation == pytest.approx(1.0)
  assert math.isnan(stats.paired([0.9, 0.9, 0.9], [0.8, 0.9, 0.7]).correlation)
  with pytest.raises(ValueError, match='same length'):
    stats.paired(A, B[:3])


def test_paired_differences_equal_up_to_float_noise_tie():
  # 0.9601 - 0.96 and 0.9633 - 0.9632 differ in the last bits; both are 1/10,000.
  a, b = [0.9601, 0.9633, 0.9705, 0.9711], [0.96, 0.9632, 0.9700, 0.9714]
  assert a[0] - b[0] != a[1] - b[1]
  assert stats.paired(a, b).wilcoxon_p_value == pytest.approx(
      scipy_stats.wilcoxon([0.0001, 0.0001, 0.0005, -0.0003]).pvalue, abs=1e-12)


# ----------------------------------------------------------------------------- bootstrap


def _brute_force_resamples(n, resamples, seed, sides=1):
  """The index draws bootstrap_difference makes, one side after the other."""
  rng = np.random.default_rng(seed)
  return [rng.integers(0, n, size=(resamples, n)) for _ in range(sides)]


def test_bootstrap_equals_its_definition_drawn_by_hand():
  # With the same generator the vectorised counts give exactly the resampled means.
  x, y = A, B
  result = stats.bootstrap_difference(x, y, paired=True, resamples=500, seed=3)
  (index,) = _brute_force_resamples(10, 500, 3)
  means = np.array([np.mean((x - y)[i]) for i in index])
  assert (result.ci95_low, result.ci95_high) == pytest.approx(
      tuple(np.percentile(means, [2.5, 97.5])), abs=1e-12)
  result = stats.bootstrap_difference(x, y[:7], paired=False, resamples=500, seed=4)
  rng = np.random.default_rng(4)
  ix, iy = rng.integers(0, 10, size=(500, 10)), rng.integers(0, 7, size=(500, 7))
  means = np.array([np.mean(x[i]) - np.mean(y[:7][j]) for i, j in zip(ix, iy)])
  assert (result.ci95_low, result.ci95_high) == pytest.approx(
      tuple(np.percentile(means, [2.5, 97.5])), abs=1e-12)
  assert (result.resamples, result.seed, result.method) == (500, 4, 'percentile')


def test_bootstrap_ci_agrees_with_the_t_interval_on_normal_data():
  rng = np.random.default_rng(2021)
  a, b = rng.normal(0.3, 1.0, 200), rng.normal(0.0, 1.0, 200)
  t = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
  boot = stats.bootstrap_difference(a, b, paired=True)
  assert boot.resamples == 10_000 and boot.seed == 0 and boot.paired
  assert abs(boot.ci95_low - t.low) < 0.01 and abs(boot.ci95_high - t.high) < 0.01
  w = stats.welch(a, b)
  boot = stats.bootstrap_difference(a, b, paired=False, seed=1)
  assert abs(boot.ci95_low - w.ci95_low) < 0.01 and abs(boot.ci95_high - w.ci95_high) < 0.01


def test_bootstrap_reproduces_from_its_seed():
  first = stats.bootstrap_difference(A, B, paired=True, seed=7)
  assert stats.bootstrap_difference(A, B, paired=True, seed=7) == first
  assert stats.bootstrap_difference(A, B, paired=True, seed=8) != first
  lonely = stats.bootstrap_difference([0.9], [0.8, 0.7], paired=False)
  assert math.isnan(lonely.ci95_low) and lonely.difference == pytest.approx(0.15)


def test_probability_of_improvement_is_the_pairwise_count():
  a, b = np.array([0.3, 0.5, 0.5, 0.9]), np.array([0.5, 0.2, 0.4])
  # Pairs (a_i, b_j) with a_i > b_j: 0.3 > 0.2; 0.5 > 0.2, 0.4 (twice); 0.9 > all three:
  # 1 + 2 + 2 + 3 = 8 wins; ties 0.5 == 0.5 twice: 8 + 2/2 = 9 of 12 pairs.
  wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
  assert wins == 9
  result = stats.probability_of_improvement(a, b, paired=False, resamples=300, seed=5)
  assert result.value == 0.75
  rng = np.random.default_rng(5)
  ix, iy = rng.integers(0, 4, size=(300, 4)), rng.integers(0, 3, size=(300, 3))
  values = [np.mean([(x > y) + 0.5 * (x == y) for x in a[i] for y in b[j]])
            for i, j in zip(ix, iy)]
  assert (result.ci95_low, result.ci95_high) == pytest.approx(
      tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
  # Paired: one draw of seeds for both sides.
  result = stats.probability_of_improvement(A, B, paired=True, resamples=300, seed=6)
  (index,) = _brute_force_resamples(10, 300, 6)
  values = [np.mean([(x > y) + 0.5 * (x == y) for x in A[i] for y in B[i]]) for i in index]
  assert (result.ci95_low, result.ci95_high) == pytest.approx(
      tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
  assert result.value == pytest.approx(
      scipy_stats.mannwhitneyu(A, B).statistic / 100, abs=1e-12)
  assert result.ci95_low <= result.value <= result.ci95_high


def test_iqm_by_hand():
  # 8 values: 2 cut from each end, the mean of 3, 4, 5, 6 = 4.5; the outlier is ignored.
  assert stats.iqm([8.0, 1.0, 3.0, 100.0, 2.0, 5.0, 4.0, 6.0]) == 4.5
  assert stats.iqm([0.97]) == 0.97


def test_accuracy_ci_stays_inside_0_1():
  # Two seeds, 0.94 and 0.97: the plain t interval is 0.955 ± 12.706 * 0.015 = [0.764, 1.146].
  low, high = stats.accuracy_ci([0.94, 0.97])
  logits = np.log([0.94 / 0.06, 0.97 / 0.03])
  half = T_975[1] * np.std(logits, ddof=1) / math.sqrt(2)
  expit = lambda z: 1 / (1 + math.exp(-z))
  assert (low, high) == pytest.approx((expit(logits.mean() - half),
                                       expit(logits.mean() + half)), rel=1e-12)
  assert 0 < low < 0.94 and 0.97 < high < 1
  low, high = stats.accuracy_ci([1.0, 1.0, 0.999])
  assert 0 < low < 0.999 and high <= 1
  assert stats.accuracy_ci([0.97, 0.97]) == (0.97, 0.97)
  assert all(math.isnan(v) for v in stats.accuracy_ci([0.97]))
  # Many seeds close together: the plain t interval, to a small fraction of its width.
  values = np.random.default_rng(0).normal(0.97, 0.001, 50)
  s = stats.summarize(values)
  assert stats.accuracy_ci(values) == pytest.approx((s.ci95_low, s.ci95_high), abs=2e-5)
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    stats.accuracy_ci([0.5, 1.2])


def test_holm_by_hand():
  # p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03;
  # 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to the running maximum 0.06.
  np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]),
                             [0.03, 0.06, 0.06, 0.02], rtol=1e-15)
  # NaN is not a test: m = 2 here; 0.2 x 2 = 0.4; 0.7 x 1 -> 0.7. Capped at 1.
  np.testing.assert_allclose(stats.holm([0.7, math.nan, 0.2]), [0.7, math.nan, 0.4])
  np.testing.assert_array_equal(stats.holm([0.6, 0.9]), [1.0, 1.0])
  assert stats.holm([]).shape == (0,)


def test_mcnemar_exact_by_hand_and_against_binomtest():
  a = np.array([True] * 90 + [True] * 2 + [False] * 8)
  b = np.array([True] * 90 + [False] * 2 + [True] * 8)
  result = stats.mcnemar_exact(a, b)
  # 2 against 8 discordant images: p = 2 P(X <= 2), X ~ Bin(10, 1/2) = 2 (1 + 10 + 45) / 1024.
  assert (result.n, result.a_only, result.b_only) == (100, 2, 8)
  assert result.p_value == pytest.approx(112 / 1024, abs=1e-12)
  assert result.p_value == pytest.approx(scipy_stats.binomtest(2, 10, 0.5).pvalue, abs=1e-9)
  assert stats.mcnemar_exact(a, a).p_value == 1.0
  with pytest.raises(ValueError):
    stats.mcnemar_exact(a, b[:5])


def test_test_set_error():
  # 1.959964 * sqrt(0.98 * 0.02 / 10,000) = 1.959964 * 0.0014 = 0.002744: ±0.27 points.
  assert stats.test_set_error(0.98, 10_000) == pytest.approx(1.959963984540054 * 0.0014,
                                                             rel=1e-9)
  assert stats.test_set_error(1.0, 10_000) == 0.0
  with pytest.raises(ValueError):
    stats.test_set_error(0.9, 0)


# ----------------------------------------------------------------------------- planning


@pytest.mark.parametrize('paired', [True, False])
def test_detectable_difference_has_80_percent_power_by_simulation(paired):
  n, std = 10, 0.002
  d = stats.detectable_difference(n, std, paired=paired)
  rng = np.random.default_rng(11)
  trials = 20_000
  if paired:
    p = scipy_stats.ttest_1samp(rng.normal(d, std, (trials, n)), 0.0, axis=1).pvalue
  else:
    p = scipy_stats.ttest_ind(rng.normal(d, std, (trials, n)), rng.normal(0, std, (trials, n)),
                              axis=1).pvalue
  # Binomial standard error of the rejection rate: sqrt(0.8 * 0.2 / 20,000) = 0.0028.
  assert np.mean(p < 0.05) == pytest.approx(0.8, abs=0.012)
  assert stats.t_test_power(d, n, std, paired) == pytest.approx(0.8, abs=1e-9)


def test_detectable_difference_approaches_the_normal_closed_form():
  z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)  # 2.8016
  assert stats.detectable_difference(5000, 1.0) == pytest.approx(z / math.sqrt(5000), rel=1e-3)
  assert stats.detectable_difference(5000, 1.0, paired=False) == pytest.approx(
      z * math.sqrt(2 / 5000), rel=1e-3)
  assert math.isnan(stats.detectable_difference(1, 1.0))
  assert stats.detectable_difference(10, 0.0) == 0.0


def test_seeds_needed_inverts_the_detectable_difference():
  for n in (2, 3, 10, 37):
    d = stats.detectable_difference(n, 0.003)
    assert stats.seeds_needed(d * (1 + 1e-9), 0.003) == n
    assert stats.seeds_needed(d * 1.05, 0.003) <= n
    assert stats.seeds_needed(d * 0.95, 0.003) > n
  # Large n: (2.8016 * 1 / 0.01)^2 = 78,490, a few more for the t distribution.
  assert 78_490 <= stats.seeds_needed(0.01, 1.0) <= 78_500
  for bad in (0.0, -0.001):
    with pytest.raises(ValueError, match='difference must be > 0'):
      stats.seeds_needed(bad, 0.001)


# ----------------------------------------------------------------------------- crossed design


def test_variance_components_by_hand():
  # y = [[1, 2], [3, 5]]: grand mean 2.75; row means 1.5, 4; column means 2, 3.5.
  # MS_init = 2 ((1.5 - 2.75)^2 + (4 - 2.75)^2) / 1 = 6.25; MS_data = 2 (0.75^2 * 2) = 2.25;
  # residuals +-0.25, SS_e = 4 * 0.0625 = 0.25 on 1 df. Estimates (6.25 - 0.25) / 2 = 3,
  # (2.25 - 0.25) / 2 = 1, 0.25.
  result = stats.variance_components([[1.0, 2.0], [3.0, 5.0]])
  assert result['initialisation']['estimate'] == pytest.approx(3.0, rel=1e-12)
  assert result['data_order']['estimate'] == pytest.approx(1.0, rel=1e-12)
  assert result['residual']['estimate'] == pytest.approx(0.25, rel=1e-12)
  assert result['residual']['ci95_low'] == pytest.approx(0.25 / scipy_stats.chi2.ppf(0.975, 1))
  assert result['residual']['ci95_high'] == pytest.approx(0.25 / scipy_stats.chi2.ppf(0.025, 1))
  assert result['mean'] == 2.75 and (result['inits'], result['datas']) == (2, 2)
  assert sum(result[k]['share'] for k in stats.VARIANCE_COMPONENTS) == pytest.approx(1.0)
  # A negative moment estimate is reported as 0 and said to be.
  flat = stats.variance_components([[1.0, 2.0], [2.0, 1.0]])
  assert flat['initialisation']['estimate'] == 0 and flat['initialisation']['truncated']
  with pytest.raises(ValueError, match='inits >= 2'):
    stats.variance_components([[1.0, 2.0, 3.0]])


def test_variance_components_cover_the_truth_95_percent_of_the_time():
  rng = np.random.default_rng(3)
  truth = {'initialisation': 1.0, 'data_order': 0.3, 'residual': 0.5}
  trials, covered = 400, dict.fromkeys(truth, 0)
  for _ in range(trials):
    y = (rng.normal(0, 1.0, (5, 1)) + rng.normal(0, math.sqrt(0.3), (1, 5)) +
         rng.normal(0, math.sqrt(0.5), (5, 5)))
    result = stats.variance_components(y)
    for name, value in truth.items():
      covered[name] += result[name]['ci95_low'] <= value <= result[name]['ci95_high']
  # Binomial standard error at 400 trials: 0.011 (2,000 trials gave 0.948, 0.952, 0.952).
  for name in truth:
    assert 0.91 <= covered[name] / trials <= 0.99, (name, covered)


# ----------------------------------------------------------------------------- points.csv


def test_point_rows_rank_and_tie_on_validation_without_reading_test():
  rng = np.random.default_rng(0)
  validation = [rng.normal(0.970, 0.001, 6), rng.normal(0.972, 0.001, 6),
                rng.normal(0.960, 0.001, 6)]
  test = [rng.normal(0.97, 0.001, 6) for _ in range(3)]
  settings = [{'learning_rate': lr} for lr in ('0.001', '0.003', '0.01')]
  rows = stats.point_rows(settings, test, ['0.97', '0.98', '0.96'], validation)
  assert [r['learning_rate'] for r in rows] == ['0.003', '0.001', '0.01']
  assert all(r['selected_on'] == 'validation' for r in rows)
  assert list(rows[0]) == ['learning_rate', *stats.POINT_COLUMNS,
                           *stats.POINT_VALIDATION_COLUMNS]
  # Against the best, on validation: paired t, Holm over the two comparisons.
  p = [scipy_stats.ttest_rel(validation[i], validation[1]).pvalue for i in (0, 2)]
  assert float(rows[1]['paired_p_value']) == pytest.approx(p[0], abs=1e-12)
  np.testing.assert_allclose([float(r['holm_p_value']) for r in rows[1:]], stats.holm(p))
  assert float(rows[1]['paired_difference']) == pytest.approx(
      np.mean(validation[0] - validation[1]), abs=1e-12)
  assert float(rows[1]['validation_mean']) == pytest.approx(np.mean(validation[0]))
  assert rows[0]['tied_with_best'] == 'true' and rows[2]['tied_with_best'] == 'false'
  assert rows[0]['paired_p_value'] == '' and rows[0]['holm_p_value'] == ''
  # The reported estimate is the test accuracy of each point.
  assert float(rows[0]['mean']) == pytest.approx(np.mean(test[1]), abs=1e-15)
  assert float(rows[0]['iqm']) == pytest.approx(scipy_stats.trim_mean(test[1], 0.25))
  # Perturbing every test figure changes no ranking, test, tie or probability.
  choice = ('rank', 'learning_rate', 'difference_to_best', 'welch_p_value', 'paired_difference',
            'paired_ci95_low', 'paired_ci95_high', 'paired_p_value', 'holm_p_value',
            'tied_with_best', 'probability_of_improvement')
  upside_down = stats.point_rows(settings, [1 - t for t in test[::-1]], ['0'] * 3, validation)
  assert [[r[c] for c in choice] for r in upside_down] == [[r[c] for c in choice] for r in rows]


def test_point_rows_without_validation_select_on_test():
  test = [[0.95, 0.96], [0.97, 0.99], [0.9, 0.91]]
  rows = stats.point_rows([{}, {}, {}], test, ['0.96', '0.98', '0.91'])
  assert [r['rank'] for r in rows] == ['1', '2', '3']
  assert [r['mean'] for r in rows] == [repr(float(np.mean(t))) for t in (test[1], test[0], test[2])]
  assert all(r['selected_on'] == 'test' for r in rows)
  assert 'validation_mean' not in rows[0]
  # Two seeds: the CI of the best stays inside [0, 1] (a plain t interval ends at 1.107).
  assert 0 < float(rows[0]['ci95_low']) < 0.97 and 0.99 < float(rows[0]['ci95_high']) < 1
  # Seed-matched: the 0.95/0.96 point loses to 0.97/0.99 in both seeds.
  assert rows[1]['probability_of_improvement'] == '0.0'
  # One seed per point: nothing to test, said as nan and an empty tie.
  single = stats.point_rows([{}, {}], [[0.9], [0.8]], ['0.9', '0.8'])
  assert single[1]['paired_p_value'] == 'nan' and single[1]['tied_with_best'] == ''
  assert single[1]['welch_p_value'] == 'nan'
