"""What a training reports: a sweep's summary files after training, and the
console lines (each epoch's, a sweep's chunk line, the grid's ranking table and
the planning lines).
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np

from mlp_jax import models, records
from mlp_jax.config import RunOptions
from mlp_jax.data import Dataset
from mlp_jax.driver import EpochReport, Member
from mlp_jax.grid import GridPoint
from mlp_jax.tensorboard import member_runs, write_grid_hparams


def sweep_shape(points: int, seeds: int, members: int, epochs: int) -> str:
  """'10 seeds x 3 epochs', or for a grid '3 grid points x 10 seeds: 30 members (of
  this program) x 3 epochs'."""
  if points == 1:
    return f'{seeds} seeds x {epochs} epochs'
  return (f'{points} grid points x {seeds} seeds: {members} members of this program x '
          f'{epochs} epochs')


def write_summaries(workdir: str, points: Sequence[GridPoint], members: Sequence[Member],
                    tensorboard: bool, dataset: Dataset,
                    tensorboard_members: bool = False) -> None:
  """A sweep's statistics, per grid point (a sweep without a grid is one point):
  summary.csv, final.csv, points.csv (ranked, with each point's ensemble),
  curves.png (a band per point), the mean's TensorBoard events and, for a grid,
  its HParams table (mlp_jax.tensorboard.write_grid_hparams; `tensorboard_members`:
  a run per member even beyond 64 per point)."""
  # Imported here: scipy and matplotlib take a second of a single run's start-up.
  from mlp_jax import inference, plots, stats  # pylint: disable=g-import-not-at-top
  per_point = len(members) // len(points)
  summary, final, bands, correct = [], [], [], []
  for i, point in enumerate(points):
    mine = members[i * per_point:(i + 1) * per_point]
    run_dirs = [m.run_dir for m in mine]
    curves = records.read_curves(run_dirs)
    summary += [{**point.cells, **row} for row in stats.summary_rows(curves)]
    # With a validation split, best epochs are chosen on it (test reported at them).
    rows = stats.final_rows([m.config.seed for m in mine], curves['test_accuracy'],
                            curves.get(VALIDATION_ACCURACY))
    for row, epoch in zip(rows, records.diverged_epochs(curves)):
      row[records.DIVERGED_COLUMN] = '' if epoch is None else str(epoch)
    final += [{**point.cells, **row} for row in rows]
    bands.append((point, curves))
    correct.append(inference.ensemble_correct(run_dirs, dataset.test_images,
                                              dataset.test_labels))
  records.write_csv(os.path.join(workdir, records.SUMMARY_FILE), summary)
  records.write_csv(os.path.join(workdir, records.FINAL_FILE), final)
  # With a validation split, points are ranked and tied on it alone (no test column).
  validation = ([c[VALIDATION_ACCURACY][:, -1] for _, c in bands]
                if VALIDATION_ACCURACY in bands[0][1] else None)
  records.write_csv(os.path.join(workdir, records.POINTS_FILE), stats.point_rows(
      [p.cells for p in points], [c['test_accuracy'][:, -1] for _, c in bands],
      [records.format_fraction(n, len(dataset.test_labels)) for n in correct], validation))
  config = points[0].config
  if len(points) == 1:
    curves = bands[0][1]
    plots.plot_band(curves, os.path.join(workdir, records.CURVES_FILE),
                    f'{models.describe(config)}, {per_point} seeds: mean final test accuracy '
                    f'{curves["test_accuracy"][:, -1].mean():.4f}')
  else:
    plots.plot_bands([(p.name.replace('/', ', '), c) for p, c in bands],
                     os.path.join(workdir, records.CURVES_FILE),
                     f'{len(points)} grid points x {per_point} seeds: mean and 95% CI')
  if tensorboard:
    from mlp_jax.tensorboard import EpochWriter  # pylint: disable=g-import-not-at-top
    writer = EpochWriter([os.path.join(workdir, records.TENSORBOARD_DIR, p.name)
                          for p in points])
    try:
      for i, epoch in enumerate(bands[0][1]['epoch']):
        writer.write(int(epoch), {m: np.array([c[m][:, i].mean() for _, c in bands])
                                  for m in bands[0][1] if m != 'epoch'})
    finally:
      writer.close()
    if points[0].settings:
      tensorboard_dir = os.path.join(workdir, records.TENSORBOARD_DIR)
      write_grid_hparams(
          tensorboard_dir, [p.settings for p in points],
          [[os.path.join(m.run_dir, records.TENSORBOARD_DIR)
            for m in members[i * per_point:(i + 1) * per_point]] for i in range(len(points))],
          [os.path.join(tensorboard_dir, p.name) for p in points], [c for _, c in bands],
          [n / len(dataset.test_labels) for n in correct],
          member_runs(per_point, tensorboard_members))


def epoch_line(report: EpochReport) -> str:
  """The console line of a single run's epoch."""
  m, epochs = report.metrics, report.configs[0].epochs
  return (f'epoch {report.epoch:>{len(str(epochs))}}/{epochs}  '
          f'train loss {m["train_loss"][0]:.4f} acc {m["train_accuracy"][0]:.4f}  '
          f'test loss {m["test_loss"][0]:.4f} acc {m["test_accuracy"][0]:.4f}  '
          + (f'val loss {m["validation_loss"][0]:.4f} acc {m["validation_accuracy"][0]:.4f}  '
             if 'validation_loss' in m else '') +
          f'{report.epoch_seconds:.2f}s + eval {report.eval_seconds:.2f}s')


def sweep_line(report: EpochReport) -> str:
  """One console line per chunk epoch: how far, and how much the seeds disagree."""
  accuracy, loss = report.metrics['test_accuracy'], report.metrics['train_loss']
  epochs = report.configs[0].epochs
  seeds = [c.seed for c in report.configs]
  spread = (f' ± {accuracy.std(ddof=1):.4f} [{accuracy.min():.4f}, {accuracy.max():.4f}]'
            if len(seeds) > 1 else '')
  points = len({c.replace(seed=0) for c in report.configs})
  who = (f'{len(seeds)} seed(s) {seeds[0]}..{seeds[-1]}' if points == 1 else
         f'{len(seeds)} members of {points} grid points')
  return (f'epoch {report.epoch:>{len(str(epochs))}}/{epochs}  {who}  '
          f'test acc mean {accuracy.mean():.4f}{spread}  train loss mean {loss.mean():.4f}  '
          f'{report.epoch_seconds:.2f}s + eval {report.eval_seconds:.2f}s')


VALIDATION_ACCURACY = 'validation_accuracy'


# Suggested to a sweep that selected on the test set.
SPLIT_ADVICE = ('--validation_size=5000 holds out training images to select on instead, '
                'leaving the test set an unbiased estimate')


def selection_note(point: Dict[str, str]) -> str:
  """What a single sweep's best epochs (final.csv) were chosen on."""
  if point.get('selected_on') == 'validation':
    return ('final.csv\'s best epochs are chosen on validation accuracy; the test accuracy '
            'reported is the one at that epoch')
  return f'final.csv\'s best epochs are chosen on the test set itself; {SPLIT_ADVICE}'


def planning_lines(members: Sequence[Member], points: int, options: RunOptions) -> List[str]:
  """Seed planning (mlp_jax.stats, 80% power, alpha 0.05) of a finished sweep, on its
  selection metric (final validation accuracy with a split, else test): the smallest
  difference its seeds detect and, with --target_difference, the seeds that detect
  that. A grid's test is paired (seed k matches across points), on the per-seed
  differences of the runner-up from the best; a single sweep's is the two-sample
  test against another sweep of as many seeds with its spread."""
  from mlp_jax import stats  # pylint: disable=g-import-not-at-top
  per_point = len(members) // points
  if per_point < 2:
    return []
  finals = []
  for i in range(points):
    curves = records.read_curves([m.run_dir for m in members[i * per_point:(i + 1) * per_point]])
    finals.append(curves.get(VALIDATION_ACCURACY, curves['test_accuracy'])[:, -1])
  metric = ('final validation accuracy' if VALIDATION_ACCURACY in curves
            else 'final test accuracy')
  if points > 1:
    order = sorted(range(points), key=lambda i: -float(np.mean(finals[i])))
    std = float(np.std(finals[order[1]] - finals[order[0]], ddof=1))
    paired, basis = True, f'paired, std {std:.4f} of the per-seed differences of ranks 1 and 2'
  else:
    std = float(np.std(finals[0], ddof=1))
    paired, basis = False, (f'unpaired, against another sweep of as many seeds, std '
                            f'{std:.4f} of each')
  detectable = stats.detectable_difference(per_point, std, paired=paired)
  lines = [f'{per_point} seeds detect a difference of {detectable:.4f} in {metric} '
           f'(80% power, alpha 0.05; {basis})']
  target = options.target_difference
  if target is not None:
    needed = stats.seeds_needed(target, std, paired=paired) if std > 0 else 2
    lines.append(f'--target_difference={target:g} needs {needed} seeds'
                 + (' per sweep' if not paired else '') + ' at that spread'
                 + (f' (--seeds=0-{needed - 1})' if needed > per_point else
                    '; these seeds suffice'))
  return lines


def points_table(points: Sequence[Dict[str, str]], flags: Sequence[str]) -> str:
  """points.csv's rows as the console table a grid sweep ends with: ranked, and
  compared with the best, on validation accuracy with a split (else on the test
  set, which the title says, suggesting the split)."""
  validated = points[0].get('selected_on') == 'validation'
  header = ['rank', *flags, 'seeds', *(['val acc'] if validated else []), 'final test acc',
            '95% CI', 'ensemble', 'vs best', 'Holm p', 'tied']
  lines = [header]
  for p in points:
    number = lambda key, digits=4: f'{float(p[key]):.{digits}f}' if p.get(key) else '-'
    lines.append([p['rank'], *(p[f] for f in flags), p['n'],
                  *([number('validation_mean')] if validated else []),
                  f'{number("mean")} ± {number("std")}',
                  f'[{number("ci95_low")}, {number("ci95_high")}]',
                  number('ensemble_test_accuracy'),
                  f'{float(p["difference_to_best"]):+.4f}' if p['difference_to_best'] else '-',
                  f'{float(p["holm_p_value"]):.3g}' if p.get('holm_p_value') else '-',
                  {'true': 'yes', 'false': 'no'}.get(p.get('tied_with_best', ''), '-')])
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  tied = [p['rank'] for p in points if p.get('tied_with_best') == 'true']
  if validated:
    title = ('grid: ranked on mean final validation accuracy; vs best, Holm p (paired '
             't-tests against the best, Holm-adjusted) and ties on validation; test accuracy '
             '(± std) is the estimate of each point')
  else:
    title = ('grid: ranked on mean final TEST accuracy (selected on the test set: the '
             f'winner\'s figure is optimistic; {SPLIT_ADVICE}); vs best, Holm p (paired '
             't-tests against the best, Holm-adjusted) and ties on test accuracy')
  if not any(p.get('tied_with_best') for p in points[1:]):
    footer = 'grid: ties need at least 2 seeds per point'
  elif len(tied) > 1:
    footer = f'grid: tied with the best (Holm p > 0.05): rank(s) {", ".join(tied)}'
  else:
    footer = 'grid: no point is tied with the best (every Holm p <= 0.05)'
  return '\n'.join([title] + ['  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                               for line in lines] + [footer])
