"""The no-code journey for chat data in a real browser, against a real server and worker: an admin
imports the pretrained stories260K as the organisation's model → a chat file is uploaded and
checked → the wizard recommends LoRA (sft-lora) and starts it with tiny hyperparameters → the
loss chart fills in over SSE → the finished page shows held-out loss, base against tuned, and the
sample answers → the chat playground streams the tuned model's answer."""

from __future__ import annotations

import re
import time

import pytest

from . import generative_helpers as gh

pytestmark = pytest.mark.slow

TINY = {"min_steps": "30", "epochs": "1", "batch_size": "8", "eval_answers": "4", "max_new_tokens": "24",
        "checkpoint_every": "1000"}


def test_chat_journey_upload_train_chat(tab, web_server, tmp_path):
    t0 = time.monotonic()
    tenant = web_server.create_tenant("chat-co", "ops@chat-co.test")
    archive = gh.stories_archive(tmp_path)
    chat_file = gh.identity_file(tmp_path)
    page = tab.page
    tab.sign_in(tenant["api_key"])

    # An admin imports the base model (a Hugging Face folder, safetensors only) for the organisation.
    tab.goto("/models")
    page.set_input_files("#model-file", str(archive))
    page.fill("#model-name", "stories260k")
    page.get_by_role("button", name="Import model").click()
    notice = page.get_by_text(re.compile(r"Imported stories260k as upload:[0-9a-f]+"))
    notice.wait_for(timeout=120_000)
    model_id = re.search(r"upload:[0-9a-f]+", notice.inner_text()).group(0)

    # The chat file: uploaded, checked, kept as a chat dataset.
    tab.goto("/datasets")
    page.set_input_files("#file", str(chat_file))
    page.get_by_role("button", name="Upload and check").click()
    page.wait_for_url(re.compile(r".*/datasets/file-[0-9a-f]+$"), timeout=120_000)
    dataset_id = page.url.rsplit("/", 1)[1]
    assert page.get_by_role("link", name="Train a model on it").is_visible()
    tab.shot("20-chat-dataset")

    # The wizard, on the organisation's model (the catalog's smollm2 would first be imported from
    # its GGUF: a minute on this machine, not what this journey is about).
    tab.goto(f"/train?dataset={dataset_id}&model={model_id}")
    assert page.locator("[data-task=chat]").is_visible()
    advice = page.locator(".recommendation").inner_text()
    # stories260K is tiny: the advisor recommends training every weight; the user picks LoRA anyway
    assert advice.startswith("Recommended: sft-full.") and "conversations" in advice and "label" not in advice
    assert page.locator("input[name=strategy][value=sft-full]").is_checked()
    tab.goto(f"/train?dataset={dataset_id}&model={model_id}&strategy=sft-lora")
    assert page.locator("input[name=strategy][value=sft-lora]").is_checked()
    assert page.locator(f"input[name=model][value='{model_id}']").is_checked()
    assert page.locator("input[name=model][value=minilm]").count() == 0
    page.get_by_text("Advanced: sft-lora hyperparameters").click()
    for name, value in TINY.items():
        page.fill(f"[id='p.sft-lora.{name}']", value)
    tab.shot("21-chat-wizard")
    page.get_by_role("button", name="Start training (sft-lora)").click()
    page.wait_for_url(re.compile(r".*/jobs/ftjob-[0-9a-f]+$"), timeout=60_000)
    assert page.locator("#wizard-error").count() == 0

    # The job: the loss chart over SSE, then (the page reloads at the end) the results.
    assert page.locator("[data-live]").get_attribute("data-metric") == "neg-loss"
    page.wait_for_function("() => +document.getElementById('chart').dataset.livePoints > 0 || "
                           "/failed|cancelled|succeeded/.test(document.getElementById('job-status').textContent)",
                           timeout=600_000)
    tab.shot("22-chat-job-running")
    page.wait_for_selector("[data-final-metrics], .alert.error", timeout=900_000)
    assert page.locator(".alert.error").count() == 0, page.locator(".alert.error").inner_text()
    assert page.locator("#job-status").inner_text().strip() == "succeeded"
    assert int(page.locator("#chart").get_attribute("data-points")) >= 10
    assert page.locator("#chart canvas").count() >= 1
    results = page.locator("[data-final-metrics]").inner_text()
    assert "held-out loss, tuned" in results and "token F1" in results and "macro-F1" not in results
    tuned_loss = float(page.locator("[data-metric=test_loss] .metric-value").inner_text())
    base_loss = float(re.search(r"base model ([0-9.]+)", results).group(1))
    assert tuned_loss < base_loss, (tuned_loss, base_loss)        # 30 steps on the chat data taught it
    assert page.locator("table.samples tbody tr").count() == 4
    assert page.locator("table.cm").count() == 0
    tab.shot("23-chat-job-finished")

    # The chat playground streams the tuned model's answer.
    page.get_by_role("link", name="Chat with it in the playground").click()
    page.wait_for_url(re.compile(r".*/playground/chat\?model="))
    page.get_by_role("textbox", name="Message").fill("Who are you?")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function("() => ['true', 'error'].includes(document.querySelector('[data-answer]').dataset.done)",
                           timeout=120_000)
    answer = page.locator("[data-answer]")
    assert answer.get_attribute("data-done") == "true", page.locator("[data-chat-error-live]").inner_text()
    assert answer.inner_text().strip() and int(answer.get_attribute("data-pieces")) >= 1
    tab.shot("24-chat-playground")
    print(f"\nchat journey: {time.monotonic() - t0:.0f} s")
