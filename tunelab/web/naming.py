"""Names typed into the web forms: checked like the API's body (1-120 printable characters,
trimmed), so a page never stores what PATCH would refuse."""

from __future__ import annotations

from pydantic import ValidationError

from ..api.schemas import Rename

NAME_RULE = "A name is 1 to 120 characters, without tabs or line breaks."


def checked_name(raw) -> str | None:
    """The trimmed name, or None when the API would refuse it."""
    if not isinstance(raw, str):
        return None
    try:
        return Rename(name=raw).name
    except ValidationError:
        return None
