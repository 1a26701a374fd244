"""Uploading data for chat models against a real server: chat JSONL (OpenAI `messages`), ShareGPT,
alpaca, plain text and preference pairs through /api/v1/datasets, /v1/files (purpose fine-tune)
and the web UI; the report says the task, the stats count turns and tokens, the preview shows
conversations; a broken file is refused with its line and nothing is stored."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

# The datasets' database path runs on both backends in test_api_basics: PostgreSQL here in make test-slow.
pytestmark = pytest.mark.slow_on_postgresql

TOPICS = ["the weather", "a recipe for pancakes", "the capital of France", "how to sort a list in Python",
          "a good book about history", "why the sky is blue", "how to tie a tie", "the rules of chess",
          "a name for a cat", "how far away the moon is"]


def chat_lines(n: int = 20) -> list[dict]:
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        messages = [{"role": "system", "content": "You are a helpful, concise assistant."},
                    {"role": "user", "content": f"Question {i}: can you tell me about {topic}?"},
                    {"role": "assistant", "content": f"Sure. Here is a short answer about {topic} (number {i})."}]
        if i % 3 == 0:
            messages += [{"role": "user", "content": "Thanks! One more detail, please."},
                         {"role": "assistant", "content": f"Another detail about {topic}: it is worth a look."}]
        out.append({"messages": messages})
    return out


def jsonl(records: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


PREFERENCE = jsonl([{"prompt": f"Say something kind about {t}.", "chosen": f"{t.capitalize()} is lovely.",
                     "rejected": f"I do not care about {t}."} for t in TOPICS])
ALPACA = json.dumps([{"instruction": f"Explain {t}.", "input": "", "output": f"{t} explained briefly."}
                     for t in TOPICS]).encode()
SHAREGPT = jsonl([{"conversations": [{"from": "human", "value": f"Tell me about {t}."},
                                     {"from": "gpt", "value": f"{t} is interesting."}]} for t in TOPICS])
PLAIN = "\n\n".join(f"A short document about {t}. It has a few sentences.\nAnd a second line." for t in TOPICS).encode()


def _stored_files(server) -> list:
    return sorted(p for p in (server.home / "tenants").glob("*/datasets/**/*") if p.is_file())


def _filenames(client) -> list[str]:
    return sorted(d["id"] for d in client.get("/api/v1/datasets").json()["data"])


def test_chat_jsonl_upload_report_stats_and_preview(client_a):
    r = client_a.post("/api/v1/datasets", files={"file": ("chat.jsonl", jsonl(chat_lines(20)))})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["task"] == "chat" and ds["kind"] == "chat" and ds["status"] == "processed"
    assert ds["rows"] == 20 and ds["text_column"] is None and ds["labels"] is None
    report, stats = ds["report"], ds["stats"]
    assert report["ok"] and report["errors"] == 0
    assert report["task"] == "chat" and report["kind"] == "chat" and report["format"] == "openai-chat"
    assert stats["rows"] == 20 and stats["turns"]["max"] == 5 and 3 <= stats["turns"]["mean"] <= 5
    assert stats["length_unit"] == "tokens" and 0 < stats["length"]["p50"] <= stats["length"]["max"]
    assert sum(stats["histogram"]["counts"]) == 20
    assert {"system", "user", "assistant"} == set(stats["roles"])
    assert stats["roles"]["assistant"]["messages"] == 20 + 7 and stats["roles"]["assistant"]["tokens"] > 0

    got = client_a.get(f"/api/v1/datasets/{ds['id']}").json()
    assert got["task"] == "chat" and got["stats"] == stats
    listed = next(d for d in client_a.get("/api/v1/datasets").json()["data"] if d["id"] == ds["id"])
    assert listed["task"] == "chat" and listed["kind"] == "chat"

    rows = client_a.get(f"/api/v1/datasets/{ds['id']}/preview", params={"limit": 3}).json()["data"]
    assert [row["line"] for row in rows] == [1, 2, 3]
    assert rows[0]["messages"][0] == {"role": "system", "content": "You are a helpful, concise assistant."}
    assert [m["role"] for m in rows[1]["messages"]] == ["system", "user", "assistant"]
    assert "Question 1" in rows[1]["messages"][1]["content"]


def test_openai_files_upload_for_fine_tune(client_a):
    body = jsonl(chat_lines(12))
    r = client_a.post("/v1/files", files={"file": ("train.jsonl", body)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["object"] == "file" and f["purpose"] == "fine-tune" and f["status"] == "processed"
    assert f["status_details"] is None and f["bytes"] == len(body)
    ds = client_a.get(f"/api/v1/datasets/{f['id']}").json()
    assert ds["task"] == "chat" and ds["rows"] == 12
    assert client_a.get(f"/v1/files/{f['id']}/content").content == body


@pytest.mark.parametrize("name, data, task, kind, fmt, first", [
    ("pairs.jsonl", PREFERENCE, "preference", "preference", "preference", "prompt"),
    ("alpaca.json", ALPACA, "chat", "chat", "alpaca", "messages"),
    ("sharegpt.jsonl", SHAREGPT, "chat", "chat", "sharegpt", "messages"),
    ("corpus.txt", PLAIN, "chat", "plain", "plain", "messages"),
])
def test_other_generative_formats(client_a, name, data, task, kind, fmt, first):
    r = client_a.post("/api/v1/datasets", files={"file": (name, data)})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["task"], ds["kind"], ds["report"]["format"], ds["rows"]) == (task, kind, fmt, len(TOPICS))
    assert ds["status"] == "processed" and ds["stats"]["length"]["max"] > 0
    rows = client_a.get(f"/api/v1/datasets/{ds['id']}/preview").json()["data"]
    assert len(rows) == len(TOPICS) and first in rows[0] and rows[0]["line"] >= 1
    if kind == "preference":
        assert rows[0]["prompt"][0]["role"] == "user" and rows[0]["chosen"] and rows[0]["rejected"]
        assert set(ds["stats"]["roles"]) == {"prompt", "chosen", "rejected"}
    if kind == "plain":
        assert rows[1]["messages"][0]["content"].startswith("A short document about")


def test_a_table_is_still_text_classification(client_a):
    table = "text,label\n" + "".join(f"message number {i} about {t},{'ab'[i % 2]}\n"
                                     for i, t in enumerate(TOPICS * 2))
    r = client_a.post("/api/v1/datasets", files={"file": ("table.csv", table.encode())})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["task"] == "text-classification" and ds["kind"] == "labelled"
    assert ds["report"]["task"] == "text-classification" and ds["labels"] == 2
    assert client_a.get(f"/api/v1/datasets/{ds['id']}/preview").json()["data"][0].keys() >= {"line", "text", "label"}


GOOD = chat_lines(6)
BAD = {
    "not_json": (jsonl(GOOD[:2]) + b'{"messages": [oops\n' + jsonl(GOOD[2:]), 3, "bad_json"),
    "no_assistant_turn": (jsonl(GOOD[:1] + [{"messages": [{"role": "user", "content": "Hello?"}]}] + GOOD[1:]),
                          2, "no_assistant_turn"),
    "unknown_role": (jsonl(GOOD[:3] + [{"messages": [{"role": "user", "content": "Hi"},
                                                     {"role": "robot", "content": "Beep"}]}] + GOOD[3:]),
                     4, "bad_role"),
    "empty_content": (jsonl(GOOD[:4] + [{"messages": [{"role": "user", "content": "   "},
                                                      {"role": "assistant", "content": "Yes?"}]}] + GOOD[4:]),
                      5, "empty_turn"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("route", ["/api/v1/datasets", "/v1/files"])
def test_malformed_generative_file_is_refused_with_its_line(server, client_a, case, route):
    data, line, code = BAD[case]
    before_rows, before_files = _filenames(client_a), _stored_files(server)
    r = client_a.post(route, files={"file": (f"{case}.jsonl", data)}, data={"purpose": "fine-tune"})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_file" and f"line {line}" in err["message"]
    assert [(i["code"], i["line"]) for i in err["issues"]] == [(code, line)]
    assert _filenames(client_a) == before_rows and _stored_files(server) == before_files


def test_upload_through_the_web_ui(server, tenant_a):
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=120) as c:
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
        r = c.post("/login", data={"method": "key", "api_key": tenant_a["api_key"], "csrf_token": token})
        assert r.status_code == 303, r.text
        page = c.get("/datasets")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post("/datasets/upload", data={"csrf_token": token},
                   files={"file": ("web-chat.jsonl", jsonl(chat_lines(8)))})
        assert r.status_code == 303, r.text
        page = c.get(r.headers["location"])
        assert page.status_code == 200
        assert "web-chat.jsonl" in page.text and "Roles" in page.text and "Conversation lengths" in page.text
        assert "Question 1: can you tell me about a recipe for pancakes?" in page.text
        assert "<strong>assistant</strong>" in page.text

        bad, line, _ = BAD["unknown_role"]
        r = c.post("/datasets/upload", data={"csrf_token": token}, files={"file": ("web-bad.jsonl", bad)})
        assert r.status_code == 422
        assert "web-bad.jsonl was not imported" in r.text and f"line {line}" in r.text
        assert "web-bad.jsonl" not in c.get("/datasets").text.split("Your datasets", 1)[1]


def test_sdk_shows_the_task(server, tenant_a, tmp_path):
    from tunelab.sdk import Client

    path = tmp_path / "sdk-pairs.jsonl"
    path.write_bytes(PREFERENCE + jsonl([{"prompt": "One more?", "chosen": "Yes.", "rejected": "No."}]))
    with Client(server.url, tenant_a["api_key"], timeout=120) as sdk:
        ds = sdk.datasets.upload(path)
        assert (ds.task, ds.kind, ds.rows) == ("preference", "preference", len(TOPICS) + 1)
        assert next(d for d in sdk.datasets.list() if d.id == ds.id).task == "preference"
        assert sdk.datasets.preview(ds.id, limit=1)[0]["chosen"]


# Jobs on chat data: what is refused at creation, before any work (the jobs themselves:
# test_generative_jobs.py, in `make test-slow`).
@pytest.fixture(scope="module")
def chat_jsonl(tmp_path_factory):
    from .helpers import identity_chat

    return identity_chat(tmp_path_factory.mktemp("chat"))


@pytest.mark.parametrize("body, status, code", [
    ({"model": "minilm", "strategy": "sft-lora"}, 422, "invalid_model"),        # an encoder for chat data
    ({"strategy": "linear-probe"}, 422, None),                                    # a classifier's strategy
    ({"strategy": "sft-qlora"}, 422, "cuda_required"),                            # no CUDA here
])
def test_jobs_refused_at_creation(server, tenant_a, chat_jsonl, body, status, code):
    with server.client(tenant_a["api_key"]) as api:
        with open(chat_jsonl, "rb") as f:
            ds = api.post("/api/v1/datasets", files={"file": (chat_jsonl.name, f)}).json()
        before = len(api.get("/api/v1/jobs").json()["data"])
        r = api.post("/api/v1/jobs", json={"dataset_id": ds["id"], **body})
        assert r.status_code == status, r.text
        if code:
            assert r.json()["error"]["code"] == code, r.text
        assert len(api.get("/api/v1/jobs").json()["data"]) == before


def test_openai_method_that_does_not_fit_the_file_is_a_400(server, tenant_a, chat_jsonl):
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key=tenant_a["api_key"], max_retries=0)
    with open(chat_jsonl, "rb") as f:
        training = oai.files.create(file=f, purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as e:
        oai.fine_tuning.jobs.create(model="smollm2", training_file=training.id, method={"type": "dpo"})
    assert "preference" in str(e.value)
