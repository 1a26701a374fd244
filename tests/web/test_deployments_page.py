"""Deployments in a real browser, against a real server (model servers started by its supervisor,
sandboxed): from a finished model's page, Deploy → the deployment's page loads, then says it is
ready (htmx, no reload) → its snippets carry the real endpoint and model name → a request with the
tenant's API key is answered and counted on the page → the list shows it in people's words → it is
deleted, and gone. A chat model (stories260K, two finished runs of one base served together) and a
text classifier (MiniLM, on ONNX). Another tenant's deployment is the same "Not found" page as any
other resource; a creation the service refuses is a sentence on the page, never a 500."""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from .conftest import Page
from . import generative_helpers as gh

READY_MS = 120_000


@pytest.mark.parametrize("view, words, badge, says", [
    ({"state": "loading"}, "loading", "running", "updates by itself"),
    ({"state": "ready"}, "ready", "ready", "Answering requests."),
    ({"state": "idle-unloaded"}, "unloaded while idle", "paused", "wakes on the next request"),
    ({"state": "failed", "error": "out of memory"}, "failed", "failed", "The reason: out of memory"),
    ({"state": "failed", "error": None}, "failed", "failed", "Delete it and deploy the model again"),
])
def test_states_in_words(view, words, badge, says):
    from tunelab.web.routes_deployments import state_words

    s = state_words(view)
    assert (s["words"], s["badge"]) == (words, badge) and says in s["explain"]


def finished_classifier(home: Path, tenant_id: str, tmp: Path) -> str:
    """A finished text classifier as the worker leaves one (its sealed folder, its job and its
    tuned-model row): MiniLM with an untrained head; serving, not quality, is what is tested."""
    from serving.classifier_fixtures import embedding_artifact
    from tunelab.db.engine import Database
    from tunelab.db.models import Job, TunedModel, utcnow
    from tunelab.db.scoped import TenantScope
    from tunelab.security.storage import seal_folder

    db = Database(f"sqlite:///{home / 'tunelab.db'}")
    try:
        with db.session() as s:
            scope = TenantScope(s, tenant_id)
            job = scope.add(Job(kind="train", status="succeeded", spec={"kind": "train", "strategy": "linear-probe"},
                                started_at=utcnow(), finished_at=utcnow()))
            folder = embedding_artifact(home / "jobs" / tenant_id / job.id / "artifact")
            model_id = f"ft:minilm:{tenant_id}:linear-probe:{job.id[-12:]}"
            metrics = {"task": "text-classification", "macro_f1": 0.5, "accuracy": 0.5, "test_rows": 20}
            scope.add(TunedModel(id=model_id, job_id=job.id, base_model="minilm", strategy="linear-probe",
                                 name="Support triage", artifact_path=str(seal_folder(home, tenant_id, folder)),
                                 metrics=metrics))
            job.fine_tuned_model = model_id
            return model_id
    finally:
        db.engine.dispose()


def rename(home: Path, model_id: str, name: str) -> None:
    from tunelab.db.engine import Database
    from tunelab.db.models import TunedModel

    db = Database(f"sqlite:///{home / 'tunelab.db'}")
    try:
        with db.session() as s:
            s.get(TunedModel, model_id).name = name
    finally:
        db.engine.dispose()


@pytest.fixture(scope="module")
def org(web_server, tmp_path_factory):
    """A tenant with two finished chat runs of one uploaded stories260K, and a finished classifier."""
    tmp = tmp_path_factory.mktemp("deploy-pages")
    tenant = web_server.create_tenant("deploy-co", "ops@deploy-co.test")
    base = gh.upload_model(web_server, tenant["api_key"], gh.stories_archive(tmp))["id"]
    chat = gh.store_directly(web_server.home, tenant["tenant_id"], gh.identity_file(tmp, rows=20), "chat")
    runs = [gh.finished_chat_run(web_server.home, tenant["tenant_id"], tmp / "stories260k", chat, base, strategy)
            for strategy in ("sft-full", "sft-lora")]
    for run, name in zip(runs, ("Story teller", "Story teller (LoRA)")):
        rename(web_server.home, run["model"], name)
    classifier = finished_classifier(web_server.home, tenant["tenant_id"], tmp)
    return SimpleNamespace(tenant=tenant, key=tenant["api_key"], chat=[r["model"] for r in runs],
                           classifier=classifier)


def deploy_from_model_page(tab: Page, model_id: str) -> str:
    """Press Deploy in the model page's Deploy section; the deployment's page; its id."""
    page = tab.page
    page.locator("[data-deploy-form]").get_by_role("button", name="Deploy", exact=True).click()
    page.wait_for_url(re.compile(r".*/deployments/dep_[0-9a-f]+$"), timeout=60_000)
    status = page.locator("#deployment-status")
    assert status.get_attribute("data-state") == "loading", status.inner_text()    # its servers just started
    assert page.locator("[data-state-box]").get_attribute("hx-trigger") == "every 2s"
    return page.url.rsplit("/", 1)[1]


def wait_ready(tab: Page) -> None:
    """The state panel changes by itself (htmx polls it while loading) until it says ready."""
    page = tab.page
    page.wait_for_function("() => ['ready', 'failed'].includes("
                           "document.getElementById('deployment-status').dataset.state)", timeout=READY_MS)
    assert page.locator("#deployment-status").get_attribute("data-state") == "ready", \
        page.locator("[data-state-explain]").inner_text()
    assert page.locator("#deployment-status").inner_text() == "ready"


def counters(tab: Page) -> dict[str, int]:
    out = {}
    for box in tab.page.locator("[data-counters] .metric").all():
        label = box.locator(".metric-label").inner_text().strip()
        out[label] = int(box.locator(".metric-value").inner_text().replace(",", ""))
    return out


def delete_and_see_it_gone(tab: Page, deployment_id: str) -> None:
    page = tab.page
    page.get_by_role("button", name="Delete this deployment").click()       # the confirm dialog is accepted
    page.wait_for_url(re.compile(r".*/deployments\?deleted=1$"))
    assert page.get_by_text("Deleted: its model servers are stopped.").is_visible()
    assert page.locator(f"tr[data-deployment='{deployment_id}']").count() == 0
    assert tab.goto(f"/deployments/{deployment_id}").status == 404


def row_on_a_phone(browser, web_server, key: str, dep: str) -> None:
    """On a phone (390 px), the row's primary action ("Use it") is on screen, as on the other lists."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-GB", is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    phone = Page(context, web_server.url)
    try:
        phone.sign_in(key)
        phone.goto("/deployments")
        link = phone.page.locator(f"tr[data-deployment='{dep}'] td:last-child a").first
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        assert phone.page.evaluate("() => document.documentElement.scrollWidth") <= 390
        phone.shot("44-mobile-deployments", full=False)
        assert not phone.errors, phone.errors
    finally:
        context.close()


def test_deploy_a_chat_model_call_it_and_delete_it(tab, web_server, org):
    t0 = time.monotonic()
    page = tab.page
    tab.sign_in(org.key)
    first, second = org.chat
    tab.goto("/deployments")
    assert page.get_by_text("No deployments yet").is_visible()                   # the empty state says how
    assert page.get_by_role("link", name="Choose a model to deploy").get_attribute("href") == "/models"

    # The model page offers the other finished chat model of the same base, to serve together.
    tab.goto(f"/models/{first}")
    page.get_by_role("link", name="Deploy", exact=True).click()
    form = page.locator("[data-deploy-form]")
    assert form.locator("input[name=engine]").count() == 0                     # engines: classifiers only
    companion = form.get_by_role("checkbox", name=re.compile("Story teller \\(LoRA\\)"))
    companion.check()
    tab.shot("40-deploy-chat-form")
    dep = deploy_from_model_page(tab, first)
    assert page.locator("[data-deployment-name]").inner_text() == "Story teller"
    wait_ready(tab)
    tab.shot("41-deployment-ready")

    # The endpoint and the snippets: this server's URL, the real model names, never a key.
    assert page.locator("[data-endpoint]").inner_text() == f"{web_server.url}/v1/chat/completions"
    served = page.locator("[data-served-names]").inner_text()
    assert first in served and second in served and "Story teller (LoRA)" in served
    python = page.locator("[data-snippet=python]").inner_text()
    assert f"base_url='{web_server.url}/v1'" in python and f"model='{first}'" in python
    curl = page.locator("[data-snippet=shell]").inner_text()
    assert f"{web_server.url}/v1/chat/completions" in curl and first in curl and org.key not in page.content()
    assert counters(tab) == {"requests": 0, "prompt tokens": 0, "completion tokens": 0}

    # Called as an application would, with the tenant's API key: counted on the page.
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for model in (first, second):
        r = httpx.post(f"{web_server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {org.key}"},
                       json={"model": model, "messages": [{"role": "user", "content": "Once upon a time"}],
                             "max_tokens": 8, "temperature": 0}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == model and r.json()["choices"][0]["message"]["content"]
        for k in usage:
            usage[k] += r.json()["usage"][k]
    page.reload()
    assert counters(tab) == {"requests": 2, "prompt tokens": usage["prompt_tokens"],
                             "completion tokens": usage["completion_tokens"]}

    # The list, in people's words.
    tab.goto("/deployments")
    row = page.locator(f"tr[data-deployment='{dep}']")
    assert row.locator("td").nth(1).inner_text().split("\n")[0] == "Story teller, Story teller (LoRA)"
    assert row.locator("[data-state]").inner_text() == "ready" and "Answering requests." in row.inner_text()
    assert row.locator("[data-requests]").inner_text() == "2"
    assert row.locator("[data-tokens]").inner_text() == str(sum(usage.values()))
    tab.shot("42-deployments-list")

    # Another tenant's id is "Not found", as every other resource's.
    other = web_server.create_tenant("deploy-other", "ops@deploy-other.test")
    client, csrf = gh.signed_in(web_server.url, other["api_key"])
    try:
        for path in (f"/deployments/{dep}", f"/deployments/{dep}/state"):
            r = client.get(path)
            assert r.status_code == 404 and "Not found" in r.text and "Traceback" not in r.text, path
        r = client.post(f"/deployments/{dep}/delete", data={"csrf_token": csrf})
        assert r.status_code == 404
    finally:
        client.close()

    # A creation the service refuses is said in words on the page (ONNX serves classifiers only).
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post(f"{web_server.url}/models/{first}/deploy", form={"csrf_token": token, "engine": "onnx"})
    assert r.status == 422 and "serves classifiers only" in r.text() and "Traceback" not in r.text()
    assert 'id="deploy-error"' in r.text() and "data-deploy-form" in r.text()          # the form, to try again

    tab.goto(f"/deployments/{dep}")
    delete_and_see_it_gone(tab, dep)
    print(f"\nchat deployment page journey: {time.monotonic() - t0:.0f} s")


def test_deploy_a_classifier_on_onnx(tab, browser, web_server, org):
    t0 = time.monotonic()
    page = tab.page
    tab.sign_in(org.key)
    tab.goto(f"/models/{org.classifier}")
    form = page.locator("[data-deploy-form]")
    engines = form.locator("label.choice").all_inner_texts()
    assert [e.split("\n")[0] for e in engines] == ["PyTorch", "ONNX", "ONNX int8"], engines
    hints = form.locator("label.choice .hint").all_inner_texts()
    assert len(hints) == 3 and all(len(h) > 40 and h.strip().endswith(".") for h in hints), hints   # a sentence each
    form.get_by_role("radio", name=re.compile("^ONNX\\b(?! int8)")).check()
    tab.shot("43-deploy-classifier-form")
    dep = deploy_from_model_page(tab, org.classifier)
    wait_ready(tab)
    assert page.locator("[data-state-box]").get_attribute("hx-trigger") is None          # ready: no more polling
    tab.shot("45-classifier-deployment")
    assert "ONNX (onnxruntime)" in page.locator("dl.facts").inner_text()
    predict = f"{web_server.url}/api/v1/deployments/{dep}/predict"
    assert page.locator("[data-endpoint]").inner_text() == predict
    assert predict in page.locator("[data-snippet=shell]").inner_text()
    assert f"client.deployments.predict('{dep}'" in page.locator("[data-snippet=python]").inner_text()

    r = httpx.post(predict, headers={"Authorization": f"Bearer {org.key}"},
                   json={"texts": ["my card was stolen", "exchange rate", "hi"]}, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 3
    page.reload()
    assert counters(tab) == {"texts classified": 3}
    tab.goto("/deployments")
    row = page.locator(f"tr[data-deployment='{dep}']")
    assert "Support triage" in row.inner_text() and "classifier · onnx" in row.inner_text()
    row_on_a_phone(browser, web_server, org.key, dep)
    tab.goto(f"/models/{org.classifier}")
    page.locator("[data-deployed]").get_by_role("link", name="Support triage").click()    # the model page links it
    page.wait_for_url(re.compile(f".*/deployments/{dep}$"))
    delete_and_see_it_gone(tab, dep)
    print(f"\nclassifier deployment page journey: {time.monotonic() - t0:.0f} s")

