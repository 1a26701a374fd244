"""Webhooks for job events; each delivery is listed with a short excerpt of its response.

Admins only, reading included: a hook's URL names an internal or partner system, and a reply
excerpt is what that system answered."""

from __future__ import annotations

import secrets

from fastapi import APIRouter

from ...db.models import Webhook, WebhookDelivery
from ...jobs.webhooks import EVENTS
from ...security import storage
from ...security.egress import AllowList, url_problem
from ..deps import AdminDep, ScopeDep, SettingsDep, audit
from ...contract import Deleted, Webhook as WebhookOut, WebhookDeliveryList, WebhookList
from ..errors import AUTH, APIError, errors
from ..schemas import WebhookCreate, delivery_out, webhook_out
from ..routing import ContractRoute

router = APIRouter(route_class=ContractRoute, prefix="/api/v1/webhooks", tags=["webhooks"])


@router.post("", status_code=201, response_model=WebhookOut, responses=errors(*AUTH, 400, 403, 409, 422))
def create_webhook(body: WebhookCreate, scope: ScopeDep, admin: AdminDep, settings: SettingsDep):
    unknown = sorted(set(body.events) - set(EVENTS))
    if unknown:
        raise APIError(422, "invalid_event", f"Unknown events {unknown}; choose from {list(EVENTS)}.", "events")
    # Literal internal addresses are refused here to say so at once; names are checked (again) at
    # each delivery, against what they resolve to then.
    problem = url_problem(body.url, AllowList.parse(settings.webhook_allowed_hosts))
    if problem:
        raise APIError(422, "webhook_url_not_allowed",
                       f"{problem}. Webhooks go to public addresses only; an operator can allow internal "
                       "receivers with the TUNELAB_WEBHOOK_ALLOWED_HOSTS setting.", "url")
    count = len(scope.list(Webhook))        # at most the cap: a short list
    if count >= settings.webhook_max_per_tenant:
        raise APIError(409, "webhook_limit", f"This tenant has {count} webhooks, the most allowed "
                       f"(TUNELAB_WEBHOOK_MAX_PER_TENANT); delete one first.")
    secret = "whsec_" + secrets.token_urlsafe(24)
    # Stored encrypted with the tenant's key; shown in clear this once.
    hook = scope.add(Webhook(url=body.url, events=body.events,
                             secret=storage.cipher(settings.home, scope.tenant_id).encrypt_text(secret)))
    audit(scope.session, admin, "webhook.create", hook.id, url=body.url)
    return webhook_out(hook) | {"secret": secret, "note": "Verify deliveries with this secret; it is not shown again."}


@router.get("", response_model=WebhookList, responses=errors(*AUTH, 403))
def list_webhooks(scope: ScopeDep, admin: AdminDep):
    return {"data": [webhook_out(h) for h in scope.list(Webhook, order_by=Webhook.created_at)]}


@router.delete("/{webhook_id}", response_model=Deleted, responses=errors(*AUTH, 403, 404))
def delete_webhook(webhook_id: str, scope: ScopeDep, admin: AdminDep):
    scope.delete(scope.get(Webhook, webhook_id, "webhook"))
    audit(scope.session, admin, "webhook.delete", webhook_id)
    return {"id": webhook_id, "deleted": True}


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryList, responses=errors(*AUTH, 403, 404, 422))
def deliveries(webhook_id: str, scope: ScopeDep, admin: AdminDep, limit: int = 100):
    scope.get(Webhook, webhook_id, "webhook")
    rows = scope.list(WebhookDelivery, WebhookDelivery.webhook_id == webhook_id,
                      order_by=WebhookDelivery.created_at.desc(), limit=max(1, min(limit, 1000)))
    return {"data": [delivery_out(d) for d in rows]}
