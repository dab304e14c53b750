r"""Evaluation time per task with and without the reused query features (`config.Evaluation.reuse_fixed_features`)
over a whole continual run: prints a table. Not a test.

    .venv/bin/python benchmarks/eval_reuse_benchmark.py                        # quickstart (ViT-mini), 5 tasks, mock data
    .venv/bin/python benchmarks/eval_reuse_benchmark.py --whole_runs --rounds=2 --eval_examples=1000

Default (in-process A/B): one model, the run's evaluation sets and mixed streams with warm input pipelines, and
two of the run's protocol evaluators (reuse off / on, the protocols of `config.Evaluation`). For each task t, each of
`--ab_rounds` rounds nudges the trainable variables (as training would), forgets set t's kept features (it is new to
the run at its task's end), then times the evaluation after task t (sets 0..t, every protocol) by each evaluator in
turn. Medians per task are printed.

`--whole_runs`:
Each run is the product's own (`engine.loop.run` on `--gin_file`, default the quickstart: Split CIFAR-100's classes
0-49 in 5 tasks on the shipped ViT-mini), on tfds mock CIFAR-100 data (random images, the real pipeline), with
`--train_examples` per task (training is not what is timed) and up to `--eval_examples` test images per task. After
task t the run evaluates every task seen so far; the time of that whole evaluation (`ContinualRun.evaluate_after`,
including its input pipeline) is recorded per task. Runs alternate reuse off / on, each in its own subprocess, for
`--rounds` rounds; the table shows each task's median and the off / on ratio, with the load average beside them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

_GIN_FILE = flags.DEFINE_multi_string('gin_file', ['experiments/quickstart.gin'], 'Experiment gin file(s).')
_BINDINGS = flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings.')
_TASKS = flags.DEFINE_integer('tasks', 5, 'Tasks of the run.')
_TRAIN = flags.DEFINE_integer('train_examples', 64, 'Training examples per task.')
_EVAL = flags.DEFINE_integer('eval_examples', 1000, 'Test examples per task (at most).')
_MOCK = flags.DEFINE_integer('mock_examples', 10000, 'Examples per split of the mock data.')
_ROUNDS = flags.DEFINE_integer('rounds', 1, 'Rounds of (off, on) runs.')
_JSON = flags.DEFINE_string('json_out', None, 'Write the per-run times here as JSON.')
_WORKER = flags.DEFINE_string('worker', None, "Internal: run one configuration ('on' / 'off') and print its times.")
_WHOLE = flags.DEFINE_bool('whole_runs', False, 'Time whole runs in subprocesses (default: the in-process A/B).')
_AB_ROUNDS = flags.DEFINE_integer('ab_rounds', 3, 'In-process A/B: interleaved rounds per task.')
_JIT = flags.DEFINE_enum('jit_compile', 'config', ['config', 'true', 'false'],
                         "In-process A/B: XLA for the evaluation steps ('config': as the config's runs resolve it).")

PREFIX = 'EVAL_REUSE_RESULT '


def run_once(reuse: bool) -> dict:
  """One whole run with reuse on or off; returns its evaluation seconds per task and the accuracy matrix."""
  import gin  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import loop  # pylint: disable=g-import-not-at-top

  times = {}
  evaluate_after = loop.ContinualRun.evaluate_after

  def timed(self, t):
    start = time.perf_counter()
    row = evaluate_after(self, t)
    times[t] = time.perf_counter() - start
    return row

  loop.ContinualRun.evaluate_after = timed
  bindings = [f'benchmarks.Limits.max_tasks = {_TASKS.value}',
              f'benchmarks.Limits.max_train_examples_per_task = {_TRAIN.value}',
              f'benchmarks.Limits.max_eval_examples_per_task = {_EVAL.value}',
              f'config.Evaluation.reuse_fixed_features = {reuse}', *_BINDINGS.value]
  gin_utils.parse(list(_GIN_FILE.value), bindings)
  work = tempfile.mkdtemp(prefix='eval_reuse_')
  load = os.getloadavg()
  with tfds.testing.mock_data(num_examples=_MOCK.value):
    res = gin.get_configurable(loop.run)(model_dir=os.path.join(work, 'run'), data_dir=os.path.join(work, 'tfds'),
                                         strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
  return {'reuse': reuse, 'eval_seconds': [times[t] for t in sorted(times)], 'accuracy_matrix':
          res['accuracy_matrix'], 'load_before': load, 'load_after': os.getloadavg()}


def in_process_ab() -> None:
  """Each task's evaluation of a T-task run under the configured protocols, reuse off vs on, interleaved in one
  process on one model and the same warm input pipelines: after task t the sets 0..t are evaluated, set t new to the
  run (its kept features are dropped before every timed evaluation), the earlier ones kept from before."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from l2p_tf.engine import precision  # pylint: disable=g-import-not-at-top

  gin_utils.parse(list(_GIN_FILE.value), [f'benchmarks.Limits.max_tasks = {_TASKS.value}',
                                          f'benchmarks.Limits.max_eval_examples_per_task = {_EVAL.value}',
                                          *_BINDINGS.value])
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  with tfds.testing.mock_data(num_examples=_MOCK.value):
    spec = gin.get_configurable(experiment_lib.Experiment)()
    evaluation = gin.get_configurable(config_lib.Evaluation)()
    built = experiment_lib.build(spec, config_lib.Training(global_batch_size=64), strategy=strategy,
                                 data_dir=tempfile.mkdtemp(prefix='eval_reuse_'))
    built.prepare_data()
    method, n = built.method, len(built.benchmark.tasks)
    # XLA as a run of this config resolves it for its train step (and hence its evaluation) on this device.
    training = gin.get_configurable(config_lib.Training)()
    setting = {'true': True, 'false': False}.get(_JIT.value, training.jit_compile)
    jit = precision.resolve_jit_compile(setting, strategy,
                                        getattr(getattr(method.model, 'dtype_policy', None), 'name', None))
    evaluators = {name: evaluator_lib.ProtocolEvaluator(
        strategy=strategy, method=method, benchmark=built.benchmark, protocols=tuple(evaluation.protocols),
        batch_size=evaluation.batch_size or 64, mixed_seed=evaluation.mixed_seed, reuse_fixed_features=reuse,
        jit_compile=jit) for name, reuse in (('off', False), ('on', True))}
    reusing = evaluators['on'].evaluator
    for ev in evaluators.values():  # Warm-up: traces (and XLA compiles) and the input pipelines of every set.
      ev.evaluate_after(n - 1, None)
    for t in range(n):
      reusing.forget(('set', t))
    rng = np.random.default_rng(0)
    times = {'off': [[] for _ in range(n)], 'on': [[] for _ in range(n)]}
    load_before = os.getloadavg()
    for t in range(n):
      for _ in range(_AB_ROUNDS.value):
        for v in method.trainable_variables:  # "Training" between evaluations: prompts, keys and head change.
          v.assign(v + 0.01 * rng.normal(size=v.shape).astype(np.float32))
        reusing.forget(('set', t))  # Set t is new to the run at its task's end.
        rows = {}
        for name, ev in evaluators.items():
          start = time.perf_counter()
          rows[name] = ev.evaluate_after(t, None)
          times[name][t].append(time.perf_counter() - start)
        for p in evaluation.protocols:
          np.testing.assert_array_equal(rows['off'][p].accuracy, rows['on'][p].accuracy,
                                        err_msg=f'reuse changed the {p} accuracy after task {t + 1}')
    load_after = os.getloadavg()
  print(f'\n{n} tasks, evaluation sets of up to {_EVAL.value} test images, eval batch {evaluation.batch_size}, '
        f'XLA {"on" if jit else "off"}, protocols {tuple(evaluation.protocols)}; {_AB_ROUNDS.value} interleaved '
        'round(s) per task; load average '
        f'before {load_before[0]:.1f}, after {load_after[0]:.1f}\n')
  print('| after task | sets evaluated | eval s, reuse off (median) | eval s, reuse on (median) | off / on |')
  print('|---|---|---|---|---|')
  for t in range(n):
    a, b = statistics.median(times['off'][t]), statistics.median(times['on'][t])
    print(f'| {t + 1} | {t + 1} ({t} kept) | {a:.2f} | {b:.2f} | {a / b:.2f}x |')
  total_off, total_on = sum(map(statistics.median, times['off'])), sum(map(statistics.median, times['on']))
  print(f'| all | {n * (n + 1) // 2} | {total_off:.2f} | {total_on:.2f} | {total_off / total_on:.2f}x |')
  print('\naccuracies identical with and without reuse in every protocol and round.')


def _spawn(reuse: bool) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f'--worker={"on" if reuse else "off"}',
         *[f'--gin_file={f}' for f in _GIN_FILE.value], *[f'--gin_bindings={b}' for b in _BINDINGS.value],
         f'--tasks={_TASKS.value}', f'--train_examples={_TRAIN.value}', f'--eval_examples={_EVAL.value}',
         f'--mock_examples={_MOCK.value}']
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
  for line in proc.stdout.splitlines():
    if line.startswith(PREFIX):
      return json.loads(line[len(PREFIX):])
  raise RuntimeError(f'worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}')


def main(argv):
  del argv
  if _WORKER.value:
    print(PREFIX + json.dumps(run_once(_WORKER.value == 'on')), flush=True)
    return
  if not _WHOLE.value:
    in_process_ab()
    return
  runs = []
  for r in range(_ROUNDS.value):
    for reuse in (False, True):
      print(f'round {r + 1}: reuse {"on" if reuse else "off"} ... load {os.getloadavg()}', flush=True)
      runs.append(_spawn(reuse))
  off = [x for x in runs if not x['reuse']]
  on = [x for x in runs if x['reuse']]
  assert all(x['accuracy_matrix'] == off[0]['accuracy_matrix'] for x in runs), 'reuse changed the results'
  print('\n| after task | sets evaluated | eval s, reuse off | eval s, reuse on | off / on |')
  print('|---|---|---|---|---|')
  for t in range(len(off[0]['eval_seconds'])):
    a = statistics.median(x['eval_seconds'][t] for x in off)
    b = statistics.median(x['eval_seconds'][t] for x in on)
    print(f'| {t + 1} | {t + 1} | {a:.2f} | {b:.2f} | {a / b:.2f}x |')
  loads = [x['load_before'][0] for x in runs] + [x['load_after'][0] for x in runs]
  print(f'\nload average (1 min) at the runs\' starts and ends: {min(loads):.1f}-{max(loads):.1f}; accuracy matrices '
        'identical with and without reuse.')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(runs, f, indent=1)


if __name__ == '__main__':
  app.run(main)
