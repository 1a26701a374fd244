"""Deployments as a tenant resource: what may be served together (checked at creation), the plan
the supervisor runs (serving/supervisor.py), which deployment answers a request's `model`, and
the counters and metering of what was served."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session

from ..billing.usage import count_served
from ..contract.deployments import DeploymentCreate
from ..db.models import Deployment, TunedModel
from ..db.scoped import TenantScope
from ..models.catalog import ModelNotFound, UnsafeModel, catalog_spec, resolve_model as resolve_catalog
from ..security.storage import find_model
from ..settings import Settings
from ..strategies import task_named
from .predictions import model_inputs

CHAT_ENDPOINTS = {"chat_completions": "/v1/chat/completions", "completions": "/v1/completions"}


class DeploymentRefused(Exception):
    """A deployment request refused, with the HTTP status, a stable code and the offending field."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


@dataclass
class _Served:
    """One requested model: the tuned row (None for a catalog LM), how it answers, its base."""
    ref: str
    kind: str                    # generate | classify
    base: str
    tuned: TunedModel | None = None


def _serving_of(m: TunedModel) -> str:
    try:
        return task_named((m.metrics or {}).get("task") or "text-classification").serving
    except KeyError:
        return "classify"


def _look_up(scope: TenantScope, ref: str, index: int) -> _Served:
    tuned = scope.find(TunedModel, ref)
    if tuned is not None:
        return _Served(ref, _serving_of(tuned), tuned.base_model, tuned)
    spec = catalog_spec(ref)
    if spec is not None and spec.kind == "causal-lm":
        return _Served(spec.name, "generate", spec.name)
    if spec is not None:
        raise DeploymentRefused(422, "not_servable", f"{ref!r} is a catalog {spec.task} model: deploy a model "
                                "tuned from it (a tuned model id), or a catalog causal LM.", f"models.{index}")
    raise DeploymentRefused(404, "not_found", f"No model with id {ref!r}: send your tuned model ids "
                            "(GET /api/v1/models) or the name of a catalog causal LM.", f"models.{index}")


def _check_together(served: list[_Served], body: DeploymentCreate) -> None:
    """What may share a deployment: one catalog LM alone; one classifier alone; generative tuned
    models of one base (its adapters, loaded once). ONNX engines are for classifiers only."""
    kinds = {s.kind for s in served}
    if len(kinds) > 1:
        raise DeploymentRefused(422, "mixed_kinds", "A deployment serves generative models or one classifier, not "
                                "both: " + ", ".join(f"{s.ref} ({s.kind})" for s in served) + ".", "models")
    kind = served[0].kind
    if kind == "classify" and len(served) > 1:
        raise DeploymentRefused(422, "one_classifier", "A classifier deployment serves exactly one model; "
                                "create one deployment per classifier.", "models")
    if any(s.tuned is None for s in served) and len(served) > 1:
        raise DeploymentRefused(422, "catalog_alone", "A catalog model is deployed on its own: list only it, or "
                                "only tuned models (adapters of one base).", "models")
    bases = {s.base for s in served}
    if len(bases) > 1:
        first = served[0]
        other = next(s for s in served if s.base != first.base)
        raise DeploymentRefused(422, "mixed_bases", f"Generative models in one deployment share one base (their "
                                f"adapters load onto it once): {first.ref} is tuned from {first.base}, {other.ref} "
                                f"from {other.base}. Deploy them separately.", "models")
    if body.engine != "torch" and kind != "classify":
        raise DeploymentRefused(422, "engine_not_supported", f"engine {body.engine!r} serves classifiers only; "
                                "generative models run on torch.", "engine")


def create_deployment(session: Session, tenant_id: str, body: DeploymentCreate, settings: Settings) -> Deployment:
    scope = TenantScope(session, tenant_id)
    count = session.scalar(select(func.count()).select_from(Deployment).where(Deployment.tenant_id == tenant_id))
    if count >= settings.max_deployments_per_tenant:
        raise DeploymentRefused(429, "deployment_quota", f"Your tenant has {count} deployments, the most it may "
                                f"have ({settings.max_deployments_per_tenant}): delete one first "
                                "(DELETE /api/v1/deployments/{id}), or ask the operator to raise "
                                "TUNELAB_MAX_DEPLOYMENTS_PER_TENANT.")
    served = [_look_up(scope, ref, i) for i, ref in enumerate(body.models)]
    _check_together(served, body)
    first = served[0]
    name = body.name.strip() or (first.tuned.name if first.tuned is not None and first.tuned.name else first.ref)
    row = Deployment(name=name[:120], kind=first.kind, models=[s.ref for s in served],
                     base_model=first.base if first.kind == "generate" else None, replicas=body.replicas,
                     idle_seconds=body.idle_seconds, engine=body.engine, batch_window_ms=body.batch_window_ms)
    return scope.add(row)


def list_deployments(session: Session, tenant_id: str) -> list[Deployment]:
    return list(TenantScope(session, tenant_id).list(Deployment, order_by=Deployment.created_at))


def get_deployment(session: Session, tenant_id: str, deployment_id: str) -> Deployment:
    row = TenantScope(session, tenant_id).find(Deployment, deployment_id)
    if row is None:     # another tenant's is the same as none
        raise DeploymentRefused(404, "not_found", f"No deployment with id {deployment_id!r}.")
    return row


def delete_deployment(session: Session, tenant_id: str, deployment_id: str, supervisor) -> None:
    row = get_deployment(session, tenant_id, deployment_id)
    if supervisor is not None:
        supervisor.stop(row.id)
    TenantScope(session, tenant_id).delete(row)


def _base_folder(settings: Settings, tenant_id: str, base: str) -> str:
    """The folder every adapter of the deployment loads onto: the tenant's uploaded model, or the
    catalog's (never a path a client sent: both are looked up by name)."""
    uploaded = find_model(settings.home, tenant_id, base)
    if uploaded is not None:
        return str(uploaded)
    try:
        return str(resolve_catalog(base).path)
    except (ModelNotFound, UnsafeModel) as exc:     # an uploaded base deleted since, or weights gone
        raise DeploymentRefused(409, "base_model_missing", f"The base model {base!r} of this deployment cannot be "
                                f"loaded ({exc}): delete the deployment, or import the base again.") from None


def plan_for(row: Deployment, settings: Settings):
    """The supervisor's plan for a deployment: served name -> artifact path as stored (sealed)."""
    from ..serving.supervisor import DeploymentPlan

    session = object_session(row)
    tuned = {m.id: m for m in TenantScope(session, row.tenant_id).list(TunedModel, TunedModel.id.in_(row.models))}
    missing = [ref for ref in row.models if ref not in tuned and row.base_model != ref]
    if missing:
        raise DeploymentRefused(409, "model_deleted", f"{', '.join(missing)} was deleted after this deployment was "
                                "created: delete the deployment and create it again without it.")
    models = {ref: tuned[ref].artifact_path for ref in row.models if ref in tuned}
    base = base_name = None
    if row.kind == "generate":
        base = _base_folder(settings, row.tenant_id, row.base_model)
        base_name = row.base_model if not models else None      # a catalog LM is served by its own name
    return DeploymentPlan(id=row.id, tenant_id=row.tenant_id, kind=row.kind, models=models, base=base,
                          base_name=base_name, replicas=row.replicas, idle_seconds=row.idle_seconds,
                          engine=row.engine, batch_window_ms=row.batch_window_ms)


def _state(row: Deployment, supervisor) -> dict:
    """The supervisor's view; a deployment it is not running (a fresh API process, or one not yet
    asked for) is idle-unloaded: the next request loads it."""
    try:
        state = supervisor.state(row.id) if supervisor is not None else None
    except KeyError:
        state = None
    state = state or {"state": "stopped", "replicas": [], "restarts": 0, "error": None}
    if state.get("state") == "stopped":     # its row is there: not running, the next request loads it
        state = {**state, "state": "idle-unloaded"}
    return state


def _endpoints(row: Deployment) -> dict:
    if row.kind == "generate":
        return dict(CHAT_ENDPOINTS)
    session = object_session(row)
    images = session is not None and classifier_inputs(session, row) == "image"
    return {"predict": f"/api/v1/deployments/{row.id}/{'predict-images' if images else 'predict'}"}


def view(row: Deployment, supervisor) -> dict:
    state = _state(row, supervisor)
    return {"id": row.id, "object": "deployment", "name": row.name, "kind": row.kind, "models": list(row.models),
            "base_model": row.base_model, "state": state.get("state") or "idle-unloaded", "error": state.get("error"),
            "replicas": row.replicas, "replica_states": state.get("replicas") or [],
            "restarts": int(state.get("restarts") or 0), "idle_seconds": row.idle_seconds, "engine": row.engine,
            "batch_window_ms": row.batch_window_ms, "requests_served": row.requests_served or 0,
            "prompt_tokens": row.prompt_tokens or 0, "completion_tokens": row.completion_tokens or 0,
            "endpoints": _endpoints(row), "created_at": int(row.created_at.timestamp()) if row.created_at else None}


def resolve_model(session: Session, tenant_id: str, model: str) -> tuple[Deployment, str]:
    """The tenant's (oldest) generative deployment serving `model`, and the name it serves it by.
    Another tenant's model is the same as one not deployed: 404."""
    for row in list_deployments(session, tenant_id):
        if row.kind == "generate" and model in (row.models or []):
            return row, model
    hint = "create a deployment serving it: POST /api/v1/deployments {\"models\": [\"" + model[:200] + "\"]}"
    raise DeploymentRefused(404, "model_not_found", f"The model {model[:200]!r} is not deployed in your tenant: {hint}.",
                            "model")


def record_usage(session: Session, tenant_id: str, row: Deployment, *, requests: int = 0, prompt_tokens: int = 0,
                 completion_tokens: int = 0) -> None:
    """Count what a deployment answered on its row, and meter it (serving.per_1k_requests and
    per_1k_tokens): NoCreditForServing when a concurrent request took the last of the credit."""
    count_served(session, tenant_id, requests, prompt_tokens + completion_tokens)
    session.execute(update(Deployment).where(Deployment.id == row.id, Deployment.tenant_id == tenant_id).values(
        requests_served=Deployment.requests_served + requests, prompt_tokens=Deployment.prompt_tokens + prompt_tokens,
        completion_tokens=Deployment.completion_tokens + completion_tokens).execution_options(synchronize_session=False))


def classifier_rows(texts: list[str], labels: list[str], probs: list[list[float]], top_k: int = 5) -> list[dict]:
    """A server's {labels, probs} as /models/{id}/predict answers: the top label, its score, the top k."""
    out = []
    for text, row in zip(texts, probs):
        order = sorted(range(len(row)), key=lambda i: -row[i])[:top_k]
        out.append({"text": text, "label": labels[order[0]], "score": float(row[order[0]]),
                    "scores": {labels[i]: float(row[i]) for i in order}})
    return out


def classifier_inputs(session: Session, row: Deployment) -> str | None:
    """What a classifier deployment's model takes ("text" | "image"); None for a generative one."""
    if row.kind != "classify" or not row.models:
        return None
    m = TenantScope(session, row.tenant_id).find(TunedModel, row.models[0])
    return model_inputs(m) if m is not None else None


def image_rows(labels: list[str], probs: list[list[float]], top_k: int = 5) -> list[dict]:
    """A server's {labels, probs} for images as /models/{id}/predict-images answers, by index."""
    return [{"index": i, "filename": None, **{k: v for k, v in row.items() if k != "text"}}
            for i, row in enumerate(classifier_rows([""] * len(probs), labels, probs, top_k))]

