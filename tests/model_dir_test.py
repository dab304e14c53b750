"""l2p_tf.engine.run_dir: the lock file, the config comparison, and the clean-up of half-written leftovers."""

import json
import os

import pytest

from l2p_tf.engine import run_dir as model_dir_lib

OLD = """from __gin__ import dynamic_registration

# Macros:
# ======
LEARNING_RATE = 0.03
SEED = 42

# Parameters for config.Evaluation:
config.Evaluation.selections = ('batchwise',
                                 'instancewise')
config.Cadence.log_every_steps = 100
experiment.Experiment.seed = %SEED
"""


def test_config_differences_ignore_cadence_and_one_sided_parameters():
  new = (OLD.replace('log_every_steps = 100', 'log_every_steps = 5')
         + 'experiment.Experiment.new_parameter_of_a_code_update = 1\n')
  assert model_dir_lib.config_differences(OLD, new) == []
  changed = new.replace("'instancewise')", "'batchwise')").replace('SEED = 42', 'SEED = 1')
  assert model_dir_lib.config_differences(OLD, changed) == [
      '- SEED = 42', '+ SEED = 1',
      "- config.Evaluation.selections = ('batchwise', 'instancewise')",
      "+ config.Evaluation.selections = ('batchwise', 'batchwise')"]


def test_check_same_config(tmp_path):
  model_dir_lib.check_same_config(str(tmp_path), OLD)  # No config.gin: nothing to compare.
  (tmp_path / 'config.gin').write_text(OLD)
  model_dir_lib.check_same_config(str(tmp_path), OLD)
  with pytest.raises(model_dir_lib.ModelDirError, match=r'(?s)different config.*- SEED = 42\n  \+ SEED = 7\n.*'
                                                        r'--overwrite'):
    model_dir_lib.check_same_config(str(tmp_path), OLD.replace('SEED = 42', 'SEED = 7'))


def test_remove_partial_files(tmp_path, capsys):
  ckpt = tmp_path / 'checkpoints'
  ckpt.mkdir()
  (ckpt / 'checkpoint').write_text('model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-2"\n'
                                   'all_model_checkpoint_paths: "ckpt-3"\n')
  keep = ['ckpt-1.index', 'ckpt-2.index', 'ckpt-2.data-00000-of-00001', 'ckpt-3.index', 'ckpt-3.data-00000-of-00001',
          # Complete but not yet named (a save killed before the state file): adopted, never removed.
          'ckpt-4.index', 'ckpt-4.data-00000-of-00001']
  # Incomplete checkpoints newer than every complete one (a shard or the index missing) and in-progress writes.
  drop = ['ckpt-6.index', 'ckpt-6.data-00000-of-00002', 'ckpt-7.data-00000-of-00001', 'ckpt-3.index.tempstate123',
          'checkpoint.tmp0abc']
  for name in keep + drop:
    (ckpt / name).write_text('x')
  (ckpt / 'ckpt-5_temp').mkdir()
  (ckpt / 'ckpt-5_temp' / 'part-00000-of-00001.index').write_text('x')
  (tmp_path / 'results.json').write_text('{}')
  (tmp_path / 'results.json.tmp-4242').write_text('{"half')
  removed = model_dir_lib.remove_partial_files(str(tmp_path), str(ckpt))
  assert sorted(os.path.basename(p) for p in removed) == sorted(drop + ['ckpt-5_temp', 'results.json.tmp-4242'])
  assert sorted(os.listdir(ckpt)) == sorted(keep + ['checkpoint'])
  assert (tmp_path / 'results.json').exists()
  assert 'ckpt-4' in capsys.readouterr().out
  state = model_dir_lib.read_checkpoint_state(str(ckpt))
  assert os.path.basename(state.model_checkpoint_path) == 'ckpt-4'
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ['ckpt-2', 'ckpt-3', 'ckpt-4']


def test_lock_lifecycle(tmp_path, capsys):
  model_dir = tmp_path / 'new' / 'run'
  lock = model_dir_lib.ModelDirLock(str(model_dir)).acquire()
  record = json.loads((model_dir / '.lock').read_text())
  assert record['pid'] == os.getpid() and lock.created_dir
  with pytest.raises(model_dir_lib.ModelDirError, match=f'in use by another run \\(pid {os.getpid()} '):
    model_dir_lib.ModelDirLock(str(model_dir)).acquire()
  lock.release_and_tidy()
  assert not model_dir.exists()  # Created by the lock and left empty: removed again.
  # The pid now belongs to a process started after the lock was written: stale.
  model_dir.mkdir(parents=True)
  (model_dir / '.lock').write_text(json.dumps(dict(record, proc_start=(record['proc_start'] or 0) + 1)))
  lock = model_dir_lib.ModelDirLock(str(model_dir)).acquire()
  assert 'Taking over the stale lock' in capsys.readouterr().out
  (model_dir / 'keep.txt').write_text('x')
  lock.release_and_tidy()
  assert sorted(os.listdir(model_dir)) == ['keep.txt']
