"""Accuracy and loss curves (matplotlib, imported only when a picture is drawn)."""

from __future__ import annotations

import importlib
from typing import Mapping, Sequence, Tuple

import numpy as np

from mlp_jax import metrics as metric_spec

# How each split's curves are drawn: colour in a run's pictures, line style in compare's.
SPLIT_COLORS = {metric_spec.TRAIN: 'tab:blue', metric_spec.TEST: 'tab:orange',
                metric_spec.VALIDATION: 'tab:green'}
SPLIT_STYLES = {metric_spec.TRAIN: '--', metric_spec.TEST: '-', metric_spec.VALIDATION: ':'}


def splits_in(curves: Mapping[str, np.ndarray]) -> Tuple[str, ...]:
  """The splits whose loss and accuracy `curves` (history columns) hold, in the
  order of mlp_jax.metrics."""
  present = metric_spec.in_columns(curves)
  return tuple(dict.fromkeys(m.split for m in present
                             if f'{m.split}_{metric_spec.LOSS}' in curves
                             and f'{m.split}_{metric_spec.ACCURACY}' in curves))


def import_matplotlib() -> None:
  """Imports the matplotlib modules every picture needs: time that a thread with
  nothing else to do can take off the end of a run (mlp_jax.sink)."""
  for name in ('matplotlib.figure', 'matplotlib.backends.backend_agg'):
    importlib.import_module(name)


def axes_pair(title: str):
  """A figure of two axes side by side, accuracy and loss (log scale):
  (fig, acc_ax, loss_ax). `fig.savefig(path)` writes it; nothing needs closing.

  matplotlib's object-oriented API: no pyplot, whose global figure registry a
  process writing PNGs does not need (and which is not thread-safe)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(11, 4.2))
  FigureCanvasAgg(fig)
  acc_ax, loss_ax = fig.subplots(1, 2)
  # A fixed layout: tight_layout measures every text, a large part of a picture's time.
  fig.subplots_adjust(left=0.07, right=0.985, bottom=0.12, top=0.84, wspace=0.22)
  fig.suptitle(title)
  acc_ax.set(xlabel='epoch', ylabel='accuracy')
  loss_ax.set(xlabel='epoch', ylabel='loss', yscale='log')
  for ax, name in ((acc_ax, 'Accuracy'), (loss_ax, 'Loss (mean cross-entropy)')):
    # At a fixed height: placed automatically, each draw measures every tick label
    # to keep the title clear of them (most of a picture's time).
    ax.set_title(name, y=1.0, pad=6)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no 1.5
  return fig, acc_ax, loss_ax


def plot_history(history: Mapping[str, np.ndarray], path: str, title: str) -> None:
  """Accuracy and loss of each split (train, test, validation if held out) of one
  run, per epoch, written as a PNG."""
  fig, acc_ax, loss_ax = axes_pair(title)
  epochs = history['epoch']
  splits = splits_in(history)
  for split, color in ((split, SPLIT_COLORS[split]) for split in splits):
    acc_ax.plot(epochs, history[f'{split}_accuracy'], color=color, label=split,
                marker=_marker(epochs))
    loss_ax.plot(epochs, history[f'{split}_loss'], color=color, label=split,
                 marker=_marker(epochs))
  final = history['test_accuracy'][-1]
  acc_ax.annotate(f'final test {final:.4f}', xy=(epochs[-1], final), xytext=(-110, -30),
                  textcoords='offset points', arrowprops={'arrowstyle': '->'})
  acc_ax.set_ylim(max(0.0, min(np.min(history[f'{split}_accuracy']) for split in splits)
                      - 0.01), 1.0005)
  for ax in (acc_ax, loss_ax):
    ax.legend()
  _single_epoch_axis((acc_ax, loss_ax), epochs)
  fig.savefig(path, dpi=110)


def _single_epoch_axis(axes, epochs: np.ndarray) -> None:
  """One epoch: its number as the only tick, centred (not 0.945 ... 1.050)."""
  if len(epochs) == 1:
    for ax in axes:
      ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
      ax.set_xticks(epochs)


def _marker(epochs: np.ndarray):
  """A run of one epoch is a line of one point, which matplotlib draws as nothing:
  it gets a marker."""
  return 'o' if len(epochs) == 1 else None


def _band(ax, epochs: np.ndarray, low: np.ndarray, high: np.ndarray, **style) -> None:
  """The region between `low` and `high`; at a single epoch, an error bar."""
  if len(epochs) == 1:
    # A Line2D: a zero-height LineCollection (vlines) makes matplotlib divide by zero.
    ax.plot([epochs[0]] * 2, [low[0], high[0]], linewidth=6, solid_capstyle='butt', **style)
  else:
    ax.fill_between(epochs, low, high, **style)


def plot_band(curves: Mapping[str, np.ndarray], path: str, title: str) -> None:
  """Curves of many runs: each run faint, the mean bold with a 95% band.

  Args:
    curves: metric name -> float[runs, epochs] for the history metrics
      (mlp_jax.metrics), plus 'epoch' -> int[epochs].
    path: PNG to write.
    title: figure title.
  """
  from matplotlib.collections import LineCollection  # pylint: disable=g-import-not-at-top
  from mlp_jax.stats import mean_ci  # pylint: disable=g-import-not-at-top
  fig, acc_ax, loss_ax = axes_pair(title)
  epochs = curves['epoch']
  splits = splits_in(curves)
  for split, color in ((split, SPLIT_COLORS[split]) for split in splits):
    for ax, metric in ((acc_ax, f'{split}_accuracy'), (loss_ax, f'{split}_loss')):
      values = curves[metric]
      if len(epochs) == 1:
        # Points, not a collection of one-point lines: those draw nothing, and their
        # empty extent makes matplotlib divide by zero.
        ax.plot(np.repeat(epochs, len(values)), values[:, 0], linestyle='none',
                marker='o', color=color, alpha=0.15)
      else:
        # One collection for all the runs: a Line2D each is slow at a thousand runs.
        ax.add_collection(LineCollection([np.column_stack([epochs, run]) for run in values],
                                         colors=color, alpha=0.15, linewidths=0.7))
      mean, low, high = mean_ci(values, accuracy=ax is acc_ax)  # accuracies: inside [0, 1]
      if ax is loss_ax:
        # A log axis cannot show a band reaching zero or below: cut it at the
        # lowest seed, which the faint lines show anyway.
        low = np.maximum(low, values.min(axis=0))
      ax.plot(epochs, mean, color=color, linewidth=2, marker=_marker(epochs),
              label=f'{split} mean of {values.shape[0]}')
      _band(ax, epochs, low, high, color=color, alpha=0.3, label=f'{split} 95% CI')
  low_acc = min(np.min(curves[f'{split}_accuracy']) for split in splits)
  acc_ax.set_ylim(max(0.0, low_acc - 0.01), 1.0005)
  loss_ax.autoscale_view()  # collections do not rescale the axes by themselves
  # A fixed corner: 'best' searches every line of every run, slow with many runs.
  acc_ax.legend(fontsize=8, loc='lower right')
  loss_ax.legend(fontsize=8, loc='upper right')
  _single_epoch_axis((acc_ax, loss_ax), epochs)
  fig.savefig(path, dpi=110)


def plot_bands(points: Sequence[Tuple[str, Mapping[str, np.ndarray]]], path: str,
               title: str) -> None:
  """Curves of a grid: for each point, its seeds' mean test accuracy and test loss,
  each with a 95% band.

  Args:
    points: (label, curves) per grid point, curves as for plot_band.
    path: PNG to write.
    title: figure title.
  """
  from mlp_jax.stats import mean_ci  # pylint: disable=g-import-not-at-top
  fig, acc_ax, loss_ax = axes_pair(title)
  import matplotlib  # pylint: disable=g-import-not-at-top
  colors = matplotlib.rcParams['axes.prop_cycle'].by_key()['color']
  lowest = 1.0
  for i, (label, curves) in enumerate(points):
    color, epochs = colors[i % len(colors)], curves['epoch']
    for ax, metric in ((acc_ax, 'test_accuracy'), (loss_ax, 'test_loss')):
      values = curves[metric]
      mean, low, high = mean_ci(values, accuracy=ax is acc_ax)  # accuracies: inside [0, 1]
      if ax is loss_ax:
        low = np.maximum(low, values.min(axis=0))  # a log axis cannot show <= 0
      ax.plot(epochs, mean, color=color, linewidth=1.6, marker=_marker(epochs),
              label=f'{label} ({values.shape[0]} seeds)')
      _band(ax, epochs, low, high, color=color, alpha=0.25)
    lowest = min(lowest, float(np.min(curves['test_accuracy'])))
  acc_ax.set_ylim(max(0.0, lowest - 0.01), 1.0005)
  acc_ax.set_ylabel('test accuracy')
  loss_ax.set_ylabel('test loss')
  acc_ax.legend(fontsize=7, loc='lower right')
  _single_epoch_axis((acc_ax, loss_ax), points[0][1]['epoch'])
  fig.savefig(path, dpi=110)
