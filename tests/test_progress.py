"""mlp_jax.progress: the epoch lines, the time-left estimate and the terminal bar."""

import io

import pytest

from mlp_jax import progress


def test_a_long_run_says_how_long_it_will_take(monkeypatch):
  import io  # pylint: disable=g-import-not-at-top
  from mlp_jax import progress  # pylint: disable=g-import-not-at-top
  clock = iter([0.0, 100.0, 110.0, 120.0])  # start, then each advance: 10 s per 4 units
  monkeypatch.setattr(progress.time, 'perf_counter', lambda: next(clock))
  out = io.StringIO()
  bar = progress.Progress(1000, unit='seed-epochs', out=out)
  for epoch in (1, 2, 3):
    bar.advance(f'epoch {epoch}', 4)
  assert out.getvalue().splitlines() == [
      'epoch 1', 'epoch 2', 'mlp_jax: about 41m20s to go at this pace (992 seed-epochs left)',
      'epoch 3']



@pytest.mark.parametrize('seconds, text', [
    (0.4, '0s'), (59.4, '59s'), (59.6, '1m00s'), (61, '1m01s'), (3599, '59m59s'),
    (3600, '1h00m'), (3 * 3600 + 7 * 60 + 59, '3h07m'),
])
def test_format_seconds(seconds, text):
  assert progress.format_seconds(seconds) == text


def test_a_short_run_says_no_estimate(monkeypatch):
  clock = iter([0.0, 1.0, 2.0, 3.0])  # 1 s per unit: 7 s left, under the threshold
  monkeypatch.setattr(progress.time, 'perf_counter', lambda: next(clock))
  out = io.StringIO()
  bar = progress.Progress(10, out=out)
  for epoch in (1, 2, 3):
    bar.advance(f'epoch {epoch}')
  assert out.getvalue() == 'epoch 1\nepoch 2\nepoch 3\n'


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_a_terminal_bar_is_cleared_before_each_line_and_redrawn_after(monkeypatch):
  clock = iter([0.0, 10.0, 10.0, 20.0, 20.0])
  monkeypatch.setattr(progress.time, 'perf_counter', lambda: next(clock))
  out, terminal = io.StringIO(), _Terminal()
  bar = progress.Progress(4, out=out, bar=terminal)
  bar.advance('epoch 1')
  assert out.getvalue() == 'epoch 1\n'
  assert terminal.getvalue() == ('\r\033[K[' + '#' * 7 + '.' * 23 + '] 1/4 epochs, ETA 30s')
  bar.close()
  assert terminal.getvalue().endswith('\r\033[K')


def test_no_bar_off_a_terminal():
  not_a_terminal = io.StringIO()
  bar = progress.Progress(4, out=io.StringIO(), bar=not_a_terminal)
  bar.advance('epoch 1')
  bar.close()
  assert not_a_terminal.getvalue() == ''


def test_units_done_before_the_process_count_as_done_but_not_in_its_pace(monkeypatch):
  clock = iter([0.0, 5.0, 5.0])
  monkeypatch.setattr(progress.time, 'perf_counter', lambda: next(clock))
  terminal = _Terminal()
  bar = progress.Progress(5, unit='seed-epochs', out=io.StringIO(), bar=terminal)
  bar.add_done(2)
  bar.advance('epoch 3')
  # 3 of 5 done; 1 unit in 5 s here, so the 2 left take 10 s.
  assert terminal.getvalue().endswith('[' + '#' * 18 + '.' * 12 + '] 3/5 seed-epochs, ETA 10s')
