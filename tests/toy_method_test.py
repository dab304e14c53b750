"""A method defined in the tests (tests/toy_method.py) runs through main, resume, evaluation, the results files and
export, with no change to the engine: the engine knows only the method contract."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import export as export_lib
from l2p_tf.engine import preemption
from tests import toy_method
from tests.runs import StopAtStep
from tests.runs import run_experiment
from tests.runs import run_main

TINY = ['--gin_file=experiments/cifar100_l2p.gin', '--gin_file=local_tiny.gin', f'--gin_file={toy_method.GIN_FILE}']


def _matrix(path):
  return json.loads(open(path).read())['accuracy_matrix']


def test_toy_method_trains_resumes_evaluates_and_exports(tmp_path, capsys):
  tfds_dir = tmp_path / 'tfds'
  full = tmp_path / 'full'
  # main, as a user runs it.
  with tfds.testing.mock_data(num_examples=1000):
    code, err, out = run_main(capsys, [f'--model_dir={full}', *TINY, f'--tfds_data_dir={tfds_dir}'])
  assert code == 0, err
  assert 'CosineClassifier: trainable' in out and 'Done: final avg_acc' in out
  res = json.loads((full / 'results.json').read_text())
  assert res['complete'] and res['tasks_done'] == 2 and res['train_step_traces_this_process'] == 1
  assert (full / 'accuracy_matrix.csv').exists() and (full / 'accuracy_matrix.png').exists()
  assert 'toy_method.CosineClassifier' in (full / 'config.gin').read_text()
  assert 'prompt_usage_train' not in res  # No pool: nothing about prompts.

  # Stopped mid-task 2, then resumed: the same results as the uninterrupted run, hooks called once per task.
  resumed = tmp_path / 'resumed'
  with tfds.testing.mock_data(num_examples=1000):
    with pytest.raises(preemption.PreemptedError, match='at step 6'):
      run_experiment(resumed, 'cifar100_l2p', files_after=[toy_method.GIN_FILE], data_dir=str(tfds_dir),
                     preemption=StopAtStep(6))
    again = run_experiment(resumed, 'cifar100_l2p', files_after=[toy_method.GIN_FILE], data_dir=str(tfds_dir))
  assert again['accuracy_matrix'] == res['accuracy_matrix'] and again['global_step'] == res['global_step']

  # --mode=eval re-evaluates the last task: the same row as training's evaluation.
  with tfds.testing.mock_data(num_examples=1000):
    code, err, out = run_main(capsys, [f'--model_dir={full}', *TINY, f'--tfds_data_dir={tfds_dir}', '--mode=eval'])
  assert code == 0, err
  assert _matrix(full / 'eval_results.json')[-1] == res['accuracy_matrix'][-1]

  # Export: the SavedModel serves the method's predictions.
  run = export_lib.load_run(str(full), data_dir=str(tfds_dir))
  assert isinstance(run.method, toy_method.CosineClassifier)
  np.testing.assert_array_equal(run.method.hook_counts(), [2.0, 2.0])  # begin/end of each of the 2 tasks.
  export_dir = str(tmp_path / 'export')
  export_lib.export(run, export_dir, class_names=[f'c{i}' for i in range(run.benchmark.num_classes)])
  loaded = tf.saved_model.load(export_dir)
  images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
  served = loaded.signatures['serving_default'](images=tf.constant(images))
  x = export_lib.preprocess_batch(tf.constant(images), 32, export_lib.run_crop(run))
  np.testing.assert_allclose(served['logits'].numpy(), run.method.predict(x)['logits'].numpy(), atol=1e-5)
  assert served['selected_prompts'].shape == (3, 0)
  assert os.path.exists(os.path.join(export_dir, 'assets', 'class_names.txt'))
