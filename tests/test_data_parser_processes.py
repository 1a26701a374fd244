"""The parser processes uploads are read in (services/parsing.py): errors come back intact, a dead
parser is a clear error and the next call works, and none outlives its server, even a SIGKILLed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tunelab.data.errors import DataError, error
from tunelab.services import parsing


def _refuse(line: int):
    raise error("bad_json", f"line {line} is not valid JSON", "fix it", line=line)


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
def pool():
    yield
    parsing.shutdown()


def test_a_data_error_comes_back_with_its_issues(pool):
    with pytest.raises(DataError) as info:
        parsing.run(_refuse, 7, workers=1)
    assert info.value.codes == ["bad_json"] and info.value.issues[0].line == 7


def test_a_dead_parser_is_a_clear_error_and_the_next_call_works(pool):
    assert parsing.run(os.getpid, workers=1) != os.getpid()
    with pytest.raises(parsing.ParserCrashed):
        parsing.run(_die, workers=1)
    assert parsing.run(os.getpid, workers=1) != os.getpid()


def test_workers_zero_runs_here():
    assert parsing.run(os.getpid, workers=0) == os.getpid()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_parsers_do_not_outlive_a_killed_server():
    """Pool workers hold both ends of their task pipe: without the watch on their parent, 42 of
    them were found orphaned (~250 MB each) after one afternoon of test servers."""
    server = subprocess.Popen([sys.executable, "-c", (
        "import os, time\nfrom tunelab.services import parsing\n"
        "print(parsing.run(os.getpid, workers=2), flush=True)\ntime.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        child = int(server.stdout.readline())
        assert _alive(child)
    finally:
        server.kill()
        server.wait()
    deadline = time.time() + 15
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child), f"parser {child} outlived its server"
