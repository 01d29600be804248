"""Console output of a training run: a line per epoch, and a progress bar on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO, Tuple


def format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f'{minutes}m{seconds:02d}s'
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m'


# Said once, after the second advance, when at least this many seconds are left.
ESTIMATE_FROM_SECONDS = 60.0


class Progress:
  """Prints a line per finished epoch to `out`; on a terminal `bar` also shows a bar.

  The bar lives on the last line of the terminal and is redrawn after each epoch
  line, so the epoch lines stay a clean log. A long run (a large sweep) also says
  once, in the log, how long it will take at the pace between its first two
  advances (after start-up and compilation, which the first one includes).
  """

  def __init__(self, total: int, unit: str = 'epochs', out: TextIO = sys.stdout,
               bar: Optional[TextIO] = None):
    self._total, self._unit, self._done, self._out = total, unit, 0, out
    self._bar = bar if bar is not None and bar.isatty() else None
    self._start, self._start_done = time.perf_counter(), 0
    self._first: Optional[Tuple[float, int]] = None  # (time, done) at the first advance
    self._estimated = False

  def line(self, text: str) -> None:
    self._clear_bar()
    print(text, file=self._out, flush=True)  # a log line per unit, terminal or not
    self._draw_bar()

  def advance(self, text: str, units: int = 1) -> None:
    """`units` more done; `text` is their log line."""
    self._done += units
    self.line(text)
    self._estimate()

  def _estimate(self) -> None:
    if self._estimated:
      return
    now = time.perf_counter()
    if self._first is None:
      self._first = (now, self._done)
      return
    self._estimated = True
    since, done = self._first
    if self._done <= done or now <= since or self._done >= self._total:
      return
    left = (self._total - self._done) * (now - since) / (self._done - done)
    if left >= ESTIMATE_FROM_SECONDS:
      self.line(f'mlp_jax: about {format_seconds(left)} to go at this pace '
                f'({self._total - self._done} {self._unit} left)')

  def add_done(self, done: int) -> None:
    """More units found done before this process started (a resumed chunk)."""
    self._done += done
    self._start_done += done

  def close(self) -> None:
    self._clear_bar()

  def _clear_bar(self) -> None:
    if self._bar:
      self._bar.write('\r\033[K')
      self._bar.flush()

  def _draw_bar(self) -> None:
    if not self._bar or self._done >= self._total:
      return
    width = 30
    filled = int(width * self._done / self._total)
    elapsed = time.perf_counter() - self._start
    rate_done = self._done - self._start_done
    eta = elapsed / rate_done * (self._total - self._done) if rate_done else float('nan')
    eta_text = format_seconds(eta) if rate_done else '?'
    self._bar.write(f'[{"#" * filled}{"." * (width - filled)}] {self._done}/{self._total} '
                    f'{self._unit}, ETA {eta_text}')
    self._bar.flush()
