"""`make demo`'s console: the banner lists every sample dataset it uploaded (banking77_test.csv as
the test set of banking77_train.csv), then one readable line per event: no JSON log lines, no
line per routine request, no progress bars from model loading. Operators keep JSON logs
(TUNELAB_LOG_JSON=true)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from service.server_proc import free_port

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets" / "text-classification"
EVENT = re.compile(r"^\d\d:\d\d:\d\d (warning: |error: )?\S")
BARS = ("Loading weights", "it/s]", "%|", "█")


def small_samples(dest: Path) -> Path:
    """The four sample files, cut short (the demo's example run trains on the first, SMS spam,
    with both labels well represented)."""
    dest.mkdir()
    taken = {"ham": 0, "spam": 0}
    with open(SAMPLES / "sms_spam.tsv", encoding="utf-8") as f, open(dest / "sms_spam.tsv", "w", encoding="utf-8") as out:
        for line in f:
            label = line.split("\t", 1)[0]
            if taken.get(label, 99) < 80:
                taken[label] += 1
                out.write(line)
    for name in ("banking77_train.csv", "banking77_test.csv", "financial_phrasebank.csv"):
        with open(SAMPLES / name, encoding="utf-8") as f:
            lines = [next(f) for _ in range(201)]
        (dest / name).write_text("".join(lines), encoding="utf-8")
    return dest


def _record(msg: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord("tunelab.api", logging.INFO, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return record


def test_console_lines_are_one_readable_line_per_event(capsys):
    from tunelab import logs

    logs.configure("INFO", json_logs=False, repeat_window=30)
    log = logging.getLogger("tunelab.api")
    log.info("request", extra={"method": "GET", "path": "/jobs", "status": 200, "ms": 3.1})    # routine: hidden
    log.warning("request", extra={"method": "POST", "path": "/api/v1/jobs", "status": 402, "ms": 9.0})
    log.info("job running: training started.", extra={"job": "ftjob-1"})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert all(EVENT.match(line) and not line.startswith("{") for line in lines), lines
    assert lines[1].endswith("job running: training started.  job=ftjob-1")

    logs.configure("INFO", json_logs=True, repeat_window=30)      # what an operator's log shipper reads
    log.info("request", extra={"method": "GET", "path": "/jobs", "status": 200, "ms": 3.1})
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["path"] == "/jobs"
    logs.configure("INFO", json_logs=False, repeat_window=30)


def test_demo_console(tmp_path):
    """`tunelab demo` started for real (a fresh home, short sample files) until its example run
    is training: the banner, then events, not bars or JSON. (A job's own output goes to its log
    file, never to this console; the server's own model loads are quieted by quiet_libraries.)"""
    port = free_port()
    env = {**os.environ, "TUNELAB_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("TUNELAB_LOG_JSON", None)
    proc = subprocess.Popen([sys.executable, "-m", "tunelab.server", "demo", "--port", str(port),
                             "--samples", str(small_samples(tmp_path / "samples"))],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not any(re.search(r"job (running|succeeded|failed|cancelled)", l) for l in lines):
            assert proc.poll() is None, "\n".join(lines)
            time.sleep(0.5)
        # a few page loads (routine requests) are not console lines
        for path in ("/healthz", "/login", "/static/app.css"):
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
        time.sleep(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)      # the example run's sandbox, if it outlived the server
            except ProcessLookupError:
                pass
        reader.join(timeout=10)
    text = "\n".join(lines)
    assert "job running" in text, text
    banner = next(l for l in lines if "Sample datasets uploaded:" in l)
    for name in ("sms_spam.tsv", "banking77_train.csv", "banking77_test.csv (the test set of banking77_train.csv)",
                 "financial_phrasebank.csv"):
        assert name in banner, banner
    events = lines[lines.index(next(l for l in lines if l.startswith("tunelab serving"))) + 1:]
    assert events, text
    for line in events:
        assert not line.lstrip().startswith("{"), line                      # no JSON log line
        assert not any(bar in line for bar in BARS), line                    # no progress bar
        assert EVENT.match(line) or not line.strip(), line
    assert not any(" request " in l or l.endswith(" request") for l in events), events
    assert all(bar not in text for bar in BARS), text
