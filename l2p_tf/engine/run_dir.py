"""Guards of a run directory (`claim` applies them all): one run at a time (a lock file), the same config on resume, clean-up after a crash.

* `ModelDirLock`: `model_dir/.lock` holds the owner's pid, host, start time and command line. A second run on the
  same directory is refused while the owner is alive; a lock left by a dead process on this host (its pid is gone,
  or now belongs to a process started later) is taken over with a message. A lock from another host cannot be
  checked and is respected: the message says which file to delete if that run is known to be dead. Local locks are
  created atomically (a complete file is hard-linked into place, so two starters cannot both win); on `gs://` and
  other remote file systems the check-then-write is best effort.
* `config_differences`: the bindings of two operative gin configs that differ, ignoring the groups that only change
  cadence or logging (`IGNORED_GROUPS`: every parameter of `config.Cadence`).
* `move_aside`: `--overwrite` moves an earlier run to `<model_dir>.overwritten-<time>/` rather than deleting it.
* `recover_checkpoint_state`: a missing, empty or garbled `checkpoint` state file is rebuilt from the complete
  `ckpt-N` files on disk (and a complete checkpoint newer than every one it names is adopted), so a rerun resumes
  from the newest readable checkpoint instead of starting afresh.
* `remove_partial_files`: leftovers of a process killed mid-write (a checkpoint's `_temp` shards, the files of an
  incomplete checkpoint, a results file's temporary copy). None of them is ever read; a complete checkpoint is never
  removed.
* An empty or garbled lock (a power loss) is taken over once no process on this host names the directory on its
  command line; a reader (`--mode=eval`) of a read-only directory takes no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
import sys
from typing import Callable, Iterator, Optional

from absl import logging
import tensorflow as tf

from l2p_tf.engine import watchdog

LOCK_NAME = '.lock'
CONFIG_NAME = 'config.gin'
CHECKPOINTS_NAME = 'checkpoints'
# Setting groups (config classes) that change how often things happen or are logged, not what is computed: a resume
# may change any of their parameters.
IGNORED_GROUPS = frozenset({'Cadence'})


class ModelDirError(ValueError):
  """The run directory cannot be used as asked (locked, unwritable, or holding a run of another config)."""


def is_local(path: str) -> bool:
  return '://' not in path


def _proc_start_ticks(pid: int) -> Optional[int]:
  """The start time of process `pid` in clock ticks since boot (Linux), None where unknown."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      stat = f.read()
    return int(stat[stat.rindex(')') + 2:].split()[19])
  except (OSError, ValueError, IndexError):
    return None


def lock_record(pid: Optional[int] = None) -> dict:
  """What a lock file holds for process `pid` (default: this one)."""
  pid = os.getpid() if pid is None else pid
  return {'pid': pid, 'host': socket.gethostname(), 'proc_start': _proc_start_ticks(pid),
          'started': datetime.datetime.now().isoformat(timespec='seconds'), 'argv': sys.argv}


def processes_naming(path: str) -> list[int]:
  """Pids of the other live processes on this host whose command line names `path` (Linux /proc; [] elsewhere)."""
  target = os.path.abspath(path).rstrip('/')
  found = []
  try:
    pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
  except OSError:
    return []
  for pid in pids:
    if pid == os.getpid():
      continue
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        args = f.read().decode('utf-8', 'replace').split('\0')
      cwd = os.readlink(f'/proc/{pid}/cwd')
    except OSError:
      continue
    for arg in args:
      value = arg.split('=', 1)[1] if arg.startswith('--') and '=' in arg else arg
      if value and os.path.abspath(os.path.join(cwd, value)).rstrip('/') == target:
        found.append(pid)
        break
  return found


def _holder_alive(record: dict) -> Optional[bool]:
  """True / False for a lock of this host; None when it cannot be known (another host)."""
  if record.get('host') != socket.gethostname():
    return None
  pid = record.get('pid')
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Exists, owned by another user.
  start = record.get('proc_start')
  now = _proc_start_ticks(pid)
  if start is not None and now is not None and start != now:
    return False  # The pid was reused by a later process.
  return True


class ModelDirLock:
  """An exclusive lock on a run directory (see the module docstring); a context manager.

  Args:
    model_dir: the run directory (created if missing).

  Attributes:
    created_dir: whether acquiring created `model_dir` (so a run that fails before writing anything removes it).
  """

  def __init__(self, model_dir: str, *, read_only_ok: bool = False):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOCK_NAME)
    self.record = None
    self.created_dir = False
    self.read_only_ok = read_only_ok
    self.read_only = False

  def acquire(self) -> 'ModelDirLock':
    """Takes the lock.

    Raises:
      ModelDirError: another live run holds it, or `model_dir` cannot be created or written.
    """
    if self.read_only_ok and is_local(self.model_dir) and os.path.isdir(self.model_dir) and not os.access(
        self.model_dir, os.W_OK):
      # A reader (evaluation) of a run on a read-only file system or in a directory it may not write: no writer can
      # be running there either, so there is nothing to lock against.
      self.read_only = True
      print(f'note: {self.model_dir} is read-only: reading the run without taking its lock; nothing is written '
            'there.', flush=True)
      return self
    try:
      if not tf.io.gfile.isdir(self.model_dir):
        if tf.io.gfile.exists(self.model_dir):
          raise ModelDirError(f'model_dir {self.model_dir} exists and is not a directory; pass a directory path to '
                              '--model_dir.')
        tf.io.gfile.makedirs(self.model_dir)
        self.created_dir = True
      for _ in range(3):
        if self._try_create():
          return self
        holder = self._read()
        if holder == {}:  # Empty or garbled (a power loss after the lock was linked, before its data hit the disk).
          users = processes_naming(self.model_dir)
          if users:
            raise ModelDirError(
                f'model_dir {self.model_dir} has an unreadable lock file {self.path}, and process {users[0]} on this '
                'host has the directory on its command line: wait for it to finish or stop it, or use another '
                '--model_dir.')
          print(f'Taking over the unreadable lock {self.path} (empty or garbled, as a power loss leaves it; no '
                'process on this host has the directory on its command line).', flush=True)
          self._remove_lock_file()
          continue
        alive = _holder_alive(holder) if holder is not None else False
        if alive is False:
          print(f'Taking over the stale lock {self.path} of a process that is gone '
                f'(pid {holder.get("pid") if holder else "?"} on {holder.get("host") if holder else "?"}).',
                flush=True)
          try:
            tf.io.gfile.remove(self.path)
          except tf.errors.NotFoundError:
            pass
          continue
        where = f'pid {holder.get("pid")} on host {holder.get("host")}, started {holder.get("started")}'
        if alive is None:
          raise ModelDirError(
              f'model_dir {self.model_dir} is locked by a run on another host ({where}); lock file {self.path}. Use '
              'another --model_dir, or delete the lock file if that run is no longer running.')
        raise ModelDirError(
            f'model_dir {self.model_dir} is in use by another run ({where}); lock file {self.path}. Wait for it to '
            'finish or stop it, or use another --model_dir.')
      raise ModelDirError(f'could not take the lock {self.path} (it keeps changing); is another run starting?')
    except (PermissionError, OSError, tf.errors.PermissionDeniedError, tf.errors.FailedPreconditionError,
            tf.errors.NotFoundError, tf.errors.UnimplementedError) as e:
      self._remove_created_dir()
      raise ModelDirError(f'model_dir {self.model_dir} is not writable ({type(e).__name__}: {e}); choose a directory '
                          'you can write to, or fix its permissions.') from e
    except ModelDirError:
      self._remove_created_dir()
      raise

  def _remove_lock_file(self) -> None:
    try:
      tf.io.gfile.remove(self.path)
    except tf.errors.NotFoundError:
      pass

  def _try_create(self) -> bool:
    record = lock_record()
    data = json.dumps(record) + '\n'
    if is_local(self.path):
      tmp = f'{self.path}.{os.getpid()}.tmp'
      with open(tmp, 'w') as f:
        f.write(data)
      try:
        os.link(tmp, self.path)  # Atomic, and fails when the lock exists.
      except FileExistsError:
        return False
      finally:
        os.remove(tmp)
    else:
      if tf.io.gfile.exists(self.path):
        return False
      with tf.io.gfile.GFile(self.path, 'w') as f:
        f.write(data)
    self.record = record
    watchdog.at_forced_exit(self.release_and_tidy)
    return True

  def _read(self) -> Optional[dict]:
    try:
      with tf.io.gfile.GFile(self.path) as f:
        record = json.loads(f.read())
      return record if isinstance(record, dict) else {}
    except tf.errors.NotFoundError:
      return None
    except (ValueError, UnicodeDecodeError):
      return {}  # Empty or garbled: see `acquire`.

  def release(self) -> None:
    """Removes the lock if it is still ours (idempotent)."""
    if self.record is None:
      return
    current = self._read()
    if current is not None and current.get('pid') == self.record['pid'] and (
        current.get('host') == self.record['host']):
      try:
        tf.io.gfile.remove(self.path)
      except tf.errors.NotFoundError:
        pass
    self.record = None
    watchdog.cancel_at_forced_exit(self.release_and_tidy)

  def release_and_tidy(self) -> None:
    """Releases the lock and removes `model_dir` again if this run created it and wrote nothing else."""
    self.release()
    self._remove_created_dir()

  def _remove_created_dir(self) -> None:
    if self.created_dir and tf.io.gfile.isdir(self.model_dir) and not tf.io.gfile.listdir(self.model_dir):
      tf.io.gfile.rmtree(self.model_dir)
      self.created_dir = False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release_and_tidy()


def statements(config: str) -> dict[str, str]:
  """`name = value` statements of an operative gin config (multi-line values joined), keyed by name."""
  out, name = {}, None
  for line in config.splitlines():
    stripped = line.strip()
    if not stripped or stripped.startswith('#') or line.startswith(('from ', 'import ')):
      name = None
      continue
    m = re.match(r'^([A-Za-z_][\w./]*)\s*=\s*(.*)$', line)
    if m:
      name = m.group(1)
      out[name] = m.group(2).strip()
    elif name is not None and line[0].isspace():
      out[name] += ' ' + stripped
  return out


def _group(name: str) -> str:
  """The configurable a binding belongs to, without its module: 'config.Cadence.steps_per_loop' -> 'Cadence'."""
  return name.rsplit('.', 1)[0].rsplit('.', 1)[-1].rsplit('/', 1)[-1]


def config_differences(old: str, new: str, ignore_groups=IGNORED_GROUPS) -> list[str]:
  """Lines `- name = old` / `+ name = new` for every binding or macro whose value differs, ignoring the parameters
  of the configurables named in `ignore_groups`.

  An operative config lists every parameter of every configurable the run called, defaults included, so a name on
  one side only is a parameter that a code update added or removed (a changed choice of configurable shows up as
  the differing binding that names it); such names are not differences.
  """
  a, b = statements(old), statements(new)
  lines = []
  for name in sorted(set(a) & set(b)):
    if _group(name) not in ignore_groups and a[name] != b[name]:
      lines += [f'- {name} = {a[name]}', f'+ {name} = {b[name]}']
  return lines


def has_run(model_dir: str) -> bool:
  """Whether `model_dir` holds anything of a run (checkpoints, config, results, summaries), lock aside."""
  if not tf.io.gfile.isdir(model_dir):
    return False
  return any(name.rstrip('/') != LOCK_NAME for name in tf.io.gfile.listdir(model_dir))


def check_same_config(model_dir: str, operative: str, max_lines: int = 12) -> None:
  """Refuses to resume a run whose stored `config.gin` differs from `operative` (cadence settings aside).

  Raises:
    ModelDirError: the configs differ; the message shows the differing lines and the way out (`--overwrite`).
  """
  path = os.path.join(model_dir, CONFIG_NAME)
  if not operative or not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    stored = f.read()
  diff = config_differences(stored, operative)
  if not diff:
    return
  shown = diff[:max_lines] + ([f'... and {len(diff) - max_lines} more lines'] if len(diff) > max_lines else [])
  raise ModelDirError(
      f'model_dir {model_dir} holds a run of a different config ({path}, "-" stored, "+" this command):\n  '
      + '\n  '.join(shown) + '\nUse another --model_dir, rerun with the stored config to resume, or pass '
      '--overwrite to start afresh (the old run is moved aside, not deleted).')


def same_file_system(a: str, b: str) -> bool:
  """Whether local paths `a` and `b` are on the same file system (a rename between them does not copy)."""
  return os.stat(a).st_dev == os.stat(b).st_dev


def check_eval_config(model_dir: str, operative: str, *, allow: bool = False, max_lines: int = 12) -> list[str]:
  """`--mode=eval`: compares this command's operative config with the run's `config.gin`; returns the differences.

  An evaluation under other bindings (another evaluation batch, prompt selection, model) would write an accuracy
  matrix that is not the run's, under the run's name.

  Raises:
    ModelDirError: they differ and `allow` is False; the message names the differing bindings and the flag that
      evaluates anyway. With `allow`, the differences are printed and returned.
  """
  path = os.path.join(model_dir, CONFIG_NAME)
  if not operative or not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    diff = config_differences(f.read(), operative)
  if not diff:
    return []
  shown = diff[:max_lines] + ([f'... and {len(diff) - max_lines} more lines'] if len(diff) > max_lines else [])
  if allow:
    print(f'warning: evaluating with bindings that differ from the run\'s {path} ("-" stored, "+" this command; '
          '--eval_with_changed_config):\n  ' + '\n  '.join(shown), flush=True)
    return diff
  raise ModelDirError(
      f'--mode=eval: this command\'s gin config differs from the run\'s {path} ("-" stored, "+" this command):\n  '
      + '\n  '.join(shown) + '\nEvaluate with the run\'s own --gin_file / --gin_bindings, or pass '
      '--eval_with_changed_config to evaluate its checkpoint under these bindings anyway.')


def move_aside(model_dir: str) -> Optional[str]:
  """Moves everything in `model_dir` but the lock to `<model_dir>.overwritten-<time>/`; returns that path."""
  if not has_run(model_dir):
    return None
  if is_local(model_dir) and not same_file_system(model_dir, os.path.dirname(os.path.abspath(model_dir))):
    raise ModelDirError(
        f'--overwrite: model_dir {model_dir} is a mount point (another file system than its parent), so its run '
        'cannot be moved aside to a sibling folder without copying it. Nothing was changed. Move the old run\'s '
        'files out yourself, or use another --model_dir (e.g. a folder inside the mount).')
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  dest = f'{model_dir.rstrip("/")}.overwritten-{stamp}'
  n = 1
  while tf.io.gfile.exists(dest):
    n += 1
    dest = f'{model_dir.rstrip("/")}.overwritten-{stamp}-{n}'
  tf.io.gfile.makedirs(dest)
  for name in tf.io.gfile.listdir(model_dir):
    name = name.rstrip('/')
    if name == LOCK_NAME:
      continue
    src = os.path.join(model_dir, name)
    if is_local(model_dir):
      try:
        os.rename(src, os.path.join(dest, name))
      except OSError as e:  # Undo what was moved: the old run stays whole where it was.
        for back in os.listdir(dest):
          os.rename(os.path.join(dest, back), os.path.join(model_dir, back))
        os.rmdir(dest)
        raise ModelDirError(f'--overwrite could not move {src} aside ({e}); nothing was changed.') from e
    else:  # Object stores have no directory rename: move file by file.
      for root, _, files in tf.io.gfile.walk(src):
        rel = os.path.relpath(root, model_dir)
        tf.io.gfile.makedirs(os.path.join(dest, rel))
        for f in files:
          tf.io.gfile.rename(os.path.join(root, f), os.path.join(dest, rel, f), overwrite=True)
      if tf.io.gfile.exists(src):
        tf.io.gfile.rmtree(src)
  return dest


_CKPT_FILE = re.compile(r'^(?P<prefix>.+)-(?P<n>\d+)(\.index|\.data-(?P<shard>\d+)-of-(?P<shards>\d+))$')
STATE_NAME = 'checkpoint'


def complete_checkpoints(ckpt_dir: str) -> dict[int, str]:
  """{N: prefix path} of every checkpoint in `ckpt_dir` whose files are all on disk, found by file name alone.

  A checkpoint `<prefix>-N` is complete when `<prefix>-N.index` exists together with every data shard
  `<prefix>-N.data-K-of-S` (K < S) that its names announce. Readability is not checked here (the restore falls back
  past a damaged one); the state file is not read.
  """
  if not tf.io.gfile.isdir(ckpt_dir):
    return {}
  index, shards = {}, {}
  for name in tf.io.gfile.listdir(ckpt_dir):
    m = _CKPT_FILE.match(name.rstrip('/'))
    if m is None or '_temp' in name:
      continue
    key = (m.group('prefix'), int(m.group('n')))
    if m.group('shard') is None:
      index[key] = True
    else:
      shards.setdefault(key, (int(m.group('shards')), set()))[1].add(int(m.group('shard')))
  out = {}
  for (prefix, n) in index:
    total, have = shards.get((prefix, n), (0, set()))
    if total and have == set(range(total)):
      out[n] = os.path.join(ckpt_dir, f'{prefix}-{n}')
  return out


def read_checkpoint_state(ckpt_dir: str):
  """The `CheckpointState` of `ckpt_dir`'s state file, or None when it is missing, empty or not parseable."""
  try:
    return tf.train.get_checkpoint_state(ckpt_dir)
  except (ValueError, tf.errors.OpError):  # An empty file: "Invalid checkpoint state loaded from ...".
    return None


def _registered(state) -> list[str]:
  if state is None:
    return []
  paths = list(state.all_model_checkpoint_paths)
  if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  return paths


def _number(path: str) -> int:
  tail = os.path.basename(path).rsplit('-', 1)[-1]
  return int(tail) if tail.isdigit() else -1


def recover_checkpoint_state(ckpt_dir: str, *, write: bool = True,
                             say: Optional[Callable[[str], None]] = None) -> Optional[str]:
  """Makes the state file of `ckpt_dir` name the complete checkpoints on disk when it cannot be trusted.

  The `checkpoint` state file is what `tf.train.CheckpointManager` restores from. When it is missing, empty or holds
  garbage (lost on a flaky disk, edited by hand) while complete `ckpt-N` files are on disk, or when complete
  checkpoints newer than every one it names are on disk (a save killed between its files and the state file), the
  state file is rewritten to name them all, newest last: nothing on disk is deleted, and the restore then starts from
  the newest (falling back past any that cannot be read). A damaged state file is first kept as
  `checkpoint.damaged-<time>`.

  Args:
    ckpt_dir: the checkpoint directory.
    write: rewrite the state file (False: only report; a read-only run directory).
    say: called with the returned line, if any (e.g. `print`).

  Returns:
    A line saying what was recovered (for the user), or None when the state file was fine or nothing is on disk.
  """
  on_disk = complete_checkpoints(ckpt_dir)
  if not on_disk:
    return None
  state_path = os.path.join(ckpt_dir, STATE_NAME)
  state = read_checkpoint_state(ckpt_dir)
  registered = [p for p in _registered(state)
                if tf.io.gfile.exists(os.path.join(ckpt_dir, os.path.basename(p)) + '.index')]
  newest_registered = max((_number(p) for p in registered), default=-1)
  newer = sorted(n for n in on_disk if n > newest_registered)
  if registered and not newer:
    return None
  if not registered:
    what = ('is missing' if not tf.io.gfile.exists(state_path) else
            'cannot be read' if state is None else 'names no checkpoint that is on disk')
    paths = [on_disk[n] for n in sorted(on_disk)]
    message = (f'warning: the checkpoint state file {state_path} {what}; recovered it from the checkpoint files on '
               f'disk ({", ".join(os.path.basename(p) for p in paths)}): resuming from the newest readable one.')
  else:
    paths = [os.path.join(ckpt_dir, os.path.basename(p)) for p in sorted(registered, key=_number)]
    paths += [on_disk[n] for n in newer]
    message = (f'note: {", ".join(os.path.basename(on_disk[n]) for n in newer)} in {ckpt_dir} complete but not yet '
               'named in the state file (a save was interrupted): adopted as the newest checkpoint.')
  if write:
    if state is None and tf.io.gfile.exists(state_path):
      stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
      tf.io.gfile.rename(state_path, f'{state_path}.damaged-{stamp}', overwrite=True)
    _write_state(ckpt_dir, paths)
  if say is not None:
    say(message)
  return message


def _write_state(ckpt_dir: str, paths: list[str]) -> None:
  """Writes the state file atomically (temporary file + rename), naming `paths` (relative), newest last.

  Each path gets its index file's modification time as its timestamp: `tf.train.CheckpointManager` only manages
  (restores, counts towards `max_to_keep`) checkpoints whose timestamps are newer than the preserved one.
  """
  # pylint: disable-next=g-import-not-at-top,g-direct-tensorflow-import
  from tensorflow.python.checkpoint import checkpoint_management
  stamps = []
  for p in paths:
    try:
      stamps.append(float(tf.io.gfile.stat(p + '.index').mtime_nsec) / 1e9)
    except tf.errors.OpError:
      stamps.append(0.0)
  stamps = [max(s, stamps[i - 1] if i else s) for i, s in enumerate(stamps)]  # Never decreasing.
  checkpoint_management.update_checkpoint_state_internal(
      ckpt_dir, paths[-1], all_model_checkpoint_paths=paths, save_relative_paths=True,
      all_model_checkpoint_timestamps=stamps, last_preserved_timestamp=min(stamps) - 1.0)


def remove_partial_files(model_dir: str, ckpt_dir: str) -> list[str]:
  """Removes what a killed process can leave half-done; returns the removed paths.

  Removed: `ckpt-N_temp/` (shards not yet merged), `*.tempstate*` (a merge's index in progress), `checkpoint.tmp*`
  (the state file's atomic write in progress), results temporaries `*.tmp-<pid>`, and the files of an incomplete
  checkpoint (no index, or a data shard missing) newer than every complete one and not named in the state file. A
  complete checkpoint is never removed: one the state file does not name is adopted first
  (`recover_checkpoint_state`), and older unnamed ones (left when a retention delete was cut short) are left alone.
  """
  removed = []
  recover_checkpoint_state(ckpt_dir, say=lambda line: print(line, flush=True))
  if tf.io.gfile.isdir(ckpt_dir):
    complete = complete_checkpoints(ckpt_dir)
    newest_complete = max(complete, default=-1)
    # A named checkpoint with a file missing is damaged, not half-written: left for the restore to report and skip.
    named = {_number(p) for p in _registered(read_checkpoint_state(ckpt_dir))}
    for name in tf.io.gfile.listdir(ckpt_dir):
      name = name.rstrip('/')
      path = os.path.join(ckpt_dir, name)
      m = _CKPT_FILE.match(name)
      partial = m is not None and int(m.group('n')) > newest_complete and int(m.group('n')) not in set(complete) | named
      if name.endswith('_temp') or '.tempstate' in name or name.startswith('checkpoint.tmp') or partial:
        (tf.io.gfile.rmtree if tf.io.gfile.isdir(path) else tf.io.gfile.remove)(path)
        removed.append(path)
  if tf.io.gfile.isdir(model_dir):
    for name in tf.io.gfile.listdir(model_dir):
      if re.search(r'\.tmp-\d+$', name.rstrip('/')):
        tf.io.gfile.remove(os.path.join(model_dir, name))
        removed.append(os.path.join(model_dir, name))
  if removed:
    logging.info('Removed leftovers of an interrupted write: %s', removed)
  return removed


@contextlib.contextmanager
def claim(model_dir: str, *, operative: str, chief: bool, mode: str, overwrite: bool,
          eval_with_changed_config: bool = False, say: Callable[[str], None] = print
          ) -> Iterator[Optional[ModelDirLock]]:
  """Holds `model_dir` for one run: locked (chief only), checked against `operative`, tidied.

  In 'train' mode a run of another config is refused (or, with `overwrite`, moved aside first), and the leftovers of
  an interrupted write are removed (after a lost state file is rebuilt). In 'eval' mode the config is compared too
  (refused unless `eval_with_changed_config`), and a read-only run is read without a lock. Errors inside the block
  release the lock and leave what was there as it was (a directory this run created is removed again while it is
  still empty; see `ModelDirLock`).

  Yields:
    The lock (None on non-chief workers; `lock.read_only` for a read-only run in 'eval' mode); the caller sets
    `created_dir = False` once the run has written files.

  Raises:
    ModelDirError: locked by a live run, unwritable, or holding a run of another config.
  """
  lock = ModelDirLock(model_dir, read_only_ok=mode == 'eval') if chief else None
  if lock is not None:
    lock.acquire()
  ckpt_dir = os.path.join(model_dir, CHECKPOINTS_NAME)
  try:
    if chief and mode == 'train':
      if overwrite:
        moved = move_aside(model_dir)
        if moved:
          say(f'--overwrite: moved the previous contents of {model_dir} to {moved}; starting afresh.')
      else:
        check_same_config(model_dir, operative)
      remove_partial_files(model_dir, ckpt_dir)
    if mode == 'eval':
      check_eval_config(model_dir, operative, allow=eval_with_changed_config)
      recover_checkpoint_state(ckpt_dir, write=chief and not (lock is not None and lock.read_only), say=say)
    yield lock
  finally:
    if lock is not None:
      lock.release_and_tidy()
