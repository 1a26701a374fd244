"""A typed Python client for a tunelab server: upload data, run and watch jobs, predict.

    from tunelab.sdk import Client

    with Client("http://127.0.0.1:8000", api_key="tl-...") as tl:
        ds = tl.datasets.upload("train.csv")
        job = tl.jobs.create(ds.id, strategy="linear-probe")
        job = tl.jobs.watch(job.id, on_event=lambda e: print(e.type, e.message))
        print(tl.models.predict(job.fine_tuned_model, ["my card has not arrived"])[0].label)

It needs only httpx and pydantic: it never imports tunelab's server. Every error the server
answers raises `APIError` (status, code, message, param); an unreachable server raises
`APIConnectionError` (a subclass, status 0)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import httpx

# The response models are the server's own (tunelab.contract: pydantic only, no server code), so
# the client and the server cannot drift apart.
from .contract import (TERMINAL, ApiKey, Comparison, Dataset, Deployment, EventPage, Infrastructure, Job,  # noqa: F401
                       JobError, ImagePrediction, JobEvent, Model, Prediction, Tenant, Webhook, WebhookDelivery)

__all__ = ["Client", "APIError", "APIConnectionError", "Dataset", "Job", "JobEvent", "EventPage", "Model",
           "Prediction", "ImagePrediction", "Comparison", "ApiKey", "Webhook", "WebhookDelivery", "Tenant", "Infrastructure", "Deployment", "TERMINAL"]


class APIError(Exception):
    """The server's error: HTTP `status`, stable `code`, `message`, the offending `param`, and
    the whole error object in `body` (e.g. `issues` for a file that does not validate)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 type: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.type = status, code, message, param, type
        self.body = body or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})" if self.status else self.message


class APIConnectionError(APIError):
    def __init__(self, message: str):
        super().__init__(0, "connection_error", message)


def _path(value: str) -> str:
    return quote(str(value), safe="/:@")


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _budget(budget: str | float | None = None, budget_usd: float | None = None, exhaustive: bool = False) -> dict:
    """A comparison's limits as the API takes them: `budget` as seconds or "90s", "10m", "1h30m"
    (read here: the API takes `budget_seconds`, a number), `budget_usd` in dollars."""
    out: dict = {}
    if budget is not None:
        from .engine.budget import parse_duration     # no torch: a regex and arithmetic

        out["budget_seconds"] = parse_duration(budget)
    if budget_usd is not None:
        out["budget_usd"] = budget_usd
    if exhaustive:
        out["exhaustive"] = True
    return out


class _Resource:
    def __init__(self, client: "Client"):
        self._c = client


class Datasets(_Resource):
    def upload(self, path: str | Path, text_column: str | None = None, label_column: str | None = None,
               purpose: str | None = None, name: str | None = None, sheet: str | None = None) -> Dataset:
        """A text+label table, or data for a chat model (conversations in JSONL: OpenAI `messages`,
        ShareGPT, alpaca; plain text; prompt/chosen/rejected pairs): the content decides, and the
        returned dataset's `task` says which (text-classification, chat, preference). `name`: what
        people call it (default: the file name without its suffix). `sheet`: an Excel workbook's sheet
        (default: the first with data)."""
        path = Path(path)
        form = _drop_none({"text_column": text_column, "label_column": label_column, "purpose": purpose,
                           "name": name, "sheet": sheet})
        with open(path, "rb") as fh:
            return Dataset(**self._c.request("POST", "/api/v1/datasets", files={"file": (path.name, fh)},
                                             data=form))

    def list(self) -> list[Dataset]:
        return [Dataset(**d) for d in self._c.request("GET", "/api/v1/datasets")["data"]]

    def get(self, dataset_id: str) -> Dataset:
        return Dataset(**self._c.request("GET", f"/api/v1/datasets/{_path(dataset_id)}"))

    def preview(self, dataset_id: str, limit: int = 20) -> list[dict]:
        """The first rows, each with its `line`: `text` and `label` for a table; `messages` (role,
        content) for conversations and plain text; `prompt`, `chosen`, `rejected` for pairs."""
        return self._c.request("GET", f"/api/v1/datasets/{_path(dataset_id)}/preview", params={"limit": limit})["data"]

    def rename(self, dataset_id: str, name: str) -> Dataset:
        """A new name (1-120 printable characters, trimmed); the id stays."""
        return Dataset(**self._c.request("PATCH", f"/api/v1/datasets/{_path(dataset_id)}", json={"name": name}))

    def drop_error_rows(self, dataset_id: str) -> Dataset:
        """A new dataset without the rows that have errors (empty text, no label, a label with a
        single example); the original is kept. `stats["derived_from"]` names it and the lines dropped."""
        return Dataset(**self._c.request("POST", f"/api/v1/datasets/{_path(dataset_id)}/drop-error-rows"))

    def choose_columns(self, dataset_id: str, text_column: str, label_column: str) -> Dataset:
        """Which column (of `report["columns"]`) is the text and which the label: validated again."""
        return Dataset(**self._c.request("POST", f"/api/v1/datasets/{_path(dataset_id)}/columns",
                                         json={"text_column": text_column, "label_column": label_column}))

    def delete(self, dataset_id: str) -> dict:
        return self._c.request("DELETE", f"/api/v1/datasets/{_path(dataset_id)}")


class Jobs(_Resource):
    def create(self, dataset_id: str | None = None, strategy: str | None = None, model: str | None = None,
               params: dict | None = None, test_dataset_id: str | None = None, limit: int | None = None,
               idempotency_key: str | None = None, processes: int | None = None, **extra: Any) -> Job:
        """`processes`: train on that many data-parallel processes (one GPU each on a GPU worker;
        only strategies with a training loop; the batch size stays the global batch); the job's
        `placement` then says where it runs. `extra`: other JobSpec fields (seed, suffix, auto_fit, metadata; for a compare job
        kind="compare", strategies, strategy_params, budget_seconds, budget_usd, exhaustive, or
        `budget="10m"`; for a hardware benchmark kind="bench-hardware", quick, sweep, and no dataset:
        see Client.run_hardware_benchmark). No strategy or model: the server's defaults for the
        dataset's task (lora on minilm for labelled texts, sft-lora on smollm2 for conversations, dpo
        for preference pairs)."""
        if "budget" in extra:
            extra.update(_budget(extra.pop("budget")))
        body = _drop_none({"dataset_id": dataset_id, "strategy": strategy, "model": model, "params": params or {},
                           "test_dataset_id": test_dataset_id, "limit": limit, "processes": processes, **extra})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job(**self._c.request("POST", "/api/v1/jobs", json=body, headers=headers))

    def estimate(self, dataset_id: str | None = None, strategy: str | None = None, model: str | None = None, params: dict | None = None,
                 test_dataset_id: str | None = None, limit: int | None = None, **extra: Any) -> dict:
        """What the job would cost and take before it starts: cost_usd, cost_range_usd, wall_seconds(_range),
        reserve_usd, and whether it would start now (would_start, missing_usd, quota)."""
        if "budget" in extra:
            extra.update(_budget(extra.pop("budget")))
        body = _drop_none({"dataset_id": dataset_id, "strategy": strategy, "model": model, "params": params or {},
                           "test_dataset_id": test_dataset_id, "limit": limit, **extra})
        return self._c.request("POST", "/api/v1/jobs/estimate", json=body)

    def list(self, limit: int = 50, status: str | None = None) -> list[Job]:
        params = _drop_none({"limit": limit, "status": status})
        return [Job(**j) for j in self._c.request("GET", "/api/v1/jobs", params=params)["data"]]

    def get(self, job_id: str) -> Job:
        return Job(**self._c.request("GET", f"/api/v1/jobs/{_path(job_id)}"))

    def cancel(self, job_id: str) -> Job:
        return Job(**self._c.request("POST", f"/api/v1/jobs/{_path(job_id)}/cancel"))

    def resume(self, job_id: str) -> Job:
        """Resume a cancelled or paused training run from its last checkpoint (same id; the steps
        already charged are not charged again). A job's `resumable` and `resume_note` say whether
        it can be; otherwise the server answers 409 with the reason."""
        return Job(**self._c.request("POST", f"/api/v1/jobs/{_path(job_id)}/resume"))

    def download_output(self, job_id: str, path: str | Path) -> Path:
        """A finished batch-prediction job's output (CSV or JSONL), streamed into `path`."""
        path = Path(path)
        with self._c._http.stream("GET", f"/api/v1/jobs/{_path(job_id)}/output") as r:
            if r.status_code >= 400:
                r.read()
                raise _error(r)
            with open(path, "wb") as fh:
                for piece in r.iter_bytes():
                    fh.write(piece)
        return path

    def events(self, job_id: str, after: int = 0, limit: int = 500, type: str | None = None) -> EventPage:
        params = _drop_none({"after": after, "limit": limit, "type": type})
        return EventPage(**self._c.request("GET", f"/api/v1/jobs/{_path(job_id)}/events", params=params))

    def watch(self, job_id: str, on_event: Callable[[JobEvent], Any] | None = None, after: int = 0,
              poll_interval: float = 1.0, timeout: float | None = None) -> Job:
        """Poll the job's events (each one passed to `on_event`, in order, once) until the job
        reaches a terminal status; returns the final Job. `timeout` seconds: TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            after, full = self._drain(job_id, after, on_event)
            if full:
                continue
            job = self.get(job_id)
            if job.is_terminal:      # the terminal status event is committed with the status
                self._drain(job_id, after, on_event)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f}s")
            time.sleep(poll_interval)

    def _drain(self, job_id: str, after: int, on_event) -> tuple[int, bool]:
        page = self.events(job_id, after=after)
        for event in page.data:
            if on_event is not None:
                on_event(event)
        return page.last_id, len(page.data) >= 500


class Comparisons(_Resource):
    def create(self, dataset_id: str, strategies: list[str] | None = None, model: str | None = None,
               test_dataset_id: str | None = None, strategy_params: dict | None = None, limit: int | None = None,
               seed: int = 0, idempotency_key: str | None = None, budget: str | float | None = None,
               budget_usd: float | None = None, exhaustive: bool = False) -> Comparison:
        """No strategies or model: the defaults of the dataset's task. `budget`: wall seconds or
        "90s", "10m", "1h30m"; `budget_usd`: dollars of compute; the
        comparison stops at whichever comes first. `exhaustive`: every candidate runs to the end.
        A bad `budget` raises ValueError before anything is sent."""
        body = _drop_none({"dataset_id": dataset_id, "strategies": strategies, "model": model,
                           "test_dataset_id": test_dataset_id, "strategy_params": strategy_params,
                           "limit": limit, "seed": seed, **_budget(budget, budget_usd, exhaustive)})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Comparison(**self._c.request("POST", "/api/v1/comparisons", json=body, headers=headers))

    def list(self) -> list[Comparison]:
        return [Comparison(**c) for c in self._c.request("GET", "/api/v1/comparisons")["data"]]

    def get(self, comparison_id: str) -> Comparison:
        return Comparison(**self._c.request("GET", f"/api/v1/comparisons/{_path(comparison_id)}"))


class Models(_Resource):
    def list(self) -> list[Model]:
        return [Model(**m) for m in self._c.request("GET", "/api/v1/models")["data"]]

    def get(self, model_id: str) -> Model:
        return Model(**self._c.request("GET", f"/api/v1/models/{_path(model_id)}"))

    def predict(self, model_id: str, texts: list[str] | str) -> list[Prediction]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = self._c.request("POST", f"/api/v1/models/{_path(model_id)}/predict", json={"texts": texts})
        return [Prediction(**p) for p in out["data"]]

    def predict_images(self, model_id: str, images: list[str | Path | bytes] | str | Path | bytes) -> list[ImagePrediction]:
        """Classify images with a tuned image classifier: file paths (sent as multipart files) or
        bytes (sent as base64 JSON); up to 16 a call. The answers come back in the same order."""
        import base64

        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if all(isinstance(i, (bytes, bytearray)) for i in items):
            body = {"images": [base64.b64encode(bytes(i)).decode("ascii") for i in items]}
            out = self._c.request("POST", f"/api/v1/models/{_path(model_id)}/predict-images", json=body)
        else:
            files = [("files", (Path(i).name, Path(i).read_bytes())) if not isinstance(i, (bytes, bytearray))
                     else ("files", (f"image-{n}", bytes(i))) for n, i in enumerate(items)]
            out = self._c.request("POST", f"/api/v1/models/{_path(model_id)}/predict-images/files", files=files)
        return [ImagePrediction(**p) for p in out["data"]]

    def artifact(self, model_id: str) -> dict:
        return self._c.request("GET", f"/api/v1/models/{_path(model_id)}/artifact")

    def batch_predict(self, model_id: str, path: str | Path | None = None, *, file_id: str | None = None,
                      top_k: int = 3, format: str = "csv", text_column: str | None = None,
                      idempotency_key: str | None = None) -> Job:
        """Label every text of a file (CSV, TSV, JSONL or text, one a line; or `file_id`, a file already
        uploaded) with a tuned classifier: a job (kind batch-predict). Follow it with
        `jobs.watch(job.id)`, then `jobs.download_output(job.id, "preds.csv")`."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        if path is None:        # a file already uploaded: the jobs route takes it by id
            body = _drop_none({"kind": "batch-predict", "tuned_model": model_id, "dataset_id": file_id, "top_k": top_k,
                               "output_format": format, "text_column": text_column})
            return Job(**self._c.request("POST", "/api/v1/jobs", json=body, headers=headers))
        form = _drop_none({"model": model_id, "top_k": str(top_k), "format": format, "text_column": text_column})
        path = Path(path)
        with open(path, "rb") as fh:
            return Job(**self._c.request("POST", "/api/v1/batch-predictions", data=form, headers=headers,
                                         files={"file": (path.name, fh)}))

    def rename(self, model_id: str, name: str) -> Model:
        """A tuned model's new name (1-120 printable characters, trimmed); the id stays."""
        return Model(**self._c.request("PATCH", f"/api/v1/models/{_path(model_id)}", json={"name": name}))

    def delete(self, model_id: str) -> dict:
        return self._c.request("DELETE", f"/api/v1/models/{_path(model_id)}")


class Deployments(_Resource):
    """Tuned models served from model servers of their own. Generative deployments answer the
    OpenAI-compatible /v1/chat/completions and /v1/completions (point the `openai` client at
    `<base_url>/v1`, `model` = the tuned model id); classifier deployments answer `predict`."""

    def create(self, models: list[str] | str, *, name: str = "", replicas: int = 1, idle_seconds: float = 900.0,
               engine: str = "torch", batch_window_ms: float = 5.0) -> Deployment:
        body = {"models": [models] if isinstance(models, str) else list(models), "name": name, "replicas": replicas,
                "idle_seconds": float(idle_seconds), "engine": engine, "batch_window_ms": float(batch_window_ms)}
        return Deployment(**self._c.request("POST", "/api/v1/deployments", json=body))

    def list(self) -> list[Deployment]:
        return [Deployment(**d) for d in self._c.request("GET", "/api/v1/deployments")["data"]]

    def get(self, deployment_id: str) -> Deployment:
        return Deployment(**self._c.request("GET", f"/api/v1/deployments/{_path(deployment_id)}"))

    def wait(self, deployment_id: str, timeout: float = 300.0, poll: float = 0.5) -> Deployment:
        """Until it is ready (or failed: APIError 503 with the server's last words)."""
        deadline = time.time() + timeout
        while True:
            dep = self.get(deployment_id)
            if dep.state == "ready":
                return dep
            if dep.state == "failed":
                raise APIError(503, "deployment_failed", dep.error or "the deployment's servers failed to start")
            if time.time() > deadline:
                raise APIError(0, "timeout", f"{deployment_id} still {dep.state} after {timeout:.0f} s")
            time.sleep(poll)

    def predict(self, deployment_id: str, texts: list[str] | str) -> list[Prediction]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = self._c.request("POST", f"/api/v1/deployments/{_path(deployment_id)}/predict", json={"texts": texts})
        return [Prediction(**p) for p in out["data"]]

    def predict_images(self, deployment_id: str, images: list[str | Path | bytes] | str | Path | bytes) -> list[ImagePrediction]:
        """Classify images (file paths or bytes, up to 16 a call) with an image classifier deployment."""
        import base64

        items = list(images) if isinstance(images, (list, tuple)) else [images]
        blobs = [bytes(i) if isinstance(i, (bytes, bytearray)) else Path(i).read_bytes() for i in items]
        body = {"images": [base64.b64encode(b).decode("ascii") for b in blobs]}
        out = self._c.request("POST", f"/api/v1/deployments/{_path(deployment_id)}/predict-images", json=body)
        return [ImagePrediction(**p) for p in out["data"]]

    def delete(self, deployment_id: str) -> dict:
        return self._c.request("DELETE", f"/api/v1/deployments/{_path(deployment_id)}")


class ApiKeys(_Resource):
    def create(self, name: str = "") -> ApiKey:
        return ApiKey(**self._c.request("POST", "/api/v1/api-keys", json={"name": name}))

    def list(self) -> list[ApiKey]:
        return [ApiKey(**k) for k in self._c.request("GET", "/api/v1/api-keys")["data"]]

    def revoke(self, key_id: str) -> ApiKey:
        return ApiKey(**self._c.request("DELETE", f"/api/v1/api-keys/{_path(key_id)}"))


class Webhooks(_Resource):
    def create(self, url: str, events: list[str] | None = None) -> Webhook:
        return Webhook(**self._c.request("POST", "/api/v1/webhooks", json={"url": url, "events": events or []}))

    def list(self) -> list[Webhook]:
        return [Webhook(**w) for w in self._c.request("GET", "/api/v1/webhooks")["data"]]

    def delete(self, webhook_id: str) -> dict:
        return self._c.request("DELETE", f"/api/v1/webhooks/{_path(webhook_id)}")

    def deliveries(self, webhook_id: str, limit: int = 100) -> list[WebhookDelivery]:
        out = self._c.request("GET", f"/api/v1/webhooks/{_path(webhook_id)}/deliveries", params={"limit": limit})
        return [WebhookDelivery(**d) for d in out["data"]]


class Billing(_Resource):
    """Credit and usage. Amounts are integer micro-dollars (1e-6 USD); fields ending in `_usd`
    are the same amounts as exact decimal strings of dollars."""

    def balance(self) -> dict:
        """available, reserved, spent, granted (and *_usd)."""
        return self._c.request("GET", "/api/v1/billing/balance")

    def usage(self, days: int = 30) -> list[dict]:
        """Charges per UTC day: compute, storage, serving, total."""
        return self._c.request("GET", "/api/v1/billing/usage", params={"days": days})["data"]

    def jobs(self, limit: int = 100) -> list[dict]:
        """Each job's estimate (with its range) next to what it was charged."""
        return self._c.request("GET", "/api/v1/billing/jobs", params={"limit": limit})["data"]

    def job(self, job_id: str) -> dict:
        """One job's cost, with every ledger entry (charges carry the step range they cover)."""
        return self._c.request("GET", f"/api/v1/billing/jobs/{_path(job_id)}")

    def entries(self, after: int = 0, limit: int = 1000, job_id: str | None = None) -> list[dict]:
        params = _drop_none({"after": after, "limit": limit, "job_id": job_id})
        return self._c.request("GET", "/api/v1/billing/entries", params=params)["data"]

    def export_csv(self) -> str:
        """The whole ledger of your tenant as CSV text."""
        response = self._c._http.get("/api/v1/billing/export.csv")
        if response.status_code >= 400:
            raise _error(response)
        return response.text

    def quotas(self) -> dict:
        return self._c.request("GET", "/api/v1/billing/quotas")

    def prices(self) -> dict:
        return self._c.request("GET", "/api/v1/billing/prices")


class Tenants(_Resource):
    def me(self) -> Tenant:
        return Tenant(**self._c.request("GET", "/api/v1/tenants/me"))


class Client:
    """`Client(base_url, api_key)`; use as a context manager, or call close()."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        if not base_url:
            raise ValueError("base_url is required, e.g. http://127.0.0.1:8000")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}", "User-Agent": "tunelab-sdk"})
        self.datasets, self.jobs, self.comparisons = Datasets(self), Jobs(self), Comparisons(self)
        self.models, self.api_keys, self.webhooks, self.tenant = Models(self), ApiKeys(self), Webhooks(self), Tenants(self)
        self.billing, self.deployments = Billing(self), Deployments(self)

    def request(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise APIConnectionError(f"{self.base_url} did not answer in time ({type(exc).__name__}).") from exc
        except httpx.HTTPError as exc:
            raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    def batch_predict(self, model_id: str, path: str | Path | None = None, **options) -> Job:
        """`models.batch_predict`: a file of texts labelled by a tuned classifier, as a job."""
        return self.models.batch_predict(model_id, path, **options)

    def run_hardware_benchmark(self, quick: bool = True, sweep: bool = True,
                               idempotency_key: str | None = None) -> Job:
        """Measure the server's worker machine, as a job (kind bench-hardware) of your tenant, billed
        like any: `quick` (about 90 s; False: every catalog model, about 15 min), `sweep` (False: the
        device figures only, about 15 s). Follow it with `jobs.watch(job.id)`; once it succeeded its
        `result["benchmark"]` holds the figures and `infrastructure()` shows them."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job(**self.request("POST", "/api/v1/infrastructure/benchmarks", json={"quick": quick, "sweep": sweep},
                                  headers=headers))

    def infrastructure(self, worker: str | None = None) -> Infrastructure:
        """This server's hardware benchmark (`tunelab bench hardware`): inventory, the latest figures and
        model throughput, regressions against the run before, each figure's history, the cost of its
        speed and a typical job per catalog model. `has_results` is False until a benchmark is stored."""
        return Infrastructure(**self.request("GET", "/api/v1/infrastructure", params=_drop_none({"worker": worker})))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _error(response: httpx.Response) -> APIError:
    try:
        err = response.json().get("error")
    except ValueError:
        err = None
    if not isinstance(err, dict):        # not a tunelab server, or a proxy in the way
        text = response.text.strip()[:300] or response.reason_phrase
        return APIError(response.status_code, "http_error", f"HTTP {response.status_code}: {text}")
    return APIError(response.status_code, str(err.get("code") or "error"), str(err.get("message") or ""),
                    err.get("param"), err.get("type"), err)
