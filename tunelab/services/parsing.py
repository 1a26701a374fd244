"""Parsing and validating users' files in separate processes, never in the API's.

Why a process and not a thread: the API process also runs the event loop and the in-process
worker's heartbeats, and they share one GIL with any thread. Linear-time parsers are not enough:
reading a 100k-row file allocates a million small containers, and each of Python's full garbage
collections that this triggers walks every object in the process (the ML libraries' too) while
holding the GIL: measured 0.1-0.45 s per collection, 19 of them for one 12 MB upload, with
/healthz waiting up to a second. In a child process neither the collections nor a first
upload's library imports touch the API.

The children are spawned (not forked: the API process has threads) on first use and live as
long as the server: each one watches its parent and exits when the server is gone, however it
ended (a pool worker holds both ends of its own task pipe, so it never sees EOF and would
otherwise outlive a SIGKILLed server forever). A child that dies (out of memory, killed) fails
that call with `ParserCrashed`, and the next call starts fresh children.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

log = logging.getLogger(__name__)

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_size = 0


class ParserCrashed(RuntimeError):
    """The process reading a file died before answering (the file is not at fault, or is: either
    way nothing was stored)."""


def run(fn, /, *args, workers: int, **kwargs):
    """fn(*args, **kwargs) in a parser process (`workers` of them at most); in this process when
    `workers` is 0 (the library, the CLI and the demo's seeding have no event loop to protect).
    Exceptions raised by fn come back as they are; fn and its arguments must pickle."""
    if workers <= 0:
        return fn(*args, **kwargs)
    pool = _get(workers)
    try:
        return pool.submit(fn, *args, **kwargs).result()
    except BrokenProcessPool:
        _discard(pool)
        log.error("a parser process died while reading an upload; starting fresh ones")
        raise ParserCrashed("the process reading the file stopped before it finished") from None


def _get(workers: int) -> ProcessPoolExecutor:
    global _pool, _size
    with _lock:
        if _pool is None or _size != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_exit_with, initargs=(os.getpid(),))
            _size = workers
        return _pool


def _exit_with(parent: int, every_s: float = 1.0) -> None:
    """In a parser process: leave as soon as `parent` (the server) is no longer our parent."""
    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(0)         # nothing to flush: a parse in flight has no one to answer to
    threading.Thread(target=watch, name="exit-with-server", daemon=True).start()


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop the parser processes (the server's shutdown; tests)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
