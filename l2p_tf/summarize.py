r"""Tabulates finished runs: final avg_acc, last accuracy, average incremental accuracy, task-incremental and
task-identification accuracy, forgetting, learning_acc and wall time, one row per run; plots avg_acc.

  python -m l2p_tf.summarize /tmp/runs/l2p /tmp/runs/frozen "joint (linear)=/tmp/runs/joint" \
      [--lower=frozen --upper="joint (linear)"] [--json_out=FILE] [--plot=avg_acc.png]

Each argument is a MODEL_DIR (a directory with the trainer's results.json; its label is the directory's name) or
LABEL=MODEL_DIR. A MODEL_DIR without results.json but with `seed_<s>/` runs (written by `python -m l2p_tf.seeds`) is
one row of every seed: each cell is the mean ± the sample standard deviation over the seeds. The metrics are those of
each run's primary evaluation protocol (column `protocol`); a second table puts every protocol's final avg_acc and
task-ID accuracy side by side. With --lower and --upper it also prints, for every other row, the share of the gap closed:
(row - lower) / (upper - lower) on final avg_acc. The output is a Markdown table (docs/results.md is made of them);
--plot also writes a PNG of avg_acc after each task, one line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence


def _load_file(path: str, model_dir: str) -> dict:
  with open(path) as f:
    res = json.load(f)
  if not res.get('complete'):
    raise ValueError(f'{path}: the run finished {res.get("tasks_done")} of {res.get("num_tasks")} tasks; rerun its '
                     'command to complete it.')
  return res


def seed_dirs(root: str) -> list[str]:
  """The `seed_<s>` run directories under `root` (as `l2p_tf.seeds` writes them), ordered by seed."""
  if not os.path.isdir(root):
    return []
  found = [d for d in os.listdir(root) if d.startswith('seed_') and d[5:].lstrip('-').isdigit()]
  return [os.path.join(root, d) for d in sorted(found, key=lambda d: int(d[5:]))]


def load(model_dir: str):
  """The results of a run: its results.json (a dict), or, for a directory of `seed_<s>/` runs (`l2p_tf.seeds`),
  the list of their results. Raises ValueError naming the directory when a run is missing or incomplete."""
  path = os.path.join(model_dir, 'results.json')
  if os.path.exists(path):
    return _load_file(path, model_dir)
  seeds = seed_dirs(model_dir)
  if not seeds:
    raise ValueError(f'{path} does not exist: is {model_dir} the --model_dir of a finished run (or the --model_dir '
                     'of l2p_tf.seeds, holding seed_<s>/ runs)?')
  runs = []
  for d in seeds:
    p = os.path.join(d, 'results.json')
    if not os.path.exists(p):
      raise ValueError(f'{p} does not exist: the seed run {d} has not finished; rerun l2p_tf.seeds to complete it.')
    runs.append(_load_file(p, d))
  return runs


def gap_closed(value: float, lower: float, upper: float) -> Optional[float]:
  """(value - lower) / (upper - lower), or None when upper == lower."""
  return None if upper == lower else (value - lower) / (upper - lower)


def _fmt(v, spec='.2f') -> str:
  return '-' if v is None else format(v, spec)


def _runs(res) -> list[dict]:
  return list(res) if isinstance(res, (list, tuple)) else [res]


def mean_std(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
  """(mean, sample standard deviation (ddof 1; None for one value), count) of the values that are not None."""
  v = [float(x) for x in values if x is not None]
  if not v:
    return None, None, 0
  mean = sum(v) / len(v)
  std = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else None
  return mean, std, len(v)


def _cell(values) -> str:
  mean, std, _ = mean_std(values)
  if std is None:
    return _fmt(mean)
  return f'{mean:.2f} ± {std:.2f}'


def _final(res: dict, key: str, protocol: Optional[str] = None) -> Optional[float]:
  if protocol is None:
    return res['final'].get(key)
  return ((res.get('protocols') or {}).get(protocol) or {}).get('final', {}).get(key)


METRICS = (('final avg_acc', 'avg_acc'), ('last_acc', 'last_acc'), ('avg incremental', 'avg_incremental_acc'),
           ('til_acc', 'til_avg_acc'), ('task_id', 'task_id_acc'), ('forgetting', 'forgetting'),
           ('learning_acc', 'learning_acc'))


def table(rows: Sequence[tuple[str, object]], lower: Optional[str] = None, upper: Optional[str] = None) -> str:
  """A Markdown table of (label, results) rows; results is one run's dict or a list of seed runs' dicts (cells are
  then mean ± std over the seeds). The metrics are the primary protocol's (column `protocol`)."""
  by_label = {label: _runs(res) for label, res in rows}
  for name in (lower, upper):
    if name is not None and name not in by_label:
      raise ValueError(f'--lower/--upper {name!r} is not one of the labels {list(by_label)}.')
  gap = lower is not None and upper is not None
  mean_avg = lambda label: mean_std([r['final']['avg_acc'] for r in by_label[label]])[0]
  head = ('| run | seeds | protocol | ' + ' | '.join(h for h, _ in METRICS) + ' | wall time |'
          + (' gap closed |' if gap else ''))
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  for label, runs in by_label.items():
    protocols = sorted({r.get('primary_protocol') or '-' for r in runs})
    minutes = mean_std([r.get('wall_time_seconds', 0.0) / 60.0 for r in runs])[0]
    cells = [label, str(len(runs)), '/'.join(protocols)]
    cells += [_cell([r['final'].get(k) for r in runs]) for _, k in METRICS]
    cells.append(f'{minutes:.1f} min')
    if gap:
      g = None if label in (lower, upper) else gap_closed(mean_avg(label), mean_avg(lower), mean_avg(upper))
      cells.append(_fmt(g))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def protocol_table(rows: Sequence[tuple[str, object]]) -> Optional[str]:
  """A Markdown table of every run's final avg_acc and task-ID accuracy under each evaluation protocol, side by
  side (mean ± std over seeds); None when no run reports protocols."""
  by_label = {label: _runs(res) for label, res in rows}
  names = []
  for runs in by_label.values():
    for r in runs:
      names += [p for p in (r.get('protocols') or {}) if p not in names]
  if not names:
    return None
  head = ('| run | ' + ' | '.join(f'{p} avg_acc' for p in names) + ' | '
          + ' | '.join(f'{p} task_id' for p in names) + ' |')
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  for label, runs in by_label.items():
    cells = [label] + [_cell([_final(r, 'avg_acc', p) for r in runs]) for p in names]
    cells += [_cell([_final(r, 'task_id_acc', p) for r in runs]) for p in names]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def parse_run(spec: str) -> tuple[str, str]:
  """(label, model_dir) of an argument: an existing directory (labelled by its name), or LABEL=MODEL_DIR."""
  if os.path.isdir(spec) or '=' not in spec:
    return os.path.basename(os.path.normpath(spec)), spec
  label, model_dir = spec.split('=', 1)
  if not label:
    raise ValueError(f'{spec!r}: empty LABEL in LABEL=MODEL_DIR.')
  return label, model_dir


def plot_avg_acc(rows: Sequence[tuple[str, dict]], path: str) -> None:
  """Writes a PNG of avg_acc (%) after each task, one line per run (runs of different lengths share the axes)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
  most = 1
  for label, res in rows:
    res = _runs(res)[0]  # Of seed runs, the first seed's curve.
    curve = [float('nan') if v is None else v for v in res.get('avg_acc') or []]
    if not curve:
      raise ValueError(f'run {label!r}: results.json has no avg_acc curve.')
    most = max(most, len(curve))
    ax.plot(range(1, len(curve) + 1), curve, marker='o', label=label)
  ax.set_xlabel('tasks trained')
  ax.set_ylabel('avg_acc (%)')
  ax.set_xticks(range(1, most + 1))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title('average accuracy over the tasks seen')
  fig.savefig(path, format='png', bbox_inches='tight')
  plt.close(fig)


def _json_row(res) -> dict:
  """A run's final metrics (seed runs: each metric's mean, with '<metric>_std' and 'seeds')."""
  runs = _runs(res)
  if len(runs) == 1:
    return {**runs[0]['final'], 'wall_time_seconds': runs[0].get('wall_time_seconds')}
  out = {'seeds': len(runs)}
  for k in runs[0]['final']:
    out[k], out[f'{k}_std'], _ = mean_std([r['final'].get(k) for r in runs])
  return out


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('runs', nargs='+', help='MODEL_DIR or LABEL=MODEL_DIR')
  parser.add_argument('--lower', help='label of the lower bound (ft_seq_frozen)')
  parser.add_argument('--upper', help='label of the upper bound (joint)')
  parser.add_argument('--json_out', help='also write {label: final metrics} here')
  parser.add_argument('--plot', help='also write a PNG of avg_acc after each task, one line per run, here')
  args = parser.parse_args(argv)
  try:
    rows = []
    for spec in args.runs:
      label, model_dir = parse_run(spec)
      if label in dict(rows):
        raise ValueError(f'two runs are labelled {label!r}; name them with LABEL=MODEL_DIR.')
      rows.append((label, load(model_dir)))
    print(table(rows, args.lower, args.upper))
    sides = protocol_table(rows)
    if sides:
      print('\nEvaluation protocols side by side (docs/results.md, "Evaluation protocols"):\n')
      print(sides)
    if args.plot:
      plot_avg_acc(rows, args.plot)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump({label: _json_row(res) for label, res in rows}, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
