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

  thread = threading.Thread(target=watch, name=f'watchdog: {name}', daemon=True)
  thread.start()
  try:
    yield
  finally:
    done.set()


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
    self._previous_fd = None
    self._thread: Optional[threading.Thread] = None
    self.signal_name: Optional[str] = None

  def install(self) -> 'SignalWatchdog':
    """Starts watching (main thread only; elsewhere it does nothing). Needs Python handlers for the signals."""
    if threading.current_thread() is not threading.main_thread():
      return self
    self._reader, self._writer = socket.socketpair()
    self._reader.setblocking(True)
    self._writer.setblocking(False)
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

  def acted(self) -> None:
    """The run has begun its orderly stop: never cut it short."""
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
