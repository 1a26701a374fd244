"""Remote mode: `tunelab --server URL --api-key K <command>` drives a tunelab server through the
SDK (filled in with the SDK)."""

from __future__ import annotations


def extend(sub, groups) -> None:
    pass
