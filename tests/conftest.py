"""Shared fixtures: real data from ../shared (copied, never touched in place) and a private
TUNELAB_HOME per test session."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets" / "text-classification"
BANKING_CLASSES = ["card_arrival", "card_not_working", "exchange_rate", "lost_or_stolen_card",
                   "pending_top_up", "top_up_failed", "transfer_timing", "verify_my_identity",
                   "wrong_exchange_rate_for_cash_withdrawal", "atm_support"]


@pytest.fixture(scope="session", autouse=True)
def tunelab_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("tunelab-home")
    os.environ["TUNELAB_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return home


@pytest.fixture(scope="session")
def shared_copy(tmp_path_factory) -> Path:
    """The shared text-classification files, copied into a temp folder."""
    dest = tmp_path_factory.mktemp("shared")
    for f in SHARED.iterdir():
        shutil.copy(f, dest / f.name)
    return dest


def _subset(src: Path, dest: Path, per_class: int) -> Path:
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    taken: dict[str, int] = {}
    keep = []
    for r in rows:
        c = r["category"]
        if c in BANKING_CLASSES and taken.get(c, 0) < per_class:
            taken[c] = taken.get(c, 0) + 1
            keep.append(r)
    with open(dest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(keep)
    return dest


@pytest.fixture(scope="session")
def banking_subset(shared_copy, tmp_path_factory) -> tuple[Path, Path]:
    """Banking77 restricted to 10 intents: 40 training and 40 test texts each."""
    d = tmp_path_factory.mktemp("banking")
    return (_subset(shared_copy / "banking77_train.csv", d / "train.csv", 40),
            _subset(shared_copy / "banking77_test.csv", d / "test.csv", 40))


def pytest_terminal_summary(terminalreporter):
    """Say at the end, loudly, what was not tested because the machine lacks a system package."""
    from sysdeps import PREFIX

    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        text = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if PREFIX in text:
            reason = text[text.index(PREFIX):]
            reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("NOT TESTED: missing system dependencies", sep="!", red=True, bold=True)
        for reason, n in sorted(reasons.items()):
            terminalreporter.write_line(f"{n} skipped: {reason}")
        terminalreporter.write_line("`make test` installs them (scripts/system-deps test) and fails instead of skipping.")


@pytest.hookimpl(tryfirst=True)     # before `-m 'not slow'` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if item.get_closest_marker("slow_on_postgresql") and callspec and callspec.params.get("backend") == "postgresql":
            item.add_marker(pytest.mark.slow)
