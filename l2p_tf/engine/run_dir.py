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
* `remove_partial_files`: leftovers of a process killed mid-write (a checkpoint's `_temp` shards, a checkpoint not
  yet named in the `checkpoint` state file, a results file's temporary copy). None of them is ever read; removing
  them keeps the directory tidy and makes sure an orphan is never mistaken for a finished checkpoint.
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

  def __init__(self, model_dir: str):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOCK_NAME)
    self.record = None
    self.created_dir = False

  def acquire(self) -> 'ModelDirLock':
    """Takes the lock.

    Raises:
      ModelDirError: another live run holds it, or `model_dir` cannot be created or written.
    """
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
    return True

  def _read(self) -> Optional[dict]:
    try:
      with tf.io.gfile.GFile(self.path) as f:
        record = json.loads(f.read())
      return record if isinstance(record, dict) else {}
    except tf.errors.NotFoundError:
      return None
    except ValueError:
      return {}  # Unreadable: from a process killed while writing (remote paths only); treated as stale.

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


def _statements(config: str) -> dict[str, str]:
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
  a, b = _statements(old), _statements(new)
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


def move_aside(model_dir: str) -> Optional[str]:
  """Moves everything in `model_dir` but the lock to `<model_dir>.overwritten-<time>/`; returns that path."""
  if not has_run(model_dir):
    return None
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
      os.rename(src, os.path.join(dest, name))
    else:  # Object stores have no directory rename: move file by file.
      for root, _, files in tf.io.gfile.walk(src):
        rel = os.path.relpath(root, model_dir)
        tf.io.gfile.makedirs(os.path.join(dest, rel))
        for f in files:
          tf.io.gfile.rename(os.path.join(root, f), os.path.join(dest, rel, f), overwrite=True)
      if tf.io.gfile.exists(src):
        tf.io.gfile.rmtree(src)
  return dest


_CKPT_FILE = re.compile(r'^(?P<prefix>.+)-(?P<n>\d+)(\.index|\.data-\d+-of-\d+)$')


def remove_partial_files(model_dir: str, ckpt_dir: str) -> list[str]:
  """Removes what a killed process can leave half-done (see the module docstring); returns the removed paths."""
  removed = []
  if tf.io.gfile.isdir(ckpt_dir):
    state = tf.train.get_checkpoint_state(ckpt_dir)
    registered = set()
    if state is not None:
      registered = {os.path.basename(p) for p in state.all_model_checkpoint_paths}
      registered.add(os.path.basename(state.model_checkpoint_path))
    newest = max((int(p.rsplit('-', 1)[1]) for p in registered if p.rsplit('-', 1)[-1].isdigit()), default=0)
    for name in tf.io.gfile.listdir(ckpt_dir):
      name = name.rstrip('/')
      path = os.path.join(ckpt_dir, name)
      m = _CKPT_FILE.match(name)
      orphan = m is not None and int(m.group('n')) > newest and f'{m.group("prefix")}-{m.group("n")}' not in registered
      # ckpt-N_temp/ (shards not yet merged), *.tempstate* (a merge's index in progress), checkpoint.tmp* (the state
      # file's atomic write in progress), and checkpoint files newer than any the state file names.
      if name.endswith('_temp') or '.tempstate' in name or name.startswith('checkpoint.tmp') or orphan:
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
          say: Callable[[str], None] = print) -> Iterator[Optional[ModelDirLock]]:
  """Holds `model_dir` for one run: locked (chief only), checked against `operative`, tidied.

  In 'train' mode a run of another config is refused (or, with `overwrite`, moved aside first), and the leftovers of
  an interrupted write are removed. Errors inside the block release the lock and leave what was there as it was (a
  directory this run created is removed again while it is still empty; see `ModelDirLock`).

  Yields:
    The lock (None on non-chief workers); the caller sets `created_dir = False` once the run has written files.

  Raises:
    ModelDirError: locked by a live run, unwritable, or holding a run of another config.
  """
  lock = ModelDirLock(model_dir) if chief else None
  if lock is not None:
    lock.acquire()
  try:
    if chief and mode == 'train':
      if overwrite:
        moved = move_aside(model_dir)
        if moved:
          say(f'--overwrite: moved the previous contents of {model_dir} to {moved}; starting afresh.')
      else:
        check_same_config(model_dir, operative)
      remove_partial_files(model_dir, os.path.join(model_dir, CHECKPOINTS_NAME))
    yield lock
  finally:
    if lock is not None:
      lock.release_and_tidy()
