"""Names and the model page, in Chromium: a dataset named at upload and renamed in place; the
models list and the playground starting on the best model of the dataset (not the newest); a
tuned model's page with its card rendered as a page (titled with the dataset's name, raw HTML
escaped), its download (the real folder, as a tar), the code to call it (this server's URL, the
real id, never a key), and its rename; another tenant's model is "not found"."""

from __future__ import annotations

import io
import re
import tarfile

import pytest

from service.helpers import wait_job

HOSTILE = 'Tickets <img src=x onerror="window.__pwned=1">'


@pytest.fixture(scope="module")
def world(web_server, banking_subset):
    """One tenant, the banking slice uploaded, a linear probe and then (newer, worse) a zero-shot
    run on it: cheap runs (the probe on 200 rows; zero-shot trains nothing)."""
    acme = web_server.create_tenant("namers", "ops@namers.test")
    train, _ = banking_subset
    with web_server.client(acme["api_key"]) as api:
        with open(train, "rb") as f:
            ds = api.post("/api/v1/datasets", files={"file": ("banking_intents.csv", f)}).json()
        probe = api.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "linear-probe", "limit": 200,
                                               "model_name": "Intent router"}).json()
        probe = wait_job(api, probe["id"])
        zero = api.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot", "limit": 100,
                                              "params": {"calibration_texts": 0}}).json()
        zero = wait_job(api, zero["id"])
        assert probe["status"] == zero["status"] == "succeeded", (probe, zero)
        models = {m["id"]: m for m in api.get("/api/v1/models").json()["data"] if m.get("kind") == "tuned"}
    quality = {mid: m["metrics"]["macro_f1"] for mid, m in models.items()}
    best = max(quality, key=lambda k: (quality[k], k == zero["fine_tuned_model"]))
    return {"tenant": acme, "dataset": ds, "probe": probe["fine_tuned_model"], "zero": zero["fine_tuned_model"],
            "best": best, "quality": quality}


def test_a_dataset_is_named_at_upload_and_renamed(tab, world, tmp_path):
    tab.sign_in(world["tenant"]["api_key"])
    page = tab.page
    small = tmp_path / "march_export.csv"
    small.write_text("text,label\n" + "\n".join(f"message number {i},{'ab'[i % 2]}" for i in range(40)) + "\n")
    page.set_input_files("#file", str(small))
    page.fill("#dataset-name", HOSTILE)
    page.get_by_role("button", name="Upload and check").click()
    page.wait_for_url(re.compile(r".*/datasets/file-"))
    assert page.get_by_role("heading", level=1).inner_text().startswith(HOSTILE)     # shown as text
    assert page.evaluate("window.__pwned") is None
    assert "march_export.csv" in page.locator(".page-head").first.inner_text()             # the file name stays visible

    page.get_by_text("Rename", exact=True).click()
    page.fill("#dataset-name", "  Support tickets, March  ")
    page.get_by_role("button", name="Save name").click()
    page.wait_for_url(re.compile(r".*/datasets/file-.*renamed=1"))
    assert page.get_by_role("heading", level=1).inner_text().startswith("Support tickets, March")
    tab.goto("/datasets")
    assert page.get_by_role("link", name="Support tickets, March").is_visible()
    assert page.get_by_role("link", name="banking_intents").is_visible()             # default: no suffix

    # A blank or over-long name is refused with the rule, and nothing changes.
    ds_id = page.get_by_role("link", name="Support tickets, March").get_attribute("href").rsplit("/", 1)[1]
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post(f"{tab.base}/datasets/{ds_id}/rename", form={"csrf_token": token, "name": "x" * 121})
    assert r.status == 422 and "1 to 120 characters" in r.text()
    r = page.request.post(f"{tab.base}/datasets/{ds_id}/rename", form={"csrf_token": "forged", "name": "Forged"})
    assert r.status == 403


def test_best_model_first_in_the_list_and_the_playground(tab, world):
    tab.sign_in(world["tenant"]["api_key"])
    page = tab.page
    tab.goto("/models")
    first = page.locator("section[aria-labelledby=tuned-title] tbody tr").first
    assert world["best"] in first.inner_text()
    assert "best for banking_intents" in first.inner_text()
    names = page.locator("[data-model-link]").all_inner_texts()
    assert "Intent router" in names and "banking_intents — zero shot" in names      # given, and the default
    assert page.locator("[data-best]").count() == 1                                 # one dataset, one best

    tab.goto("/playground")
    selected = page.locator("#model option:checked")
    assert selected.get_attribute("value") == world["best"]                         # not the newest by default
    assert "best for banking_intents" in selected.inner_text()


def test_the_model_page(tab, world, web_server):
    tab.sign_in(world["tenant"]["api_key"])
    page = tab.page
    probe = world["probe"]
    tab.goto("/models")
    page.get_by_role("link", name="Intent router").click()
    page.wait_for_url(re.compile(r".*/models/ft"))
    assert page.locator("[data-model-name]").inner_text().startswith("Intent router")
    assert "banking_intents" in page.locator(".page-head").first.inner_text()

    # The card is a page: headings and lists, not Markdown source; titled with the dataset's name.
    card = page.locator("[data-card]")
    assert "banking_intents" in card.locator("h1").inner_text()
    assert card.locator("h2").count() >= 2 and card.locator("li").count() >= 2
    assert "**" not in card.inner_text() and "\n# " not in card.inner_text()

    # The code to call it: this server, the real id, the key left to the environment.
    snippets = page.locator("[data-snippet]").all_inner_texts()
    assert any(f"{web_server.url}/api/v1/models/" in s and "/predict" in s for s in snippets), snippets
    assert any(f"client.models.predict({probe!r}" in s for s in snippets), snippets
    assert all("$TUNELAB_API_KEY" in s or "TUNELAB_API_KEY" in s for s in snippets)
    assert world["tenant"]["api_key"] not in page.content()
    tab.shot("12b-model-page")

    # Download: the model folder as a tar, decrypted only into the response.
    with page.expect_download() as got:
        page.locator("[data-download]").click()
    data = open(got.value.path(), "rb").read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name.removeprefix("./") for m in tf.getmembers()}
    assert {"README.md", "manifest.json"} <= members, members

    # Rename in place: the id stays (the playground and the API still take it).
    page.get_by_text("Rename this model").click()
    page.fill("#model-name", "Intent router v2")
    page.get_by_role("button", name="Save name").click()
    page.wait_for_url(re.compile(r".*renamed=1"))
    assert page.locator("[data-model-name]").inner_text().startswith("Intent router v2")
    with web_server.client(world["tenant"]["api_key"]) as api:
        assert api.get(f"/api/v1/models/{probe}").json()["name"] == "Intent router v2"
        actions = [e["action"] for e in api.get("/api/v1/audit").json()["data"]]
    assert "model.rename" in actions and "model.download" in actions


def test_another_tenants_model_is_not_found(tab, world, web_server):
    other = web_server.create_tenant("name-thieves", "ops@thieves.test")
    tab.sign_in(other["api_key"])
    page = tab.page
    for path in (f"/models/{world['probe']}", f"/models/{world['probe']}/download"):
        response = tab.goto(path) if not path.endswith("download") else page.request.get(tab.base + path)
        assert response.status == 404, path
    tab.goto("/models")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post(f"{tab.base}/models/{world['probe']}/rename", form={"csrf_token": token, "name": "Mine"})
    assert r.status == 404


def test_the_card_escapes_html_and_script_links():
    """Label names and file names are the user's text: the card shows them, it never runs them."""
    from tunelab.web.model_page import card_html

    html = str(card_html("# lora classifier on /tmp/job/train.csv\n\n- labels: <script>alert(1)</script>, "
                         "[x](javascript:alert(1)), <img src=x onerror=alert(1)>\n", "Spam <b>filter</b>"))
    assert "<script>" not in html and "<img" not in html and "<b>" not in html and "<a " not in html
    assert "&lt;script&gt;" in html and "<h1>Spam &lt;b&gt;filter&lt;/b&gt;</h1>" in html
    assert "/tmp/job" not in html                      # the heading is the user's words, not the job folder


def test_snippets_name_the_server_and_the_model_never_a_key():
    from tunelab.web.model_page import snippets

    classifier = snippets("https://tl.example.com/", "ft:minilm:lora:ab12", generative=False, openai_chat=True)
    assert [s["title"] for s in classifier] == ["curl", "Python (tunelab SDK)"]
    assert "https://tl.example.com/api/v1/models/ft%3Aminilm%3Alora%3Aab12/predict" in classifier[0]["code"]
    assert "client.models.predict('ft:minilm:lora:ab12'" in classifier[1]["code"]
    chat = snippets("https://tl.example.com", "ft:smollm2:sft-lora:cd34", generative=True, openai_chat=False)
    assert [s["title"] for s in chat] == ["Download and chat (tunelab CLI)"]         # no OpenAI route here: no snippet
    with_openai = snippets("https://tl.example.com", "ft:smollm2:sft-lora:cd34", generative=True, openai_chat=True)
    assert "base_url='https://tl.example.com/v1'" in with_openai[-1]["code"]
    assert all("TUNELAB_API_KEY" in s["code"] for s in classifier + with_openai)
