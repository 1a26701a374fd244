"""Structured JSON logs for the service (one object a line; extra= fields included)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in record.__dict__.items() if k not in _STD and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class HumanFormatter(logging.Formatter):
    """One readable line an event for a person at a console: `12:01:02 job started  job=ftjob-1`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STD and not k.startswith("_"))
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {level}{record.getMessage()}"
        line += f"  {fields}" if fields else ""
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _not_routine_request(record: logging.LogRecord) -> bool:
    """A person's console shows failed requests only; a log shipper (JSON) gets every one."""
    return not (record.getMessage() == "request" and (getattr(record, "status", None) or 0) < 400)


class RepeatFilter(logging.Filter):
    """Identical warnings and errors (same logger, message, error) logged once a window, then one
    line with the count of those dropped: a database outage fails every request, every worker
    poll and every webhook round the same way, and the log must stay readable (and small).
    The count is written with the first record the handler sees after the window."""

    def __init__(self, handler: logging.Handler, window: float):
        super().__init__()
        self.handler, self.window = handler, window
        self._seen: dict[tuple, list] = {}        # key -> [window start, dropped, a record like them]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_summary", False):
            return True
        now, due = time.monotonic(), []
        with self._lock:
            due = [k for k, v in self._seen.items() if now - v[0] >= self.window]
            ended = [self._seen.pop(k) for k in due]
            keep = True
            if record.levelno >= logging.WARNING:
                key = _repeat_key(record)
                seen = self._seen.get(key)
                if seen is not None:
                    seen[1] += 1
                    keep = False
                else:
                    self._seen[key] = [now, 0, record]
        for start, dropped, like in ended:
            if dropped:
                self.handler.handle(_summary(like, dropped, now - start))
        return keep


def _repeat_key(record: logging.LogRecord) -> tuple:
    exc = record.exc_info[1] if record.exc_info else None
    return (record.name, record.levelno, record.getMessage(), str(getattr(record, "error", "")),
            type(exc).__name__ if exc else "", str(exc)[:300] if exc else "")


def _summary(like: logging.LogRecord, dropped: int, seconds: float) -> logging.LogRecord:
    record = logging.LogRecord(like.name, like.levelno, like.pathname, like.lineno,
                               f"{like.getMessage()} (repeated)", None, None)
    record.repeated, record.window_s, record._summary = dropped, round(seconds, 1), True
    if hasattr(like, "error"):
        record.error = like.error
    return record


def quiet_libraries() -> None:
    """Keep the libraries' own noise (weight-loading progress bars, deprecation and advisory
    warnings of transformers, TRL, peft, torch) out of the CLI's, the demo's and the jobs' output:
    tunelab reports progress itself. Set before those libraries are imported; TUNELAB_LIBRARY_NOISE=1
    shows it again."""
    import os
    import warnings

    if os.environ.get("TUNELAB_LIBRARY_NOISE") == "1":
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for module in ("transformers", "trl", "peft", "torch", "accelerate", "setfit", "datasets", "sentence_transformers"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    try:      # already imported (tests): silence its progress bars directly
        import sys as _sys

        if "transformers" in _sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
    except Exception:   # noqa: BLE001 - cosmetics must never stop a command
        pass


def configure(level: str = "INFO", json_logs: bool = True, repeat_window: float | None = None) -> None:
    from .settings import get_settings

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else HumanFormatter())
    window = get_settings().log_repeat_window_seconds if repeat_window is None else repeat_window
    repeats = RepeatFilter(handler, window)
    handler.addFilter(repeats)
    # uvicorn reports what escapes the app ("Exception in ASGI application") on its own logger.
    logging.getLogger("uvicorn.error").addFilter(repeats)
    if not json_logs:
        handler.addFilter(_not_routine_request)
    root = logging.getLogger("tunelab")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
