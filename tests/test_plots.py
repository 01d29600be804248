"""curves.png: what each picture draws, down to a run of one epoch."""

import warnings

import numpy as np
import pytest

from mlp_jax import plots

METRICS = {'train_accuracy': 0.95, 'test_accuracy': 0.96, 'train_loss': 0.2, 'test_loss': 0.15}


def _curves(epochs, seeds, spread):
  """curves as plot_band takes them: seeds x epochs of each metric, `spread` apart."""
  rng = np.random.default_rng(0)
  curves = {'epoch': np.arange(1, epochs + 1)}
  for name, value in METRICS.items():
    curves[name] = value + spread * rng.standard_normal((seeds, epochs))
  return curves


def _drawn(monkeypatch, draw):
  """Calls draw(path) with every warning an error; returns the figure it saved."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  saved, savefig = [], Figure.savefig

  def keep(fig, path, **kwargs):
    saved.append(fig)
    savefig(fig, path, **kwargs)
  monkeypatch.setattr(Figure, 'savefig', keep)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # e.g. matplotlib dividing by an empty extent
    draw()
  (fig,) = saved
  return fig


def _pictures(epochs, seeds, spread, path):
  curves = _curves(epochs, seeds, spread)
  return {
      'plot_history': lambda: plots.plot_history(
          {k: (v[0] if k != 'epoch' else v) for k, v in curves.items()}, path, 'a run'),
      'plot_band': lambda: plots.plot_band(curves, path, 'a sweep'),
      'plot_bands': lambda: plots.plot_bands([('a', curves), ('b', curves)], path, 'a grid'),
  }


@pytest.mark.parametrize('picture', ['plot_history', 'plot_band', 'plot_bands'])
@pytest.mark.parametrize('spread', [0.0, 0.004], ids=['identical seeds', 'seeds apart'])
def test_one_epoch_is_drawn_as_points_at_its_tick(picture, spread, tmp_path, monkeypatch):
  """A line of one point draws nothing: each curve of a one-epoch run gets a marker,
  and the axis has the epoch as its only tick. Identical seeds (a zero-height
  band) draw without warnings."""
  path = str(tmp_path / 'curves.png')
  fig = _drawn(monkeypatch, _pictures(1, 3, spread, path)[picture])
  for ax in fig.axes:
    means = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert means and all(line.get_marker() == 'o' for line in means)
    assert list(ax.get_xticks()) == [1]
  assert (tmp_path / 'curves.png').stat().st_size > 10_000


@pytest.mark.parametrize('picture', ['plot_history', 'plot_band', 'plot_bands'])
def test_several_epochs_are_lines_on_whole_epochs(picture, tmp_path, monkeypatch):
  path = str(tmp_path / 'curves.png')
  fig = _drawn(monkeypatch, _pictures(3, 3, 0.004, path)[picture])
  for ax in fig.axes:
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert lines and all(line.get_marker() in ('None', None, '') for line in lines)
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
