"""DualPrompt and CODA-Prompt runs through the engine (local_tiny.gin on `tfds.testing.mock_data`): a run cut in the
middle of its second task and resumed matches an uninterrupted one (what `begin_task` did is in the checkpoint), and
one device agrees with MirroredStrategy on 2 virtual CPUs."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from l2p_tf.engine import preemption
from tests import test_util
from tests.runs import StopAtStep
from tests.runs import one_device
from tests.runs import run_experiment

EXPERIMENTS = ['cifar100_dualprompt', 'cifar100_coda_prompt']


@pytest.mark.parametrize('experiment', EXPERIMENTS)
def test_resume_mid_task_matches_uninterrupted_run(tmp_path, experiment):
  with tfds.testing.mock_data(num_examples=1000):
    full = run_experiment(tmp_path / 'full', experiment, data_dir=str(tmp_path / 'tfds'))
    # Each task has 4 steps (64 / 16); stop after step 6, in the middle of task 2.
    with pytest.raises(preemption.PreemptedError, match=r'at step 6, task 2/2'):
      run_experiment(tmp_path / 'cut', experiment, data_dir=str(tmp_path / 'tfds'), preemption=StopAtStep(6))
    resumed = run_experiment(tmp_path / 'cut', experiment, data_dir=str(tmp_path / 'tfds'))
  assert resumed['accuracy_matrix'] == full['accuracy_matrix']
  assert resumed['final'] == full['final']


@pytest.mark.parametrize('experiment', EXPERIMENTS)
def test_one_device_and_mirrored_agree(tmp_path, experiment):
  bindings = ["config.Evaluation.primary = 'per_sample'"]
  if experiment == 'cifar100_dualprompt':
    bindings.append("prompt_pool.PromptPool.selection = 'instancewise'")
  results = []
  for name, strategy in (('one', one_device()), ('mirrored', test_util.mirrored_strategy())):
    with tfds.testing.mock_data(num_examples=1000):
      results.append(run_experiment(tmp_path / name, experiment, bindings, strategy=strategy,
                                    data_dir=str(tmp_path / 'tfds')))
  assert results[1]['num_replicas'] == 2
  a, b = (np.array(r['accuracy_matrix'], dtype=float) for r in results)
  np.testing.assert_allclose(a, b, atol=0.5)
