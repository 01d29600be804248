"""How fast is this machine for mlp_jax: `python -m experiments.benchmark [--quick]`.

One run measures, on whatever backend JAX finds:

  matmul    GFLOP/s of a large jitted float32 matmul, best of several after a
            warm-up: the backend's practical peak.
  epoch     steady-state epoch time of the seed config (MLP 784-128-128-10, batch
            128, Adam 1e-3, all of MNIST) with the compiled programs
            mlp_jax.main runs (mlp_jax.driver.ChunkPrograms: state donated, the
            project's compiler options), one seed on one device: the median
            over the epochs after the first, its training GFLOP/s and fraction
            of the matmul peak, and the eval time.
  start-up  `python -m mlp_jax.main --epochs=1` with a fresh (cold), then the same
            (warm) compilation cache: wall time of the process and the
            first_epoch_done/startup/compile seconds it writes in timing.json.
  memory    peak resident set of `python -m mlp_jax.main --epochs=2` (warm cache).
  sweep     seed-epochs per second of `python -m experiments.sweep` at 1, 8 and 32
            seeds, in the program (its timing.json) and by wall time.
  end to end  `python -m mlp_jax.main --epochs=20` (warm cache) and, with
            --torch_python, the PyTorch loop of experiments/torch_baseline.py in
            that interpreter, alternated (--e2e_repeats rounds, each PyTorch
            thread setting of --torch_threads once a round): wall times, their
            medians and ratio (against the fastest PyTorch setting), and where
            mlp_jax's time went: interpreter start + imports (a separate
            `import mlp_jax.main, mlp_jax.environment, mlp_jax.run`), the rest
            of start-up (what the data load left, the programs, initial state),
            compile, training, evaluation,
            checkpoints, records, curves and summaries, the rest, and exit
            (wall time less timing.json's total). Without --torch_python it says
            so and measures mlp_jax alone. PyTorch is not a dependency of the
            project: give the python of an environment that has it.

Sweep mode (`--sweep_seeds=N [--sweep_epochs=E] [--sweep_args='--flag=value ...']`)
measures only `python -m experiments.sweep --seeds=0-(N-1) --epochs=E` with
default flags (plus --sweep_args), after a warm-up sweep that fills the
compilation cache: compiled-training seed-epochs/s (its timing.json),
end-to-end seed-epochs/s (process wall time), and host work as a fraction of
training + evaluation, where host work is the process's total minus start-up,
training and evaluation, all as its timing.json reports them (target: at most
MAX_HOST_FRACTION), with the host work timing.json itemises (records,
checkpoints, summaries).

Grid mode (`--grid_seeds=N [--grid_rates=1e-4,3e-4,1e-3] [--sweep_epochs=E]
[--grid_rounds=R]`) measures the grid of issue #13 against the sweep it must cost
no more than MAX_GRID_RATIO times: `experiments.sweep --learning_rate=RATES
--seeds=0-(N-1)` and a plain sweep of as many seeds (N x the number of rates),
alternated for R rounds after a warm-up of each, and prints the ratio of their
median wall times and each one's compile seconds (timing.json).

Accelerator mode (`--accelerator [--accelerator_seeds=N --accelerator_epochs=E]`) checks
the accelerator claims in one run, on whatever backend it finds: on a GPU/TPU the
1,000-seed x 100-epoch sweep with default flags, on a CPU 2 seeds x 1 epoch (well
under 2 minutes on 2 cores). Each part is timed, in this order:

  sweep        the sweep from a fresh (cold) compilation and program cache, then
               again from the filled (warm) one: seed-epochs/s of training and of
               the whole process, start-up, compile, host work itemised
               (timing.json), peak device memory, the vmap width and chunk size.
  roofline     bytes per seed-epoch from XLA's cost analysis of the compiled epoch
               program, the device's memory bandwidth (a table of known devices, or
               a measured copy), and the training rate as a fraction of their ratio;
               in a child process, like every part: the benchmark's own process
               starts no backend (on a GPU it would hold most of the memory).
  determinism  a short sweep (seeds 0..W at vmap width W, 64 on a GPU/TPU and 2 on a
               CPU: its last seed a remainder group) twice in two processes
               (identical?) and once --nodeterministic (its speed, and whether its
               bits moved).
  replay       the last seed of the sweep and of the short sweep replayed by
               `mlp_jax.main --seed=k --vmap_width=W`: IDENTICAL when the trained
               parameters are the same bytes and history.csv the same numbers.
  precision    the short sweep at --matmul_precision=highest against the default
               (TF32 on recent NVIDIA GPUs): speed, accuracy, whether bits moved.
  grid         a 3-rate grid against a sweep of as many seeds, after a warm-up that
               fills the cache for both: their wall and training time ratios.

It writes --output (top-level keys device, sweep, roofline, replay, determinism,
precision, grid, seconds, complete; rewritten after each part, so a check stopped by
a time limit keeps what it measured) and a markdown table beside it (the same name with .md),
naming the device, driver, CUDA and library versions.

It prints a table with the targets (PASS/FAIL) and writes every number, with the
machine it ran on, to --output (benchmark.json). Each section also records the
share of the CPU that other processes took while it ran (from /proc/stat); above
5% the table warns and marks the verdicts it affects as noisy.

Training FLOPs count matmul FLOPs only (biases, activations, loss and Adam are
ignored): per example 2*W for the forward pass, 2*W for the weight gradients and
2*W' for the input gradients of every layer but the first, where W is the number
of weights and W' that of the layers after the first. An epoch trains
`trainer.examples_per_epoch` examples (59,904 for batch 128: the last partial
batch is dropped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import flags

from mlp_jax import cli, records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.grid import parse_values
from mlp_jax.flags import reject_extra_arguments

# JAX and what imports it (mlp_jax.environment, the driver) are imported by the
# functions that measure, so that a bad command line is refused in a fraction of a
# second. pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_SIZE = 784
NUM_CLASSES = 10

# The targets the table marks PASS or FAIL.
MIN_FRACTION_OF_PEAK = 0.50
MAX_WARM_FIRST_EPOCH_SECONDS = 3.0
MAX_PEAK_RSS_BYTES = 1_000_000_000
# 20 epochs end to end, at most this fraction of the PyTorch loop's wall time.
MAX_TORCH_RATIO = 0.40
E2E_EPOCHS = 20
TORCH_BASELINE = os.path.join(REPO, 'experiments', 'torch_baseline.py')
# Above this share of the CPU taken by other processes, the table warns.
NOISY_CPU_FRACTION = 0.05
# The epoch section and the sweeps run the same program; if the epochs ran this much
# slower than the fastest sweep, the machine itself slowed down in between (a busy
# host under a VM shows no other process here), and the table warns.
MAX_EPOCH_SLOWDOWN = 1.25
# Sweep mode: host work at most this fraction of training + evaluation.
MAX_HOST_FRACTION = 0.10
# Grid mode: a grid of rates x seeds at most this multiple of the wall time of a
# sweep of as many seeds.
MAX_GRID_RATIO = 1.2


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The benchmark's flags (defined when run, so importing it defines none)."""
  flags.DEFINE_bool('quick', False, 'Fewer repeats and a smaller sweep: under a minute.',
                    flag_values=flag_values)
  flags.DEFINE_string('output', 'benchmark.json', 'Where to write the measurements (JSON).',
                      flag_values=flag_values)
  flags.DEFINE_integer('sweep_seeds', None, 'Sweep mode: measure only a sweep of this many '
                       'seeds (see the module docstring).', flag_values=flag_values)
  flags.DEFINE_integer('sweep_epochs', 3, 'Sweep mode: epochs of the sweep.',
                       flag_values=flag_values)
  flags.DEFINE_string('sweep_args', '', 'Sweep mode: more flags for experiments.sweep, '
                      'space-separated (e.g. "--vmap_width=64 --checkpoint_every=1").',
                      flag_values=flag_values)
  flags.DEFINE_integer('grid_seeds', None, 'Grid mode: measure a grid of --grid_rates x '
                       'this many seeds against a sweep of as many seeds (see the module '
                       'docstring).', flag_values=flag_values)
  flags.DEFINE_string('grid_rates', '1e-4,3e-4,1e-3', 'Grid mode: the learning rates.',
                      flag_values=flag_values)
  flags.DEFINE_integer('grid_rounds', 2, 'Grid mode: alternated rounds of grid and sweep.',
                       flag_values=flag_values)
  flags.DEFINE_string('torch_python', None, 'A python interpreter with PyTorch installed: '
                      'the end-to-end section also runs experiments/torch_baseline.py with '
                      'it, alternated with mlp_jax.main, and prints the ratio.',
                      flag_values=flag_values)
  flags.DEFINE_list('torch_threads', ['default'], 'PyTorch thread settings to run, each once '
                    'a round: "default" (PyTorch\'s own choice) or a number '
                    '(torch.set_num_threads).', flag_values=flag_values)
  flags.DEFINE_integer('e2e_repeats', None, 'Rounds of the end-to-end section (default 2, '
                       '1 with --quick).', flag_values=flag_values)
  flags.DEFINE_integer('e2e_epochs', E2E_EPOCHS, 'Epochs of each end-to-end run (the '
                       'target is set for 20).', flag_values=flag_values)
  flags.DEFINE_bool('accelerator', False, 'Accelerator mode: the check of the accelerator '
                    'claims, every part in one run (see the module docstring); writes --output '
                    'and a markdown table beside it (its .md).', flag_values=flag_values)
  flags.DEFINE_integer('accelerator_seeds', None, 'Accelerator mode: seeds of its sweep '
                       '(default 1000 on a GPU/TPU, 2 on a CPU).', flag_values=flag_values)
  flags.DEFINE_integer('accelerator_epochs', None, 'Accelerator mode: epochs of its sweep '
                       '(default 100 on a GPU/TPU, 1 on a CPU).', flag_values=flag_values)
  flags.DEFINE_bool('e2e_only', False, 'Measure only the end-to-end section (after one '
                    '--epochs=1 run that fills the compilation cache).',
                    flag_values=flag_values)


def cpu_sample() -> Optional[Tuple[float, float, float]]:
  """(all cores' seconds, their busy seconds, this process's and its children's CPU
  seconds) so far, from /proc/stat (Linux); None elsewhere."""
  try:
    with open('/proc/stat') as f:
      user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
  except (OSError, ValueError):
    return None
  tick = os.sysconf('SC_CLK_TCK')
  busy = user + nice + system + irq + softirq + steal
  own = os.times()
  return ((busy + idle + iowait) / tick, busy / tick,
          own.user + own.system + own.children_user + own.children_system)


def other_cpu_fraction(before: Optional[Tuple[float, float, float]],
                       after: Optional[Tuple[float, float, float]]) -> Optional[float]:
  """Fraction of the machine's CPU time between two cpu_sample()s used by other
  processes: well above 0 means they competed with the measurement."""
  if before is None or after is None or after[0] <= before[0]:
    return None
  other = (after[1] - before[1]) - (after[2] - before[2])
  return max(0.0, other / (after[0] - before[0]))


def training_flops_per_example(hidden_sizes: Sequence[int], input_size: int = INPUT_SIZE,
                               num_classes: int = NUM_CLASSES) -> int:
  """Matmul FLOPs of one training example: forward, weight and input gradients.

  The first layer needs no input gradient (its input is the data), so for
  784-128-128-10 this is 2*118,016 + 2*118,016 + 2*17,664 = 507,392.
  """
  widths = [input_size, *hidden_sizes, num_classes]
  weights = [n_in * n_out for n_in, n_out in zip(widths[:-1], widths[1:])]
  return 2 * sum(weights) + 2 * sum(weights) + 2 * sum(weights[1:])


def matmul_peak(size: int, repeats: int) -> Dict[str, Any]:
  """GFLOP/s of a jitted float32 [size, size] @ [size, size], best of `repeats`."""
  from mlp_jax import environment  # pylint: disable=unused-import  # first: XLA:CPU threads
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()  # compile and warm up
  seconds = []
  for _ in range(repeats):
    tick = time.perf_counter()
    matmul(a, b).block_until_ready()
    seconds.append(time.perf_counter() - tick)
  return {'size': size, 'repeats': repeats, 'seconds': seconds,
          'gflops': 2 * size**3 / min(seconds) / 1e9}


def measure_epochs(epochs: int) -> Dict[str, Any]:
  """Trains the seed config for `epochs` epochs with the programs mlp_jax.main runs.

  One seed on one device, through mlp_jax.driver.ChunkPrograms (state donated, the
  project's compiler options); each epoch is timed to its metrics on the host,
  and the steady state is the median of all epochs but the first.
  """
  from mlp_jax import environment  # pylint: disable=unused-import  # first: XLA:CPU threads
  import jax
  from mlp_jax.data import load_mnist
  from mlp_jax.driver import ChunkPrograms, to_device
  from mlp_jax.mesh import SeedMesh
  from mlp_jax.train import make_trainer
  config = TrainConfig()
  mesh = SeedMesh(jax.local_devices()[:1])
  data = to_device(load_mnist(), mesh)
  trainer = make_trainer(config, train_size=data.train_images.shape[0])
  programs = ChunkPrograms(trainer, data, mesh, vmap_width=1)
  _, train_epoch, evaluate = programs.get(1)
  state = programs.initial_states([config])
  hparams = programs.hyperparameters([config])
  epoch_seconds, eval_seconds = [], []
  for _ in range(epochs):
    tick = time.perf_counter()
    state, metrics = train_epoch(state, hparams, data.train_images, data.train_labels)
    jax.device_get(metrics)
    epoch_seconds.append(time.perf_counter() - tick)
    tick = time.perf_counter()
    jax.device_get(evaluate(state, data.test_images, data.test_labels))
    eval_seconds.append(time.perf_counter() - tick)
  flops = training_flops_per_example(config.hidden_sizes)
  steady = statistics.median(epoch_seconds[1:])
  return {'config': config.to_dict(), 'epoch_seconds': epoch_seconds,
          'eval_seconds': eval_seconds, 'steady_epoch_seconds': steady,
          'steady_eval_seconds': statistics.median(eval_seconds[1:]),
          'examples_per_epoch': trainer.examples_per_epoch,
          'flops_per_example': flops,
          'gflops': flops * trainer.examples_per_epoch / steady / 1e9}


def run_child(module: str, args: Sequence[str], cache_dir: str, log_path: str
              ) -> Dict[str, Any]:
  """Runs `python -m module args` from the repository, waiting with os.wait4.

  Returns its wall time, exit code, the last line of its output if it failed,
  and its peak resident set: ru_maxrss of this one child as wait4 reports it
  (RUSAGE_CHILDREN would be the maximum over every child so far, not this one's).
  """
  result = run_command([sys.executable, '-m', module, *args], cache_dir, log_path)
  result['command'] = ['python', '-m', module, *args]
  return result


def run_command(command: Sequence[str], cache_dir: str, log_path: str) -> Dict[str, Any]:
  """run_child's work for any command (run from the repository)."""
  from mlp_jax import environment
  env = {**os.environ, environment.CACHE_DIR_ENV: cache_dir}
  with open(log_path, 'wb') as log:
    tick = time.perf_counter()
    process = subprocess.Popen(list(command), cwd=REPO, env=env,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
      _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
      process.kill()
      process.wait()
      raise
    wall = time.perf_counter() - tick
  process.returncode = os.waitstatus_to_exitcode(status)
  # ru_maxrss is in KiB on Linux, in bytes on macOS.
  rss_unit = 1 if sys.platform == 'darwin' else 1024
  result = {'command': list(command), 'wall_seconds': wall,
            'returncode': process.returncode, 'peak_rss_bytes': usage.ru_maxrss * rss_unit}
  if process.returncode != 0:
    with open(log_path, errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
    result['error'] = lines[-1] if lines else f'exit code {process.returncode}'
  return result


def run_timed_main(scratch: str, name: str, cache_dir: str, epochs: int) -> Dict[str, Any]:
  """`python -m mlp_jax.main --epochs=N` in a new workdir, with its timing.json."""
  workdir = os.path.join(scratch, name)
  result = run_child('mlp_jax.main', [f'--epochs={epochs}', f'--workdir={workdir}'],
                     cache_dir, os.path.join(scratch, f'{name}.log'))
  if result['returncode'] == 0:
    result['timing'] = records.read_json_object(os.path.join(workdir, records.TIMING_FILE))
  return result


def measure_imports(repeats: int) -> Optional[float]:
  """Median seconds of importing what a run imports in a fresh interpreter
  (mlp_jax.main, then, once its flags are parsed, mlp_jax.environment and
  mlp_jax.run while the data loads), or None if it failed."""
  code = ('import os, time\nstarted = time.perf_counter()\nimport mlp_jax.main\n'
          'import mlp_jax.environment, mlp_jax.run\n'
          'print(time.perf_counter() - started, flush=True)\nos._exit(0)')
  seconds = []
  for _ in range(repeats):
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)
    try:
      seconds.append(float(done.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
      return None
  return statistics.median(seconds)


def torch_command(torch_python: str, threads: str, epochs: int) -> List[str]:
  """The PyTorch loop's command line for a --torch_threads setting."""
  command = [torch_python, TORCH_BASELINE, f'--epochs={epochs}']
  return command if threads == 'default' else command + [f'--threads={int(threads)}']


def run_torch(torch_python: str, threads: str, epochs: int, cache_dir: str,
              log_path: str) -> Dict[str, Any]:
  """One run of experiments/torch_baseline.py, with the `result:` line it prints."""
  run = run_command(torch_command(torch_python, threads, epochs), cache_dir, log_path)
  run['threads_setting'] = threads
  if run['returncode'] == 0:
    with open(log_path, errors='replace') as f:
      lines = [line for line in f if line.startswith('result: ')]
    if lines:
      run['result'] = json.loads(lines[-1][len('result: '):])
    else:
      run['error'] = 'no result line'
  return run


# Parts of an mlp_jax.main run's wall time, from its timing.json (plus the imports,
# measured apart): (key, label).
E2E_PARTS = (
    ('imports', 'imports (mlp_jax.main, environment, run; measured apart)'),
    ('startup_rest', 'rest of start-up: what the data load left, programs, init'),
    ('compile', '  of which tracing and compiling, or loading both from the caches'),
    ('train', 'training'),
    ('eval', 'evaluation'),
    ('checkpoint', 'checkpoints (the driver\'s waits on them)'),
    ('records', 'records'),
    ('summary', 'curves.png and summaries'),
    ('other', 'the rest (between epochs, final writes)'),
    ('exit', 'interpreter start and exit (wall less timing.json total)'),
)


def e2e_breakdown(run: Dict[str, Any], imports: Optional[float]) -> Dict[str, Optional[float]]:
  """Where one mlp_jax.main run's wall time went (E2E_PARTS), from its timing.json."""
  t = run['timing']
  get = lambda key: float(t.get(key) or 0.0)
  parts = {'train': get('train_seconds'), 'eval': get('eval_seconds'),
           'checkpoint': get('checkpoint_seconds'), 'records': get('records_seconds'),
           'summary': get('summary_seconds'), 'compile': get('compile_seconds'),
           'exit': run['wall_seconds'] - get('total_seconds')}
  parts['other'] = (get('total_seconds') - get('startup_seconds') - parts['train'] -
                    parts['eval'] - parts['checkpoint'] - parts['records'] - parts['summary'])
  parts['imports'] = imports
  parts['startup_rest'] = get('startup_seconds') - (imports or 0.0)
  return parts


def measure_end_to_end(scratch: str, cache_dir: str, torch_python: Optional[str],
                       torch_threads: Sequence[str], repeats: int,
                       epochs: int = E2E_EPOCHS) -> Dict[str, Any]:
  """`python -m mlp_jax.main --epochs=N` and, given a torch python, the PyTorch loop,
  alternated round by round; medians, the ratio and mlp_jax's breakdown."""
  runs: List[Dict[str, Any]] = []
  torch_runs: Dict[str, List[Dict[str, Any]]] = {t: [] for t in torch_threads}
  for i in range(repeats):
    runs.append(run_timed_main(scratch, f'e2e{i}', cache_dir, epochs))
    if torch_python:
      for threads in torch_threads:
        torch_runs[threads].append(run_torch(torch_python, threads, epochs, cache_dir,
                                             os.path.join(scratch, f'torch{threads}_{i}.log')))
  ok = [run for run in runs if run['returncode'] == 0 and 'timing' in run]
  result: Dict[str, Any] = {'epochs': epochs, 'repeats': repeats, 'runs': runs,
                            'torch_python': torch_python, 'wall_seconds': None,
                            'breakdown': None, 'torch': None, 'ratio': None}
  if ok:
    imports = measure_imports(3)
    parts = [e2e_breakdown(run, imports) for run in ok]
    result['wall_seconds'] = statistics.median(run['wall_seconds'] for run in ok)
    result['breakdown'] = {key: (None if parts[0][key] is None else
                                 statistics.median(p[key] for p in parts))
                           for key, _ in E2E_PARTS}
    result['peak_rss_bytes'] = max(run['peak_rss_bytes'] for run in ok)
  if torch_python:
    result['torch'] = {}
    for threads, tries in torch_runs.items():
      good = [run for run in tries if 'result' in run]
      result['torch'][threads] = {
          'runs': tries, 'wall_seconds': statistics.median(r['wall_seconds'] for r in good)
          if good else None,
          'train_seconds': statistics.median(r['result']['train_seconds'] for r in good)
          if good else None,
          'test_accuracy': good[-1]['result']['test_accuracy'] if good else None,
          'threads': good[-1]['result']['threads'] if good else None,
          'error': None if good else (tries[-1].get('error') if tries else 'not run')}
    walls = [t['wall_seconds'] for t in result['torch'].values() if t['wall_seconds']]
    if walls and result['wall_seconds']:
      result['ratio'] = result['wall_seconds'] / min(walls)
  return result


def measure_startup(scratch: str, cache_dir: str, warm_repeats: int) -> Dict[str, Any]:
  """One run with `cache_dir` empty (cold), then `warm_repeats` with it filled."""
  cold = run_timed_main(scratch, 'cold', cache_dir, epochs=1)
  warm = [run_timed_main(scratch, f'warm{i}', cache_dir, epochs=1) for i in range(warm_repeats)]
  ok = [run['timing']['first_epoch_done_seconds'] for run in warm
        if run.get('timing', {}).get('first_epoch_done_seconds') is not None]
  return {'cold': cold, 'warm': warm,
          'warm_first_epoch_done_seconds': statistics.median(ok) if ok else None}


def sweep_available() -> bool:
  """Whether this checkout has the sweep entry point (experiments/sweep.py)."""
  return os.path.isfile(os.path.join(REPO, 'experiments', 'sweep.py'))


def measure_sweep(scratch: str, cache_dir: str, seed_counts: Sequence[int],
                  epochs: int) -> Dict[str, Any]:
  """Seed-epochs per second of experiments.sweep for each number of seeds."""
  if not sweep_available():
    return {'available': False}
  runs = []
  for seeds in seed_counts:
    workdir = os.path.join(scratch, f'sweep{seeds}')
    run = run_child('experiments.sweep', [f'--seeds=0-{seeds - 1}', f'--epochs={epochs}',
                                          f'--workdir={workdir}'],
                    cache_dir, os.path.join(scratch, f'sweep{seeds}.log'))
    run.update(seeds=seeds, epochs=epochs)
    if run['returncode'] == 0:
      try:
        timing = records.read_json_object(os.path.join(workdir, records.TIMING_FILE))
        run.update(train_seconds=timing['train_seconds'], seed_epochs=timing['seed_epochs'],
                   seed_epochs_per_second=timing['seed_epochs'] / timing['train_seconds'],
                   seed_epochs_per_wall_second=timing['seed_epochs'] / run['wall_seconds'])
      except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        run['error'] = f'unreadable {records.TIMING_FILE}: {e!r}'
    runs.append(run)
  return {'available': True, 'runs': runs}


def sweep_host_work(timing: Dict[str, Any]) -> Dict[str, Any]:
  """From a sweep's timing.json: its rates and its host work (total minus start-up,
  training and evaluation) as a fraction of training + evaluation."""
  compiled = timing['train_seconds'] + timing['eval_seconds']
  host = timing['total_seconds'] - timing['startup_seconds'] - compiled
  return {'seed_epochs_per_second': timing['seed_epochs'] / timing['train_seconds'],
          'host_seconds': host, 'host_fraction': host / compiled,
          'itemised': {k: timing.get(k) for k in ('records_seconds', 'checkpoint_seconds',
                                                  'summary_seconds')}}


def measure_sweep_mode(scratch: str, cache_dir: str, seeds: int, epochs: int,
                       extra_args: Sequence[str]) -> Dict[str, Any]:
  """Sweep mode: one warm-up sweep (fills the compilation cache), then the measured one."""
  args = [f'--seeds=0-{seeds - 1}', f'--epochs={epochs}', *extra_args]
  warmup = run_child('experiments.sweep', [*args[:1], '--epochs=1',  *extra_args,
                                           f'--workdir={os.path.join(scratch, "warmup")}'],
                     cache_dir, os.path.join(scratch, 'warmup.log'))
  if warmup['returncode'] != 0:
    return {'command': warmup['command'], 'error': warmup.get('error')}
  workdir = os.path.join(scratch, 'measured')
  run = run_child('experiments.sweep', [*args, f'--workdir={workdir}'], cache_dir,
                  os.path.join(scratch, 'measured.log'))
  if run['returncode'] != 0:
    return run
  timing = records.read_json_object(os.path.join(workdir, records.TIMING_FILE))
  run.update(timing=timing, seeds=seeds, epochs=epochs, **sweep_host_work(timing),
             seed_epochs_per_wall_second=timing['seed_epochs'] / run['wall_seconds'])
  run['passed'] = run['host_fraction'] <= MAX_HOST_FRACTION
  return run


def format_sweep_mode(run: Dict[str, Any]) -> str:
  """The sweep mode's printed lines."""
  command = ' '.join(run['command'][2:])
  if 'error' in run:
    return f'sweep mode: {command} failed: {run["error"]}'
  t, items = run['timing'], run['itemised']
  verdict = 'PASS' if run['passed'] else 'FAIL'
  return '\n'.join([
      f'sweep mode: {command}',
      f'  compiled training   {run["seed_epochs_per_second"]:.2f} seed-epochs/s '
      f'({t["seed_epochs"]} seed-epochs in {t["train_seconds"]:.2f} s; eval '
      f'{t["eval_seconds"]:.2f} s)',
      f'  end to end          {run["seed_epochs_per_wall_second"]:.2f} seed-epochs/s '
      f'({run["wall_seconds"]:.2f} s wall; start-up {t["startup_seconds"]:.2f} s)',
      f'  host work           {run["host_seconds"]:.2f} s = {run["host_fraction"]:.3f} of '
      f'training + evaluation (<= {MAX_HOST_FRACTION:.2f} {verdict}); itemised: records '
      f'{items["records_seconds"]:.2f} s, checkpoints {items["checkpoint_seconds"]:.2f} s, '
      f'summaries {items["summary_seconds"]:.2f} s'])


def measure_grid_mode(scratch: str, cache_dir: str, rates: Sequence[str], seeds: int,
                      epochs: int, rounds: int) -> Dict[str, Any]:
  """Grid mode: a warm-up of each, then `rounds` alternated rounds of the grid and of
  the sweep of as many seeds; the ratio of their median wall times."""
  shapes = {'grid': [f'--seeds=0-{seeds - 1}', f'--learning_rate={",".join(rates)}'],
            'sweep': [f'--seeds=0-{len(rates) * seeds - 1}']}
  runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in shapes}
  for round_ in range(-1, rounds):  # round -1 fills the compilation cache
    for name, args in shapes.items():
      label = f'{name}-warmup' if round_ < 0 else f'{name}{round_}'
      workdir = os.path.join(scratch, label)
      run = run_child('experiments.sweep',
                      [*args, f'--epochs={1 if round_ < 0 else epochs}', f'--workdir={workdir}'],
                      cache_dir, os.path.join(scratch, f'{label}.log'))
      if run['returncode'] != 0:
        return {'command': run['command'], 'error': run.get('error')}
      if round_ >= 0:
        timing = records.read_json_object(os.path.join(workdir, records.TIMING_FILE))
        run.update(compile_seconds=timing['compile_seconds'],
                   train_seconds=timing['train_seconds'], seed_epochs=timing['seed_epochs'])
        runs[name].append(run)
  walls = {name: statistics.median(r['wall_seconds'] for r in runs[name]) for name in runs}
  ratio = walls['grid'] / walls['sweep']
  return {'rates': list(rates), 'seeds': seeds, 'epochs': epochs, 'runs': runs,
          'median_wall_seconds': walls, 'ratio': ratio, 'passed': ratio <= MAX_GRID_RATIO}


def format_grid_mode(result: Dict[str, Any]) -> str:
  """The grid mode's printed lines."""
  if 'error' in result:
    return f'grid mode: {" ".join(result["command"][2:])} failed: {result["error"]}'
  lines = [f'grid mode: {len(result["rates"])} learning rates x {result["seeds"]} seeds '
           f'against {len(result["rates"]) * result["seeds"]} seeds, {result["epochs"]} '
           'epochs each']
  for name, runs in result['runs'].items():
    each = lambda key, digits: ', '.join(f'{r[key]:.{digits}f}' for r in runs)
    lines.append(f'  {name:<5} wall {each("wall_seconds", 1)} s (median '
                 f'{result["median_wall_seconds"][name]:.1f}); compile '
                 f'{each("compile_seconds", 2)} s; training {each("train_seconds", 1)} s')
  verdict = 'PASS' if result['passed'] else 'FAIL'
  lines.append(f'  grid / sweep wall time {result["ratio"]:.3f} (<= {MAX_GRID_RATIO} {verdict})')
  return '\n'.join(lines)


def epoch_slowdown(results: Dict[str, Any]) -> Optional[float]:
  """The epoch section's steady epoch time over the fastest sweep's seconds per
  seed-epoch in its program (None without a sweep). Both time the same compiled
  epoch, so well above 1 means the machine ran slower during the epoch section."""
  rates = [run['seed_epochs_per_second'] for run in (results.get('sweep') or {}).get('runs', [])
           if 'seed_epochs_per_second' in run]
  epoch = results.get('epoch')
  if not rates or not epoch:
    return None
  return epoch['steady_epoch_seconds'] * max(rates)


def check_targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
  """Each target with its measured value, whether it passed (None: not measured),
  and whether its timing is noisy: other processes took CPU during it, or (the
  epoch) it ran slower than the same program in the sweeps."""
  epoch, matmul = results.get('epoch'), results.get('matmul')
  fraction = epoch['gflops'] / matmul['gflops'] if epoch and matmul else None
  warm = (results.get('startup') or {}).get('warm_first_epoch_done_seconds')
  memory = results.get('memory') or {}
  rss = memory.get('peak_rss_bytes') if memory.get('returncode') == 0 else None
  targets = [('steady-state epoch, fraction of matmul peak', fraction, '>=',
              MIN_FRACTION_OF_PEAK, ('matmul', 'epoch')),
             ('warm start-up to first finished epoch (s)', warm, '<=',
              MAX_WARM_FIRST_EPOCH_SECONDS, ('startup',)),
             ('peak RSS (bytes)', rss, '<=', MAX_PEAK_RSS_BYTES, ()),
             ('epochs end to end, mlp_jax / PyTorch wall time',
              (results.get('end_to_end') or {}).get('ratio'), '<=', MAX_TORCH_RATIO,
              ('end_to_end',))]
  slowed = (epoch_slowdown(results) or 0) > MAX_EPOCH_SLOWDOWN
  return [{'name': name, 'value': value, 'comparison': op, 'limit': limit,
           'passed': None if value is None else
                     (value >= limit if op == '>=' else value <= limit),
           'noisy': any((results.get(key) or {}).get('other_cpu_fraction') is not None and
                        results[key]['other_cpu_fraction'] > NOISY_CPU_FRACTION
                        for key in timed_by) or (slowed and 'epoch' in timed_by)}
          for name, value, op, limit, timed_by in targets]


def _verdict(target: Dict[str, Any]) -> str:
  verdict = {True: 'PASS', False: 'FAIL', None: 'n/a'}[target['passed']]
  return f'{verdict} (noisy)' if target.get('noisy') and target['passed'] is not None else verdict


def _seconds(value: Any) -> str:
  return f'{value:.2f}' if isinstance(value, (int, float)) else 'n/a'


def _child_rows(label: str, run: Dict[str, Any]) -> List[Tuple[str, str, str]]:
  """Rows of one mlp_jax.main subprocess: wall time and its timing.json, or its error."""
  if run['returncode'] != 0:
    return [(label, 'failed', ''), ('  error', run.get('error', ''), '')]
  t = run['timing']
  return [(label, f'{run["wall_seconds"]:.2f} s wall', ''),
          ('  first epoch done / start-up / compile (timing.json)',
           ' / '.join(_seconds(t.get(k)) for k in ('first_epoch_done_seconds',
                                                   'startup_seconds', 'compile_seconds'))
           + ' s', ''),
          ('  programs loaded from the program cache / traced',
           f'{t.get("programs_from_cache")} / {t.get("programs_traced")}', '')]


def cpu_share_rows(results: Dict[str, Any]) -> List[Tuple[str, str, str]]:
  """The share of the CPU other processes took during each section, and a warning."""
  shares = [(key, (results.get(key) or {}).get('other_cpu_fraction'))
            for key in ('matmul', 'epoch', 'startup', 'memory', 'sweep', 'end_to_end')
            if key in results]
  rows = [('CPU taken by other processes during',
           ', '.join(f'{key} {"n/a" if share is None else f"{share:.0%}"}'
                     for key, share in shares), '')]
  load = results.get('load_average')
  if load:
    rows.append(('load average (1 / 5 / 15 min) at the start and end',
                 ' -> '.join(' / '.join(f'{v:.2f}' for v in sample) for sample in load), ''))
  if any(share is not None and share > NOISY_CPU_FRACTION for _, share in shares):
    rows.append(('  warning', 'other processes competed for the CPU: timings are too slow '
                 'and verdicts marked (noisy) are not to be trusted', ''))
  return rows


def load_average() -> Optional[List[float]]:
  """os.getloadavg(), None where there is none."""
  try:
    return list(os.getloadavg())
  except (AttributeError, OSError):
    return None


def end_to_end_rows(e2e: Optional[Dict[str, Any]], targets: Dict[str, Dict[str, Any]]
                    ) -> List[Tuple[str, str, str]]:
  """Rows of the end-to-end section (none when it was not measured)."""
  if not e2e:
    return []
  rows = []
  label = (f'end to end: mlp_jax.main --epochs={e2e["epochs"]}, warm cache, median of '
           f'{e2e["repeats"]}')
  if e2e['wall_seconds'] is None:
    failed = [run for run in e2e['runs'] if run['returncode'] != 0]
    rows += [(label, 'failed', '')]
    if failed:
      rows.append(('  error', failed[-1].get('error', ''), ''))
  else:
    rows.append((label, f'{e2e["wall_seconds"]:.2f} s wall', ''))
    for key, text in E2E_PARTS:
      value = e2e['breakdown'][key]
      rows.append((f'  {text}', 'n/a' if value is None else f'{value:.2f} s', ''))
  if e2e['torch'] is None:
    rows.append(('PyTorch loop (experiments/torch_baseline.py)',
                 'not measured (no --torch_python)', ''))
  else:
    for setting, torch in e2e['torch'].items():
      threads = '' if torch['threads'] is None else f' ({torch["threads"]})'
      label = f'PyTorch loop, threads {setting}{threads}, median of {len(torch["runs"])}'
      if torch['wall_seconds'] is None:
        rows += [(label, 'failed', ''), ('  error', str(torch['error']), '')]
      else:
        rows.append((label, f'{torch["wall_seconds"]:.2f} s wall', ''))
        rows.append(('  training / final test accuracy',
                     f'{torch["train_seconds"]:.2f} s / {torch["test_accuracy"]:.4f}', ''))
  target = targets.get('epochs end to end, mlp_jax / PyTorch wall time')
  if target is not None and e2e['torch'] is not None:
    rows.append(('  mlp_jax / fastest PyTorch setting, wall',
                 'n/a' if target['value'] is None else f'{target["value"]:.3f}',
                 f'<= {MAX_TORCH_RATIO:.2f} {_verdict(target)}'))
  return rows


def table_rows(results: Dict[str, Any]) -> List[Tuple[str, str, str]]:
  """(measurement, value, target and verdict) rows of the printed table."""
  targets = {t['name']: t for t in results['targets']}
  rows = []
  if 'epoch' not in results:  # --e2e_only
    return end_to_end_rows(results.get('end_to_end'), targets) + cpu_share_rows(results)
  matmul, epoch = results['matmul'], results['epoch']
  rows.append((f'matmul peak, {matmul["size"]}^2 float32, best of {matmul["repeats"]}',
               f'{matmul["gflops"]:.1f} GFLOP/s', ''))
  timed = len(epoch['epoch_seconds']) - 1
  after_first = epoch['epoch_seconds'][1:]
  rows.append((f'epoch, median of {timed} after the first',
               f'{epoch["steady_epoch_seconds"]:.4f} s', ''))
  rows.append(('  fastest / slowest of them', f'{min(after_first):.4f} / {max(after_first):.4f} s',
               ''))
  rows.append((f'  training GFLOP/s ({epoch["flops_per_example"]:,} FLOP x '
               f'{epoch["examples_per_epoch"]:,} examples)', f'{epoch["gflops"]:.1f} GFLOP/s', ''))
  fraction = targets['steady-state epoch, fraction of matmul peak']
  rows.append(('  fraction of matmul peak', f'{fraction["value"]:.3f}',
               f'>= {MIN_FRACTION_OF_PEAK:.2f} {_verdict(fraction)}'))
  rows.append(('eval of 10,000 test examples, median', f'{epoch["steady_eval_seconds"]:.4f} s',
               ''))
  startup = results['startup']
  rows += _child_rows('start-up, cold cache (--epochs=1)', startup['cold'])
  for run in startup['warm']:
    rows += _child_rows('start-up, warm cache (--epochs=1)', run)
  warm = targets['warm start-up to first finished epoch (s)']
  rows.append(('  warm: process start to first epoch, median',
               'n/a' if warm['value'] is None else f'{warm["value"]:.2f} s',
               f'<= {MAX_WARM_FIRST_EPOCH_SECONDS:.1f} s {_verdict(warm)}'))
  rss = targets['peak RSS (bytes)']
  memory = results['memory']
  rows.append(('peak RSS, --epochs=2, warm cache (wait4 ru_maxrss)',
               'failed' if rss['value'] is None else f'{rss["value"] / 1e6:.0f} MB',
               f'<= {MAX_PEAK_RSS_BYTES / 1e6:.0f} MB {_verdict(rss)}'))
  if 'error' in memory:
    rows.append(('  error', memory['error'], ''))
  sweep = results['sweep']
  if not sweep['available']:
    rows.append(('sweep', 'not available (no experiments/sweep.py)', ''))
  for run in sweep.get('runs', []):
    label = f'sweep, {run["seeds"]} seed{"s" if run["seeds"] > 1 else ""} x {run["epochs"]} epochs'
    if 'error' in run:
      rows += [(label, 'failed', ''), ('  error', run['error'], '')]
    else:
      rows.append((label, f'{run["seed_epochs_per_second"]:.2f} seed-epochs/s in program, '
                          f'{run["seed_epochs_per_wall_second"]:.2f} by wall '
                          f'({run["wall_seconds"]:.1f} s)', ''))
  rows += end_to_end_rows(results.get('end_to_end'), targets)
  rows += cpu_share_rows(results)
  slowdown = epoch_slowdown(results)
  if slowdown is not None:
    rows.append(('epoch time / fastest sweep seed-epoch (same program)', f'{slowdown:.2f}', ''))
    if slowdown > MAX_EPOCH_SLOWDOWN:
      rows.append(('  warning', 'the epochs ran slower than the same program in the sweeps: '
                   'the machine slowed down during the epoch section (a shared host?); '
                   're-run for a clean fraction of peak', ''))
  return rows


def format_header(machine: Dict[str, Any]) -> str:
  platform = machine['platform']
  details = '; '.join(filter(None, [platform.get('cpu_id'),
                                    ' '.join(platform.get('cpu_isa') or []) or None]))
  cpu = f'{platform["cpu"]} ({details})' if details else platform['cpu']
  return (f'machine: {cpu}, {platform["cpu_count"]} cores; backend '
          f'{machine["backend"]} ({machine["device_kind"]} x {machine["device_count"]}); '
          f'jax {machine["versions"]["jax"]}, jaxlib {machine["versions"]["jaxlib"]}')


def format_table(results: Dict[str, Any]) -> str:
  """The header and the table, as printed."""
  rows = table_rows(results)
  # Long values (errors, sweep lines) have no target: they do not widen the column.
  widths = [max(len(row[0]) for row in rows), max(len(row[1]) for row in rows if row[2])]
  lines = [format_header(results['machine']), '']
  lines += [f'{a:<{widths[0]}}  {b:<{widths[1]}}  {c}'.rstrip() for a, b, c in rows]
  return '\n'.join(lines)


def write_results(path: str, results: Dict[str, Any]) -> None:
  try:
    records.write_json(path, results)
  except OSError as e:
    raise UsageError(f'--output={path}: cannot write: {e.strerror}') from None


def run_benchmark(quick: bool, torch_python: Optional[str] = None,
                  torch_threads: Sequence[str] = ('default',), e2e_repeats: Optional[int] = None,
                  e2e_only: bool = False, e2e_epochs: int = E2E_EPOCHS) -> Dict[str, Any]:
  """Every measurement; `quick` cuts repeats and the sweep to stay under a minute
  (the end-to-end section takes longer: 20 epochs of each program).

  Each section records `other_cpu_fraction`, the share of the CPU other processes
  took while it ran.
  """
  from mlp_jax import environment
  machine = environment.describe()
  print(format_header(machine), flush=True)
  if not torch_python:
    print('no --torch_python: the end-to-end section measures mlp_jax alone, without the '
          'PyTorch comparison', flush=True)
  results: Dict[str, Any] = {'quick': quick, 'machine': machine,
                             'load_average': [load_average()]}
  repeats = e2e_repeats or (1 if quick else 2)
  with tempfile.TemporaryDirectory(prefix='mlp_jax_benchmark_') as scratch:
    cache_dir = os.path.join(scratch, 'xla_cache')
    os.makedirs(cache_dir)
    end_to_end = ('end_to_end', f'end to end, {e2e_epochs} epochs (subprocesses, alternated)',
                  lambda: measure_end_to_end(scratch, cache_dir, torch_python, torch_threads,
                                             repeats, e2e_epochs))
    if e2e_only:
      sections = [('cache', 'filling the compilation cache',
                   lambda: run_timed_main(scratch, 'fill', cache_dir, epochs=1)), end_to_end]
    else:
      sections = [
          ('matmul', 'matmul peak', lambda: matmul_peak(2048, repeats=5 if quick else 20)),
          ('epoch', 'epochs of the seed config', lambda: measure_epochs(4 if quick else 11)),
          ('startup', 'start-up (subprocesses)',
           lambda: measure_startup(scratch, cache_dir, warm_repeats=1 if quick else 3)),
          ('memory', 'peak memory (subprocess)',
           lambda: run_timed_main(scratch, 'memory', cache_dir, epochs=2)),
          ('sweep', 'sweep (subprocesses)',
           lambda: measure_sweep(scratch, cache_dir, (1, 8) if quick else (1, 8, 32),
                                 epochs=2 if quick else 5)),
          end_to_end,
      ]
    for key, what, measure in sections:
      print(f'measuring: {what}', flush=True)
      before = cpu_sample()
      results[key] = measure()
      results[key]['other_cpu_fraction'] = other_cpu_fraction(before, cpu_sample())
  results.pop('cache', None)
  results['load_average'].append(load_average())
  results['epoch_slowdown'] = epoch_slowdown(results)
  results['targets'] = check_targets(results)
  return results



# --- Accelerator mode: `--accelerator`, every accelerator claim measured in one run. ---

# The sweep of the accelerator claims (default flags), and the CPU's small stand-in
# that keeps the whole check well under 2 minutes on 2 cores.
ACCELERATOR_SIZE = {'accelerator': (1000, 100), 'cpu': (2, 1)}
# The short sweeps (determinism, precision) run seeds 0..width at this vmap width,
# so their last seed is a remainder group padded from 1 to `width`.
SHORT_WIDTH = {'accelerator': 64, 'cpu': 2}
SHORT_EPOCHS = {'accelerator': 2, 'cpu': 1}
# Grid: 3 learning rates x this many seeds against a sweep of 3x as many seeds.
GRID_RATES = ('1e-4', '3e-4', '1e-3')
GRID_SEEDS = {'accelerator': 64, 'cpu': 1}
# Memory bandwidth of known devices, bytes/s (vendors' figures), by a pattern of
# jax's device_kind (lower case; the first that matches): e.g. 'NVIDIA H100 80GB
# HBM3', 'NVIDIA H100 PCIe', 'NVIDIA A100-SXM4-40GB', 'NVIDIA L4', 'TPU v5 lite'.
DEVICE_BANDWIDTH = (
    (r'\bh100\b.*\bpcie\b', 'H100 PCIe', 2.0e12),
    (r'\bh100\b(?!.*\bnvl\b)', 'H100 SXM', 3.35e12),
    (r'\bh200\b', 'H200', 4.8e12),
    (r'\ba100\b.*\b40gb\b', 'A100 40GB', 1.555e12),
    (r'\ba100\b', 'A100 80GB', 2.0e12),
    (r'\bl4\b', 'L4', 0.3e12),
    (r'\btpu v4\b', 'TPU v4', 1.2e12),
    (r'\btpu v5 ?(lite|e)\b', 'TPU v5e', 0.819e12),
)
# Runs a module's main as `python -m` does, then writes the first device's peak
# memory (jax's memory_stats; null on a CPU) to the file named first: the peak of
# the whole process, taken before the interpreter exits.
PEAK_MEMORY_WRAPPER = '''import json, runpy, sys
out, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
try:
  runpy.run_module(module, run_name='__main__', alter_sys=True)
finally:
  import jax
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  with open(out, 'w') as f:
    json.dump({k: stats.get(k) for k in ('peak_bytes_in_use', 'bytes_limit')}, f)
'''
# What a child reports of the machine before anything is measured (the parent never
# starts a backend while children run: on a GPU it would hold most of the memory).
DEVICE_PROBE = '''import importlib.metadata, json, platform, jax
devices = jax.devices()
info = {'backend': jax.default_backend(), 'device_kind': devices[0].device_kind,
        'device_count': len(devices), 'platform_version': None,
        'python': platform.python_version(), 'versions': {}}
try:
  info['platform_version'] = devices[0].client.platform_version
except AttributeError:
  pass
for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'tensorboardX',
             'tensorboard', 'flatbuffers', 'jax-cuda12-plugin', 'jax-cuda13-plugin',
             'nvidia-cudnn-cu12', 'nvidia-cudnn-cu13'):
  try:
    info['versions'][name] = importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    pass
try:
  from jax._src.lib import cuda_versions
  info['cuda'] = {'runtime': cuda_versions.cuda_runtime_get_version(),
                  'driver': cuda_versions.cuda_driver_get_version(),
                  'cudnn': cuda_versions.cudnn_get_version()}
except Exception:  # pylint: disable=broad-except
  info['cuda'] = None
stats = devices[0].memory_stats() or {}
info['memory_bytes'] = stats.get('bytes_limit')
try:
  import flatbuffers  # jax.export's serializer: the program cache needs it
  info['program_cache'] = True
except ImportError:
  info['program_cache'] = False
  info['versions'].pop('flatbuffers', None)  # installed metadata, not importable
print('probe: ' + json.dumps(info))
'''


def probe_device(scratch: str, cache_dir: str) -> Dict[str, Any]:
  """The backend, device, library and (on NVIDIA) driver and CUDA versions."""
  log = os.path.join(scratch, 'probe.log')
  run = run_command([sys.executable, '-c', DEVICE_PROBE], cache_dir, log)
  with open(log, errors='replace') as f:
    lines = [line for line in f if line.startswith('probe: ')]
  if run['returncode'] != 0 or not lines:
    raise UsageError(f'--accelerator: jax could not start a backend: {run.get("error")}')
  info = json.loads(lines[-1][len('probe: '):])
  info['nvidia_smi'] = None
  if shutil.which('nvidia-smi'):
    done = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                           '--format=csv,noheader'], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode == 0 and done.stdout.strip():
      name, driver, memory = (part.strip() for part in
                              done.stdout.strip().splitlines()[0].split(','))
      info['nvidia_smi'] = {'name': name, 'driver_version': driver, 'memory_total': memory}
  from mlp_jax import environment
  platform_info = environment.cpu_description()
  info['cpu'] = platform_info.get('cpu')
  info['cpu_id'] = platform_info.get('cpu_id')
  info['cpu_count'] = os.cpu_count()
  return info


def same_bits(run_a: str, run_b: str) -> bool:
  """Whether two run directories hold the same trained parameters (byte for byte)
  and the same history.csv, its *_seconds columns (wall times) left out."""
  def history(run_dir: str) -> List[Dict[str, str]]:
    rows = records.read_csv(os.path.join(run_dir, records.HISTORY_FILE))
    return [{k: v for k, v in row.items() if not k.endswith('_seconds')} for row in rows]
  def params(run_dir: str) -> bytes:
    with open(os.path.join(run_dir, records.PARAMS_FILE), 'rb') as f:
      return f.read()
  try:
    return params(run_a) == params(run_b) and history(run_a) == history(run_b)
  except (OSError, UsageError):
    return False


def run_sweep(scratch: str, name: str, cache_dir: str, args: Sequence[str]) -> Dict[str, Any]:
  """`python -m experiments.sweep ARGS --workdir=scratch/name`, with its wall time,
  timing.json, rates, host work, the vmap width and chunk size it chose and its peak
  device memory."""
  workdir = os.path.join(scratch, name)
  peak_path = os.path.join(scratch, f'{name}.peak.json')
  log = os.path.join(scratch, f'{name}.log')
  run = run_command([sys.executable, '-c', PEAK_MEMORY_WRAPPER, peak_path, 'experiments.sweep',
                     *args, f'--workdir={workdir}'], cache_dir, log)
  run['command'] = ['python', '-m', 'experiments.sweep', *args]
  run['workdir'] = workdir
  if run['returncode'] != 0:
    raise UsageError(f'--accelerator: {" ".join(run["command"])} failed: {run.get("error")}')
  timing = records.read_json_object(os.path.join(workdir, records.TIMING_FILE))
  run.update(timing=timing, **sweep_host_work(timing),
             seed_epochs_per_wall_second=timing['seed_epochs'] / run['wall_seconds'])
  settings = records.read_json_object(os.path.join(workdir, records.SWEEP_FILE))
  run['vmap_width'] = settings['config'].get('vmap_width')
  run['seed_list'] = list(settings['seeds'])
  with open(log, errors='replace') as f:
    chunks = [int(line.split('chunks of ')[1].split()[0]) for line in f
              if line.startswith('sweep: ') and 'chunks of ' in line]
  run['chunk_size'] = chunks[0] if chunks else None
  try:
    run['device_memory'] = records.read_json_object(peak_path)
  except (OSError, UsageError, ValueError):
    run['device_memory'] = None
  run['peak_device_bytes'] = (run['device_memory'] or {}).get('peak_bytes_in_use')
  return run


def run_replay(scratch: str, name: str, cache_dir: str, sweep: Dict[str, Any], seed: int,
               epochs: int) -> Dict[str, Any]:
  """`mlp_jax.main --seed=k --vmap_width=W` against seed k of `sweep`: identical?"""
  workdir = os.path.join(scratch, name)
  width = sweep['vmap_width']
  args = [f'--seed={seed}', f'--vmap_width={width}', f'--epochs={epochs}',
          f'--workdir={workdir}', *sweep['extra_args']]
  run = run_child('mlp_jax.main', args, cache_dir, os.path.join(scratch, f'{name}.log'))
  member = records.seed_dir(sweep['workdir'], seed)
  # Seeds fill groups of width x devices in order; the last, partial one is padded.
  seeds, unit = sweep['seeds'], width * sweep.get('device_count', 1)
  remainder = seeds % unit != 0 and seed >= seeds - seeds % unit
  return {'command': run['command'], 'wall_seconds': run['wall_seconds'], 'seed': seed,
          'vmap_width': width, 'remainder_group': remainder,
          'returncode': run['returncode'], 'error': run.get('error'),
          'identical': run['returncode'] == 0 and same_bits(workdir, member)}


def sweep_members_identical(sweep_a: Dict[str, Any], sweep_b: Dict[str, Any]) -> bool:
  """Whether every seed of two sweeps of the same seeds has the same bits."""
  return sweep_a['seed_list'] == sweep_b['seed_list'] and all(
      same_bits(records.seed_dir(sweep_a['workdir'], k), records.seed_dir(sweep_b['workdir'], k))
      for k in sweep_a['seed_list'])


def mean_final_accuracy(sweep: Dict[str, Any]) -> float:
  rows = records.read_csv(os.path.join(sweep['workdir'], records.POINTS_FILE))
  return float(rows[0]['mean'])


def sweep_summary(run: Dict[str, Any]) -> Dict[str, Any]:
  """What the JSON keeps of a sweep (its log and timing are in the run as well)."""
  t = run['timing']
  return {'command': run['command'], 'wall_seconds': run['wall_seconds'],
          'seed_epochs': t['seed_epochs'],
          'train_seed_epochs_per_second': run['seed_epochs_per_second'],
          'process_seed_epochs_per_second': run['seed_epochs_per_wall_second'],
          'startup_seconds': t.get('startup_seconds'), 'compile_seconds': t.get('compile_seconds'),
          'first_epoch_done_seconds': t.get('first_epoch_done_seconds'),
          'train_seconds': t['train_seconds'], 'eval_seconds': t['eval_seconds'],
          'host_seconds': run['host_seconds'], 'host_fraction': run['host_fraction'],
          'host_itemised': run['itemised'], 'programs_from_cache': t.get('programs_from_cache'),
          'programs_traced': t.get('programs_traced'), 'vmap_width': run['vmap_width'],
          'chunk_size': run['chunk_size'], 'peak_device_bytes': run['peak_device_bytes'],
          'peak_rss_bytes': run['peak_rss_bytes'], 'timing': t}


def device_bandwidth(device_kind: str) -> Optional[Tuple[str, float]]:
  """(the table's name, bytes/s) of a known device (DEVICE_BANDWIDTH), else None."""
  for pattern, name, bandwidth in DEVICE_BANDWIDTH:
    if re.search(pattern, device_kind.lower()):
      return name, bandwidth
  return None


def measured_copy_bandwidth(megabytes: int, repeats: int = 5) -> float:
  """Bytes/s of a jitted elementwise pass over a float32 array (read once, written
  once), best of `repeats` after a warm-up."""
  import jax
  import jax.numpy as jnp
  x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
  step = jax.jit(lambda a: a + 1.0)
  step(x).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    tick = time.perf_counter()
    step(x).block_until_ready()
    best = min(best, time.perf_counter() - tick)
  return 2 * x.nbytes / best


def measure_roofline(width: int, train_rate: float, device_kind: str, backend: str
                     ) -> Dict[str, Any]:
  """The training rate against the memory-bandwidth roofline (run in a child process
  by the check: a backend in the benchmark's own process would hold device memory
  while the other parts run).

  Bytes per seed-epoch come from XLA's cost analysis of the compiled epoch program
  (the driver's, for a chunk of `width` seeds at vmap width `width`): XLA counts a
  loop's body once, so its 'bytes accessed' is one optimizer step's (plus what runs
  once an epoch), times the steps of an epoch, over the seeds. A gather counts its
  whole operand, the training set, so this is an upper bound on the traffic; the
  estimate without that count takes the training set's bytes off each step.
  """
  from mlp_jax import environment  # pylint: disable=unused-import  # first: XLA:CPU threads
  import jax
  from mlp_jax.data import load_mnist
  from mlp_jax.driver import ChunkPrograms, to_device
  from mlp_jax.mesh import SeedMesh
  from mlp_jax.train import make_trainer
  config = TrainConfig()
  mesh = SeedMesh(jax.local_devices()[:1])
  data = to_device(load_mnist(), mesh)
  trainer = make_trainer(config, train_size=data.train_images.shape[0])
  programs = ChunkPrograms(trainer, data, mesh, vmap_width=width)
  _, epoch, _ = programs.get(width)
  analysis = epoch.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  program_bytes = float(analysis['bytes accessed'])
  steps = trainer.examples_per_epoch // config.batch_size
  per_seed_epoch = program_bytes * steps / width
  dataset_bytes = float(data.train_images.nbytes + data.train_labels.nbytes)
  without_gather = max(program_bytes - dataset_bytes, 0.0) * steps / width
  known = device_bandwidth(device_kind)
  if known is not None:
    source, bandwidth = f'table ({known[0]})', known[1]
  else:
    source = 'measured copy'
    bandwidth = measured_copy_bandwidth(64 if backend == 'cpu' else 1024)
  roofline = bandwidth / per_seed_epoch
  return {'program_width': width, 'program_bytes_accessed': program_bytes,
          'steps_per_epoch': steps, 'bytes_per_seed_epoch': per_seed_epoch,
          'training_set_bytes': dataset_bytes,
          'bytes_per_seed_epoch_without_gather_operand': without_gather,
          'roofline_without_gather_operand': (bandwidth / without_gather
                                              if without_gather else None),
          'bandwidth_bytes_per_second': bandwidth, 'bandwidth_source': source,
          'roofline_seed_epochs_per_second': roofline,
          'train_seed_epochs_per_second': train_rate,
          'fraction_of_roofline': train_rate / roofline}


def measure_roofline_in_child(scratch: str, cache_dir: str, width: int, train_rate: float,
                              device_kind: str, backend: str) -> Dict[str, Any]:
  """measure_roofline in a child process (see there)."""
  code = ('import json, sys\nfrom experiments.benchmark import measure_roofline\n'
          'print("roofline: " + json.dumps(measure_roofline(*json.loads(sys.argv[1]))))')
  log = os.path.join(scratch, 'roofline.log')
  run = run_command([sys.executable, '-c', code,
                     json.dumps([width, train_rate, device_kind, backend])], cache_dir, log)
  with open(log, errors='replace') as f:
    lines = [line for line in f if line.startswith('roofline: ')]
  if run['returncode'] != 0 or not lines:
    raise UsageError(f'--accelerator: the roofline part failed: {run.get("error")}')
  return json.loads(lines[-1][len('roofline: '):])


def accelerator_size(backend: str, seeds: Optional[int], epochs: Optional[int]
                     ) -> Dict[str, Any]:
  """The sizes of the check's parts: the claims' on a GPU/TPU, small on a CPU."""
  kind = 'cpu' if backend == 'cpu' else 'accelerator'
  default_seeds, default_epochs = ACCELERATOR_SIZE[kind]
  seeds = seeds or default_seeds
  epochs = epochs or default_epochs
  return {'kind': kind, 'seeds': seeds, 'epochs': epochs,
          'short_width': SHORT_WIDTH[kind], 'short_seeds': SHORT_WIDTH[kind] + 1,
          'short_epochs': min(epochs, SHORT_EPOCHS[kind]),
          'grid_seeds': GRID_SEEDS[kind] if seeds >= 3 * GRID_SEEDS[kind] else 1}


def run_accelerator_check(seeds: Optional[int] = None, epochs: Optional[int] = None,
                          output: Optional[str] = None) -> Dict[str, Any]:
  """Every part of the accelerator check, each timed (`seconds`); the JSON's dict.

  With `output`, the parts measured so far are written there after each part
  (`complete` false until the end), so a check stopped by a time limit keeps them.
  """
  started = time.perf_counter()
  results: Dict[str, Any] = {}
  with tempfile.TemporaryDirectory(prefix='mlp_jax_accelerator_') as scratch:
    # One fresh cache: the first sweep starts from it empty (cold), every later run
    # finds it filled (warm). The program cache's key holds JAX's configuration, the
    # cache's path included, so a copy elsewhere would not be warm.
    cache = os.path.join(scratch, 'cache')
    tick = time.perf_counter()
    device = probe_device(scratch, os.path.join(scratch, 'cache_probe'))
    size = accelerator_size(device['backend'], seeds, epochs)
    device['size'] = size
    device['seconds'] = time.perf_counter() - tick
    device['load_average'] = [load_average()]
    results['device'] = device
    print(f'accelerator check on {device["backend"]} ({device["device_kind"]} x '
          f'{device["device_count"]}): {size["seeds"]} seed(s) x {size["epochs"]} epoch(s)',
          flush=True)

    def part(key: str, what: str, measure: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
      print(f'measuring: {what}', flush=True)
      tick = time.perf_counter()
      value = measure()
      value['seconds'] = time.perf_counter() - tick
      results[key] = value
      if output is not None:
        write_results(output, {**results, 'complete': False})
      return value

    main_args = [f'--seeds=0-{size["seeds"] - 1}', f'--epochs={size["epochs"]}']
    sweeps: Dict[str, Dict[str, Any]] = {}

    def measure_sweep_part() -> Dict[str, Any]:
      sweeps['cold'] = run_sweep(scratch, 'sweep_cold', cache, main_args)
      sweeps['warm'] = run_sweep(scratch, 'sweep_warm', cache, main_args)
      return {'seeds': size['seeds'], 'epochs': size['epochs'],
              'cold': sweep_summary(sweeps['cold']), 'warm': sweep_summary(sweeps['warm'])}
    part('sweep', f'{size["seeds"]} seed(s) x {size["epochs"]} epoch(s), cold and warm cache',
         measure_sweep_part)
    warm = sweeps['warm']
    part('roofline', 'bytes per seed-epoch (cost analysis) against memory bandwidth',
         lambda: measure_roofline_in_child(scratch, cache, min(warm['vmap_width'] or 1, 8),
                                           warm['seed_epochs_per_second'],
                                           device['device_kind'], device['backend']))

    short_args = [f'--seeds=0-{size["short_seeds"] - 1}', f'--epochs={size["short_epochs"]}',
                  f'--vmap_width={size["short_width"]}']

    def measure_determinism() -> Dict[str, Any]:
      for name, extra in (('first', []), ('second', []), ('nondeterministic',
                                                          ['--nodeterministic'])):
        sweeps[name] = run_sweep(scratch, f'short_{name}', cache, [*short_args, *extra])
      rate = lambda name: sweeps[name]['seed_epochs_per_second']
      return {'command': sweeps['first']['command'],
              'identical': sweep_members_identical(sweeps['first'], sweeps['second']),
              'deterministic_seed_epochs_per_second': [rate('first'), rate('second')],
              'nondeterministic_seed_epochs_per_second': rate('nondeterministic'),
              'speedup_without_determinism': rate('nondeterministic') / max(
                  rate('first'), rate('second')),
              'nondeterministic_bits_moved': not sweep_members_identical(
                  sweeps['first'], sweeps['nondeterministic'])}
    part('determinism', 'the same short sweep twice, and once --nodeterministic',
         measure_determinism)

    def measure_replay() -> Dict[str, Any]:
      main = {**sweeps['warm'], 'seeds': size['seeds'], 'extra_args': [],
              'device_count': device['device_count']}
      short = {**sweeps['first'], 'seeds': size['short_seeds'],
               'extra_args': [], 'device_count': device['device_count']}
      replays = [run_replay(scratch, 'replay_sweep', cache, main, size['seeds'] - 1,
                            size['epochs']),
                 run_replay(scratch, 'replay_remainder', cache, short,
                            size['short_seeds'] - 1, size['short_epochs'])]
      return {'replays': replays, 'identical': all(r['identical'] for r in replays),
              'remainder_group_included': any(r['remainder_group'] for r in replays)}
    part('replay', 'members replayed by mlp_jax.main --seed=k --vmap_width=W', measure_replay)

    def measure_precision() -> Dict[str, Any]:
      sweeps['highest'] = run_sweep(scratch, 'short_highest', cache,
                                    [*short_args, '--matmul_precision=highest'])
      default, highest = sweeps['first'], sweeps['highest']
      return {'default_seed_epochs_per_second': default['seed_epochs_per_second'],
              'highest_seed_epochs_per_second': highest['seed_epochs_per_second'],
              'default_over_highest_speed': (default['seed_epochs_per_second'] /
                                             highest['seed_epochs_per_second']),
              'default_mean_final_test_accuracy': mean_final_accuracy(default),
              'highest_mean_final_test_accuracy': mean_final_accuracy(highest),
              'bits_moved': not sweep_members_identical(default, highest)}
    part('precision', 'default matmul precision against --matmul_precision=highest',
         measure_precision)

    def measure_grid() -> Dict[str, Any]:
      g, epochs_ = size['grid_seeds'], size['short_epochs']
      # A warm-up fills the cache with the programs of 3g members (with a constant
      # rate their key leaves out the epochs), so that neither measured run compiles.
      run_sweep(scratch, 'grid_warmup', cache, [f'--seeds=0-{len(GRID_RATES) * g - 1}',
                                                '--epochs=1'])
      sweep = run_sweep(scratch, 'grid_sweep', cache,
                        [f'--seeds=0-{len(GRID_RATES) * g - 1}', f'--epochs={epochs_}'])
      grid = run_sweep(scratch, 'grid', cache, [f'--seeds=0-{g - 1}', f'--epochs={epochs_}',
                                                     f'--learning_rate={",".join(GRID_RATES)}'])
      return {'rates': list(GRID_RATES), 'seeds_per_rate': g, 'epochs': epochs_,
              'grid': sweep_summary(grid), 'sweep': sweep_summary(sweep),
              'wall_ratio': grid['wall_seconds'] / sweep['wall_seconds'],
              'train_ratio': grid['timing']['train_seconds'] / sweep['timing']['train_seconds']}
    part('grid', f'{len(GRID_RATES)}-rate grid against a sweep of as many seeds', measure_grid)

  results['device']['load_average'].append(load_average())
  results['seconds'] = time.perf_counter() - started
  results['complete'] = True
  return results


def _rate(value: Optional[float]) -> str:
  if value is None:
    return 'n/a'
  return f'{value:,.1f}' if value >= 100 else f'{value:.3g}'


def _bytes(value: Optional[float]) -> str:
  return 'n/a' if value is None else f'{value / 2**30:.2f} GiB'


def accelerator_table(results: Dict[str, Any]) -> str:
  """The markdown table of an accelerator check: the device and versions, then each
  figure."""
  d, s = results['device'], results['sweep']
  smi = d.get('nvidia_smi') or {}
  cuda = d.get('cuda') or {}
  versions = ', '.join(f'{k} {v}' for k, v in sorted(d['versions'].items()))
  # Without flatbuffers jax.export cannot serialize: every process traces its programs.
  cache_note = ([] if d.get('program_cache', True) else
                ['', 'flatbuffers is not installed: the program cache is off (every process '
                 'traces), so the warm sweep only skips XLA\'s compilation.'])
  lines = [f'Device: {d["device_kind"]} x {d["device_count"]} ({d["backend"]}); '
           f'driver {smi.get("driver_version", "n/a")}; CUDA runtime '
           f'{cuda.get("runtime", "n/a")}, driver API {cuda.get("driver", "n/a")}, cuDNN '
           f'{cuda.get("cudnn", "n/a")}; host CPU {d.get("cpu")} ({d.get("cpu_id")}; '
           f'{d.get("cpu_count")} cores); Python {d["python"]}; {versions}.', *cache_note, '',
           '| part | figure | value |', '|---|---|---|']
  row = lambda part, figure, value: lines.append(f'| {part} | {figure} | {value} |')
  for name in ('cold', 'warm'):
    r = s[name]
    label = f'sweep {s["seeds"]} x {s["epochs"]}, {name} cache'
    row(label, 'seed-epochs/s: training / whole process',
        f'{_rate(r["train_seed_epochs_per_second"])} / '
        f'{_rate(r["process_seed_epochs_per_second"])}')
    row(label, 'wall / start-up / compile', f'{r["wall_seconds"]:.1f} s / '
        f'{_seconds(r["startup_seconds"])} s / {_seconds(r["compile_seconds"])} s')
    items = r['host_itemised']
    row(label, 'host work: records / checkpoints / summaries',
        ' / '.join(f'{_seconds(items.get(k))} s' for k in ('records_seconds',
                                                           'checkpoint_seconds',
                                                           'summary_seconds'))
        + f' ({r["host_fraction"]:.3f} of training + evaluation)')
    row(label, 'vmap width / chunk size / peak device memory',
        f'{r["vmap_width"]} / {r["chunk_size"]} / {_bytes(r["peak_device_bytes"])}')
  f = results['roofline']
  row('roofline', 'bytes per seed-epoch (cost analysis) / bandwidth',
      f'{f["bytes_per_seed_epoch"] / 1e9:.2f} GB / {f["bandwidth_bytes_per_second"] / 1e12:.3f} '
      f'TB/s ({f["bandwidth_source"]})')
  row('roofline', 'roofline / training seed-epochs/s (fraction)',
      f'{_rate(f["roofline_seed_epochs_per_second"])} / '
      f'{_rate(f["train_seed_epochs_per_second"])} ({f["fraction_of_roofline"]:.3f})')
  row('roofline', 'without the gather\'s whole-operand count: bytes / roofline',
      f'{f["bytes_per_seed_epoch_without_gather_operand"] / 1e9:.2f} GB / '
      f'{_rate(f["roofline_without_gather_operand"])} seed-epochs/s')
  for replay in results['replay']['replays']:
    row('replay', f'seed {replay["seed"]} at width {replay["vmap_width"]}'
        + (' (remainder group)' if replay['remainder_group'] else ''),
        'IDENTICAL' if replay['identical'] else 'DIFFERENT')
  det = results['determinism']
  row('determinism', 'two processes, default flags',
      'identical' if det['identical'] else 'DIFFERENT')
  row('determinism', '--nodeterministic: speed-up / bits moved',
      f'{det["speedup_without_determinism"]:.3f} / '
      f'{"yes" if det["nondeterministic_bits_moved"] else "no"}')
  p = results['precision']
  row('precision', 'default / highest seed-epochs/s',
      f'{_rate(p["default_seed_epochs_per_second"])} / '
      f'{_rate(p["highest_seed_epochs_per_second"])}')
  row('precision', 'mean final test accuracy default / highest; bits moved',
      f'{p["default_mean_final_test_accuracy"]:.4f} / {p["highest_mean_final_test_accuracy"]:.4f};'
      f' {"yes" if p["bits_moved"] else "no"}')
  g = results['grid']
  row('grid', f'{len(g["rates"])} rates x {g["seeds_per_rate"]} seeds / sweep of '
      f'{len(g["rates"]) * g["seeds_per_rate"]}: wall (training) ratio',
      f'{g["wall_ratio"]:.3f} ({g["train_ratio"]:.3f})')
  load = ' -> '.join('n/a' if sample is None else f'{sample[0]:.1f}'
                     for sample in d.get('load_average') or [])
  lines += ['', f'Check: {results["seconds"]:.0f} s in all; load average (1 min) at its start '
            f'and end {load}.']
  return '\n'.join(lines)


def accelerator_main(output: str, seeds: Optional[int], epochs: Optional[int]) -> None:
  """--accelerator: runs the check, prints the table, writes OUTPUT and OUTPUT's .md."""
  for flag, value in (('accelerator_seeds', seeds), ('accelerator_epochs', epochs)):
    if value is not None and value < 1:
      raise UsageError(f'--{flag} must be at least 1, got {value}')
  results = run_accelerator_check(seeds, epochs, output)
  table = accelerator_table(results)
  print()
  print(table)
  write_results(output, results)
  markdown = os.path.splitext(output)[0] + '.md'
  try:
    records.write_bytes_atomic(markdown, (table + '\n').encode())
  except OSError as e:
    raise UsageError(f'--output={output}: cannot write {markdown}: {e.strerror}') from None
  print(f'\naccelerator check: {results["seconds"]:.0f} s; measurements in {output}, table in '
        f'{markdown}')


def main(argv):
  reject_extra_arguments(argv)
  output = flags.FLAGS.output
  if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
    raise UsageError(f'--output={output}: no such directory')
  started = time.perf_counter()
  if flags.FLAGS.accelerator:
    accelerator_main(output, flags.FLAGS.accelerator_seeds, flags.FLAGS.accelerator_epochs)
    return
  if flags.FLAGS.grid_seeds is not None:
    if flags.FLAGS.grid_seeds < 1 or flags.FLAGS.grid_rounds < 1 or flags.FLAGS.sweep_epochs < 1:
      raise UsageError('--grid_seeds, --grid_rounds and --sweep_epochs must be at least 1')
    rates = parse_values('learning_rate', flags.FLAGS.grid_rates)
    from mlp_jax import environment
    machine = environment.describe()
    print(format_header(machine), flush=True)
    with tempfile.TemporaryDirectory(prefix='mlp_jax_benchmark_') as scratch:
      result = measure_grid_mode(scratch, os.path.join(scratch, 'xla_cache'),
                                 [repr(r) for r in rates], flags.FLAGS.grid_seeds,
                                 flags.FLAGS.sweep_epochs, flags.FLAGS.grid_rounds)
    print(format_grid_mode(result))
    write_results(output, {'machine': machine, 'grid_mode': result})
    return
  if flags.FLAGS.sweep_seeds is not None:
    if flags.FLAGS.sweep_seeds < 1 or flags.FLAGS.sweep_epochs < 1:
      raise UsageError('--sweep_seeds and --sweep_epochs must be at least 1')
    from mlp_jax import environment
    machine = environment.describe()
    print(format_header(machine), flush=True)
    with tempfile.TemporaryDirectory(prefix='mlp_jax_benchmark_') as scratch:
      run = measure_sweep_mode(scratch, os.path.join(scratch, 'xla_cache'),
                               flags.FLAGS.sweep_seeds, flags.FLAGS.sweep_epochs,
                               flags.FLAGS.sweep_args.split())
    print(format_sweep_mode(run))
    write_results(output, {'machine': machine, 'sweep_mode': run})
    return
  torch_python = flags.FLAGS.torch_python
  if torch_python and not os.access(torch_python, os.X_OK):
    raise UsageError(f'--torch_python={torch_python}: not an executable')
  for setting in flags.FLAGS.torch_threads:
    if setting != 'default' and not (setting.isdigit() and int(setting) > 0):
      raise UsageError(f'--torch_threads: {setting!r} is neither "default" nor a positive number')
  if flags.FLAGS.e2e_repeats is not None and flags.FLAGS.e2e_repeats < 1:
    raise UsageError('--e2e_repeats must be at least 1')
  if flags.FLAGS.e2e_epochs < 1:
    raise UsageError('--e2e_epochs must be at least 1')
  results = run_benchmark(flags.FLAGS.quick, torch_python, flags.FLAGS.torch_threads,
                          flags.FLAGS.e2e_repeats, flags.FLAGS.e2e_only,
                          flags.FLAGS.e2e_epochs)
  results['benchmark_seconds'] = time.perf_counter() - started
  print()
  print(format_table(results))
  write_results(output, results)
  print(f'\nbenchmark: {results["benchmark_seconds"]:.0f} s; measurements in {output}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
