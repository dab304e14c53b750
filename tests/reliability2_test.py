"""Nothing lost, nothing hangs: damaged checkpoint state, stuck phases and signals, atomic export, one error path.

Each test plays a hostile user or a flaky machine and asserts what the user sees (one `error:` line, exit code 2, or
`preempted:` and 75) and that nothing already written was lost. Runs are the tiny `cifar100_l2p.gin` +
`local_tiny.gin` experiment on `tfds.testing.mock_data` (2 tasks x 4 steps, a checkpoint every 2 steps). Hangs and
signals use real processes (`tests/phase_main.py` blocks the main thread in one phase; the device hang is the real
one: MirroredStrategy over two GPUs that do not exist). docs/errors.md lists every case with its message.
"""

import contextlib
import errno
import glob
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time

from absl import flags
import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import export as export_lib
from l2p_tf import main as main_lib
from l2p_tf.engine import run_dir as model_dir_lib
from l2p_tf import predict as predict_lib
from l2p_tf import results as results_lib
from l2p_tf.engine import preemption
from l2p_tf.checkpoints import npz_loader
from tests import test_util
from tests.runs import StopAtStep
from tests.runs import run_experiment
from tests.runs import snapshot

EXPERIMENT = 'cifar100_l2p'
TINY = ['--gin_file=experiments/cifar100_l2p.gin', '--gin_file=local_tiny.gin']
GRACE_S = 3  # --stop_grace_s of the signalled processes.
HAS_GPU = bool(tf.config.list_physical_devices('GPU'))


def mock():
  return tfds.testing.mock_data(num_examples=1000)


# -- Shared runs ---------------------------------------------------------------------------------------------------


def _phase_command(phase, model_dir, tfds_dir, *extra):
  return [sys.executable, '-m', 'tests.phase_main', phase, f'--model_dir={model_dir}', *TINY,
          f'--tfds_data_dir={tfds_dir}', f'--stop_grace_s={GRACE_S}', *extra]


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


# name -> (phase, extra flags, send SIGTERM when the phase is reached)
PROCS = {
    'devices_deadline': ('devices', ['--device_timeout_s=5'], False),
    'devices_sigterm': ('devices', ['--device_timeout_s=300'], True),
    'data_sigterm': ('data', [], True),
    'compile_sigterm': ('compile', [], True),
    'evaluation_sigterm': ('evaluation', [], True),
    # Worker 0 of two; worker 1 never starts. MultiWorkerMirroredStrategy's constructor waits for it holding the
    # interpreter lock, so only the helper process can end it.
    'peer_missing': ('none', ['--strategy=multi_worker_mirrored', '--device_timeout_s=5'], False),
}


@pytest.fixture(scope='module')
def procs(tmp_path_factory):
  """Starts every stuck process at once (TensorFlow's import is paid in parallel), signals each one when it reports
  its phase, and returns {name: (returncode, stdout, stderr, seconds from SIGTERM to exit or None, model_dir)}."""
  root = tmp_path_factory.mktemp('phases')
  tfds_dir = root / 'tfds'
  started = {}
  for name, (phase, extra, _) in PROCS.items():
    out, err = open(root / f'{name}.out', 'w+'), open(root / f'{name}.err', 'w+')
    env = dict(os.environ)
    if 'multi_worker_mirrored' in ' '.join(extra):
      env['TF_CONFIG'] = json.dumps({'cluster': {'worker': [f'localhost:{_free_port()}' for _ in range(2)]},
                                     'task': {'type': 'worker', 'index': 0}})
    p = subprocess.Popen(_phase_command(phase, root / name, tfds_dir, *extra), cwd=test_util.REPO_ROOT,
                         stdout=out, stderr=err, text=True, env=env)
    started[name] = (p, out, err)
  signalled, exited, deadline = {}, {}, time.monotonic() + 400
  while time.monotonic() < deadline and any(p.poll() is None for p, _, _ in started.values()):
    for name, (p, out, _) in started.items():
      if name not in exited and p.poll() is not None:
        exited[name] = time.monotonic()
      if PROCS[name][2] and name not in signalled and p.poll() is None:
        out.flush()
        if '[phase]' in (root / f'{name}.out').read_text():
          time.sleep(0.5)  # Inside the blocking call.
          p.send_signal(signal.SIGTERM)
          signalled[name] = time.monotonic()
    time.sleep(0.2)
  done = {}
  for name, (p, out, err) in started.items():
    if p.poll() is None:
      p.kill()
    p.wait()
    ended = exited.get(name, time.monotonic())
    done[name] = (p.returncode, (root / f'{name}.out').read_text(), (root / f'{name}.err').read_text(),
                  (ended - signalled[name]) if name in signalled else None, root / name)
    out.close()
    err.close()
  return done


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A finished run ('full') and one stopped after step 3 ('partial': ckpt-1 at step 2, ckpt-2 at step 3)."""
  root = tmp_path_factory.mktemp('runs')
  tfds_dir = str(root / 'tfds')
  with mock():
    full = run_experiment(root / 'full', EXPERIMENT, data_dir=tfds_dir)
    with pytest.raises(preemption.PreemptedError):
      run_experiment(root / 'partial', EXPERIMENT, data_dir=tfds_dir, preemption=StopAtStep(3))
  return {'root': root, 'tfds': tfds_dir, 'full': full}


def copy_run(runs, name, dest):
  shutil.copytree(runs['root'] / name, dest)
  return dest


def rerun(model_dir, runs, capsys, **kwargs):
  capsys.readouterr()
  with mock():
    try:
      res = run_experiment(model_dir, EXPERIMENT, data_dir=runs['tfds'], **kwargs)
    except preemption.PreemptedError as e:
      res = e
  return res, capsys.readouterr().out


def run_main(capsys, args, data=True):
  """l2p_tf.main in this process; returns (exit code, stderr, stdout)."""
  argv = ['l2p_tf.main', *[str(a) for a in args]]
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  capsys.readouterr()
  try:
    with mock() if data else contextlib.nullcontext():
      code = main_lib.main(argv[:1])
  finally:
    gin.clear_config()
    flags.FLAGS.unparse_flags()
  captured = capsys.readouterr()
  return code, captured.err, captured.out


def assert_one_error(code, err, *needles):
  assert code == 2, err
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, err
  assert 'Traceback' not in err
  for needle in needles:
    assert needle in err, f'{needle!r} not in:\n{err}'


def checkpoint_step(path):
  return int(tf.train.load_checkpoint(str(path)).get_tensor('global_step/.ATTRIBUTES/VARIABLE_VALUE'))


# -- 1. A missing or damaged checkpoint state file: recovered from the files on disk, nothing deleted ---------------


def test_missing_state_file_resumes_from_the_newest_checkpoint_with_the_same_results(runs, tmp_path, capsys):
  model_dir = copy_run(runs, 'partial', tmp_path / 'run')
  ckpt_dir = model_dir / 'checkpoints'
  (ckpt_dir / 'checkpoint').unlink()
  res, out = rerun(model_dir, runs, capsys)
  assert (f'warning: the checkpoint state file {ckpt_dir}/checkpoint is missing; recovered it from the checkpoint '
          'files on disk (ckpt-1, ckpt-2)') in out
  assert f'Resuming from {ckpt_dir}/ckpt-2 (step 3, 0 tasks finished)' in out, out
  assert res['accuracy_matrix'] == runs['full']['accuracy_matrix']  # As if never damaged, bit for bit.


@pytest.mark.parametrize('content', ['garbage', 'empty', 'names_deleted_checkpoints'])
def test_damaged_state_file_is_kept_aside_and_rebuilt(runs, tmp_path, capsys, content):
  model_dir = copy_run(runs, 'partial', tmp_path / 'run')
  ckpt_dir = model_dir / 'checkpoints'
  text = {'garbage': '\x00\x01 not a state {{{', 'empty': '',
          'names_deleted_checkpoints': 'model_checkpoint_path: "ckpt-9"\nall_model_checkpoint_paths: "ckpt-9"\n'}
  (ckpt_dir / 'checkpoint').write_text(text[content])
  before = {p: b for p, b in snapshot(ckpt_dir).items() if p.startswith('ckpt-')}
  res, out = rerun(model_dir, runs, capsys, preemption=StopAtStep(4))
  assert isinstance(res, preemption.PreemptedError) and 'at step 4' in str(res)  # Resumed at 3, not retrained.
  assert f'Resuming from {ckpt_dir}/ckpt-2 (step 3, 0 tasks finished)' in out, out
  what = {'garbage': 'cannot be read', 'empty': 'cannot be read',
          'names_deleted_checkpoints': 'names no checkpoint that is on disk'}[content]
  assert f'checkpoint state file {ckpt_dir}/checkpoint {what}' in out
  after = snapshot(ckpt_dir)
  assert all(after.get(p) == b for p, b in before.items() if p.startswith('ckpt-2'))  # The newest is never lost.
  if content != 'names_deleted_checkpoints':
    kept = glob.glob(str(ckpt_dir / 'checkpoint.damaged-*'))
    assert len(kept) == 1 and open(kept[0]).read() == text[content]


def test_resuming_line_names_the_checkpoint_actually_used_after_a_fallback(runs, tmp_path, capsys):
  model_dir = copy_run(runs, 'partial', tmp_path / 'run')
  with open(glob.glob(str(model_dir / 'checkpoints' / 'ckpt-2.data-*'))[0], 'r+b') as f:
    f.truncate(100)
  res, out = rerun(model_dir, runs, capsys, preemption=StopAtStep(3))
  assert isinstance(res, preemption.PreemptedError)
  assert f'Resuming from {model_dir}/checkpoints/ckpt-1 (step 2, 0 tasks finished)' in out
  assert 'Resuming from' in out and f'{model_dir}/checkpoints/ckpt-2 (step' not in out


def test_incomplete_newer_checkpoint_is_removed_but_complete_ones_are_adopted(tmp_path, capsys):
  ckpt = tmp_path / 'checkpoints'
  ckpt.mkdir()
  for name in ('ckpt-1.index', 'ckpt-1.data-00000-of-00001', 'ckpt-2.index', 'ckpt-2.data-00000-of-00001',
               'ckpt-3.index', 'ckpt-3.data-00000-of-00002'):  # ckpt-3: one of two shards (a half-done merge).
    (ckpt / name).write_text('x')
  removed = model_dir_lib.remove_partial_files(str(tmp_path), str(ckpt))  # No state file at all.
  assert sorted(os.path.basename(p) for p in removed) == ['ckpt-3.data-00000-of-00002', 'ckpt-3.index']
  state = model_dir_lib.read_checkpoint_state(str(ckpt))
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ['ckpt-1', 'ckpt-2']
  assert 'is missing; recovered it' in capsys.readouterr().out


# -- 2. Every phase ends in bounded time; SIGTERM acted on in every phase ------------------------------------------


def test_absent_gpus_are_refused_at_once(capsys, tmp_path):
  if HAS_GPU:
    pytest.skip('this machine has a GPU; the case needs one without')
  for num_gpus in (2, 1):  # 1: would have run bfloat16 on the CPU without a word.
    code, err, out = run_main(capsys, [f'--model_dir={tmp_path / "run"}', *TINY, '--strategy=mirrored',
                                       f'--num_gpus={num_gpus}'], data=False)
    assert_one_error(code, err, f'error: --num_gpus={num_gpus} but this machine has 0 usable GPU(s)',
                     'Pass --num_gpus=0 (the CPU) or leave --num_gpus unset')
  code, err, out = run_main(capsys, [f'--model_dir={tmp_path / "run"}', *TINY, '--num_gpus=-1'], data=False)
  assert_one_error(code, err, 'error: --num_gpus=-1 is negative; give 0 (CPU) or a GPU count.')
  assert not (tmp_path / 'run').exists()


def test_hung_device_check_ends_with_one_error_line(procs):
  code, out, err, _, model_dir = procs['devices_deadline']
  assert '[phase] devices' in out
  assert code == 2, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and lines[0].startswith('error: device check of 2 replica(s) did not finish within 5 s'), err
  assert 'do not answer' in lines[0] and 'Traceback' not in err
  assert not model_dir.exists()


def test_missing_multi_worker_peer_ends_with_one_error_line(procs):
  code, out, err, _, model_dir = procs['peer_missing']
  assert code == -signal.SIGKILL, f'rc={code}\n{err[-3000:]}'  # Killed by the helper: nothing in-process could run.
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, err[-3000:]
  assert lines[0].startswith('error: starting --strategy=multi_worker_mirrored did not finish within 5 s (stuck in a '
                             'call that holds the interpreter lock; killed): its devices or peers do not answer')
  assert 'Traceback' not in err and not model_dir.exists()


@pytest.mark.parametrize('name', ['devices_sigterm', 'data_sigterm', 'compile_sigterm', 'evaluation_sigterm'])
def test_sigterm_in_a_phase_that_cannot_poll_exits_75_within_the_grace(procs, name):
  code, out, err, seconds, model_dir = procs[name]
  assert seconds is not None, f'{name} never reached its phase:\n{out[-2000:]}\n{err[-3000:]}'
  assert code == preemption.PREEMPTED_EXIT_CODE, f'rc={code}\n{out[-2000:]}\n{err[-3000:]}'
  assert seconds < GRACE_S + 10, seconds
  preempted = [l for l in err.splitlines() if l.startswith('preempted: ')]
  assert len(preempted) == 1, err[-3000:]
  assert preempted[0].startswith('preempted: SIGTERM received while the run was in ')
  assert 'Rerun the same command to resume' in preempted[0] and 'Traceback' not in err
  assert not (model_dir / '.lock').exists()  # Released on the way out: the rerun needs no take-over.
  if name == 'evaluation_sigterm':  # Task 1 was trained and checkpointed before evaluation: still intact.
    state = tf.train.get_checkpoint_state(str(model_dir / 'checkpoints'))
    assert checkpoint_step(state.model_checkpoint_path) == 4


def test_sigterm_in_a_hung_device_check_names_where_it_was(procs):
  _, _, err, _, _ = procs['devices_sigterm']
  assert 'while the run was in check_devices (strategies.py:' in err


# -- 3. Export: staged, verified, swapped; falls back; records progress --------------------------------------------


def run_export(capsys, *args):
  fv = flags.FlagValues()
  export_lib.define_flags(fv)
  argv = ['export', *[str(a) for a in args]]
  fv(argv)
  capsys.readouterr()
  code = export_lib.run_cli(fv, argv[:1])
  captured = capsys.readouterr()
  return code, captured.err, captured.out


@pytest.fixture(scope='module')
def exported(runs, tmp_path_factory):
  out = tmp_path_factory.mktemp('export') / 'saved_model'
  run = export_lib.load_run(str(runs['root'] / 'full'), data_dir=runs['tfds'])
  export_lib.export(run, str(out), class_names=[f'c{i}' for i in range(run.model.num_classes)])
  return out


def test_failed_overwrite_keeps_the_old_export(runs, exported, tmp_path, capsys, monkeypatch):
  export_dir = tmp_path / 'saved_model'
  shutil.copytree(exported, export_dir)
  before = snapshot(export_dir)
  monkeypatch.setattr(export_lib, 'verify', lambda run, d: {'serving_default': 0.5, 'batchwise': 0.5})
  code, err, out = run_export(capsys, f'--model_dir={runs["root"] / "full"}', f'--export_dir={export_dir}',
                              '--overwrite', '--class_names=index')
  assert_one_error(code, err, 'the reloaded SavedModel differs from the model by 0.5', 'nothing was replaced')
  assert snapshot(export_dir) == before
  assert sorted(os.listdir(tmp_path)) == ['saved_model']  # No staging or old copies left.


def test_export_falls_back_past_an_unreadable_checkpoint_and_warns_when_unfinished(runs, tmp_path, capsys):
  model_dir = copy_run(runs, 'partial', tmp_path / 'run')
  with open(glob.glob(str(model_dir / 'checkpoints' / 'ckpt-2.data-*'))[0], 'r+b') as f:
    f.truncate(100)
  export_dir = tmp_path / 'out'
  code, err, out = run_export(capsys, f'--model_dir={model_dir}', f'--export_dir={export_dir}', '--class_names=index')
  assert code == 0, err
  assert f'warning: checkpoint {model_dir}/checkpoints/ckpt-2 cannot be read' in out
  assert f'Restored {model_dir}/checkpoints/ckpt-1 (' in out
  assert (f'warning: the run is unfinished: {model_dir}/checkpoints/ckpt-1 has 0 of 2 tasks done (step 2)') in err
  info = json.loads((export_dir / 'assets' / 'export_info.json').read_text())
  assert info['checkpoint'].endswith('ckpt-1') and info['global_step'] == 2 and info['tasks_done'] == 0
  assert info['num_tasks'] == 2 and info['complete'] is False


def test_export_of_a_finished_run_records_it_and_overwrites_by_swapping(runs, exported, tmp_path, capsys):
  export_dir = tmp_path / 'saved_model'
  shutil.copytree(exported, export_dir)
  (export_dir / 'stale.txt').write_text('from the old export')
  code, err, out = run_export(capsys, f'--model_dir={runs["root"] / "full"}', f'--export_dir={export_dir}',
                              '--overwrite', '--class_names=index')
  assert code == 0, err
  assert 'unfinished' not in err and 'Verified' in out
  info = json.loads((export_dir / 'assets' / 'export_info.json').read_text())
  assert info['complete'] is True and info['tasks_done'] == 2 and info['global_step'] == 8
  assert not (export_dir / 'stale.txt').exists() and sorted(os.listdir(tmp_path)) == ['saved_model']


def test_export_from_a_checkpoint_directory_with_a_garbled_state_file(runs, tmp_path, capsys):
  model_dir = copy_run(runs, 'partial', tmp_path / 'run')
  (model_dir / 'checkpoints' / 'checkpoint').write_text('garbage {{')
  before = snapshot(model_dir)
  code, err, out = run_export(capsys, f'--model_dir={model_dir}', f'--checkpoint={model_dir / "checkpoints"}',
                              f'--export_dir={tmp_path / "out"}', '--class_names=index', '--noverify')
  assert code == 0, err
  assert f'Restored {model_dir}/checkpoints/ckpt-2 (' in out  # Found on disk, the newest.
  assert snapshot(model_dir) == before  # Export only reads the run.


def test_export_dir_that_is_a_file(runs, tmp_path, capsys):
  target = tmp_path / 'model.pb'
  target.write_text('mine')
  code, err, out = run_export(capsys, f'--model_dir={runs["root"] / "full"}', f'--export_dir={target}', '--overwrite')
  assert_one_error(code, err, f'error: --export_dir {target} is a file, not a directory')
  assert target.read_text() == 'mine'


# -- 4. One error path: exit 2, the culprit named, nothing already written changed ---------------------------------


def test_disk_full_during_a_run_fails_cleanly_and_the_rerun_resumes(runs, tmp_path, capsys, monkeypatch):
  model_dir = tmp_path / 'my runs' / 'r\u00e9sum\u00e9'  # A space and non-ASCII in the path, too.
  real = results_lib.atomic_write

  def full_disk(path, data, binary=False):
    if path.endswith('results.json'):
      raise OSError(errno.ENOSPC, 'No space left on device', path)
    return real(path, data, binary)

  monkeypatch.setattr(results_lib, 'atomic_write', full_disk)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={runs["tfds"]}'])
  assert_one_error(code, err, f'error: no space left on device writing {model_dir}/results.json',
                   'rerun the same command: it resumes from the newest complete checkpoint')
  assert not glob.glob(str(model_dir / '*.tmp-*')) and not (model_dir / '.lock').exists()
  state = tf.train.get_checkpoint_state(str(model_dir / 'checkpoints'))
  assert checkpoint_step(state.model_checkpoint_path) == 4  # Task 1's checkpoint is whole.
  monkeypatch.setattr(results_lib, 'atomic_write', real)  # Space freed.
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={runs["tfds"]}'])
  assert code == 0, err
  assert '(step 4, 1 tasks finished)' in out
  assert json.loads((model_dir / 'results.json').read_text())['accuracy_matrix'] == runs['full']['accuracy_matrix']


@contextlib.contextmanager
def tmpfs(path, size, read_only=False):
  """A tmpfs mounted at `path` (needs root and a kernel that allows it); skips the test otherwise."""
  os.makedirs(path, exist_ok=True)
  r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True,
                     text=True, check=False)
  if r.returncode:
    pytest.skip(f'cannot mount a tmpfs here (needs root): {r.stderr.strip()}')
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', str(path)], check=False)


def test_disk_full_on_a_real_small_file_system(runs, tmp_path, capsys):
  mnt = tmp_path / 'small'
  size = sum(os.path.getsize(p) for p in glob.glob(str(runs['root'] / 'full' / 'checkpoints' / 'ckpt-*')))
  with tmpfs(mnt, f'{max(size // 2 + 65536, 131072)}'):  # Room for about one checkpoint, not two.
    model_dir = mnt / 'run'
    code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={runs["tfds"]}'])
    assert_one_error(code, err, 'error: no space left on device', 'Free space there and rerun the same command')
    state = model_dir_lib.read_checkpoint_state(str(model_dir / 'checkpoints'))
    if state is not None:  # Whatever the state file names is whole.
      for p in state.all_model_checkpoint_paths:
        checkpoint_step(os.path.join(model_dir, 'checkpoints', os.path.basename(p)))
    assert not (model_dir / '.lock').exists()


def test_directory_as_init_checkpoint(capsys, tmp_path):
  model_dir = tmp_path / 'run'
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY,
                                     f'--gin_bindings=INIT_CHECKPOINT = "{tmp_path}"'])
  assert_one_error(code, err, f'error: Checkpoint file {tmp_path} is a directory. Set INIT_CHECKPOINT to the .npz file '
                   'itself')
  assert not model_dir.exists()


@pytest.mark.parametrize('binding,needle', [
    ("GLOBAL_BATCH_SIZE = '16'", "config.Training.global_batch_size = '16' is a str, but it must be int: fix that gin "
                                 'binding (write it without quotes)'),
    ('GLOBAL_BATCH_SIZE = 16.5', 'config.Training.global_batch_size = 16.5 is a float, but it must be int'),
    ("l2p.L2P.use_label_mask = 'False'", "l2p.L2P.use_label_mask = 'False' is a str, but it must be bool"),
])
def test_gin_binding_of_the_wrong_type(capsys, tmp_path, binding, needle):
  model_dir = tmp_path / 'run'
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--gin_bindings={binding}'])
  assert_one_error(code, err, needle)
  assert not model_dir.exists()


def test_required_binding_left_unset(capsys, tmp_path):
  mine = tmp_path / 'mine.gin'
  mine.write_text("include 'experiments/cifar100_l2p.gin'\ninclude 'local_tiny.gin'\n"
                  'experiment.Experiment.init_checkpoint = %gin.REQUIRED\n')
  model_dir = tmp_path / 'run'
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', f'--gin_file={mine}'])
  assert_one_error(code, err, 'error: Experiment.init_checkpoint set to `%gin.REQUIRED` but not subsequently '
                   'overridden. Bind it in a --gin_file or with --gin_bindings')
  assert not model_dir.exists()


def test_overwrite_of_a_mount_point_changes_nothing(runs, tmp_path, capsys, monkeypatch):
  model_dir = tmp_path / 'mnt'
  try:
    with tmpfs(model_dir, '64m'):
      _check_overwrite_refused(runs, model_dir, capsys)
      return
  except pytest.skip.Exception:
    pass
  # No mount allowed here: the same check with the file-system test answering as for a mount point.
  monkeypatch.setattr(model_dir_lib, 'same_file_system', lambda a, b: False)
  _check_overwrite_refused(runs, model_dir, capsys)


def _check_overwrite_refused(runs, model_dir, capsys):
  for name in os.listdir(runs['root'] / 'partial'):
    src = runs['root'] / 'partial' / name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, model_dir / name)
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={runs["tfds"]}',
                                     '--overwrite'])
  assert_one_error(code, err, f'error: --overwrite: model_dir {model_dir} is a mount point', 'Nothing was changed')
  assert snapshot(model_dir) == before
  assert not glob.glob(f'{model_dir}.overwritten-*')


def test_tpu_strategy_without_a_tpu(capsys, tmp_path):
  code, err, out = run_main(capsys, [f'--model_dir={tmp_path / "run"}', *TINY, '--strategy=tpu'], data=False)
  assert_one_error(code, err, 'error: --strategy=tpu: no TPU found', '--tpu=local')
  assert not (tmp_path / 'run').exists()


# -- 5. Answers that say what happened -----------------------------------------------------------------------------


def test_eval_with_changed_bindings_is_refused_then_allowed_by_flag(runs, tmp_path, capsys):
  model_dir = copy_run(runs, 'full', tmp_path / 'run')
  before = snapshot(model_dir)
  args = [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={runs["tfds"]}', '--mode=eval',
          '--gin_bindings=config.Evaluation.batch_size = 8']
  code, err, out = run_main(capsys, args)
  assert_one_error(code, err, '--mode=eval: this command\'s gin config differs from the run\'s',
                   '- config.Evaluation.batch_size = None', '+ config.Evaluation.batch_size = 8',
                   '--eval_with_changed_config')
  assert snapshot(model_dir) == before
  code, err, out = run_main(capsys, args + ['--eval_with_changed_config'])
  assert code == 0, err
  assert 'warning: evaluating with bindings that differ' in out and '+ config.Evaluation.batch_size = 8' in out
  assert (model_dir / 'eval_results.json').exists()


def test_eval_of_a_run_on_a_read_only_file_system(runs, tmp_path, capsys):
  mnt = tmp_path / 'ro'
  with tmpfs(mnt, '64m'):
    shutil.copytree(runs['root'] / 'full', mnt / 'run')
    subprocess.run(['mount', '-o', 'remount,ro', str(mnt)], check=True)
    code, err, out = run_main(capsys, [f'--model_dir={mnt / "run"}', *TINY, f'--tfds_data_dir={runs["tfds"]}',
                                       '--mode=eval'])
    assert code == 0, err
    assert f'note: {mnt / "run"} is read-only: reading the run without taking its lock' in out
    assert 'Traceback' not in err and not (mnt / 'run' / 'eval_results.json').exists()


def test_config_mismatch_is_not_reported_as_damage(runs, tmp_path, capsys):
  model_dir = copy_run(runs, 'partial', tmp_path / 'run')
  (model_dir / 'config.gin').unlink()  # Nothing to compare against: the restore meets the changed model.
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={runs["tfds"]}',
                                     '--gin_bindings=POOL_SIZE = 7'])
  assert_one_error(code, err, f'error: The checkpoints in {model_dir}/checkpoints do not fit the model this command '
                   'builds', 'the run was made with another config, and its checkpoints are fine')
  assert '--overwrite' not in err and 'cannot be read' not in out
  assert snapshot(model_dir) == before


def test_backbone_with_nan_weights_is_refused_at_load(capsys, tmp_path):
  arrays = test_util.random_vit_arrays('tiny', 32)
  arrays['Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel'][0, :3] = np.nan
  arrays['cls'][...] = np.inf
  npz = tmp_path / 'ViT-tiny.npz'
  np.savez(npz, **arrays)
  model_dir = tmp_path / 'run'
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--gin_bindings=INIT_CHECKPOINT = "{npz}"'])
  assert_one_error(code, err, f'error: Checkpoint file {npz} holds NaN or Inf values in '
                   'Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel (3 of 8192), cls (64 of 64)',
                   'whatever the learning rate')
  assert 'learning rate' not in err.replace('whatever the learning rate', '')
  assert not model_dir.exists()


@pytest.mark.parametrize('content', ['', '{"pid": 12', '\x00\x00\x00'])
def test_empty_or_garbled_lock_is_taken_over_unless_a_process_uses_the_directory(tmp_path, capsys, content):
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  (model_dir / '.lock').write_text(content)
  # A live process naming the directory on its command line.
  user = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', f'--model_dir={model_dir}'])
  try:
    time.sleep(0.2)
    with pytest.raises(model_dir_lib.ModelDirError, match=rf'unreadable lock file .*, and process {user.pid} on this '
                                                          'host has the directory on its command line'):
      model_dir_lib.ModelDirLock(str(model_dir)).acquire()
    assert (model_dir / '.lock').read_text() == content
  finally:
    user.kill()
    user.wait()
  lock = model_dir_lib.ModelDirLock(str(model_dir)).acquire()
  assert f'Taking over the unreadable lock {model_dir}/.lock' in capsys.readouterr().out
  assert json.loads((model_dir / '.lock').read_text())['pid'] == os.getpid()
  lock.release()


def test_predict_classifies_the_readable_files_and_reports_the_others(exported, tmp_path, capsys):
  good = tmp_path / 'good.png'
  good.write_bytes(tf.io.encode_png(np.full((40, 50, 3), 120, np.uint8)).numpy())
  truncated = tmp_path / 'truncated.png'
  truncated.write_bytes(good.read_bytes()[:30])
  missing = tmp_path / 'missing.jpg'
  fv = flags.FlagValues()
  predict_lib.define_flags(fv)

  def predict(*paths):
    fv.unparse_flags()
    rest = fv(['predict', f'--export_dir={exported}', *map(str, paths)])
    capsys.readouterr()
    code = predict_lib.run_cli(fv, rest)
    return code, *capsys.readouterr()

  code, out, err = predict(good, truncated, missing)
  assert code == 1, err
  assert out.startswith(f'{good}\n  1. ') and str(truncated) not in out
  errors = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(errors) == 2 and errors[0].startswith(f'error: {truncated}: cannot decode as an image')
  assert errors[1].startswith(f'error: {missing}: cannot decode as an image (NotFoundError')
  assert '2 of 3 file(s) could not be classified' in err
  code, out, err = predict(truncated)
  assert code == 2 and not out.strip()
  code, out, err = predict(good)
  assert code == 0 and not err.strip()


def test_predict_with_a_directory_that_is_not_an_export(tmp_path, capsys):
  fv = flags.FlagValues()
  predict_lib.define_flags(fv)
  rest = fv(['predict', f'--export_dir={tmp_path}', str(tmp_path / 'x.png')])
  capsys.readouterr()
  code = predict_lib.run_cli(fv, rest)
  err = capsys.readouterr().err
  assert code == 2 and err.startswith(f'error: --export_dir {tmp_path} is not a readable SavedModel')
  assert 'Traceback' not in err


def test_truncated_data_files_are_named(tmp_path):
  from datasets import local_files  # pylint: disable=g-import-not-at-top
  train = tmp_path / 'train'
  with open(train, 'wb') as f:
    pickle.dump({'data': np.zeros((10, 3072), np.uint8), 'fine_labels': [0] * 10}, f)
  train.write_bytes(train.read_bytes()[:200])
  with pytest.raises(ValueError, match=rf'{train} is truncated or damaged \(.*\); download it again'):
    local_files._load_pickle(str(train))  # pylint: disable=protected-access
  idx = tmp_path / 'train-images-idx3-ubyte'
  idx.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, 'big') + (28).to_bytes(4, 'big') * 2 + b'\0' * 100)
  with pytest.raises(ValueError, match=rf'{idx} is truncated or damaged: its header announces 3936 bytes'):
    local_files.read_idx(str(idx))
  gz = tmp_path / 'train-labels-idx1-ubyte.gz'
  import gzip  # pylint: disable=g-import-not-at-top
  gz.write_bytes(gzip.compress(b'\0\0\x08\x01' + (60).to_bytes(4, 'big') + b'\1' * 60)[:-12])
  with pytest.raises(ValueError, match=rf'{gz} is truncated or damaged'):
    local_files.read_idx(str(gz))
  # A prepared tfds split: the corrupt record file is found by name.
  from l2p_tf.data import sources  # pylint: disable=g-import-not-at-top
  for shard in range(2):
    with tf.io.TFRecordWriter(str(tmp_path / f'mnist-train.tfrecord-0000{shard}-of-00002')) as w:
      for _ in range(5):
        w.write(b'x' * 100)
  bad = tmp_path / 'mnist-train.tfrecord-00001-of-00002'
  bad.write_bytes(bad.read_bytes()[:-30])
  assert sources.find_corrupt_record_file(str(tmp_path), 'mnist', 'train[:50%]') == str(bad)
  assert sources.find_corrupt_record_file(str(tmp_path), 'mnist', 'test') is None


def test_npz_loader_non_finite_check_unit():
  npz_loader.check_finite('f.npz', {'a': np.ones(3, np.float32)})
  with pytest.raises(npz_loader.CheckpointError, match=r'holds NaN or Inf values in b \(1 of 2\)'):
    npz_loader.check_finite('f.npz', {'a': np.ones(3), 'b': np.array([1.0, -np.inf])})
