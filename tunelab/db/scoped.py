"""Tenant scoping, in one place. Routes get a `TenantScope` for the caller's tenant and reach
tenant-owned rows only through it: a row of another tenant is indistinguishable from a row
that does not exist (NotFound -> 404 on every route)."""

from __future__ import annotations

from typing import Sequence, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from .models import TENANT_OWNED

T = TypeVar("T")


class NotFound(LookupError):
    def __init__(self, kind: str, ident: str):
        super().__init__(f"No {kind} with id {ident!r}.")
        self.kind, self.ident = kind, ident


class TenantScope:
    def __init__(self, session: Session, tenant_id: str):
        self.session, self.tenant_id = session, tenant_id

    def _check(self, model: type) -> None:
        if model not in TENANT_OWNED:
            raise TypeError(f"{model.__name__} is not tenant-owned")

    def select(self, model: type[T]) -> Select:
        self._check(model)
        return select(model).where(model.tenant_id == self.tenant_id)

    def get(self, model: type[T], ident, kind: str | None = None) -> T:
        obj = self.find(model, ident)
        if obj is None:
            raise NotFound(kind or model.__tablename__.rstrip("s").replace("_", " "), str(ident))
        return obj

    def find(self, model: type[T], ident) -> T | None:
        self._check(model)
        obj = self.session.get(model, ident)
        return obj if obj is not None and obj.tenant_id == self.tenant_id else None

    def list(self, model: type[T], *where, order_by=None, limit: int | None = None) -> Sequence[T]:
        q = self.select(model).where(*where)
        if order_by is not None:
            q = q.order_by(order_by)
        if limit is not None:
            q = q.limit(limit)
        return self.session.scalars(q).all()

    def add(self, obj: T) -> T:
        self._check(type(obj))
        obj.tenant_id = self.tenant_id     # whatever a request body said: the caller's tenant
        self.session.add(obj)
        self.session.flush()
        return obj

    def delete(self, obj) -> None:
        self._check(type(obj))
        if obj.tenant_id != self.tenant_id:
            raise NotFound(type(obj).__tablename__, str(getattr(obj, "id", "?")))
        self.session.delete(obj)
