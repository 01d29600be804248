"""mlp_jax.compare on hand-written run and sweep directories, and on real runs: in this
process, and as the command a user runs (`python -m experiments.compare`)."""

import contextlib
import copy
import io
import json
import os
import re
import subprocess
import sys

from absl import flags
import numpy as np
import pytest
from scipy import stats as scipy_stats

from conftest import REPO, mnist_subset, run_options

HISTORY_HEADER = ('epoch', 'train_loss', 'train_accuracy', 'test_loss', 'test_accuracy',
                  'epoch_seconds', 'eval_seconds')
CONFIG = {'epochs': 3, 'seed': 0, 'batch_size': 128, 'learning_rate': 0.001,
          'hidden_sizes': [128, 128], 'init_seed': None, 'data_seed': None, 'data_dir': None}
ENVIRONMENT = {
    'versions': {'python': '3.11.7', 'jax': '0.10.2', 'jaxlib': '0.10.2', 'flax': '0.12.8',
                 'optax': '0.2.8', 'numpy': '2.4.6'},
    'backend': 'cpu', 'device_kind': 'cpu', 'device_count': 1, 'local_device_count': 1,
    'process_count': 1, 'process_index': 0, 'xla_flags': '',
    'jax_config': {'jax_enable_x64': False, 'jax_compilation_cache_dir': '/cache/a'},
    'platform': {'system': 'Linux', 'machine': 'x86_64', 'cpu_count': 2},
    'command': ['python', 'mlp_jax/main.py', '--workdir=a'],
    'git': {'commit': '8f34a4b6ca6d9a24e47c6621d780964da16a21bf', 'dirty': False},
    'data': {'source': '/data/a', 'sha256': {'t10k-labels-idx1-ubyte': 'ff7bcfd4'}},
}


def merged(base, changes):
  """A deep copy of `base` with the nested dict `changes` merged in."""
  result = copy.deepcopy(base)
  for key, value in (changes or {}).items():
    if isinstance(value, dict) and isinstance(result.get(key), dict):
      result[key] = merged(result[key], value)
    else:
      result[key] = value
  return result


def history_rows(seed, epochs, final_accuracy=None):
  """Plausible history cells (text) for a fake run: float32-like losses, exact accuracies."""
  rows = []
  for epoch in range(1, epochs + 1):
    accuracy = 0.95 + 0.005 * epoch + 0.0001 * seed
    if final_accuracy is not None and epoch == epochs:
      accuracy = final_accuracy
    rows.append({'epoch': str(epoch), 'train_loss': str(np.float32(0.4 / epoch + 0.001 * seed)),
                 'train_accuracy': repr(accuracy + 0.01), 'test_loss': str(np.float32(0.2 / epoch)),
                 'test_accuracy': repr(round(accuracy, 4)), 'epoch_seconds': '1.25',
                 'eval_seconds': '0.125'})
  return rows


def write_run(path, seed=0, epochs=3, config=None, environment=None, cells=None,
              final_accuracy=None):
  """Writes a fake run directory; `cells` maps (epoch, column) -> text to overwrite."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump({**CONFIG, 'epochs': epochs, 'seed': seed, **(config or {})}, f, indent=2)
  with open(os.path.join(path, 'environment.json'), 'w') as f:
    json.dump(merged(ENVIRONMENT, environment), f, indent=2)
  rows = history_rows(seed, epochs, final_accuracy)
  for (epoch, column), text in (cells or {}).items():
    rows[epoch - 1][column] = text
  with open(os.path.join(path, 'history.csv'), 'w') as f:
    f.write(','.join(HISTORY_HEADER) + '\n')
    for row in rows:
      f.write(','.join(row[c] for c in HISTORY_HEADER) + '\n')
  return str(path)


def write_sweep(path, final_accuracies, epochs=3, config=None, environment=None):
  """Writes a fake sweep: seed k's run ends at final_accuracies[k]."""
  seeds = sorted(final_accuracies)
  os.makedirs(path, exist_ok=True)
  shared = {k: v for k, v in {**CONFIG, 'epochs': epochs, **(config or {})}.items() if k != 'seed'}
  with open(os.path.join(path, 'sweep.json'), 'w') as f:
    json.dump({'seeds': seeds, 'config': shared}, f, indent=2)
  with open(os.path.join(path, 'environment.json'), 'w') as f:
    json.dump(merged(ENVIRONMENT, environment), f, indent=2)
  for seed in seeds:
    write_run(os.path.join(path, f'seed_{seed}'), seed=seed, epochs=epochs, config=config,
              environment=environment, final_accuracy=final_accuracies[seed])
  return str(path)


def _output_flag(plot):
  return f'--output={plot}' if plot else '--output='


def compare(*args, plot=None):
  """The tool on `args` in this process, its flags parsed on their own as its command
  line sets them: a CompletedProcess of what it printed and its exit status. Draws
  to `plot` if given, else (quicker) no picture. A usage error raises here: bad
  command lines go through compare_command, as a user meets them."""
  from mlp_jax import compare as tool  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  tool.define_flags(flag_values)
  argv = flag_values(['compare', *map(str, args), _output_flag(plot)])
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    try:
      tool.main(argv, flag_values)
      status = 0
    except SystemExit as e:
      status = e.code
  return subprocess.CompletedProcess(args, status, printed.getvalue(), '')


def compare_command(*args, cwd=REPO, plot=None):
  """Runs the tool as a user does; draws to `plot` if given, else (quicker) no picture."""
  command = [sys.executable, '-m', 'experiments.compare', *map(str, args), _output_flag(plot)]
  env = {**os.environ, 'PYTHONPATH': REPO}
  return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def verdict(result):
  lines = result.stdout.strip().splitlines()
  assert lines and lines[-1].startswith('verdict: '), result.stdout + result.stderr
  return lines[-1]


def test_reading_records_loads_neither_jax_nor_flax():
  """compare reads through mlp_jax.records, which must stay light (no jax, no flax)."""
  code = ('import sys; import mlp_jax.compare; '
          'print(sorted(m for m in ("jax", "flax", "orbax") if m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0 and result.stdout.strip() == '[]', result.stderr


def test_helpers():
  from mlp_jax import compare as tool  # pylint: disable=g-import-not-at-top
  assert tool.ranges([8, 0, 1, 2, 5, 7]) == '0-2, 5, 7-8' and tool.ranges([]) == 'none'
  assert tool.flatten({'a': {'b': 1, 'c': {}}, 'd': [1]}) == {'a.b': 1, 'a.c': {}, 'd': [1]}
  assert tool.differences({'x': 1, 'y': {'z': True}, 'skip': 1},
                          {'x': 1.5, 'y': {}, 'w': None, 'skip': 2}, ignored=('skip',)) == [
                              'w: (absent) -> null', 'x: 1 -> 1.5', 'y: (absent) -> {}',
                              'y.z: true -> (absent)']


@pytest.mark.slow
def test_identical_runs(tmp_path):
  a, b = write_run(tmp_path / 'a', seed=4), write_run(tmp_path / 'b', seed=4)
  for run_compare, flag in ((compare, []), (compare_command, ['--require_identical'])):
    result = run_compare(a, b, *flag, plot=tmp_path / 'compare.png')
    assert result.returncode == 0, result.stderr
    assert verdict(result) == ('verdict: IDENTICAL (bit for bit: 1 seed x 3 epochs, '
                               'timing columns aside)')
  assert 'settings (config.json): same' in result.stdout
  assert re.search(r'^environment .*: same$', result.stdout, re.M)
  assert re.search(r'^  test_accuracy +0 +0 of 3$', result.stdout, re.M), result.stdout
  with open(tmp_path / 'compare.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_one_ulp_in_one_cell_is_different(tmp_path):
  # float32(0.9676) is 0.96759999...; its neighbour one ULP up prints as 0.96760005.
  assert str(np.nextafter(np.float32(0.9676), np.float32(1))) == '0.96760005'
  a = write_run(tmp_path / 'a', cells={(2, 'test_accuracy'): '0.9676'})
  b = write_run(tmp_path / 'b', cells={(2, 'test_accuracy'): '0.96760005'})
  result = compare(a, b)
  assert result.returncode == 0, result.stderr
  assert verdict(result) == 'verdict: DIFFERENT (test_accuracy differs in 1 of 3 cells)'
  assert re.search(r'^  test_accuracy +5e-08 +1 of 3  epoch 2$', result.stdout, re.M), (
      result.stdout)
  strict = compare_command(a, b, '--require_identical')
  assert strict.returncode == 1 and strict.stderr == ''
  assert verdict(strict).startswith('verdict: DIFFERENT')


def test_the_same_number_written_differently_is_different(tmp_path):
  # Cells are compared as text: the verdict promises the files agree bit for bit.
  a = write_run(tmp_path / 'a', cells={(1, 'test_loss'): '0.2'})
  b = write_run(tmp_path / 'b', cells={(1, 'test_loss'): '0.20'})
  result = compare(a, b, '--require_identical')
  assert result.returncode == 1
  assert verdict(result) == 'verdict: DIFFERENT (test_loss differs in 1 of 3 cells)'


def test_timing_columns_may_differ(tmp_path):
  a = write_run(tmp_path / 'a')
  b = write_run(tmp_path / 'b', cells={(1, 'epoch_seconds'): '9.5', (3, 'eval_seconds'): '0.01'})
  result = compare(a, b, '--require_identical')
  assert result.returncode == 0
  assert verdict(result).startswith('verdict: IDENTICAL (bit for bit: 1 seed x 3 epochs')


def test_differing_settings_and_environment_are_listed(tmp_path):
  a = write_run(tmp_path / 'a')
  b = write_run(tmp_path / 'b', config={'learning_rate': 0.002, 'hidden_sizes': [64]},
                environment={'versions': {'jax': '0.10.3'},
                             'git': {'commit': '1234567890abcdef1234567890abcdef12345678'},
                             'data': {'source': '/data/b',
                                      'sha256': {'t10k-labels-idx1-ubyte': '00000000'}},
                             'command': ['python', 'other'], 'process_index': 1,
                             'jax_config': {'jax_compilation_cache_dir': '/cache/b'}})
  result = compare(a, b)
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert 'settings (config.json): differ' in out
  assert '  learning_rate: 0.001 -> 0.002\n' in out
  assert '  hidden_sizes: [128, 128] -> [64]\n' in out
  assert '  versions.jax: "0.10.2" -> "0.10.3"\n' in out
  assert ('  git.commit: "8f34a4b6ca6d9a24e47c6621d780964da16a21bf" -> '
          '"1234567890abcdef1234567890abcdef12345678"\n') in out
  assert '  data.sha256.t10k-labels-idx1-ubyte: "ff7bcfd4" -> "00000000"\n' in out
  # How and from where a run was launched is not compared.
  for ignored in ('  command:', '  process_index:', '  data.source:', '  jax_config.'):
    assert ignored not in out
  # The verdict is about the numbers: these histories are the same.
  assert verdict(result).startswith('verdict: IDENTICAL')


@pytest.mark.slow
def test_epochs_and_seeds_on_one_side_only(tmp_path):
  a = write_run(tmp_path / 'a', seed=2, epochs=3)
  b = write_run(tmp_path / 'b', seed=2, epochs=2)
  result = compare(a, b, '--require_identical')
  assert result.returncode == 1
  assert 'epochs only in A: 3\n' in result.stdout
  assert 'history.csv: 1 seed x 2 epochs compared' in result.stdout
  assert verdict(result) == 'verdict: DIFFERENT (epochs only in A: 3)'
  c = write_run(tmp_path / 'c', seed=5, epochs=2)
  assert 'seeds only in A: 2; seeds only in B: 5' in verdict(compare(b, c))


def test_two_sweeps_report_means_and_welch(tmp_path):
  finals_a = {0: 0.9701, 1: 0.9723, 2: 0.9751, 3: 0.9712}
  finals_b = {0: 0.9681, 1: 0.9690, 2: 0.9702, 3: 0.9675, 4: 0.9688}
  a = write_sweep(tmp_path / 'a', finals_a)
  b = write_sweep(tmp_path / 'b', finals_b, config={'learning_rate': 0.002})
  result = compare(a, b, plot=tmp_path / 'sweeps.png')
  assert result.returncode == 0, result.stderr
  assert os.path.getsize(tmp_path / 'sweeps.png') > 10_000
  out = result.stdout
  sample_a, sample_b = list(finals_a.values()), list(finals_b.values())
  for name, sample in (('A', sample_a), ('B', sample_b)):
    line = (f'  {name}: {np.mean(sample):.6f} ± {np.std(sample, ddof=1):.6f} '
            f'(mean ± std, n={len(sample)}; epoch 3)')
    assert line in out, out
  reference = scipy_stats.ttest_ind(sample_a, sample_b, equal_var=False)
  match = re.search(r'^  A - B: ([-+.\d]+), 95% CI \[([-+.\d]+), ([-+.\d]+)\] .* p = (\S+)$',
                    out, re.M)
  assert match, out
  difference, low, high, p_value = map(float, match.groups())
  assert difference == pytest.approx(np.mean(sample_a) - np.mean(sample_b), abs=1e-6)
  ci = reference.confidence_interval(0.95)
  assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-6)
  assert p_value == pytest.approx(reference.pvalue, rel=1e-5)
  assert '  config.learning_rate: 0.001 -> 0.002\n' in out
  assert '  seeds: [0, 1, 2, 3] -> [0, 1, 2, 3, 4]\n' in out
  assert 'history.csv: 4 seeds x 3 epochs compared' in out
  # The fake runs' accuracies differ in the last epoch only: 4 common seeds x 1 epoch.
  assert verdict(result) == ('verdict: DIFFERENT (train_accuracy differs in 4 of 12 cells; '
                             'test_accuracy differs in 4 of 12 cells; seeds only in B: 4)')


def test_differing_bits_are_explained_by_width_precision_backend_and_versions(tmp_path):
  """Sweeps whose bits differ because of the vmap width, the matmul precision, the
  device and the jax version: compare names those, and still gives its statistics."""
  finals_a = {0: 0.9701, 1: 0.9723, 2: 0.9751}
  finals_b = {0: 0.9702, 1: 0.9720, 2: 0.9753}
  a = write_sweep(tmp_path / 'a', finals_a, config={'vmap_width': 1})
  b = write_sweep(tmp_path / 'b', finals_b, config={'vmap_width': 4, 'matmul_precision': 'high'},
                  environment={'backend': 'gpu', 'device_kind': 'NVIDIA H100 80GB HBM3',
                               'versions': {'jax': '0.12.0.1', 'jaxlib': '0.12.0.1'}})
  out = compare(a, b).stdout
  assert ('likely reason for differing bits: vmap width 1 -> 4; matmul precision (absent) -> '
          '"high"; backend "cpu" -> "gpu"; device kind "cpu" -> "NVIDIA H100 80GB HBM3"; '
          'jax version "0.10.2" -> "0.12.0.1"; jaxlib version "0.10.2" -> "0.12.0.1"\n') in out
  assert re.search(r'^  A - B: .* p = \S+$', out, re.M), out
  # Identical results need no explanation, whatever differs around them.
  c = write_sweep(tmp_path / 'c', finals_a, config={'vmap_width': 1},
                  environment={'versions': {'jax': '0.12.0.1'}})
  assert 'likely reason' not in compare(a, c).stdout


def test_a_cpu_of_another_generation_under_the_same_name_is_named(tmp_path):
  """A VM may call Zen 3 and Zen 5 both 'AMD EPYC': the CPU id and vector extensions
  tell them apart, and compare names them."""
  zen3 = {'platform': {'cpu': 'AMD EPYC', 'cpu_id': 'AuthenticAMD family 25 model 1 stepping 1',
                       'cpu_isa': ['avx', 'avx2', 'fma']}}
  zen5 = {'platform': {'cpu': 'AMD EPYC', 'cpu_id': 'AuthenticAMD family 26 model 2 stepping 1',
                       'cpu_isa': ['avx', 'avx2', 'fma', 'avx512f']}}
  a = write_sweep(tmp_path / 'a', {0: 0.9701}, environment=zen3)
  b = write_sweep(tmp_path / 'b', {0: 0.9702}, environment=zen5)
  out = compare(a, b).stdout
  assert ('likely reason for differing bits: CPU id "AuthenticAMD family 25 model 1 stepping 1" '
          '-> "AuthenticAMD family 26 model 2 stepping 1"; CPU vector extensions '
          '["avx", "avx2", "fma"] -> ["avx", "avx2", "fma", "avx512f"]\n') in out, out


def test_identical_sweeps_and_a_seed_without_records(tmp_path):
  finals = {0: 0.97, 1: 0.971, 2: 0.9705}
  a, b = write_sweep(tmp_path / 'a', finals), write_sweep(tmp_path / 'b', finals)
  result = compare(a, b, '--require_identical')
  assert result.returncode == 0, result.stdout
  assert verdict(result) == ('verdict: IDENTICAL (bit for bit: 3 seeds x 3 epochs, '
                             'timing columns aside)')
  # A sweep still running: seed 2 has not finished an epoch.
  os.remove(os.path.join(b, 'seed_2', 'history.csv'))
  result = compare(a, b, '--require_identical')
  assert result.returncode == 1
  assert 'without records yet: 2' in result.stdout
  assert verdict(result) == 'verdict: DIFFERENT (seeds only in A: 2)'


@pytest.mark.slow
def test_run_against_the_same_seed_of_a_sweep(tmp_path):
  sweep = write_sweep(tmp_path / 'sweep', {0: 0.97, 1: 0.971, 2: 0.9705})
  run = write_run(tmp_path / 'run', seed=1, final_accuracy=0.971)
  for args in ((run, sweep), (sweep, run)):
    result = compare(*args, '--require_identical')
    assert result.returncode == 0, result.stdout
    assert "compared with the sweep's seed_1; its other 2 seeds are not compared" in result.stdout
    assert 'settings (config.json vs seed_1/config.json): same' in result.stdout
    assert verdict(result).startswith('verdict: IDENTICAL (bit for bit: 1 seed x 3 epochs')
  stranger = write_run(tmp_path / 'stranger', seed=7)
  result = compare(stranger, sweep, '--require_identical')
  assert result.returncode == 1
  assert 'the sweep has no records for seed 7' in result.stdout
  assert verdict(result) == 'verdict: DIFFERENT (seeds only in A: 7; no common seed)'


def test_no_picture_unless_output_is_given(tmp_path):
  a, b = write_run(tmp_path / 'a'), write_run(tmp_path / 'b')
  result = subprocess.run([sys.executable, '-m', 'experiments.compare', a, b], cwd=tmp_path,
                          env={**os.environ, 'PYTHONPATH': REPO}, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert 'plot:' not in result.stdout and sorted(os.listdir(tmp_path)) == ['a', 'b']


def _partial_history(path):
  write_run(path)
  with open(os.path.join(path, 'history.csv'), 'a') as f:
    f.write('4,0.1,0.9')  # a row cut short, as if still being written
  return str(path)


def _bad_json(path):
  write_run(path)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    f.write('{"epochs": 3,')
  return str(path)


def _bad_cell(path):
  return write_run(path, cells={(2, 'test_loss'): 'abc'})


@pytest.mark.parametrize('make_b, expected', [
    (lambda p: str(p / 'missing'), 'no such directory'),
    (lambda p: str(p), 'neither a run (no config.json) nor a sweep (no sweep.json)'),
    (_partial_history, 'ends in a partial row'),
    (_bad_json, 'config.json: unreadable JSON'),
    (_bad_cell, "test_loss 'abc' is not a number"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make_b, expected):
  a = write_run(tmp_path / 'a')
  (tmp_path / 'b').mkdir()
  result = compare_command(a, make_b(tmp_path / 'b'), '--require_identical',
                           plot=tmp_path / 'compare.png')
  assert result.returncode == 2
  assert result.stderr.startswith('error: ') and expected in result.stderr, result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and 'Traceback' not in result.stderr
  assert not (tmp_path / 'compare.png').exists()


def test_one_directory_is_a_usage_error(tmp_path):
  result = compare_command(write_run(tmp_path / 'a'))
  assert result.returncode == 2 and 'expected two directories' in result.stderr


@pytest.mark.slow
def test_real_runs(tmp_path, mnist):
  """The same real run twice is IDENTICAL; another learning rate is DIFFERENT (runs
  trained in-process, 1 epoch on 2,048 images: compare reads only their records)."""
  from mlp_jax.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from mlp_jax.run import Layout, epoch_line, train  # pylint: disable=g-import-not-at-top
  subset = mnist_subset(mnist, 2048, 1000)
  dirs = {}
  for name, learning_rate in (('a', 0.001), ('b', 0.001), ('lr', 0.002)):
    dirs[name] = str(tmp_path / name)
    train(TrainConfig(epochs=1, seed=3, learning_rate=learning_rate), [3],
          Layout(dirs[name], sweep=False), run_options(tensorboard=False), epoch_line, 0.0,
          subset)
  same = compare(dirs['a'], dirs['b'], '--require_identical')
  assert same.returncode == 0, same.stdout + same.stderr
  assert verdict(same) == ('verdict: IDENTICAL (bit for bit: 1 seed x 1 epoch, '
                           'timing columns aside)')
  assert re.search(r'^environment .*: same$', same.stdout, re.M), same.stdout
  other = compare(dirs['a'], dirs['lr'], '--require_identical', plot=tmp_path / 'other.png')
  assert other.returncode == 1, other.stdout + other.stderr
  assert '  learning_rate: 0.001 -> 0.002\n' in other.stdout
  assert verdict(other).startswith('verdict: DIFFERENT (train_loss differs in 1 of 1 cells')
  assert os.path.getsize(tmp_path / 'other.png') > 10_000
  # McNemar's exact test from the saved models, on the full test set their configs name.
  from mlp_jax import data, inference, records  # pylint: disable=g-import-not-at-top
  result = compare(dirs['a'], dirs['lr'], f'--json={tmp_path / "r.json"}')
  with open(tmp_path / 'r.json') as f:
    mcnemar = json.load(f)['mcnemar']
  test = data.load_data(records.load_config(dirs['a']))
  right = [inference.load_trained(dirs[n])(test.test_images) == test.test_labels
           for n in ('a', 'lr')]
  a_only, b_only = int(np.sum(right[0] & ~right[1])), int(np.sum(~right[0] & right[1]))
  assert (mcnemar['n'], mcnemar['a_only'], mcnemar['b_only']) == (10_000, a_only, b_only)
  assert a_only + b_only > 0
  assert mcnemar['p_value'] == pytest.approx(
      scipy_stats.binomtest(a_only, a_only + b_only, 0.5).pvalue, abs=1e-9)
  assert (f"  McNemar's exact test on the 10,000 test images: A right where B is wrong "
          f'{a_only}, B right where A is wrong {b_only}; p = ') in result.stdout


# ----------------------------------------------------------------------------- statistics

JSON_KEYS = {'verdict', 'settings', 'environment', 'welch', 'paired', 'bootstrap',
             'probability_of_improvement', 'mcnemar', 'detectable_difference'}
FINALS_A = {0: 0.9712, 1: 0.9731, 2: 0.9698, 3: 0.9744, 4: 0.9720, 5: 0.9709}
FINALS_B = {0: 0.9701, 1: 0.9725, 2: 0.9700, 3: 0.9730, 4: 0.9712, 5: 0.9695, 6: 0.9729}


def test_two_sweeps_paired_statistics_match_scipy(tmp_path):
  from mlp_jax import stats  # pylint: disable=g-import-not-at-top
  a = write_sweep(tmp_path / 'a', FINALS_A)
  b = write_sweep(tmp_path / 'b', FINALS_B, config={'learning_rate': 0.002})
  result = compare(a, b, '--target_difference=0.001', f'--json={tmp_path / "report.json"}')
  assert result.returncode == 0, result.stderr
  with open(tmp_path / 'report.json') as f:
    report = json.load(f)
  assert JSON_KEYS <= set(report) and report['mcnemar'] is None
  assert report['verdict'] == verdict(result)[len('verdict: '):]
  assert report['settings']['differences']['config.learning_rate'] == {'a': 0.001, 'b': 0.002}
  x = np.array([FINALS_A[s] for s in range(6)])
  y = np.array([FINALS_B[s] for s in range(6)])
  # Paired over the 6 common seeds; Welch over all 6 and 7.
  paired, reference = report['paired'], scipy_stats.ttest_rel(x, y)
  assert paired['seeds'] == list(range(6)) and paired['n'] == 6
  ci = reference.confidence_interval(0.95)
  assert (paired['ci95_low'], paired['ci95_high']) == pytest.approx((ci.low, ci.high), abs=1e-9)
  assert paired['p_value'] == pytest.approx(reference.pvalue, abs=1e-9)
  assert paired['wilcoxon_p_value'] == pytest.approx(scipy_stats.wilcoxon(x, y).pvalue, abs=1e-9)
  assert paired['correlation'] == pytest.approx(scipy_stats.pearsonr(x, y).statistic, abs=1e-9)
  welch = scipy_stats.ttest_ind(x, list(FINALS_B.values()), equal_var=False)
  assert report['welch']['p_value'] == pytest.approx(welch.pvalue, abs=1e-9)
  boot = report['bootstrap']
  assert (boot['resamples'], boot['seed'], boot['method'], boot['paired']) == (
      10_000, 0, 'percentile', True)
  again = stats.bootstrap_difference(x, y, paired=True, seed=boot['seed'])
  assert (boot['ci95_low'], boot['ci95_high']) == (again.ci95_low, again.ci95_high)
  wins = np.mean([(u > v) + 0.5 * (u == v) for u in x for v in y])
  assert report['probability_of_improvement']['value'] == pytest.approx(wins, abs=1e-12)
  std = np.std(x - y, ddof=1)
  planned = report['detectable_difference']
  assert planned['paired'] and planned['n'] == 6 and planned['std'] == pytest.approx(std)
  assert planned['difference'] == pytest.approx(stats.detectable_difference(6, std), rel=1e-9)
  assert report['seeds_needed']['seeds'] == stats.seeds_needed(0.001, std)
  assert report['test_set_error']['n_test'] == 10_000
  out = result.stdout
  assert re.search(r'^  paired over the 6 common seeds \(0-5;', out, re.M), out
  assert re.search(re.escape(f'    mean {np.mean(x - y):+.6f}, 95% CI [{ci.low:+.6f}, ') +
                   r'.* paired t-test p = \S+; Wilcoxon '
                   r'signed-rank p = \S+; correlation of A and B r = \S+$', out, re.M), out
  assert re.search(r'^  detectable difference: 0\.00\d+ with 6 seeds \(80% power, alpha 0\.05, '
                   r'paired t;', out, re.M), out
  assert f'  seeds needed to detect 0.001: {stats.seeds_needed(0.001, std)} ' in out
  error = stats.test_set_error(np.mean(list(FINALS_A.values()) + list(FINALS_B.values())),
                               10_000)  # 1.96 sqrt(0.9716 * 0.0284 / 10,000) = 0.0033
  assert report['test_set_error']['half_width'] == pytest.approx(error, rel=1e-12)
  assert f'  test-set sampling error: ±{error:.6f} (95% binomial interval' in out
  assert verdict(result).startswith('verdict: DIFFERENT')  # still the last line


def test_sweeps_without_common_seeds_are_compared_unpaired(tmp_path):
  a = write_sweep(tmp_path / 'a', {0: 0.97, 1: 0.971, 2: 0.969})
  b = write_sweep(tmp_path / 'b', {5: 0.968, 6: 0.9695, 7: 0.9688})
  result = compare(a, b, f'--json={tmp_path / "r.json"}')
  assert result.returncode == 0, result.stderr
  with open(tmp_path / 'r.json') as f:
    report = json.load(f)
  assert report['paired'] is None and report['welch'] is not None
  assert report['bootstrap']['paired'] is False
  assert report['detectable_difference']['paired'] is False
  assert 'unpaired (fewer than 2 common seeds)' in result.stdout


def test_two_runs_without_models_say_why_mcnemar_did_not_run(tmp_path):
  a, b = write_run(tmp_path / 'a', seed=4), write_run(tmp_path / 'b', seed=4)
  result = compare(a, b, f'--json={tmp_path / "r.json"}', '--target_difference=0.002')
  assert result.returncode == 0, result.stderr
  assert "  McNemar's exact test: not run (A has no params.msgpack" in result.stdout
  assert '  seeds needed to detect 0.002: unknown (it needs the spread over seeds' in (
      result.stdout)
  with open(tmp_path / 'r.json') as f:
    report = json.load(f)
  assert JSON_KEYS <= set(report) and report['identical'] is True
  for key in ('welch', 'paired', 'bootstrap', 'probability_of_improvement', 'mcnemar',
              'detectable_difference'):
    assert report[key] is None, key


@pytest.mark.parametrize('flag, expected', [
    ('--target_difference=0', '--target_difference=0: expected a difference of accuracy > 0'),
    ('--target_difference=-0.002', '--target_difference=-0.002: expected'),
    ('--json=/nonexistent/dir/r.json', '--json=/nonexistent/dir/r.json: its directory'),
])
def test_bad_statistics_flags_are_one_line_and_exit_2(tmp_path, flag, expected):
  a = write_sweep(tmp_path / 'a', {0: 0.97, 1: 0.971})
  result = compare_command(a, a, flag)
  assert result.returncode == 2 and result.stdout == ''
  assert result.stderr.startswith('error: ') and expected in result.stderr, result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
