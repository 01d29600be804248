"""experiments.benchmark: its arithmetic, its report and its command line (no timing)."""

import json
import os

import pytest

from experiments import benchmark
from mlp_jax import records


def test_flops_of_the_seed_config():
  # 784-128-128-10 has 100,352 + 16,384 + 1,280 = 118,016 weights: forward and
  # weight gradients 2 * 118,016 each, input gradients of layers 2 and 3 2 * 17,664.
  assert benchmark.training_flops_per_example((128, 128)) == 507_392
  assert 507_392 == 2 * 118_016 + 2 * 118_016 + 2 * 17_664
  # Per trained epoch (59,904 examples): 30.39 GFLOP.
  assert round(benchmark.training_flops_per_example((128, 128)) * 59_904 / 1e9, 2) == 30.39


@pytest.mark.parametrize('hidden_sizes', [(64,), (128,), (256, 32), (128, 128), (1, 2, 3)])
def test_flops_scale_with_the_layer_sizes(hidden_sizes):
  widths = [784, *hidden_sizes, 10]
  layers = [a * b for a, b in zip(widths[:-1], widths[1:])]
  assert benchmark.training_flops_per_example(hidden_sizes) == 4 * sum(layers) + 2 * sum(
      layers[1:])


def test_flops_of_one_hidden_layer_are_linear_in_its_width():
  one = benchmark.training_flops_per_example((1,))
  assert one == 4 * 794 + 2 * 10
  assert benchmark.training_flops_per_example((100,)) == 100 * one


def test_other_cpu_fraction_subtracts_our_own_time():
  # 2 cores for 10 s: 20 core-seconds, 15 busy, 5 of them ours.
  assert benchmark.other_cpu_fraction((100.0, 40.0, 7.0), (120.0, 55.0, 12.0)) == 0.5
  assert benchmark.other_cpu_fraction(None, (1.0, 1.0, 1.0)) is None
  assert benchmark.other_cpu_fraction((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)) is None


def _child(wall, first, rss=400e6, returncode=0):
  run = {'command': ['python', '-m', 'mlp_jax.main'], 'wall_seconds': wall,
         'returncode': returncode, 'peak_rss_bytes': rss}
  if returncode == 0:
    run['timing'] = {'first_epoch_done_seconds': first, 'startup_seconds': first - 0.2,
                     'compile_seconds': first / 2}
  else:
    run['error'] = 'TypeError: something broke'
  return run


def _fake_results(sweep_available=True):
  sweep = {'available': False}
  if sweep_available:
    sweep = {'available': True, 'runs': [
        {'seeds': 1, 'epochs': 2, 'wall_seconds': 4.0, 'returncode': 0, 'train_seconds': 0.4,
         'seed_epochs': 2, 'seed_epochs_per_second': 5.0, 'seed_epochs_per_wall_second': 0.5},
        {'seeds': 8, 'epochs': 2, 'wall_seconds': 9.0, 'returncode': 1, 'error': 'boom'}]}
  return {
      'quick': True,
      'machine': {'platform': {'cpu': 'Fake CPU', 'cpu_count': 2}, 'backend': 'cpu',
                  'device_kind': 'cpu', 'device_count': 1,
                  'versions': {'jax': '0.10.2', 'jaxlib': '0.10.2'}},
      'matmul': {'size': 2048, 'repeats': 5, 'seconds': [0.05], 'gflops': 400.0,
                 'other_cpu_fraction': 0.0},
      'epoch': {'epoch_seconds': [0.3, 0.16, 0.17], 'eval_seconds': [0.02, 0.015, 0.015],
                'steady_epoch_seconds': 0.165, 'steady_eval_seconds': 0.015,
                'examples_per_epoch': 59_904, 'flops_per_example': 507_392,
                'gflops': 184.2, 'other_cpu_fraction': 0.3},
      'startup': {'cold': _child(6.0, 4.5), 'warm': [_child(2.5, 1.6)],
                  'warm_first_epoch_done_seconds': 1.6, 'other_cpu_fraction': 0.0},
      'memory': {**_child(3.0, 1.7, rss=1.2e9), 'other_cpu_fraction': None},
      'sweep': {**sweep, 'other_cpu_fraction': 0.0},
  }


def test_targets_pass_and_fail_on_the_measurements():
  targets = benchmark.check_targets(_fake_results())
  by_name = {t['name']: t for t in targets}
  assert len(by_name) == 4
  fraction = by_name['steady-state epoch, fraction of matmul peak']
  assert fraction['value'] == pytest.approx(184.2 / 400) and fraction['passed'] is False
  assert by_name['warm start-up to first finished epoch (s)']['passed'] is True
  assert by_name['peak RSS (bytes)']['value'] == 1.2e9
  assert by_name['peak RSS (bytes)']['passed'] is False
  # Other processes took 30% of the CPU while the epochs ran: that verdict is noisy.
  assert [t['noisy'] for t in targets] == [True, False, False, False]


def test_a_failed_child_is_not_measured():
  results = _fake_results()
  results['memory'] = _child(1.0, 0.0, returncode=1)
  results['startup']['warm_first_epoch_done_seconds'] = None
  by_name = {t['name']: t for t in benchmark.check_targets(results)}
  assert by_name['peak RSS (bytes)']['passed'] is None
  assert by_name['warm start-up to first finished epoch (s)']['passed'] is None
  results['targets'] = list(by_name.values())
  table = benchmark.format_table(results)
  assert 'TypeError: something broke' in table and 'n/a' in table


def test_table_and_json_report_every_measurement(tmp_path):
  results = _fake_results()
  results['targets'] = benchmark.check_targets(results)
  table = benchmark.format_table(results)
  for text in ('Fake CPU', '2 cores', 'jax 0.10.2', '400.0 GFLOP/s', '0.1650 s', '0.1600 / 0.1700 s', '184.2',
               '507,392', '59,904', '>= 0.50 FAIL (noisy)', '<= 3.0 s PASS', '1200 MB',
               '<= 1000 MB FAIL',
               '5.00 seed-epochs/s', 'boom', 'epoch 30%', 'warning'):
    assert text in table, text
  path = tmp_path / 'benchmark.json'
  benchmark.write_results(str(path), results)
  written = json.loads(path.read_text())
  assert set(written) == {'quick', 'machine', 'matmul', 'epoch', 'startup', 'memory', 'sweep',
                          'targets'}
  assert [t['passed'] for t in written['targets']] == [False, True, False, None]


def test_sweep_not_available_is_reported_not_raised(monkeypatch, tmp_path):
  monkeypatch.setattr(benchmark, 'sweep_available', lambda: False)
  assert benchmark.measure_sweep(str(tmp_path), str(tmp_path), (1, 8), epochs=1) == {
      'available': False}
  results = _fake_results(sweep_available=False)
  results['targets'] = benchmark.check_targets(results)
  assert 'not available' in benchmark.format_table(results)


@pytest.mark.parametrize('args, expected', [
    (['--quick=maybe'], '--quick'),
    (['--output=/no/such/dir/benchmark.json'], 'no such directory'),
    (['stray'], 'unexpected arguments'),
    (['--torch_python=/no/such/python'], 'not an executable'),
    (['--torch_threads=two'], '--torch_threads'),
])
def test_bad_command_line_is_one_clear_line(args, expected, run_module):
  result = run_module('experiments.benchmark', *args, timeout=120)
  assert result.returncode != 0
  assert expected in result.stderr
  assert 'Traceback' not in result.stderr
  assert len(result.stderr.strip().splitlines()) <= 2, result.stderr


@pytest.mark.slow
def test_epochs_are_measured_on_the_project_code_path():
  measured = benchmark.measure_epochs(epochs=2)
  assert len(measured['epoch_seconds']) == len(measured['eval_seconds']) == 2
  assert measured['examples_per_epoch'] == 59_904
  assert measured['flops_per_example'] == 507_392
  assert measured['gflops'] > 0 and measured['steady_epoch_seconds'] > 0


def test_epochs_slower_than_the_sweeps_program_are_flagged():
  """The epoch section and the sweeps time the same program: a big gap means the
  machine slowed down in between, which /proc/stat cannot show under a VM."""
  results = _fake_results()
  results['epoch']['other_cpu_fraction'] = 0.0
  assert benchmark.epoch_slowdown(results) == pytest.approx(0.165 * 5.0)
  assert [t['noisy'] for t in benchmark.check_targets(results)] == [False, False, False, False]
  results['sweep']['runs'][0]['seed_epochs_per_second'] = 10.0   # 0.1 s per seed-epoch
  results['targets'] = benchmark.check_targets(results)
  assert [t['noisy'] for t in results['targets']] == [True, False, False, False]
  table = benchmark.format_table(results)
  assert '1.65' in table and 'machine slowed down' in table and 'FAIL (noisy)' in table
  results['sweep'] = {'available': False}
  assert benchmark.epoch_slowdown(results) is None


def test_sweep_mode_host_work_is_total_minus_startup_training_and_evaluation():
  timing = {'seed_epochs': 192, 'train_seconds': 90.0, 'eval_seconds': 10.0,
            'startup_seconds': 4.0, 'total_seconds': 109.0, 'records_seconds': 1.0,
            'checkpoint_seconds': 0.5, 'summary_seconds': 3.0}
  work = benchmark.sweep_host_work(timing)
  assert work['host_seconds'] == pytest.approx(5.0)
  assert work['host_fraction'] == pytest.approx(0.05)
  assert work['seed_epochs_per_second'] == pytest.approx(192 / 90)
  run = {'command': ['python', '-m', 'experiments.sweep', '--seeds=0-63'], 'timing': timing,
         'wall_seconds': 110.0, 'seed_epochs_per_wall_second': 192 / 110, 'passed': True,
         **work}
  text = benchmark.format_sweep_mode(run)
  assert '0.050 of training + evaluation (<= 0.10 PASS)' in text
  assert 'records 1.00 s, checkpoints 0.50 s, summaries 3.00 s' in text


def _e2e_run(wall, total=9.0):
  return {'command': ['python', '-m', 'mlp_jax.main'], 'returncode': 0, 'wall_seconds': wall,
          'peak_rss_bytes': 4e8,
          'timing': {'total_seconds': total, 'startup_seconds': 3.0, 'compile_seconds': 0.5,
                     'train_seconds': 4.0, 'eval_seconds': 0.2, 'checkpoint_seconds': 0.1,
                     'records_seconds': 0.05, 'summary_seconds': 1.0}}


def test_end_to_end_breakdown_adds_up_to_the_wall_time():
  parts = benchmark.e2e_breakdown(_e2e_run(10.0), imports=1.5)
  assert parts['exit'] == pytest.approx(1.0)
  assert parts['startup_rest'] == pytest.approx(1.5)
  assert parts['other'] == pytest.approx(9.0 - 3.0 - 4.0 - 0.2 - 0.1 - 0.05 - 1.0)
  summed = sum(v for k, v in parts.items() if k != 'compile')  # compile is within start-up
  assert summed == pytest.approx(10.0)
  assert [k for k, _ in benchmark.E2E_PARTS] == ['imports', 'startup_rest', 'compile', 'train',
                                                 'eval', 'checkpoint', 'records', 'summary',
                                                 'other', 'exit']


def test_torch_command_names_the_thread_setting():
  assert benchmark.torch_command('/venv/bin/python', 'default', 20) == [
      '/venv/bin/python', benchmark.TORCH_BASELINE, '--epochs=20']
  assert benchmark.torch_command('/venv/bin/python', '1', 3)[-1] == '--threads=1'


def _e2e(torch):
  parts = benchmark.e2e_breakdown(_e2e_run(10.0), imports=1.5)
  return {'epochs': 20, 'repeats': 2, 'runs': [_e2e_run(10.0)], 'torch_python': None,
          'wall_seconds': 10.0, 'breakdown': parts, 'torch': torch,
          'ratio': None if torch is None else 10.0 / 20.0, 'other_cpu_fraction': 0.0}


def test_end_to_end_section_with_and_without_pytorch():
  results = _fake_results()
  results['end_to_end'] = _e2e(None)
  results['targets'] = benchmark.check_targets(results)
  table = benchmark.format_table(results)
  assert 'not measured (no --torch_python)' in table
  assert 'interpreter start and exit' in table and '10.00 s wall' in table
  by_name = {t['name']: t for t in results['targets']}
  assert by_name['epochs end to end, mlp_jax / PyTorch wall time']['passed'] is None
  torch = {'default': {'runs': [{}], 'wall_seconds': 20.0, 'train_seconds': 15.0,
                       'test_accuracy': 0.9768, 'threads': 2, 'error': None},
           '1': {'runs': [{}], 'wall_seconds': None, 'train_seconds': None,
                 'test_accuracy': None, 'threads': None, 'error': 'no result line'}}
  results['end_to_end'] = _e2e(torch)
  results['targets'] = benchmark.check_targets(results)
  table = benchmark.format_table(results)
  assert 'PyTorch loop, threads default (2), median of 1' in table and '20.00 s wall' in table
  assert 'no result line' in table
  assert '0.500' in table and '<= 0.40 FAIL' in table


def test_grid_mode_compares_a_grid_with_a_sweep_of_as_many_seeds(tmp_path, monkeypatch):
  """The commands it runs, and the ratio of median wall times against the target."""
  commands, walls = [], iter([30.0, 25.0, 33.0, 28.0, 31.0, 26.0])

  def fake_child(module, args, cache_dir, log_path):
    del cache_dir, log_path
    commands.append([module, *args])
    workdir = next(a.split('=', 1)[1] for a in args if a.startswith('--workdir='))
    os.makedirs(workdir)
    records.write_json(os.path.join(workdir, records.TIMING_FILE),
                       {'compile_seconds': 1.5, 'train_seconds': 20.0, 'seed_epochs': 60})
    return {'command': ['python', '-m', module, *args], 'returncode': 0,
            'wall_seconds': next(walls)}

  monkeypatch.setattr(benchmark, 'run_child', fake_child)
  result = benchmark.measure_grid_mode(str(tmp_path), str(tmp_path / 'cache'),
                                       ['0.0001', '0.001'], seeds=3, epochs=2, rounds=2)
  assert [c[1:3] for c in commands[::2]] == [['--seeds=0-2', '--learning_rate=0.0001,0.001']] * 3
  assert [c[1] for c in commands[1::2]] == ['--seeds=0-5'] * 3
  assert [c[-2] for c in commands] == ['--epochs=1'] * 2 + ['--epochs=2'] * 4
  assert result['median_wall_seconds'] == {'grid': 32.0, 'sweep': 27.0}
  assert result['ratio'] == pytest.approx(32 / 27) and result['passed']
  text = benchmark.format_grid_mode(result)
  assert 'grid / sweep wall time 1.185 (<= 1.2 PASS)' in text and 'compile 1.50, 1.50 s' in text


@pytest.mark.parametrize('device_kind, bandwidth', [
    ('NVIDIA H100 80GB HBM3', 3.35e12), ('NVIDIA H100 PCIe', 2.0e12), ('NVIDIA H200', 4.8e12),
    ('NVIDIA A100-SXM4-40GB', 1.555e12), ('NVIDIA A100-PCIE-40GB', 1.555e12),
    ('NVIDIA A100-SXM4-80GB', 2.0e12), ('NVIDIA L4', 0.3e12), ('TPU v4', 1.2e12),
    ('TPU v5 lite', 0.819e12),
    # Not in the table (other bandwidths): the check measures a copy instead.
    ('NVIDIA L40S', None), ('NVIDIA H100 NVL', None), ('NVIDIA GH200 480GB', None),
    ('TPU v5p', None), ('cpu', None)])
def test_bandwidth_of_known_devices(device_kind, bandwidth):
  known = benchmark.device_bandwidth(device_kind)
  assert (known and known[1]) == bandwidth


def test_accelerator_size_is_the_claims_on_a_gpu_and_small_on_a_cpu():
  gpu = benchmark.accelerator_size('gpu', None, None)
  assert (gpu['seeds'], gpu['epochs']) == (1000, 100)
  assert (gpu['short_seeds'], gpu['short_width']) == (65, 64)  # seed 64: a remainder group
  assert gpu['grid_seeds'] == 64
  cpu = benchmark.accelerator_size('cpu', None, None)
  assert (cpu['seeds'], cpu['epochs'], cpu['short_epochs']) == (2, 1, 1)
  assert benchmark.accelerator_size('cpu', 1, 3)['seeds'] == 1
  assert benchmark.accelerator_size('tpu', 10, 3)['grid_seeds'] == 1  # 3 x 64 > 10 seeds


def _run_dir(path, params=b'params', test_loss='0.25', seconds='1.5'):
  os.makedirs(path)
  with open(os.path.join(path, records.PARAMS_FILE), 'wb') as f:
    f.write(params)
  with open(os.path.join(path, records.HISTORY_FILE), 'w') as f:
    f.write(f'epoch,test_loss,epoch_seconds\n1,{test_loss},{seconds}\n')
  return str(path)


def test_same_bits_compares_parameters_and_history_but_not_wall_times(tmp_path):
  a = _run_dir(tmp_path / 'a')
  assert benchmark.same_bits(a, _run_dir(tmp_path / 'b', seconds='9.0'))
  assert not benchmark.same_bits(a, _run_dir(tmp_path / 'c', params=b'paramz'))
  assert not benchmark.same_bits(a, _run_dir(tmp_path / 'd', test_loss='0.2500001'))
  assert not benchmark.same_bits(a, str(tmp_path / 'missing'))


@pytest.mark.parametrize('args, expected', [
    (['--accelerator', '--accelerator_seeds=0'], '--accelerator_seeds must be at least 1'),
    (['--accelerator', '--accelerator_epochs=-1'], '--accelerator_epochs must be at least 1'),
])
def test_bad_accelerator_sizes_are_one_clear_line(args, expected, run_module, tmp_path):
  result = run_module('experiments.benchmark', *args, f'--output={tmp_path}/a.json',
                      timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip() == f'error: {expected}, got {args[1].split("=")[1]}'
  assert not os.listdir(tmp_path)


@pytest.mark.slow  # 13 processes, each importing jax: ~1 min on 2 idle cores
@pytest.mark.started_early('-m', 'experiments.benchmark', '--accelerator', '--accelerator_seeds=1',
                           '--output={directory}/check.json')
def test_the_accelerator_check_runs_every_part_at_its_cpu_size(started_early):
  returncode, printed = started_early.result(timeout=900)
  assert returncode == 0, printed[-2000:]
  with open(os.path.join(started_early.directory, 'check.json')) as f:
    check = json.load(f)
  assert {'device', 'sweep', 'roofline', 'replay', 'determinism', 'precision',
          'grid'} <= set(check)
  assert check['device']['backend'] == 'cpu' and check['device']['size']['seeds'] == 1
  for part in ('sweep', 'roofline', 'replay', 'determinism', 'precision', 'grid'):
    assert check[part]['seconds'] > 0, part
  cold, warm = check['sweep']['cold'], check['sweep']['warm']
  assert cold['programs_traced'] == 3 and cold['programs_from_cache'] == 0
  assert warm['programs_traced'] == 0 and warm['programs_from_cache'] == 3
  assert warm['seed_epochs'] == 1 and warm['vmap_width'] == 1
  assert warm['train_seed_epochs_per_second'] > warm['process_seed_epochs_per_second'] > 0
  # Replays, the two deterministic processes and the CPU's --nodeterministic (a CPU is
  # deterministic anyway) give the same bits; the remainder group's replay is among them.
  assert check['replay']['identical'] is True
  assert check['replay']['remainder_group_included'] is True
  assert check['determinism']['identical'] is True
  assert check['determinism']['nondeterministic_bits_moved'] is False
  assert isinstance(check['precision']['bits_moved'], bool)
  assert check['grid']['wall_ratio'] > 0 and check['grid']['seeds_per_rate'] == 1
  roofline = check['roofline']
  assert roofline['bandwidth_source'] == 'measured copy'
  assert roofline['bytes_per_seed_epoch'] == pytest.approx(
      roofline['program_bytes_accessed'] * roofline['steps_per_epoch'] /
      roofline['program_width'])
  with open(os.path.join(started_early.directory, 'check.md')) as f:
    table = f.read()
  assert check['complete'] is True
  assert table.startswith('Device: cpu x 1 (cpu)') and '| replay |' in table
  assert 'jax 0.' in table and 'IDENTICAL' in table
