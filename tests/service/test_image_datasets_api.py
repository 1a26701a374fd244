"""Image archives through the dataset API against a real server: the issue's hostile archive is
refused with a report naming each member (nothing stored), a small copy of cifar10-mini becomes an
image-classification dataset with its stats and thumbnails (sealed at rest: neither the stored
archive nor the database holds a plaintext image), and another tenant sees none of it."""

from __future__ import annotations

import pytest

from image_archives import cifar_zip, hostile_zip



def _stored(server) -> list:
    return sorted(p for p in (server.home / "tenants").glob("*/datasets/objects/**/*") if p.is_file())


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return cifar_zip(tmp_path_factory.mktemp("img") / "cifar-mini.zip", per_class=10, test_per_class=3)


@pytest.fixture(scope="module")
def uploaded(client_a, cifar):
    with open(cifar, "rb") as f:
        r = client_a.post("/api/v1/datasets", files={"file": (cifar.name, f)}, timeout=120)
    assert r.status_code == 201, r.text
    return r.json()


def test_hostile_archive_is_refused_with_each_member_named_and_nothing_stored(server, client_a, tmp_path):
    before = _stored(server)
    path, bad = hostile_zip(tmp_path / "hostile.zip")
    with open(path, "rb") as f:
        r = client_a.post("/api/v1/datasets", files={"file": (path.name, f)}, timeout=120)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_file"
    issues = err["issues"]
    text = " ".join(f"{i['message']} {i.get('column') or ''}" for i in issues)
    for member, what in bad.items():
        name = member.rsplit("/", 1)[-1]
        assert name in text, (what, member, issues)
    codes = {i["code"] for i in issues}
    assert {"bad_image", "image_too_large"} <= codes, codes
    assert any(i["code"] == "unsafe_member" for i in issues), codes
    assert any(i["severity"] == "warning" and i["code"] == "converted_mode" for i in issues), codes
    assert _stored(server) == before
    assert not any(p.is_file() for p in (server.home / "tenants").glob("*/datasets/staging/**/*"))
    assert all(d["filename"] != path.name for d in client_a.get("/api/v1/datasets").json()["data"])


def test_cifar_archive_is_a_processed_image_dataset_with_stats(uploaded):
    d = uploaded
    assert (d["task"], d["kind"], d["status"]) == ("image-classification", "images", "processed")
    assert d["rows"] == 100 and d["report"]["test_rows"] == 30
    assert d["report"]["errors"] == 0
    stats = d["stats"]
    assert stats["label_counts"] == {c: 10 for c in stats["label_counts"]} and len(stats["label_counts"]) == 10
    assert "thumbnails_sealed" not in stats          # the preview route shows them, to the tenant only


def test_preview_shows_thumbnails_of_each_class(client_a, uploaded):
    r = client_a.get(f"/api/v1/datasets/{uploaded['id']}/preview", params={"limit": 500})
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    assert {row["label"] for row in rows} == set(uploaded["stats"]["label_counts"])
    assert all(row["thumbnail"].startswith("data:image/png;base64,") and row["path"].endswith(".jpg")
               for row in rows)


def test_images_are_encrypted_at_rest(server, uploaded):
    stored = [p for p in _stored(server) if p.name != "meta.json"]
    assert stored and not any(p.read_bytes().startswith(b"PK") for p in stored)
    for db in server.home.glob("*.db*"):
        data = db.read_bytes()
        assert b"data:image" not in data and b"iVBORw0KGgo" not in data      # no PNG, as text or base64


def test_another_tenant_sees_nothing(client_b, uploaded):
    assert client_b.get(f"/api/v1/datasets/{uploaded['id']}").status_code == 404
    assert client_b.get(f"/api/v1/datasets/{uploaded['id']}/preview").status_code == 404
    assert uploaded["id"] not in {d["id"] for d in client_b.get("/api/v1/datasets").json()["data"]}
