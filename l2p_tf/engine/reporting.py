"""What a run tells the world: progress lines, the results files, and TensorBoard summaries.

Only the chief writes files and summaries; every worker builds the same results dict (reading the prompt usage is a
collective, so all workers do it at the same points).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from l2p_tf import results as results_lib
from l2p_tf.engine import evaluator as evaluator_lib
from l2p_tf.engine import run_dir
from l2p_tf.engine import strategies


def say(msg: str) -> None:
  """A line for the person watching (stdout; the log keeps the details)."""
  print(msg, flush=True)


def stamp() -> str:
  """The wall-clock time a progress line starts with (local time, to the second)."""
  return time.strftime('%H:%M:%S')


def _eta(seconds: float) -> str:
  return str(datetime.timedelta(seconds=max(0, round(seconds)))) if math.isfinite(seconds) else '?'


class ProgressAction:
  """An orbit train action: a progress line every `log_every_steps` steps or `log_every_seconds` seconds (whichever
  comes first, checked after every loop of `steps_per_loop` steps) and at each task's last step.

  The line: time, task, step/total of the task, loss, training accuracy, images/s, the task's ETA and the whole
  run's ETA (the steps left in this and the later tasks at the current rate; evaluations not included).
  """

  def __init__(self, *, global_step: tf.Variable, total_tasks: int, log_every_steps: int,
               log_every_seconds: float = 60.0, total_steps: Optional[int] = None):
    self.total_tasks = total_tasks
    self.log_every_steps = max(1, log_every_steps)
    self.log_every_seconds = log_every_seconds
    self.total_steps = total_steps
    self.task = 0
    self.task_name = ''
    self.start_step = self.end_step = 0
    self._t0 = self._last_time = time.perf_counter()
    self._s0 = 0
    self._last_logged = -1
    self.global_step = global_step

  def begin_task(self, task: int, name: str, start_step: int, end_step: int, current_step: int):
    self.task, self.task_name = task, name
    self.start_step, self.end_step = start_step, end_step
    self._t0 = self._last_time = time.perf_counter()
    self._s0 = current_step
    self._last_logged = current_step

  def __call__(self, output):
    step, now = int(self.global_step.numpy()), time.perf_counter()
    done = step >= self.end_step
    due = step - self._last_logged >= self.log_every_steps or (
        self.log_every_seconds and now - self._last_time >= self.log_every_seconds)
    if not (done or due):
      return
    self._last_logged, self._last_time = step, now
    total = self.end_step - self.start_step
    rate = (step - self._s0) / max(now - self._t0, 1e-9)
    task_eta = _eta((self.end_step - step) / rate if rate > 0 else math.inf)
    run_left = (self.total_steps - step) if self.total_steps is not None else self.end_step - step
    run_eta = _eta(run_left / rate if rate > 0 else math.inf)
    say(f'{stamp()} [task {self.task + 1}/{self.total_tasks} {self.task_name}] step {step - self.start_step}/{total} '
        f'({100.0 * (step - self.start_step) / max(total, 1):.0f}%)  loss {float(output["loss"]):.4f}  '
        f'train_acc {float(output["train_accuracy"]):.2f}%  {float(output["images_per_second"]):.0f} img/s  '
        f'ETA task {task_eta}, run {run_eta}')


MATRICES = ('accuracy', 'til', 'task_id', 'count')


@dataclasses.dataclass
class EvalRecord:
  """What the evaluations produced, per protocol (kept for the results files; the primary protocol's accuracy is
  also the checkpointed accuracy matrix).

  Attributes:
    primary: the protocol of the accuracy matrix.
    matrices: {protocol: {'accuracy' | 'til' | 'task_id' | 'count': (num_tasks, num_eval)}}, NaN where not
      evaluated (see `evaluator.ProtocolRow`).
    histograms: {eval set name: the primary protocol's prompt-selection counts}.
  """
  primary: str
  matrices: dict
  histograms: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def create(cls, protocols, primary: str, num_tasks: int, num_eval: int) -> 'EvalRecord':
    return cls(primary=primary, matrices={p: {k: np.full((num_tasks, num_eval), np.nan) for k in MATRICES}
                                          for p in protocols})

  def add(self, t: int, rows: dict) -> None:
    """Stores the {protocol: evaluator.ProtocolRow} of training segment t."""
    for p, row in rows.items():
      for k in MATRICES:
        self.matrices[p][k][t] = getattr(row, k)
    self.histograms.update(rows[self.primary].histograms)

  def to_array(self) -> np.ndarray:
    """(protocols, kinds, tasks, sets) float32: what the checkpoint keeps (`RunState.protocol_matrices`)."""
    return np.stack([np.stack([self.matrices[p][k] for k in MATRICES]) for p in self.matrices]).astype(np.float32)

  def load(self, array: np.ndarray) -> None:
    """Takes the matrices from `to_array`'s layout (as a resumed run reads them back: float32)."""
    for i, p in enumerate(self.matrices):
      for j, k in enumerate(MATRICES):
        self.matrices[p][k] = np.asarray(array[i, j], np.float64)

  def restore(self, res: dict, done: int) -> None:
    """Fills the first `done` rows from a results dict written by the same run (a resume)."""
    for p, saved in (res.get('protocols') or {}).items():
      for k, key in PROTOCOL_KEYS.items():
        if p in self.matrices and saved.get(key):
          rows = np.array([[np.nan if v is None else v for v in r] for r in saved[key][:done]], np.float64)
          self.matrices[p][k][:len(rows)] = rows
    self.histograms.update(res.get('prompt_histogram_eval') or {})


# results.json key of each recorded matrix, per protocol.
PROTOCOL_KEYS = {'accuracy': 'accuracy_matrix', 'til': 'task_incremental_matrix', 'task_id': 'task_id_matrix',
                 'count': 'count_matrix'}


def _mean_or_none(values) -> Optional[float]:
  values = np.asarray(values, np.float64)
  return None if not len(values) or np.isnan(values).any() else float(np.mean(values))


def protocol_results(bench, matrices: dict, done: int, protocol: str, has_pool: bool = True) -> dict:
  """One protocol's results: its matrices and curves (`metric_curves` plus `til_avg_acc`, `task_id_acc`) and
  `final`, which adds `avg_incremental_acc` (mean of avg_acc over the tasks so far) and `last_acc` (accuracy over
  every evaluated example of the last row, i.e. weighted by set size). `selection` is None for a method without a
  prompt pool."""
  acc, count = matrices['accuracy'][:done], matrices['count'][:done]
  curves = bench.metric_curves(acc)
  rows = len(curves['avg_acc'])
  curves['til_avg_acc'] = bench.metric_curves(matrices['til'][:done])['avg_acc'][:rows]
  seen = [bench.eval_ids_after(t) for t in range(rows)]
  curves['task_id_acc'] = [_mean_or_none(matrices['task_id'][t, seen[t]]) for t in range(rows)]
  final = {k: (v[-1] if v else None) for k, v in curves.items()}
  final['avg_incremental_acc'] = _mean_or_none(curves['avg_acc']) if rows else None
  final['last_acc'] = None
  if rows:
    n = count[rows - 1, seen[-1]]
    final['last_acc'] = float(np.sum(acc[rows - 1, seen[-1]] * n) / np.sum(n)) if np.sum(n) > 0 else None
  selection, stream = evaluator_lib.PROTOCOL_SETTINGS[protocol]
  out = {'selection': selection if has_pool else None, 'stream': stream}
  out.update({key: results_lib.matrix_to_lists(matrices[k][:done]) for k, key in PROTOCOL_KEYS.items()})
  out.update(curves)
  out['final'] = final
  return out


def protocol_lines(res: dict) -> list[str]:
  """The console table of the protocols side by side (the header names the one of the accuracy matrix)."""
  primary = res.get('primary_protocol')
  lines = [f'protocols after task {res["tasks_done"]} (accuracy matrix: {primary}; * marks it)',
           f'{"protocol":<12}{"selection":<14}{"stream":<10}{"avg_acc":>9}{"last_acc":>9}{"avg_inc":>9}'
           f'{"til_acc":>9}{"task_id":>9}']
  fmt = lambda v: '-'.rjust(9) if v is None else f'{v:9.2f}'
  for p, r in (res.get('protocols') or {}).items():
    f = r['final']
    lines.append(f'{(p + (" *" if p == primary else "")):<12}{r["selection"] or "-":<14}{r["stream"]:<10}'
                 + ''.join(fmt(f[k]) for k in ('avg_acc', 'last_acc', 'avg_incremental_acc', 'til_avg_acc',
                                               'task_id_acc')))
  return lines


class Reporter:
  """Builds the results dict and writes the results files and the eval summaries of one run.

  Args:
    model_dir: the run directory.
    chief: whether this worker writes (others only build the dicts).
    summary_root: where `eval/` summaries go (a scratch directory on non-chief workers).
    built: the `experiment.Built` run (benchmark, method, training settings, task steps).
    run_info: constant entries of every results dict (strategy, replicas, seed, precision, config hash, ...).
  """

  def __init__(self, *, model_dir: str, chief: bool, summary_root: str, built, run_info: dict):
    self.model_dir = model_dir
    self.chief = chief
    self.built = built
    self.bench = built.benchmark
    self.run_info = run_info
    self.names = self.bench.matrix_names()
    self.eval_writer = tf.summary.create_file_writer(os.path.join(summary_root, 'eval')) if chief else (
        tf.summary.create_noop_writer())
    self.task_writer = tf.summary.create_file_writer(os.path.join(summary_root, 'eval_by_task')) if chief else (
        tf.summary.create_noop_writer())

  def restore_record(self, record: EvalRecord, done: int) -> None:
    """On a resume (`done` tasks finished), the per-protocol rows of those tasks from the run's results.json (the
    checkpoint holds the primary accuracy matrix only); nothing when the file is missing or unreadable."""
    path = os.path.join(self.model_dir, 'results.json')
    if not done or not tf.io.gfile.exists(path):
      return
    try:
      with tf.io.gfile.GFile(path) as f:
        record.restore(json.load(f), done)
    except (ValueError, OSError) as e:
      say(f'warning: could not read the protocol rows of {path}: {e}')

  def write_run_files(self, operative: str, mode: str, step: int) -> None:
    """config.gin (once per run: a resume keeps the stored config it was checked against) and class_names.txt."""
    if not self.chief:
      return
    tf.io.gfile.makedirs(self.model_dir)
    config_path = os.path.join(self.model_dir, run_dir.CONFIG_NAME)
    if operative and mode == 'train' and not tf.io.gfile.exists(config_path):
      results_lib.atomic_write(config_path, operative)
      with self.eval_writer.as_default():
        tf.summary.text('gin/operative_config', '```\n' + operative + '\n```', step=step)
      self.summarize_run({**config_hparams(operative), 'method': self.built.method.name,
                          'benchmark': self.bench.name}, step)
    try:  # For l2p_tf.export: class names without reaching for the data again.
      results_lib.atomic_write(os.path.join(self.model_dir, 'class_names.txt'),
                               ''.join(f'{c}\n' for c in self.bench.class_names))
    except Exception as e:  # pylint: disable=broad-except  (names are a convenience; training goes on)
      say(f'warning: could not write class_names.txt: {e}')

  def results(self, acc: np.ndarray, done: int, usage: Optional[np.ndarray], record: EvalRecord, *,
              global_step: int, wall_time: float, trace_count: int) -> dict:
    """The results dict of the first `done` rows of `acc`."""
    bench, rows = self.bench, acc[:done]
    curves = bench.metric_curves(rows)
    out = {
        'benchmark': bench.name, 'scenario': bench.scenario, 'num_tasks': len(bench.tasks), 'tasks_done': done,
        'complete': done == len(bench.tasks), 'eval_names': list(bench.eval_names),
        'tasks': [{'name': task.name, 'classes': [int(c) for c in task.classes],
                   'train_examples': int(bench.num_train_examples(k)), 'steps': int(self.built.task_steps[k])}
                  for k, task in enumerate(bench.tasks)],
        'accuracy_matrix': results_lib.matrix_to_lists(rows),
        **curves,
        'final': {k: (v[-1] if v else None) for k, v in curves.items()},
    }
    out['primary_protocol'] = record.primary
    matrices = {p: dict(m) for p, m in record.matrices.items()}
    matrices[record.primary]['accuracy'] = acc  # The checkpointed matrix (the same numbers, read back).
    has_pool = bool(self.built.method.pool_size)
    out['protocols'] = {p: protocol_results(bench, m, done, p, has_pool) for p, m in matrices.items()}
    for k in ('avg_incremental_acc', 'last_acc', 'til_avg_acc', 'task_id_acc'):
      out['final'][k] = out['protocols'][record.primary]['final'][k]
    if usage is not None:
      out['prompt_usage_train'] = usage[:done].astype(int).tolist()
      out['prompt_histogram_eval'] = record.histograms
    out.update({'global_step': global_step, **self.run_info, 'train_step_traces_this_process': trace_count,
                'wall_time_seconds': round(wall_time, 1)})
    return out

  def write_files(self, res: dict, acc: np.ndarray, done: int) -> Optional[bytes]:
    """results.json, accuracy_matrix.csv and .png (chief only); returns the PNG bytes."""
    if not self.chief:
      return None
    return results_lib.write_all(self.model_dir, res, acc[:done], self.names)

  def task_lines(self, t: int, acc: np.ndarray, res: dict) -> list[str]:
    """Console lines after task t: the accuracy matrix (headed by its protocol) and the protocols side by side."""
    return ([f'accuracy matrix, {res["primary_protocol"]} protocol (config.Evaluation.primary):']
            + self.bench.progress_lines(t, acc, res['final']) + protocol_lines(res))

  def write_eval_results(self, res: dict) -> None:
    if self.chief:
      results_lib.atomic_write(os.path.join(self.model_dir, 'eval_results.json'), json.dumps(res, indent=2) + '\n')

  def summarize_task(self, t: int, acc: np.ndarray, res: dict, usage: Optional[np.ndarray], record: EvalRecord,
                     png: Optional[bytes], step: int) -> None:
    """TensorBoard after task t, in two runs with the same tags: `eval/` against the global step and `eval_by_task/`
    against the number of tasks done (so runs of different lengths compare task by task). Tags are grouped:
    `accuracy/task_<i>` and `metrics/<avg_acc|forgetting|backward|learning_acc>` (the primary protocol),
    `protocol_<p>/<avg_acc|last_acc|avg_incremental_acc|til_avg_acc|task_id_acc>` (every protocol),
    `prompt_usage/task_<t>` (a histogram with one integer bin per prompt id) and `accuracy_matrix` (an image)."""
    if not self.chief:
      return
    scalars = {f'accuracy/task_{i}': acc[t, i] for i in self.bench.eval_ids_after(t)}
    scalars.update({f'metrics/{k}': res[k][-1] for k in ('avg_acc', 'forgetting', 'backward', 'learning_acc')
                    if res.get(k) and res[k][-1] is not None})
    for p, r in res.get('protocols', {}).items():
      scalars.update({f'protocol_{p}/{k}': r['final'][k] for k in (
          'avg_acc', 'last_acc', 'avg_incremental_acc', 'til_avg_acc', 'task_id_acc') if r['final'].get(k) is not None})
    for writer, x in ((self.eval_writer, step), (self.task_writer, t + 1)):
      with writer.as_default():
        for tag, value in scalars.items():
          tf.summary.scalar(tag, value, step=x)
        if usage is not None:
          integer_histogram(f'prompt_usage/task_{t}', usage[t], step=x)
        if png is not None:
          tf.summary.image('accuracy_matrix', tf.image.decode_png(png)[None], step=x)
      writer.flush()

  def summarize_run(self, hparams: dict, step: int) -> None:
    """Once per run: an hparams summary (the operative config's simple values, to compare runs in TensorBoard's
    HParams dashboard) and a custom-scalars layout (per-task accuracy, the metrics, and the names the original L2P
    documents: `accuracy_<i>`, `avg_acc`, `forgetting`)."""
    if not self.chief:
      return
    from tensorboard.plugins.custom_scalar import summary as custom_scalar  # pylint: disable=g-import-not-at-top
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
    with self.eval_writer.as_default():
      hp.hparams(hparams)
      tf.summary.experimental.write_raw_pb(custom_scalar.pb(self._layout()).SerializeToString(), step=step)
    self.eval_writer.flush()

  def _layout(self):
    from tensorboard.plugins.custom_scalar import layout_pb2  # pylint: disable=g-import-not-at-top

    def chart(title, regex):
      return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=[regex]))

    n = len(self.bench.eval_names)
    return layout_pb2.Layout(category=[
        layout_pb2.Category(title='accuracy per task', chart=[chart('accuracy per task', r'accuracy/task_\d+')]),
        layout_pb2.Category(title='continual metrics', chart=[chart(k, rf'metrics/{k}$') for k in (
            'avg_acc', 'forgetting', 'backward', 'learning_acc')]),
        layout_pb2.Category(title='original L2P names', closed=True, chart=(
            [chart(f'accuracy_{i}', rf'accuracy/task_{i}$') for i in range(n)]
            + [chart('avg_acc', r'metrics/avg_acc$'), chart('forgetting', r'metrics/forgetting$')])),
    ])


def run_info(built, config_hash: str) -> dict:
  """The constant entries of a run's results dict: batch, strategy, replicas, seed, precision, config hash."""
  strategy = built.strategy
  return {'global_batch_size': built.training.global_batch_size, 'strategy': strategies.strategy_name(strategy),
          'num_replicas': strategy.num_replicas_in_sync, 'seed': built.spec.seed, 'precision': built.policy_name,
          'gin_config_hash': config_hash}


def integer_histogram(tag: str, counts: np.ndarray, step: int) -> None:
  """A TensorBoard histogram with one bin [i - 0.5, i + 0.5) per integer i (prompt ids), holding `counts[i]`."""
  from tensorboard.plugins.histogram import metadata as histogram_metadata  # pylint: disable=g-import-not-at-top
  ids = np.arange(len(counts), dtype=np.float64)
  buckets = np.stack([ids - 0.5, ids + 0.5, np.asarray(counts, np.float64)], axis=1)
  tf.summary.write(tag, tf.constant(buckets), step=step,
                   metadata=histogram_metadata.create_summary_metadata(display_name=tag, description=''))


def config_hparams(operative: str, limit: int = 100) -> dict:
  """The operative gin config's simple values (numbers, booleans, short strings; macros included), by binding name."""
  out = {}
  for name, value in run_dir.statements(operative).items():
    if len(out) >= limit:
      break
    if value in ('True', 'False'):
      out[name] = value == 'True'
      continue
    try:
      out[name] = int(value) if re.fullmatch(r'-?\d+', value) else float(value)
      continue
    except ValueError:
      pass
    if re.fullmatch(r"'[^']{0,60}'", value):
      out[name] = value[1:-1]
  return out
