"""A tuned model's page: its name (renamed in place), its dataset, strategy and metrics, its model
card rendered as a page (Markdown, raw HTML escaped), the download of its folder, and the code that
calls it (curl, the Python SDK, and the OpenAI client where the server answers OpenAI's chat route),
with this server's real URL and the model's real id, and never a key: `$TUNELAB_API_KEY`."""

from __future__ import annotations

import logging
import shlex
import tarfile
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from ..api.deps import SessionDep, SettingsDep
from ..api.routes.models import download as download_route
from ..api.routes.models import rename as rename_route
from ..api.schemas import Rename
from ..db.models import Dataset, Job, TunedModel
from ..db.scoped import TenantScope
from ..jobs.naming import strategy_words
from ..services.generation import is_generative
from ..services.models_naming import describe_all
from ..services.predictions import model_inputs
from .image_pages import misclassified
from .deps import PageError, UserDep, render
from .naming import NAME_RULE, rename_form
from .routes_deployments import deploy_options
from .routes_jobs import MAX_CARD_BYTES, _sealed_card, quality

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)
# CommonMark with tables; html=False: any HTML inside the card (a label, a file name) is shown as text
_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
OPENAI_CHAT_PATH = "/v1/chat/completions"


def card_html(card: str, title: str) -> Markup:
    """The card's Markdown as HTML, its first heading replaced by `title` (the user's words, not
    the job folder's file name). Safe: markdown-it escapes text and raw HTML, and refuses
    javascript:/data: links."""
    lines = card[:MAX_CARD_BYTES].splitlines()
    if lines and lines[0].startswith("# "):
        lines[0] = "# " + title.replace("\n", " ")
    return Markup(_MD.render("\n".join(lines)))


def serves_openai_chat(request: Request) -> bool:
    def paths(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)     # FastAPI 0.16x wraps included routers
            yield from (paths(inner.routes) if inner is not None else [getattr(r, "path", None)])
    return OPENAI_CHAT_PATH in set(paths(request.app.routes))


def snippets(base_url: str, model_id: str, generative: bool, openai_chat: bool, images: bool = False) -> list[dict]:
    """[{title, lang, code}]: each a complete command or program, the key left to the environment."""
    base = base_url.rstrip("/")
    q_id = quote(model_id, safe="")
    out = []
    if images:
        out.append({"title": "curl (image files)", "lang": "shell", "code": (
            f"curl -s {shlex.quote(f'{base}/api/v1/models/{q_id}/predict-images/files')} \\\n"
            f"  -H \"Authorization: Bearer $TUNELAB_API_KEY\" \\\n"
            f"  -F files=@first.jpg -F files=@second.png")})
        out.append({"title": "curl (base64 JSON)", "lang": "shell", "code": (
            f"curl -s {shlex.quote(f'{base}/api/v1/models/{q_id}/predict-images')} \\\n"
            f"  -H \"Authorization: Bearer $TUNELAB_API_KEY\" \\\n"
            f"  -H 'Content-Type: application/json' \\\n"
            f"  -d \"{{\\\"images\\\": [\\\"$(base64 -w0 first.jpg)\\\"]}}\"")})
        out.append({"title": "Python (tunelab SDK)", "lang": "python", "code": (
            "import os\n\nfrom tunelab.sdk import Client\n\n"
            f"with Client({base!r}, os.environ[\"TUNELAB_API_KEY\"]) as client:\n"
            f"    for p in client.models.predict_images({model_id!r}, [\"first.jpg\", \"second.png\"]):\n"
            "        print(p.label, round(p.score, 3), p.filename)")})
    elif not generative:
        out.append({"title": "curl", "lang": "shell", "code": (
            f"curl -s {shlex.quote(f'{base}/api/v1/models/{q_id}/predict')} \\\n"
            f"  -H \"Authorization: Bearer $TUNELAB_API_KEY\" \\\n"
            f"  -H 'Content-Type: application/json' \\\n"
            f"  -d '{{\"texts\": [\"first text to label\", \"second text\"]}}'")})
        out.append({"title": "Python (tunelab SDK)", "lang": "python", "code": (
            "import os\n\nfrom tunelab.sdk import Client\n\n"
            f"with Client({base!r}, os.environ[\"TUNELAB_API_KEY\"]) as client:\n"
            f"    for p in client.models.predict({model_id!r}, [\"first text to label\", \"second text\"]):\n"
            "        print(p.label, round(p.score, 3), p.text)")})
    else:
        out.append({"title": "Download and chat (tunelab CLI)", "lang": "shell", "code": (
            f"curl -sf {shlex.quote(f'{base}/api/v1/models/{q_id}/download')} \\\n"
            "  -H \"Authorization: Bearer $TUNELAB_API_KEY\" -o model.tar\n"
            "mkdir -p model && tar -xf model.tar -C model\n"
            "tunelab generate ./model \"Your question here\"")})
    if generative and openai_chat:
        out.append({"title": "Python (openai client)", "lang": "python", "code": (
            "import os\n\nfrom openai import OpenAI\n\n"
            f"client = OpenAI(base_url={base + '/v1'!r}, api_key=os.environ[\"TUNELAB_API_KEY\"])\n"
            f"answer = client.chat.completions.create(model={model_id!r},\n"
            "                                        messages=[{\"role\": \"user\", \"content\": \"Hello\"}])\n"
            "print(answer.choices[0].message.content)")})
    return out


def _page(request, user, session, settings, model_id: str, *, error: str | None = None, notice: str | None = None,
          status: int = 200):
    scope = TenantScope(session, user.tenant_id)
    m = scope.get(TunedModel, model_id, "model")
    described = next((d for d in describe_all(scope) if d.id == m.id), None)
    job = scope.find(Job, m.job_id)
    dataset = scope.find(Dataset, described.dataset_id) if described and described.dataset_id else None
    dataset_name = (dataset.name or dataset.filename) if dataset else None
    generative = is_generative(m)
    images = model_inputs(m) == "image"
    error_thumbs = misclassified(settings.home, m, dataset) if images else []
    title = f"{m.name or m.id}: {strategy_words(m.strategy)} model on {dataset_name or 'your data'}"
    text = card_text(settings.home, m)
    card = card_html(text, title) if text else None
    return render(request, "model.html", {
        "m": m, "d": described, "strategy_words": strategy_words(m.strategy), "job": job, "dataset": dataset, "dataset_name": dataset_name,
        "quality": quality(m.metrics or {}), "generative": generative, "card": card, "card_title": title,
        "snippets": snippets(str(request.base_url), m.id, generative, serves_openai_chat(request), images),
        "images": images, "error_thumbs": error_thumbs, "deploy": deploy_options(scope, m),
        "error": error, "notice": notice}, status=status)


def card_text(home: Path, m: TunedModel) -> str | None:
    """The card (README.md) out of the model's folder, or out of its sealed tar as a stream
    (nothing decrypted to disk); None when there is none or it cannot be read."""
    path = Path(m.artifact_path)
    try:
        if (path / "README.md").is_file():
            return (path / "README.md").read_text(encoding="utf-8", errors="replace")[:MAX_CARD_BYTES]
        if path.is_file():
            return _sealed_card(home, m.tenant_id, path)
    except (OSError, ValueError, tarfile.TarError):
        log.warning("model card unreadable", extra={"model": m.id})
    return None


@router.get("/models/{model_id}")
def model_page(model_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep,
               renamed: str | None = None):
    return _page(request, user, session, settings, model_id,
                 notice="Renamed: the id stays the same for the API." if renamed else None)


@router.post("/models/{model_id}/rename")
async def rename(model_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    """The API's own PATCH (the same checks, the same audit entry); back to where the form was."""
    scope, name = await rename_form(request, user, session, TunedModel, model_id, "model")
    if name is None:
        return _page(request, user, session, settings, model_id, error=NAME_RULE, status=422)
    rename_route(model_id, Rename(name=name), scope, user.principal)
    return RedirectResponse(f"/models/{quote(model_id, safe='')}?renamed=1", status_code=303)


@router.get("/models/{model_id}/download")
async def download(model_id: str, request: Request, user: UserDep, session: SessionDep, settings: SettingsDep):
    """The model folder as a tar, decrypted only into the response (the API's route: audited)."""
    from ..api.errors import APIError

    scope = TenantScope(session, user.tenant_id)
    try:
        return await run_in_threadpool(download_route, model_id, scope, user.principal, settings)
    except APIError as exc:
        if exc.status == 404:
            raise PageError(404, "Not found", exc.message) from None
        raise PageError(exc.status, "Could not download", exc.message) from None
