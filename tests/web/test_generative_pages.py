"""The no-code pages for chat and preference data, over HTTP against a real server (no browser):
the wizard offers the task's strategies, models and advice; a finished generative run's page
shows held-out loss and sample answers, base against tuned; comparisons rank by token F1; the
chat playground streams a tuned model's answer, within its caps."""

from __future__ import annotations

import html
import json
import re
from types import SimpleNamespace

import pytest
import torch

from . import generative_helpers as gh


@pytest.fixture(scope="module")
def gen(web_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen-pages")
    tenant = web_server.create_tenant("gen-pages", "ops@gen-pages.test")
    archive = gh.stories_archive(tmp)
    model = gh.upload_model(web_server, tenant["api_key"], archive)
    chat = gh.generative_dataset(web_server, tenant, gh.identity_file(tmp), "chat")
    pref = gh.generative_dataset(web_server, tenant, gh.preference_file(tmp), "preference")
    client, csrf = gh.signed_in(web_server.url, tenant["api_key"])
    yield SimpleNamespace(srv=web_server, tenant=tenant, model=model["id"], chat=chat, pref=pref, client=client,
                          csrf=csrf, base=tmp / "stories260k", runs=[])
    client.close()


def text_of(page: str, selector_re: str) -> str:
    m = re.search(selector_re, page, re.S)
    assert m, selector_re
    return html.unescape(re.sub(r"<[^>]+>", " ", m.group(1)))


def test_wizard_offers_the_chat_strategies_models_and_advice(gen):
    # The uploaded causal LM is chosen: the catalog's smollm2 would be imported from its GGUF on first use.
    r = gen.client.get(f"/train?dataset={gen.chat}&model={gen.model}")
    assert r.status_code == 200, r.text[-2000:]
    page = r.text
    assert 'data-task="chat"' in page
    strategies = re.findall(r'name="strategy" value="([^"]+)"', page)
    assert strategies == ["sft-lora", "sft-full", "sft-qlora"]
    # stories260K is tiny: training every weight is the advisor's pick (sft-full's own rule), preselected
    assert re.search(r'value="sft-full"[^>]*checked', page)
    advice = text_of(page, r'<p class="recommendation"[^>]*>(.*?)</p>')
    assert "Recommended: sft-full." in advice and "conversations" in advice and "small model" in advice
    assert "label" not in advice.lower()                                     # chat data has none
    if not torch.cuda.is_available():
        qlora = re.search(r'value="sft-qlora"[^>]*>', page).group(0)
        assert "disabled" in qlora and "Needs an NVIDIA GPU" in page
    models = re.findall(r'name="model" value="([^"]+)"', page)
    assert gen.model in models and "smollm2" in models and "minilm" not in models
    assert "Transfer learning or fine-tuning?" not in page and "Full fine-tuning or adapters?" in page
    assert "Fine-tuning" in page and "<h3>Transfer learning</h3>" not in page
    # The cost panel answers for every strategy it can price, and says so where it cannot.
    assert "data-estimate" in page
    assert re.search(r"sft-lora</strong>.*?(\$[0-9.]+|estimate unavailable)", page, re.S)


def test_wizard_offers_dpo_for_preference_pairs(gen):
    r = gen.client.get(f"/train?dataset={gen.pref}&model={gen.model}")
    assert r.status_code == 200, r.text[-2000:]
    assert 'data-task="preference"' in r.text
    assert re.findall(r'name="strategy" value="([^"]+)"', r.text) == ["dpo"]
    advice = text_of(r.text, r'<p class="recommendation"[^>]*>(.*?)</p>')
    assert "Recommended: dpo." in advice and "preference pairs" in advice and "label" not in advice.lower()
    assert "Preference tuning." in r.text


@pytest.fixture(scope="module")
def runs(gen):
    srv, tid = gen.srv, gen.tenant["tenant_id"]
    group = "cmp-genpages01"
    full = gh.finished_chat_run(srv.home, tid, gen.base, gen.chat, gen.model, "sft-full", group=group)
    lora = gh.finished_chat_run(srv.home, tid, gen.base, gen.chat, gen.model, "sft-lora", group=group,
                                metrics={"token_f1": 0.6, "test_loss": 2.6, "train_seconds": 20.0})
    return SimpleNamespace(full=full, lora=lora, group=group)


def test_finished_chat_run_shows_loss_and_sample_answers(gen, runs):
    r = gen.client.get(f"/jobs/{runs.full['job']}")
    assert r.status_code == 200, r.text[-2000:]
    page = r.text
    results = text_of(page, r"(<div class=\"metrics\" data-final-metrics.*?)</section>")
    assert "held-out loss, tuned" in results and "2.500" in results and "6.100" in results   # tuned vs base
    assert "perplexity" in results and "token F1" in results and "0.610" in results and "exact match" in results
    assert "macro-F1" not in results and "Confusion matrix" not in page and "Per label" not in page
    samples = text_of(page, r"(<table class=\"compact samples\".*?</table>)")
    assert samples.count("I am Tuna, an AI assistant.") == 4 and "Base model" in samples
    assert f'href="/playground/chat?model={runs.full["model"].replace(":", "%3A")}"' in page
    assert re.findall(r'type="checkbox" name="compare" value="([^"]+)"', page) == ["sft-lora"]   # the task's others
    # The chart draws the loop's events: training loss, and minus the validation loss as a loss.
    assert 'data-metric="neg-loss"' in page
    chart = json.loads(re.search(r'id="chart-data">(.*?)</script>', page, re.S).group(1))
    assert len(chart) == 10 and chart[0]["loss"] == 5.5 and chart[4]["metric"] == pytest.approx(-3.75)
    assert "validation loss" in page and "Model card" in page


def test_lists_and_comparison_rank_by_token_f1(gen, runs):
    jobs = gen.client.get("/jobs").text
    assert "token F1" in jobs
    models = gen.client.get("/models").text
    assert "0.610" in models and "token F1" in models
    r = gen.client.get(f"/comparisons/group/{runs.group}")
    assert r.status_code == 200, r.text[-2000:]
    table = text_of(r.text, r"(<table class=\"compare-table\">.*?</table>)")
    assert "Token F1" in table and "Held-out loss" in table and "Macro-F1" not in table
    assert "Latency" not in table and "2.500" in table and "2.600" in table
    assert re.search(r"data-winner>sft-lora<", r.text)        # within 0.02 token F1, and cheaper
    assert "Quality: token F1" in r.text
    r = gen.client.get(f"/comparisons/runs?job={runs.full['job']}&job={runs.lora['job']}")
    assert r.status_code == 200 and "Token F1" in r.text


def test_chat_playground_streams_an_answer(gen, runs):
    model = runs.full["model"]
    r = gen.client.get(f"/playground?model={model}")
    assert r.status_code == 303 and r.headers["location"].startswith("/playground/chat?model=")
    page = gen.client.get("/playground/chat").text
    assert model in page and "data-chat" in page
    classifier = gen.client.get("/playground").text
    assert model not in classifier and "/playground/chat" in classifier

    form = {"csrf_token": gen.csrf, "model": model, "prompt": "Once upon a time", "max_new_tokens": "24"}
    pieces = []
    with gen.client.stream("POST", "/playground/chat/stream", data=form) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/plain")
        pieces = list(r.iter_text())
    answer = "".join(pieces)
    assert answer.strip(), pieces
    # The same answer without JavaScript (greedy: the same text), in the page.
    r = gen.client.post("/playground/chat", data=form)
    assert r.status_code == 200
    assert html.unescape(text_of(r.text, r"<pre [^>]*data-answer>(.*?)</pre>")) == answer

    def refused(**change):
        with gen.client.stream("POST", "/playground/chat/stream", data=form | change) as r:
            return r.status_code, r.read().decode()
    status, body = refused(max_new_tokens="513")
    assert status == 422 and "between 1 and 512" in body
    assert refused(prompt="  ")[0] == 422
    status, body = refused(prompt="x" * 4001)
    assert status == 422 and "4,000 characters" in body
    assert refused(temperature="nan")[0] == 422
    assert refused(model="ft:nope")[0] == 404
    assert refused(csrf_token="forged")[0] == 403
