"""Names typed into the web forms: checked like the API's body (1-120 printable characters,
trimmed), so a page never stores what PATCH would refuse."""

from __future__ import annotations

from pydantic import ValidationError

from ..api.schemas import Rename
from ..db.scoped import TenantScope
from .deps import checked_form, need

NAME_RULE = "A name is 1 to 120 characters, without tabs or line breaks."


def checked_name(raw) -> str | None:
    """The trimmed name, or None when the API would refuse it."""
    if not isinstance(raw, str):
        return None
    try:
        return Rename(name=raw).name
    except ValidationError:
        return None


async def rename_form(request, user, session, model, obj_id: str, what: str) -> tuple[TenantScope, str | None]:
    """A rename form posted for one of the tenant's rows: (its scope, the checked name or None).
    Members only; another tenant's id is 404 before the name is looked at."""
    need(user, "member")
    form = await checked_form(request, user)
    scope = TenantScope(session, user.tenant_id)
    scope.get(model, obj_id, what)
    return scope, checked_name(form.get("name"))
