"""What a run tells a person: TensorBoard event files (grouped tags, a per-task axis, hparams, a custom-scalars layout,
integer bins for prompt ids) and progress lines (time, task and run ETA, one line per evaluated set)."""

import glob
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf.engine import reporting
from tests.runs import run_experiment


def _events(directory):
  """{tag: [(step, plugin name, value)]} of every event file in `directory`."""
  out = {}
  for path in glob.glob(os.path.join(directory, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.metadata.plugin_data.plugin_name,
                                          tf.make_ndarray(v.tensor) if v.HasField('tensor') else None))
  return out


def test_tiny_run_writes_grouped_tags_a_per_task_axis_and_hparams(tmp_path, capsys):
  model_dir = tmp_path / 'run'
  with tfds.testing.mock_data(num_examples=1000):
    res = run_experiment(model_dir, 'cifar100_l2p', data_dir=str(tmp_path / 'tfds'))
  out = capsys.readouterr().out
  steps = [t['steps'] for t in res['tasks']]
  by_step, by_task = _events(str(model_dir / 'eval')), _events(str(model_dir / 'eval_by_task'))
  # Grouped tags, the same in both runs; x = global step in eval/, tasks done in eval_by_task/.
  for tag in ('accuracy/task_0', 'accuracy/task_1', 'metrics/avg_acc', 'metrics/forgetting'):
    assert tag in by_step and tag in by_task, (tag, sorted(by_step))
  assert [s for s, _, _ in by_step['metrics/avg_acc']] == [steps[0], steps[0] + steps[1]]
  assert [s for s, _, _ in by_task['metrics/avg_acc']] == [1, 2]
  assert [s for s, _, _ in by_task['accuracy/task_1']] == [2]  # Task 1 is evaluated once it has been trained.
  np.testing.assert_allclose([float(v) for _, _, v in by_task['metrics/avg_acc']],
                             [a for a in res['avg_acc']], rtol=1e-6)
  assert not [t for t in by_step if re.fullmatch(r'accuracy_\d+|avg_acc|forgetting', t)]  # No flat top-level tags.
  # hparams: one session with the operative config's simple values.
  plugins = {p for values in by_step.values() for _, p, _ in values}
  assert 'hparams' in plugins and 'custom_scalars' in plugins, plugins
  # Prompt usage: one integer-centred bin per prompt id, counts = the training usage of that task.
  [(_, plugin, buckets)] = by_step['prompt_usage/task_0']
  assert plugin == 'histograms'
  np.testing.assert_array_equal(buckets[:, 0], np.arange(buckets.shape[0]) - 0.5)
  np.testing.assert_array_equal(buckets[:, 2], res['prompt_usage_train'][0])
  # Progress lines: a timestamp, the task and run ETA, one line per evaluated set.
  assert re.search(r'^\d\d:\d\d:\d\d \[task 1/2 task_0\] step 4/4 .* ETA task 0:00:00, run \d+:\d\d:\d\d$', out,
                   re.M), out
  assert len(re.findall(r'^\d\d:\d\d:\d\d eval after task 2: task_\d ', out, re.M)) == 2, out


def test_config_hparams_keeps_simple_values():
  config = ("LEARNING_RATE = 0.03\nSEED = 42\nconfig.Training.jit_compile = 'auto'\n"
            "config.Evaluation.selections = ('batchwise',)\nl2p.L2P.use_label_mask = True\n"
            "experiment.Experiment.method = @l2p.L2P\n")
  assert reporting.config_hparams(config) == {'LEARNING_RATE': 0.03, 'SEED': 42, 'config.Training.jit_compile': 'auto',
                                              'l2p.L2P.use_label_mask': True}
