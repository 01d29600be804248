"""What a run may touch and what it may not: only folders and files it can prove it
wrote; settings only from its own records; a console that fails is not a workdir
that fails; every phase interruptible. In-process on a tiny subset where the point
is a workdir's files; in a process of its own where it is a process's (pipes,
signals)."""

import functools
import os
import subprocess
import sys

import pytest

from conftest import REPO, read, train_tiny
from mlp_jax import records
from mlp_jax.config import TrainConfig
from mlp_jax.errors import UsageError
from mlp_jax.workdir import WorkdirError

CONFIG = TrainConfig(epochs=2, batch_size=128)


# run.train on the `tiny` data, this module's CONFIG unless given.
_train = functools.partial(train_tiny, config=CONFIG)


@pytest.mark.slow
def test_a_closed_or_failing_console_costs_no_record(tmp_path, cache_dir):
  """stdout a pipe nobody reads (`| head -1` once head has exited), stderr /dev/full:
  the run trains to the end, writes every record and exits 0."""
  workdir = tmp_path / 'run'
  with open('/dev/full', 'w') as full:
    process = subprocess.Popen(
        [sys.executable, '-m', 'mlp_jax.main', '--epochs=1', f'--workdir={workdir}'],
        cwd=REPO, stdout=subprocess.PIPE, stderr=full,
        env={**os.environ, 'MLP_JAX_COMPILATION_CACHE': cache_dir})
    process.stdout.close()  # the reader is gone before the first line
    assert process.wait(timeout=300) == 0
  assert records.is_complete(str(workdir))
  assert len(records.read_history(str(workdir / records.HISTORY_FILE)).rows) == 1


def _one_line(error):
  text = str(error.value)
  assert '\n' not in text and len(text) < 300, text
  return text


def _tree(path):
  """{relative path: bytes} of every file under `path`."""
  found = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      found[os.path.relpath(full, path)] = read(full, 'rb')
  return found


@pytest.fixture(scope='module')
def finished(tiny, tmp_path_factory):
  """A finished 1-epoch run, to copy."""
  path = tmp_path_factory.mktemp('finished') / 'run'
  _train(tiny, path, config=CONFIG.replace(epochs=1))
  return path


def test_a_lost_config_is_restored_from_the_run_never_from_todays_flags(tiny, finished,
                                                                        tmp_path, capsys):
  import shutil  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'run'
  shutil.copytree(finished, path)
  original = read(path / records.CONFIG_FILE)
  os.remove(path / records.CONFIG_FILE)
  with pytest.raises(WorkdirError) as error:
    _train(tiny, path, config=CONFIG.replace(epochs=1, learning_rate=0.01))
  assert 'learning_rate 0.001 -> 0.01' in _one_line(error)
  assert read(path / records.CONFIG_FILE) == original
  assert 'config.json was missing; restored from' in capsys.readouterr().out
  # Lost again: the run's own command finds it complete, with its own settings.
  os.remove(path / records.CONFIG_FILE)
  assert not _train(tiny, path, config=CONFIG.replace(epochs=1)).trained
  assert read(path / records.CONFIG_FILE) == original
  assert records.load_config(str(path)) == CONFIG.replace(epochs=1)


def test_a_lost_config_without_the_runs_marker_is_refused(tiny, finished, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'run'
  shutil.copytree(finished, path)
  os.remove(path / records.CONFIG_FILE)
  os.remove(path / records.MARKER_FILE)
  before = _tree(path)
  for overwrite in (False, True):
    with pytest.raises(WorkdirError, match='holds files mlp_jax did not write'):
      _train(tiny, path, config=CONFIG.replace(epochs=1, hidden_sizes=(64,)),
             overwrite=overwrite)
  assert _tree(path) == before


def _users_folder(path):
  """A folder of the user's own: a history, checkpoints (one of 'epoch 7'), events."""
  (path / 'checkpoints' / '7').mkdir(parents=True)
  (path / 'checkpoints' / '7' / 'state').write_text('mine')
  (path / 'tensorboard').mkdir()
  (path / 'tensorboard' / 'events.out').write_text('mine')
  (path / records.HISTORY_FILE).write_text('epoch,loss\n1,0.5\n')
  return _tree(path)


@pytest.mark.parametrize('sweep', [False, True])
@pytest.mark.parametrize('overwrite', [False, True])
def test_a_folder_of_the_users_is_refused_and_left_untouched(tiny, tmp_path, sweep, overwrite):
  path = tmp_path / 'mine'
  before = _users_folder(path)
  with pytest.raises(WorkdirError) as error:
    _train(tiny, path, [0, 1] if sweep else [0], sweep=sweep, overwrite=overwrite)
  assert f'--workdir={path} holds files mlp_jax did not write' in _one_line(error)
  assert sorted(os.listdir(path)) == ['checkpoints', 'history.csv', 'tensorboard']  # no .lock
  assert _tree(path) == before


def test_a_seed_folder_of_the_users_is_refused_before_anything_is_written(tiny, tmp_path):
  path = tmp_path / 'sweep'
  _train(tiny, path, [0], sweep=True, config=CONFIG.replace(epochs=1))
  before, mine = _tree(path), _users_folder(path / 'seed_1')
  with pytest.raises(WorkdirError) as error:
    _train(tiny, path, [0, 1], sweep=True, config=CONFIG.replace(epochs=1), overwrite=True)
  assert f'{path / "seed_1"} holds files mlp_jax did not write' in _one_line(error)
  assert _tree(path) == {**before, **{f'seed_1/{k}': v for k, v in mine.items()}}


@pytest.mark.parametrize('where', ['workdir', 'seed_1'])
def test_a_file_where_a_folder_goes_is_named(tiny, tmp_path, where):
  path = tmp_path / 'sweep'
  target = path if where == 'workdir' else path / 'seed_1'
  if where == 'seed_1':  # in a sweep of seed 0, now asked for seeds 0-1
    _train(tiny, path, [0], sweep=True, config=CONFIG.replace(epochs=1))
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text('mine')
  with pytest.raises(WorkdirError) as error:
    _train(tiny, path, [0, 1], sweep=True, config=CONFIG.replace(epochs=1), overwrite=True)
  assert f'{target} is a file, not a directory' in _one_line(error)
  assert target.read_text() == 'mine'


def test_overwrite_deletes_only_the_runs_own_records(tiny, finished, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'run'
  shutil.copytree(finished, path)
  (path / 'notes.txt').write_text('mine')
  _train(tiny, path, config=CONFIG.replace(epochs=1, learning_rate=0.01), overwrite=True)
  assert (path / 'notes.txt').read_text() == 'mine'
  assert records.load_config(str(path)).learning_rate == 0.01 and records.is_complete(str(path))


def test_overwrite_starts_over(tiny, tmp_path):
  """Other settings with --overwrite: nothing of the old run is kept or resumed from;
  the new run's history and checkpoints are those of a run in an empty workdir."""
  from conftest import without_timing  # pylint: disable=g-import-not-at-top
  path, fresh = tmp_path / 'run', tmp_path / 'fresh'
  _train(tiny, path, config=CONFIG.replace(learning_rate=0.01))
  _train(tiny, path, overwrite=True)
  _train(tiny, fresh)
  assert without_timing(read(path / records.HISTORY_FILE)) == \
      without_timing(read(fresh / records.HISTORY_FILE))
  assert read(path / records.PARAMS_FILE, 'rb') == read(fresh / records.PARAMS_FILE, 'rb')
  assert sorted(os.listdir(path / 'checkpoints')) == ['1', '2']


def test_a_run_written_before_markers_still_resumes(tiny, finished, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'run'
  shutil.copytree(finished, path)
  os.remove(path / records.MARKER_FILE)
  assert not _train(tiny, path, config=CONFIG.replace(epochs=1)).trained
  assert os.path.exists(path / records.MARKER_FILE)



@pytest.mark.parametrize('damage', ['delete', 'truncate'])
def test_a_lost_history_of_a_finished_run_is_rebuilt(tiny, finished, tmp_path, capsys, damage):
  import shutil  # pylint: disable=g-import-not-at-top
  from conftest import without_timing  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'run'
  shutil.copytree(finished, path)
  history, params = read(path / records.HISTORY_FILE), read(path / records.PARAMS_FILE, 'rb')
  if damage == 'delete':
    os.remove(path / records.HISTORY_FILE)
  else:  # the header alone: no epoch
    (path / records.HISTORY_FILE).write_text(history.splitlines()[0] + '\n')
  _train(tiny, path, config=CONFIG.replace(epochs=1))
  assert 'though the run has its parameters; rebuilding' in capsys.readouterr().out
  assert without_timing(read(path / records.HISTORY_FILE)) == without_timing(history)
  assert read(path / records.PARAMS_FILE, 'rb') == params


def test_a_signal_during_a_sweeps_final_writes_stops_between_them(tiny, tmp_path, monkeypatch):
  import signal  # pylint: disable=g-import-not-at-top
  from mlp_jax import run  # pylint: disable=g-import-not-at-top
  from mlp_jax.errors import Interrupted  # pylint: disable=g-import-not-at-top
  real = run.write_summaries

  def terminated(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    real(*args, **kwargs)

  monkeypatch.setattr(run, 'write_summaries', terminated)
  path = tmp_path / 'sweep'
  with pytest.raises(Interrupted) as error:
    _train(tiny, path, [0, 1], sweep=True, config=CONFIG.replace(epochs=1))
  assert 'stopped by SIGTERM during the final writes (the summaries written, not timing.json)' \
      in _one_line(error)
  assert not os.path.exists(path / records.TIMING_FILE)
  monkeypatch.undo()
  _train(tiny, path, [0, 1], sweep=True, config=CONFIG.replace(epochs=1))
  assert all(os.path.exists(path / name) for name in (records.TIMING_FILE, records.POINTS_FILE))


_KILLED_PARENT = """
import os, sys
from mlp_jax import records, sink
header = ','.join(records.HISTORY_COLUMNS)
dirs = []
for k in range(400):  # work for the 2 processes for longer than the test waits
  d = os.path.join(sys.argv[1], str(k))
  os.makedirs(d)
  with open(os.path.join(d, records.HISTORY_FILE), 'w') as f:
    f.write(header + '\\n1,2.0,0.5,1.9,0.6,1.0,0.1\\n2,1.0,0.7,0.9,0.8,1.0,0.1\\n')
  dirs.append(d)
sink.render_curves(dirs, [str(k) for k in range(400)], workers=2)
"""


@pytest.mark.slow
def test_curve_processes_end_with_their_parent(tmp_path):
  """The parent of the processes drawing curves.png dies by SIGKILL: they end too."""
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  parent = subprocess.Popen([sys.executable, '-c', _KILLED_PARENT, str(tmp_path)], cwd=REPO)
  children, deadline = [], time.monotonic() + 60
  while len(children) < 2 and time.monotonic() < deadline:
    time.sleep(0.2)
    children = [int(p) for task in os.listdir(f'/proc/{parent.pid}/task')
                for p in read(f'/proc/{parent.pid}/task/{task}/children').split()]
    # The pool's workers are spawned through a resource tracker: only python processes count.
    children = [c for c in children if 'resource_tracker' not in read(f'/proc/{c}/cmdline')]
  assert len(children) >= 2, children
  while not os.path.exists(tmp_path / '0' / records.CURVES_FILE) and time.monotonic() < deadline:
    time.sleep(0.2)  # drawing
  parent.send_signal(signal.SIGKILL)
  parent.wait()
  deadline = time.monotonic() + 5
  while time.monotonic() < deadline and any(os.path.exists(f'/proc/{c}') and
                                            'Z' not in read(f'/proc/{c}/stat').split()[2]
                                            for c in children):
    time.sleep(0.2)
  alive = [c for c in children if os.path.exists(f'/proc/{c}')
           and read(f'/proc/{c}/stat').split()[2] != 'Z']
  assert not alive, alive

# ----------------------------------------------------------------------------- compare


def test_identity_is_never_claimed_against_an_incomplete_run(tmp_path):
  """A finished 1-epoch run against a 3-epoch run stopped after its first epoch."""
  from test_compare import compare, write_run  # pylint: disable=g-import-not-at-top
  a = write_run(tmp_path / 'a', epochs=1)
  b = write_run(tmp_path / 'b', epochs=1, config={'epochs': 3})
  result = compare(a, b, '--require_identical')
  assert result.returncode == 1, result.stderr
  last = result.stdout.strip().splitlines()[-1]
  assert last == f'verdict: DIFFERENT (B incomplete: {b} has 1 of 3 epochs recorded)', last


def test_a_bad_output_is_one_line_before_anything_is_done(tmp_path):
  from mlp_jax.compare import output_path  # pylint: disable=g-import-not-at-top
  from test_compare import compare_command, write_run  # pylint: disable=g-import-not-at-top
  for output, expected in (('picture', "got 'no extension'"),
                           (str(tmp_path / 'missing') + os.sep, 'no such directory'),
                           (str(tmp_path / 'missing' / 'a.png'), 'does not exist')):
    with pytest.raises(UsageError, match=expected):
      output_path(output)
  a, b = write_run(tmp_path / 'a'), write_run(tmp_path / 'b')
  result = compare_command(a, b, cwd=tmp_path, plot='picture.unknown')
  assert result.returncode == 2 and result.stdout == '', result.stdout
  assert result.stderr == ("error: --output=picture.unknown: expected a file ending in .png, "
                           ".pdf, .svg (or .svgz, .eps, .ps, .jpg, .jpeg, .tif, .tiff, .webp) "
                           "or an existing directory, got '.unknown'\n")
  assert sorted(os.listdir(tmp_path)) == ['a', 'b']


def test_output_a_directory_is_its_compare_png_as_printed(tmp_path):
  from test_compare import compare, write_run  # pylint: disable=g-import-not-at-top
  a, b = write_run(tmp_path / 'a'), write_run(tmp_path / 'b')
  (tmp_path / 'out').mkdir()
  result = compare(a, b, plot=tmp_path / 'out')
  assert result.returncode == 0, result.stderr
  written = tmp_path / 'out' / 'compare.png'
  assert f'plot: {written}' in result.stdout and os.path.getsize(written) > 10_000


# ----------------------------------------------------------------------------- smaller cases


def test_an_idx_file_of_another_kind_is_named_as_such(tmp_path):
  from mlp_jax import data  # pylint: disable=g-import-not-at-top
  from mlp_jax.errors import DataError  # pylint: disable=g-import-not-at-top
  from test_data import _raw_copy  # pylint: disable=g-import-not-at-top
  _raw_copy(tmp_path)  # a valid magic number, of the wrong kind: its data read as dimensions
  path = tmp_path / 't10k-labels-idx1-ubyte'
  path.write_bytes(b'\x00\x00\x08\x03' + path.read_bytes()[4:])
  with pytest.raises(DataError) as error:
    data.load_mnist(str(tmp_path))
  assert _one_line(error) == (
      f'{path}: magic number 0x00000803 is that of a 3-dimensional IDX file, expected 1 '
      'dimension(s) (0x00000801): another kind of file?')


def test_a_tfds_error_is_its_line_alone(tmp_path, capfd):
  pytest.importorskip('tensorflow_datasets')
  from mlp_jax import tfds_data  # pylint: disable=g-import-not-at-top
  from mlp_jax.errors import DataError  # pylint: disable=g-import-not-at-top
  with pytest.raises(DataError, match='is not prepared in'):
    tfds_data.load_tfds('fashion_mnist', str(tmp_path / 'none'))
  assert capfd.readouterr().err == ''


def test_an_unwritable_compilation_cache_is_one_warning_line(tmp_path, capfd):
  from mlp_jax import environment  # pylint: disable=g-import-not-at-top
  (tmp_path / 'file').write_text('')
  assert environment.enable_compilation_cache(str(tmp_path / 'file' / 'xla')) is None
  assert capfd.readouterr().err == (
      f'mlp_jax: warning: the compilation cache {tmp_path / "file" / "xla"} cannot be written '
      '(Not a directory); compiling without it (--compilation_cache_dir, '
      '$MLP_JAX_COMPILATION_CACHE)\n')


@pytest.mark.slow
def test_the_sweep_header_says_how_many_seeds_train_together(tiny, tmp_path, capsys):
  _train(tiny, tmp_path / 'sweep', [0, 1], sweep=True, config=CONFIG.replace(epochs=1),
         vmap_width=2, chunk_size=1, checkpoint_every=0)
  header = capsys.readouterr().out.splitlines()[0]
  assert ', vmap width 2, chunks of 2 (--chunk_size=1 rounded up to whole vmap groups of 2 on ' \
      'each of 1 device(s)) over 1 device(s)' in header, header


def test_a_sweep_too_large_for_its_disk_is_refused_before_anything_is_written(
    tiny, tmp_path, monkeypatch):
  """What a sweep's records and checkpoints will take is checked first (here against a
  filesystem with 1 GiB free: 10,000 seeds need about 19 GiB)."""
  from mlp_jax import planning  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(planning, 'free_space', lambda path: (2**30, 10**9, 4096))
  with pytest.raises(WorkdirError) as error:
    _train(tiny, tmp_path / 'sweep', range(10_000), sweep=True)
  assert _one_line(error).startswith(
      f'--workdir={tmp_path / "sweep"}: 10000 run directories of 484 KiB')
  assert not os.path.exists(tmp_path / 'sweep')


def test_a_seeds_lost_config_is_restored_from_its_marker(tiny, tmp_path, capsys):
  path = tmp_path / 'sweep'
  _train(tiny, path, [0, 1], sweep=True, config=CONFIG.replace(epochs=1))
  original = read(path / 'seed_1' / records.CONFIG_FILE)
  os.remove(path / 'seed_1' / records.CONFIG_FILE)
  capsys.readouterr()
  assert not _train(tiny, path, [0, 1], sweep=True, config=CONFIG.replace(epochs=1)).trained
  assert 'seed_1/config.json was missing; restored from' in capsys.readouterr().out
  assert read(path / 'seed_1' / records.CONFIG_FILE) == original


def test_a_run_whose_config_is_lost_is_not_taken_for_a_sweeps_folder(tiny, finished, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'run'
  shutil.copytree(finished, path)
  os.remove(path / records.CONFIG_FILE)
  with pytest.raises(WorkdirError) as error:
    _train(tiny, path, [0, 1], sweep=True, config=CONFIG.replace(epochs=1))
  assert _one_line(error) == f'--workdir={path} holds a single run; a sweep needs its own workdir'
  assert not os.path.exists(path / records.SWEEP_FILE)


def test_a_settings_file_being_written_by_another_process_is_not_a_foreign_file(tmp_path):
  """In a multi-process job process 0 writes a folder's marker and settings (atomically,
  through a temporary file) while the others check the folder: that temporary file is
  mlp_jax's, not the user's; any other file still makes the folder foreign."""
  from mlp_jax import workdir  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'seed_2'
  folder.mkdir()
  (folder / (records.MARKER_FILE + '.tmp29106')).write_text('{')
  (folder / (records.CONFIG_FILE + '.tmp29106')).write_text('{')
  assert workdir.claim(str(folder), workdir.RUN, flag='', write=False) is False
  (folder / 'notes.tmp123').write_text('mine')
  with pytest.raises(workdir.WorkdirError, match='holds files mlp_jax did not write'):
    workdir.claim(str(folder), workdir.RUN, flag='', write=False)
