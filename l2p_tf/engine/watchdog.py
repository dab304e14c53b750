"""Bounds on phases that cannot poll: a deadline per phase; SIGTERM / SIGINT acted on while the main thread is stuck.

Python runs a signal handler only when the main thread returns to the interpreter. While it sits inside one long C++
call (device assignment on a GPU that is absent or broken, a collective whose peer is gone, a graph compilation, a
download), a `Preemption` request is never even seen, and a hang is never reported. Two helpers run on their own
threads, so they act whatever the main thread is doing:

* `phase(name, timeout_s, advice)`: a deadline for a phase. If the phase has not ended after `timeout_s`, one line
  `error: <name> did not finish within N s ...: <advice>` goes to stderr and the process exits with code 2.
* `SignalWatchdog`: is woken by the C-level signal handler itself (`signal.set_wakeup_fd`). After SIGTERM / SIGINT
  it waits `grace_s` for the run to act on the request (the loop stopping between two steps, see `guard`); if the run
  has not, it prints `preempted: ...` naming where the main thread is, and exits with code 75. Once the run stops in
  order (writing its checkpoint), it is never cut short.

A forced exit is like a hard kill for what is on disk (a run's files are always written atomically, see
docs/errors.md), but first runs the callbacks registered with `at_forced_exit` (the run directory's lock is released
that way), so the next run starts without taking over a stale lock.

Some C++ calls block while holding Python's interpreter lock (MultiWorkerMirroredStrategy's start-up waiting for a
worker that never comes up): then no thread of this process can run at all. A small helper process (`_Backstop`,
plain Python without TensorFlow) therefore watches the same deadlines from outside, `BACKSTOP_S` seconds later: it
receives the signals itself (the wake-up socket is its), and if the process has still not ended, it prints the
`error:` / `preempted:` line and kills the process (SIGKILL: the exit status is then "killed", 137 in a shell; the
stale lock is taken over by the next run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Optional

PREEMPTED_EXIT_CODE = 75
ERROR_EXIT_CODE = 2
BACKSTOP_S = 5.0  # The helper process acts this long after a deadline the process itself did not act on.

_BACKSTOP_SOURCE = r"""
import os, select, signal, sys, time
parent, wake_fd, notify_fd, grace = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
  signal.signal(sig, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; only the parent ends this one.
armed, buf, fds = {}, b'', [0] + ([wake_fd] if wake_fd >= 0 else [])
while True:
  deadlines = [d for d, _ in armed.values()]
  wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
  ready = select.select(fds, [], [], wait)[0]
  if 0 in ready:
    data = os.read(0, 65536)
    if not data:
      sys.exit(0)  # The parent ended (or closed the pipe).
    buf += data
    while b'\n' in buf:
      line, buf = buf.split(b'\n', 1)
      cmd, _, rest = line.decode('utf-8', 'replace').partition(' ')
      if cmd == 'arm':
        key, seconds, message = rest.split(' ', 2)
        armed[key] = (time.monotonic() + float(seconds), message)
      elif cmd == 'disarm':
        armed.pop(rest, None)
  if wake_fd in ready:
    data = os.read(wake_fd, 64)
    if notify_fd >= 0:
      try:
        os.write(notify_fd, data)
      except OSError:
        pass
    for b in data:
      if b in (signal.SIGTERM, signal.SIGINT) and 'signal' not in armed:
        name = signal.Signals(b).name
        armed['signal'] = (time.monotonic() + grace, (
            f'preempted: {name} received while the run was stuck in a call that holds the interpreter lock; it was '
            f'killed after {grace:.0f} s without writing a new checkpoint (the newest checkpoint in --model_dir is '
            'intact). Rerun the same command to resume.'))
  now = time.monotonic()
  for key, (deadline, message) in list(armed.items()):
    if deadline <= now:
      try:
        os.kill(parent, 0)
      except OSError:
        sys.exit(0)
      os.write(2, (message + '\n').encode('utf-8', 'replace'))
      os.kill(parent, signal.SIGKILL)
      sys.exit(0)
"""


class _Backstop:
  """The helper process of the module docstring (one per process, started on first use)."""

  _instance: Optional['_Backstop'] = None
  _lock = threading.RLock()

  def __init__(self, wake_fd: int = -1, notify_fd: int = -1, grace_s: float = 0.0):
    import subprocess  # pylint: disable=g-import-not-at-top
    fds = tuple(fd for fd in (wake_fd, notify_fd) if fd >= 0)
    self.proc = subprocess.Popen(
        [sys.executable, '-S', '-c', _BACKSTOP_SOURCE, str(os.getpid()), str(wake_fd), str(notify_fd),
         str(grace_s + BACKSTOP_S)], stdin=subprocess.PIPE, pass_fds=fds, close_fds=True)
    self._write_lock = threading.Lock()

  @classmethod
  def get(cls) -> Optional['_Backstop']:
    with cls._lock:
      if cls._instance is None or cls._instance.proc.poll() is not None:
        try:
          cls._instance = cls()
        except OSError:
          return None
      return cls._instance

  def send(self, line: str) -> None:
    with self._write_lock:
      try:
        self.proc.stdin.write((line.replace('\n', ' ') + '\n').encode('utf-8', 'replace'))
        self.proc.stdin.flush()
      except (OSError, ValueError):
        pass

  def close(self) -> None:
    try:
      self.proc.stdin.close()
    except OSError:
      pass
    try:
      self.proc.wait(timeout=5)
    except Exception:  # pylint: disable=broad-except
      self.proc.kill()
    with _Backstop._lock:
      if _Backstop._instance is self:
        _Backstop._instance = None

_cleanups: list[Callable[[], None]] = []
_cleanups_lock = threading.Lock()


def at_forced_exit(fn: Callable[[], None]) -> None:
  """Runs `fn` before a forced exit (e.g. releasing a lock); `cancel_at_forced_exit` undoes it."""
  with _cleanups_lock:
    _cleanups.append(fn)


def cancel_at_forced_exit(fn: Callable[[], None]) -> None:
  with _cleanups_lock:
    if fn in _cleanups:
      _cleanups.remove(fn)


def forced_exit(code: int, message: str) -> None:
  """Prints `message` to stderr, runs the `at_forced_exit` callbacks and ends the process at once with `code`."""
  try:
    sys.stdout.flush()
  except Exception:  # pylint: disable=broad-except
    pass
  try:
    os.write(2, (message.rstrip('\n') + '\n').encode('utf-8', 'replace'))
  except OSError:
    pass
  with _cleanups_lock:
    callbacks = list(reversed(_cleanups))
  for fn in callbacks:
    try:
      fn()
    except Exception:  # pylint: disable=broad-except  (best effort: the process is going away)
      pass
  os._exit(code)  # pylint: disable=protected-access


def main_thread_location() -> str:
  """Where the main thread is now: its innermost frame in this project's code (else its innermost frame)."""
  frame = sys._current_frames().get(threading.main_thread().ident)  # pylint: disable=protected-access
  innermost, ours = None, None
  while frame is not None:
    innermost = innermost or frame
    if ours is None and f'{os.sep}l2p_tf{os.sep}' in frame.f_code.co_filename and not frame.f_code.co_name.startswith(
        '<'):
      ours = frame
    frame = frame.f_back
  frame = ours or innermost
  if frame is None:
    return 'an unknown place'
  return f'{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})'


@contextlib.contextmanager
def phase(name: str, timeout_s: Optional[float], advice: str):
  """Bounds the `with` body to `timeout_s` seconds (None or <= 0: unbounded); see the module docstring."""
  if not timeout_s or timeout_s <= 0:
    yield
    return
  done = threading.Event()

  def watch():
    if not done.wait(timeout_s):
      forced_exit(ERROR_EXIT_CODE, f'error: {name} did not finish within {timeout_s:.0f} s (stuck in '
                                   f'{main_thread_location()}): {advice}')

  key = f'phase-{id(done)}'
  backstop = _Backstop.get()
  if backstop is not None:
    backstop.send(f'arm {key} {timeout_s + BACKSTOP_S} error: {name} did not finish within {timeout_s:.0f} s (stuck '
                  f'in a call that holds the interpreter lock; killed): {advice}')
  thread = threading.Thread(target=watch, name=f'watchdog: {name}', daemon=True)
  thread.start()
  try:
    yield
  finally:
    done.set()
    if backstop is not None:
      backstop.send(f'disarm {key}')


class SignalWatchdog:
  """Acts on SIGTERM / SIGINT within `grace_s` seconds even when the main thread cannot (module docstring).

  Args:
    grace_s: seconds the run gets to start its orderly stop after the first signal.
  """

  def __init__(self, grace_s: float = 10.0):
    self.grace_s = float(grace_s)
    self._acted = threading.Event()
    self._signalled = threading.Event()
    self._reader: Optional[socket.socket] = None
    self._writer: Optional[socket.socket] = None
    self._backstop: Optional[_Backstop] = None
    self._previous_fd = None
    self._thread: Optional[threading.Thread] = None
    self.signal_name: Optional[str] = None

  def install(self) -> 'SignalWatchdog':
    """Starts watching (main thread only; elsewhere it does nothing). Needs Python handlers for the signals."""
    if threading.current_thread() is not threading.main_thread():
      return self
    # wake: the C-level handler writes the signal number; notify: the helper passes it on to this process's thread.
    wake_read, self._writer = socket.socketpair()
    self._reader, notify_write = socket.socketpair()
    self._reader.setblocking(True)
    self._writer.setblocking(False)
    try:
      with _Backstop._lock:  # pylint: disable=protected-access
        if _Backstop._instance is not None:  # pylint: disable=protected-access
          _Backstop._instance.close()  # pylint: disable=protected-access
        self._backstop = _Backstop._instance = _Backstop(  # pylint: disable=protected-access
            wake_read.fileno(), notify_write.fileno(), self.grace_s)
      wake_read.close()
      notify_write.close()
    except OSError:  # No helper process: this process reads the wake-up socket itself.
      self._reader.close()
      notify_write.close()
      self._reader = wake_read
    self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
    self._thread = threading.Thread(target=self._watch, name='watchdog: signals', daemon=True)
    self._thread.start()
    return self

  def uninstall(self) -> None:
    if self._writer is None:
      return
    signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
    self._acted.set()
    try:
      self._reader.shutdown(socket.SHUT_RDWR)
    except OSError:
      pass
    self._reader.close()
    self._writer.close()
    self._reader = self._writer = None
    if self._backstop is not None:
      self._backstop.close()
      self._backstop = None

  def acted(self) -> None:
    """The run has begun its orderly stop: never cut it short."""
    if not self._acted.is_set() and self._backstop is not None:
      self._backstop.send('disarm signal')
    self._acted.set()

  def guard(self, preemption):
    """Makes `preemption.should_stop` report to this watchdog when it asks the loop to stop; returns `preemption`."""
    ask = preemption.should_stop

    def should_stop(step):
      stop = ask(step)
      if stop:
        self.acted()
      return stop

    preemption.should_stop = should_stop
    return preemption

  def _watch(self):
    while True:
      try:
        data = self._reader.recv(64)
      except OSError:
        return
      if not data:
        return
      signums = [b for b in data if b in (signal.SIGTERM, signal.SIGINT)]
      if not signums or self._signalled.is_set():
        continue
      self._signalled.set()
      self.signal_name = signal.Signals(signums[0]).name
      threading.Thread(target=self._expire, name='watchdog: grace', daemon=True).start()

  def _expire(self):
    start = time.monotonic()
    if self._acted.wait(self.grace_s) or self._writer is None:
      return
    forced_exit(PREEMPTED_EXIT_CODE, (
        f'preempted: {self.signal_name} received while the run was in {main_thread_location()}, which cannot stop '
        f'between steps; it exited after {time.monotonic() - start:.0f} s without writing a new checkpoint (the '
        'newest checkpoint in --model_dir is intact). Rerun the same command to resume.'))
