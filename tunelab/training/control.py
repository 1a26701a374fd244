"""Asking a running training to stop at the next step boundary, with a checkpoint.

A job process gets SIGTERM when a user cancels it (or, later, when its credit runs out); the
signal handler only records the request here, and the loop, at its next optimizer step, writes a
checkpoint and raises `TrainingStopped`. Process-wide on purpose: signals are process-wide too.
"""

from __future__ import annotations

import threading


class TrainingStopped(RuntimeError):
    def __init__(self, step: int, reason: str):
        super().__init__(f"training stopped at step {step}: {reason}")
        self.step, self.reason = step, reason


_lock = threading.Lock()
_reason: str | None = None


def request_stop(reason: str = "stop requested") -> None:
    global _reason
    with _lock:
        _reason = _reason or reason


def stop_requested() -> str | None:
    return _reason


def clear() -> None:
    global _reason
    with _lock:
        _reason = None
