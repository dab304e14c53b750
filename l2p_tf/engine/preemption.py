"""Stopping a run on request, and the errors a run ends with.

SIGTERM (a preemption notice) or SIGINT becomes a request to stop after the current train step; the loop then saves
a checkpoint and the results so far and raises `PreemptedError` (exit code 75: rerun the same command to resume).
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: a temporary failure; rerunning the same command resumes.


class PreemptedError(RuntimeError):
  """Training stopped on request (SIGTERM / SIGINT) after writing a checkpoint; rerun the same command to resume."""


class NonFiniteLossError(RuntimeError):
  """A train step produced a NaN / Inf loss or gradient; the run stopped and kept its last good checkpoint."""


class Preemption:
  """Turns SIGTERM / SIGINT into a request to stop after the current train step.

  A second signal while stopping is ignored, so the checkpoint write is not cut short by an impatient repeat.
  `uninstall` restores the handlers that were there before `install`. Subclasses may stop for other reasons by
  overriding `should_stop` (e.g. at a given step).
  """

  def __init__(self):
    self.requested: Optional[str] = None
    self._previous = {}

  def install(self) -> 'Preemption':
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def uninstall(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.requested is None:
      self.requested = signal.Signals(signum).name
      print(f'\n{self.requested} received: finishing the current step, then writing a checkpoint...', flush=True)

  def should_stop(self, step: int) -> bool:  # pylint: disable=unused-argument
    """Whether to stop before the step after global step `step` (checked between every two steps)."""
    return self.requested is not None
