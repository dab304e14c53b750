r"""Tabulates finished runs: final avg_acc, forgetting, learning_acc and wall time, one row per run; plots avg_acc.

  python -m l2p_tf.summarize /tmp/runs/l2p /tmp/runs/frozen "joint (linear)=/tmp/runs/joint" \
      [--lower=frozen --upper="joint (linear)"] [--json_out=FILE] [--plot=avg_acc.png]

Each argument is a MODEL_DIR (a directory with the trainer's results.json; its label is the directory's name) or
LABEL=MODEL_DIR. With --lower and --upper it also prints, for every other row, the share of the gap closed:
(row - lower) / (upper - lower) on final avg_acc. The output is a Markdown table (docs/results.md is made of them);
--plot also writes a PNG of avg_acc after each task, one line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence


def load(model_dir: str) -> dict:
  """The results.json of a run; raises ValueError naming the directory when it is missing or incomplete."""
  path = os.path.join(model_dir, 'results.json')
  if not os.path.exists(path):
    raise ValueError(f'{path} does not exist: is {model_dir} the --model_dir of a finished run?')
  with open(path) as f:
    res = json.load(f)
  if not res.get('complete'):
    raise ValueError(f'{path}: the run finished {res.get("tasks_done")} of {res.get("num_tasks")} tasks; rerun its '
                     'command to complete it.')
  return res


def gap_closed(value: float, lower: float, upper: float) -> Optional[float]:
  """(value - lower) / (upper - lower), or None when upper == lower."""
  return None if upper == lower else (value - lower) / (upper - lower)


def _fmt(v, spec='.2f') -> str:
  return '-' if v is None else format(v, spec)


def table(rows: Sequence[tuple[str, dict]], lower: Optional[str] = None, upper: Optional[str] = None) -> str:
  """A Markdown table of (label, results) rows."""
  by_label = dict(rows)
  for name in (lower, upper):
    if name is not None and name not in by_label:
      raise ValueError(f'--lower/--upper {name!r} is not one of the labels {list(by_label)}.')
  gap = lower is not None and upper is not None
  head = '| run | final avg_acc | forgetting | learning_acc | wall time |' + (' gap closed |' if gap else '')
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  for label, res in rows:
    f = res['final']
    minutes = res.get('wall_time_seconds', 0.0) / 60.0
    cells = [label, _fmt(f['avg_acc']), _fmt(f['forgetting']), _fmt(f['learning_acc']), f'{minutes:.1f} min']
    if gap:
      g = None if label in (lower, upper) else gap_closed(
          f['avg_acc'], by_label[lower]['final']['avg_acc'], by_label[upper]['final']['avg_acc'])
      cells.append(_fmt(g))
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
    if args.plot:
      plot_avg_acc(rows, args.plot)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.json_out:
    with open(args.json_out, 'w') as f:
      json.dump({label: {**res['final'], 'wall_time_seconds': res.get('wall_time_seconds')} for label, res in rows},
                f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
