"""Preemption, hard kills, exact resume, the model_dir lock, config changes and NaN: the run survives all of them.

The killed / signalled runs are real processes (`python -m tests.mock_main`, l2p_tf.main on tfds mock data) with
the fault-injection hook of l2p_tf/faults.py; they all start at once (one module fixture) so the import time of
TensorFlow is paid in parallel. Every rerun happens in this process and must end with the uninterrupted run's
accuracy matrix, bit for bit (CPU).
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import losses
from l2p_tf.engine import loop
from l2p_tf.engine import run_dir as model_dir_lib
from l2p_tf.engine import preemption
from tests import test_util
from tests.runs import StopAtStep
from tests.runs import run_experiment
from tests.runs import snapshot

EXPERIMENT = 'cifar100_l2p'  # With local_tiny.gin: 2 tasks x 4 steps, a loop every 2 steps, a checkpoint every 2.
# Where each run is killed (L2P_FAULT_INJECTION), and what the directory must look like after the kill.
KILLS = {
    'mid_step': 'train_step:6:kill_async',  # SIGKILL from a thread while step 6 (task 2) runs.
    'mid_checkpoint_shards': 'checkpoint_shards:4',  # Shards of the 4th checkpoint written, not merged into place.
    'mid_checkpoint_state': 'checkpoint_write:3',  # The 3rd checkpoint complete, not yet named in the state file.
    'between_tasks': 'task_end:1',
    'mid_evaluation': 'evaluation:3',  # After task 2: task 0's set evaluated, task 1's not.
    'mid_results_write': 'results_write:8',  # The final results.json's temporary copy written, not renamed.
}
SIGTERM_AT_STEP = 6


def main_command(model_dir, tfds_dir, *extra):
  return [sys.executable, '-m', 'tests.mock_main', f'--model_dir={model_dir}',
          f'--gin_file=experiments/{EXPERIMENT}.gin', '--gin_file=local_tiny.gin', f'--tfds_data_dir={tfds_dir}',
          *extra]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Starts the killed and the SIGTERMed runs together, then runs the uninterrupted reference in this process."""
  root = tmp_path_factory.mktemp('reliability')
  tfds_dir = root / 'tfds'
  procs = {}
  for name, spec in KILLS.items():
    env = dict(os.environ, L2P_FAULT_INJECTION=spec)
    procs[name] = subprocess.Popen(main_command(root / name, tfds_dir), cwd=test_util.REPO_ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  # steps_per_loop = 4: a stop honoured only at the end of a loop would come at step 8, not 5 or 6.
  env = dict(os.environ, L2P_FAULT_INJECTION=f'train_step:{SIGTERM_AT_STEP}:term')
  procs['sigterm'] = subprocess.Popen(
      main_command(root / 'sigterm', tfds_dir, '--gin_bindings=config.Cadence.steps_per_loop = 4'),
      cwd=test_util.REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  with tfds.testing.mock_data(num_examples=1000):
    full = run_experiment(root / 'full', EXPERIMENT, data_dir=str(tfds_dir))
  done = {}
  for name, p in procs.items():
    out, err = p.communicate(timeout=600)
    done[name] = (p.returncode, out, err)
  return {'root': root, 'tfds': str(tfds_dir), 'full': full, 'procs': done}


def rerun(runs, name, capsys, bindings=()):
  capsys.readouterr()
  with tfds.testing.mock_data(num_examples=1000):
    res = run_experiment(runs['root'] / name, EXPERIMENT, bindings, data_dir=runs['tfds'])
  return res, capsys.readouterr().out


def assert_same_results(res, full, model_dir):
  assert res['accuracy_matrix'] == full['accuracy_matrix']  # Lists of floats: exact equality.
  assert res['final'] == full['final']
  assert res['prompt_usage_train'] == full['prompt_usage_train']
  on_disk = json.loads((model_dir / 'results.json').read_text())
  assert on_disk['complete'] and on_disk['accuracy_matrix'] == full['accuracy_matrix']


@pytest.mark.parametrize('name', list(KILLS))
def test_sigkill_then_rerun_matches_the_uninterrupted_run(runs, name, capsys):
  rc, out, err = runs['procs'][name]
  assert rc == -9, f'{name}: expected SIGKILL, got rc={rc}\n{out[-2000:]}\n{err[-3000:]}'
  assert '[fault injection] kill' in out
  model_dir = runs['root'] / name
  ckpt_dir = model_dir / 'checkpoints'
  state = tf.train.get_checkpoint_state(str(ckpt_dir))
  # What the kill left: never a half-written results file, and a checkpoint state naming complete checkpoints only.
  if (model_dir / 'results.json').exists():
    assert json.loads((model_dir / 'results.json').read_text())['tasks_done'] in (0, 1, 2)
  for path in state.all_model_checkpoint_paths:
    assert os.path.exists(os.path.join(ckpt_dir, f'{os.path.basename(path)}.index'))
  leftovers = glob.glob(str(ckpt_dir / '*_temp')) + glob.glob(str(model_dir / '*.tmp-*'))
  if name == 'mid_checkpoint_shards':
    assert glob.glob(str(ckpt_dir / 'ckpt-4_temp' / 'part-*')) and not (ckpt_dir / 'ckpt-4.index').exists()
    assert os.path.basename(state.model_checkpoint_path) == 'ckpt-3'
  elif name == 'mid_checkpoint_state':
    assert (ckpt_dir / 'ckpt-3.index').exists() and os.path.basename(state.model_checkpoint_path) == 'ckpt-2'
  elif name == 'mid_results_write':
    assert glob.glob(str(model_dir / 'results.json.tmp-*'))
    assert json.loads((model_dir / 'results.json').read_text())['tasks_done'] == 1  # The previous, complete file.
  assert (model_dir / '.lock').exists()  # Left by the killed process.

  res, printed = rerun(runs, name, capsys)
  assert 'Taking over the stale lock' in printed
  assert_same_results(res, runs['full'], model_dir)
  assert not (model_dir / '.lock').exists()
  for path in leftovers:
    assert not os.path.exists(path), f'{path} was not cleaned up'
  assert not glob.glob(str(ckpt_dir / '*_temp'))


def test_sigterm_stops_within_one_step_and_the_rerun_resumes(runs, capsys):
  rc, out, err = runs['procs']['sigterm']
  assert rc == preemption.PREEMPTED_EXIT_CODE, f'rc={rc}\n{out[-2000:]}\n{err[-3000:]}'
  assert 'SIGTERM received: finishing the current step' in out
  preempted = [l for l in err.splitlines() if l.startswith('preempted: ')]
  assert len(preempted) == 1, err[-3000:]
  # The signal arrives while step 6 is dispatched: the run stops after step 5 or 6, not at its loop's end (8).
  step = int(preempted[0].split(' at step ')[1].split(',')[0])
  assert step in (SIGTERM_AT_STEP - 1, SIGTERM_AT_STEP), preempted[0]
  assert 'Rerun the same command to resume' in preempted[0]
  model_dir = runs['root'] / 'sigterm'
  assert not (model_dir / '.lock').exists()  # Released on the way out.
  reader = tf.train.load_checkpoint(str(model_dir / 'checkpoints'))
  assert reader.get_tensor('global_step/.ATTRIBUTES/VARIABLE_VALUE') == step
  partial = json.loads((model_dir / 'results.json').read_text())
  assert partial['tasks_done'] == 1 and not partial['complete']

  res, printed = rerun(runs, 'sigterm', capsys, ['config.Cadence.steps_per_loop = 4'])
  assert f'Resuming from' in printed and f'(step {step}, 1 tasks finished)' in printed
  assert_same_results(res, runs['full'], model_dir)


def test_live_lock_is_refused_and_a_dead_one_taken_over(tmp_path, capsys):
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  sleeper = subprocess.Popen(['sleep', '60'])
  try:
    (model_dir / '.lock').write_text(json.dumps(model_dir_lib.lock_record(sleeper.pid)))
    before = snapshot(model_dir)
    with tfds.testing.mock_data(num_examples=1000):
      with pytest.raises(ValueError, match=rf'model_dir {model_dir} is in use by another run \(pid {sleeper.pid} on '
                                           rf'host .*lock file {model_dir}/.lock'):
        run_experiment(model_dir, EXPERIMENT, data_dir=str(tmp_path / 'tfds'))
    assert snapshot(model_dir) == before
  finally:
    sleeper.kill()
    sleeper.wait()
  # The same lock once its process is gone: taken over (shown with a stop after the first step).
  with tfds.testing.mock_data(num_examples=1000):
    with pytest.raises(preemption.PreemptedError):
      run_experiment(model_dir, EXPERIMENT, data_dir=str(tmp_path / 'tfds'), preemption=StopAtStep(1))
  assert f'Taking over the stale lock {model_dir}/.lock' in capsys.readouterr().out
  assert not (model_dir / '.lock').exists()
  # A lock from another host cannot be checked: refused, saying which file to delete.
  record = dict(model_dir_lib.lock_record(), host='elsewhere-host')
  (model_dir / '.lock').write_text(json.dumps(record))
  with tfds.testing.mock_data(num_examples=1000):
    with pytest.raises(ValueError, match='locked by a run on another host .*delete the lock file'):
      run_experiment(model_dir, EXPERIMENT, data_dir=str(tmp_path / 'tfds'))


def test_nan_stops_naming_step_and_task_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  model_dir = tmp_path / 'run'
  with tfds.testing.mock_data(num_examples=1000):
    with pytest.raises(preemption.PreemptedError):
      run_experiment(model_dir, EXPERIMENT, data_dir=str(tmp_path / 'tfds'), preemption=StopAtStep(3))
    before = snapshot(model_dir)
    # Resumed with a NaN pull term (patched in, so the stored config still matches): the first step after the
    # resume, step 4, has a NaN loss.
    monkeypatch.setattr(losses, 'pull_loss', lambda reduce_sim, coefficient: tf.constant(float('nan')))
    with pytest.raises(preemption.NonFiniteLossError,
                       match=r'NaN or Inf loss/gradient in train step 4 \(task 1/2 task_0, step 4/4 of the task\); '
                             r'its gradient was discarded and nothing was saved after it: the newest checkpoint, '
                             r'.*ckpt-\d+, is the last good state'):
      run_experiment(model_dir, EXPERIMENT, data_dir=str(tmp_path / 'tfds'))
  after = snapshot(model_dir)
  for path in before:  # Checkpoints, config and results untouched (summaries may have grown).
    if not path.startswith(('train/', 'eval/')):
      assert after[path] == before[path], path
  assert not [p for p in after if p.startswith('checkpoints/') and p not in before]
  reader = tf.train.load_checkpoint(str(model_dir / 'checkpoints'))
  assert reader.get_tensor('global_step/.ATTRIBUTES/VARIABLE_VALUE') == 3
  assert np.isfinite(reader.get_tensor('model/prompt_pool/prompts/.ATTRIBUTES/VARIABLE_VALUE')).all()


def test_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
  model_dir = tmp_path / 'run'
  with tfds.testing.mock_data(num_examples=1000):
    with pytest.raises(preemption.PreemptedError):  # ckpt-1 at step 2 (cadence), ckpt-2 at step 3 (the stop).
      run_experiment(model_dir, EXPERIMENT, data_dir=str(tmp_path / 'tfds'), preemption=StopAtStep(3))
    data = glob.glob(str(model_dir / 'checkpoints' / 'ckpt-2.data-*'))[0]
    with open(data, 'r+b') as f:  # Damaged storage (not something a kill does).
      f.truncate(100)
    capsys.readouterr()
    with pytest.raises(preemption.PreemptedError, match='at step 3, task 1/2'):
      run_experiment(model_dir, EXPERIMENT, data_dir=str(tmp_path / 'tfds'), preemption=StopAtStep(3))
  out = capsys.readouterr().out
  assert f'warning: checkpoint {model_dir}/checkpoints/ckpt-2 cannot be read' in out
  assert f'Restored {model_dir}/checkpoints/ckpt-1: the newer checkpoints could not be read.' in out
  assert '(step 2, 0 tasks finished)' in out
