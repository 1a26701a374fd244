"""Predictions from a tuned image classifier against a real server and its sandboxed worker: a
linear probe on ResNet-20 (CIFAR-trained) learned from a small copy of cifar10-mini through the
jobs API, then real test images classified as base64 JSON, as data: URLs, as multipart files and
through the SDK (the same answers every way), and what is refused, with the status the document
declares: a decompression bomb, bytes that are no image, an animated GIF, bad base64, too many
images, a body over the cap, texts sent to an image model, another tenant's model."""

from __future__ import annotations

import base64
import io

import pytest

from tunelab.sdk import Client

from image_archives import cifar_image, cifar_zip, png_bomb

from .helpers import upload, wait_job

SQLITE_ONLY = True          # the serving path is the subject, not the database
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SAMPLE = [("cat", 0), ("ship", 1), ("automobile", 2), ("frog", 3)]
STATE: dict = {}


@pytest.fixture(scope="module")
def model_id(server, tenant_a, client_a, tmp_path_factory):
    archive = cifar_zip(tmp_path_factory.mktemp("img") / "cifar-mini.zip", per_class=12, test_per_class=4)
    ds = upload(client_a, archive)
    job = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "linear-probe",
                                              "model": "resnet20-cifar10"}).json()
    assert "id" in job, job
    done = wait_job(client_a, job["id"], timeout=600)
    assert done["status"] == "succeeded", (done["error"], done)
    STATE["job"] = done
    return done["fine_tuned_model"]


def test_the_image_job_was_estimated_and_billed(model_id):
    """Billing estimates an image job per image (services/billing.IMAGE_TOKENS), and settles it."""
    billing = STATE["job"]["billing"]
    estimate, charged = float(billing["estimate_usd"]), float(billing["charged_usd"])
    assert estimate > 0 and billing["estimate_wall_seconds"] > 0, billing
    assert billing["compute_seconds"] > 0 and charged > 0, billing
    # a sane per-image estimate: the run's charge within 10x of it either way
    assert estimate / 10 <= charged <= estimate * 10, billing


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _images() -> list[bytes]:
    return [cifar_image(c, i) for c, i in SAMPLE]


def _predict(client, model, images: list[str]):
    return client.post(f"/api/v1/models/{model}/predict-images", json={"images": images}, timeout=120)


def test_base64_json_classifies_real_images(client_a, model_id):
    r = _predict(client_a, model_id, [_b64(b) for b in _images()])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model_id and [p["index"] for p in body["data"]] == [0, 1, 2, 3]
    for p in body["data"]:
        assert p["label"] in CLASSES and p["filename"] is None
        assert p["score"] == max(p["scores"].values()) and 0 < sum(p["scores"].values()) <= 1.0001
    # ResNet-20's CIFAR features: these four test images are its easy cases
    assert sum(p["label"] == c for p, (c, _) in zip(body["data"], SAMPLE)) >= 3, body


def test_multipart_data_urls_and_sdk_give_the_same_answers(server, tenant_a, client_a, model_id, tmp_path):
    images = _images()
    ref = _predict(client_a, model_id, [_b64(b) for b in images]).json()["data"]
    urls = _predict(client_a, model_id, [f"data:image/jpeg;base64,{_b64(b)}" for b in images])
    assert urls.status_code == 200, urls.text
    files = [("files", (f"{c}.jpg", b, "image/jpeg")) for (c, _), b in zip(SAMPLE, images)]
    multi = client_a.post(f"/api/v1/models/{model_id}/predict-images/files", files=files, timeout=120)
    assert multi.status_code == 200, multi.text
    assert [p["filename"] for p in multi.json()["data"]] == [f"{c}.jpg" for c, _ in SAMPLE]
    paths = []
    for (c, _), b in zip(SAMPLE, images):
        paths.append(tmp_path / f"{c}.jpg")
        paths[-1].write_bytes(b)
    with Client(server.url, tenant_a["api_key"]) as sdk:
        by_path = sdk.models.predict_images(model_id, paths)
        by_bytes = sdk.models.predict_images(model_id, images)
    for answers in (urls.json()["data"], multi.json()["data"], [p.model_dump() for p in by_path],
                    [p.model_dump() for p in by_bytes]):
        assert [a["label"] for a in answers] == [p["label"] for p in ref]
        for a, p in zip(answers, ref):
            assert a["score"] == pytest.approx(p["score"], abs=1e-5)


def _gif() -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


@pytest.mark.parametrize("name,images,status,code", [
    ("bomb", lambda: [_b64(png_bomb())], 422, "image_too_large"),
    ("not an image", lambda: [_b64(b"just some text, no pixels here")], 422, "bad_image"),
    ("animated", lambda: [_b64(_gif())], 422, "animated_image"),
    ("bad base64", lambda: ["@@not-base64@@"], 422, "validation_error"),
    ("too many", lambda: [_b64(cifar_image())] * 17, 422, "validation_error"),
    ("none", lambda: [], 422, "validation_error"),
    ("over the body cap", lambda: [_b64(b"\xff" * 1_200_000)], 413, "body_too_large"),
])
def test_refused_with_the_declared_status(client_a, model_id, name, images, status, code):
    r = _predict(client_a, model_id, images())
    assert r.status_code == status, (name, r.text)
    assert r.json()["error"]["code"] == code, (name, r.text)


def test_multipart_refusals(client_a, model_id):
    url = f"/api/v1/models/{model_id}/predict-images/files"
    bomb = client_a.post(url, files=[("files", ("bomb.png", png_bomb(), "image/png"))])
    assert (bomb.status_code, bomb.json()["error"]["code"]) == (422, "image_too_large"), bomb.text
    text = client_a.post(url, files=[("files", ("notes.txt", b"hello", "text/plain"))])
    assert (text.status_code, text.json()["error"]["code"]) == (422, "bad_image"), text.text
    big = client_a.post(url, files=[("files", ("big.png", b"\x89PNG" + b"\0" * 1_200_000, "image/png"))])
    assert big.status_code == 413, big.text


def test_texts_to_an_image_model_and_another_tenant(client_a, client_b, model_id):
    r = client_a.post(f"/api/v1/models/{model_id}/predict", json={"texts": ["a cat"]})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "not_a_text_model"), r.text
    assert "predict-images" in r.json()["error"]["message"]
    other = _predict(client_b, model_id, [_b64(cifar_image())])
    assert other.status_code == 404, other.text
    batch = client_a.post("/api/v1/batch-predictions", data={"model": model_id},
                          files={"file": ("texts.csv", b"text\nhello\n")})
    assert batch.status_code in (400, 409, 422) and "image" in batch.json()["error"]["message"], batch.text


def test_an_image_deployment_answers_as_the_model_does(server, tenant_a, client_a, client_b, model_id):
    """The same classifier deployed: its server (sandboxed, its own process) gives the in-process
    answer; what the API checks first (a bomb) never reaches it; texts and other tenants refused."""
    dep = client_a.post("/api/v1/deployments", json={"models": [model_id], "idle_seconds": 0})
    assert dep.status_code == 201, dep.text
    dep_id = dep.json()["id"]
    images = [_b64(b) for b in _images()]
    direct = _predict(client_a, model_id, images).json()["data"]
    with Client(server.url, tenant_a["api_key"]) as sdk:
        served = sdk.deployments.predict_images(dep_id, _images())
        assert sdk.deployments.get(dep_id).requests_served == len(images)
    assert [p.label for p in served] == [p["label"] for p in direct]
    for p, d in zip(served, direct):
        assert p.index == d["index"] and abs(p.score - d["score"]) < 1e-4, (p, d)
    url = f"/api/v1/deployments/{dep_id}/predict-images"
    bomb = client_a.post(url, json={"images": [_b64(png_bomb())]})
    assert (bomb.status_code, bomb.json()["error"]["code"]) == (422, "image_too_large"), bomb.text
    texts = client_a.post(f"/api/v1/deployments/{dep_id}/predict", json={"texts": ["a cat"]})
    assert (texts.status_code, texts.json()["error"]["code"]) == (400, "not_a_text_classifier"), texts.text
    assert client_b.post(url, json={"images": images[:1]}).status_code == 404
    assert client_a.delete(f"/api/v1/deployments/{dep_id}").status_code == 200
