"""Model files from users: pickles never unpickled, a folder's own code never run, fuzzed
safetensors headers never crash the server, and a job cannot name a server path as its model."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunelab.models import resolve_model
from tunelab.models.catalog import UnsafeModel


SQLITE_ONLY = True   # database-independent: see tests/service/conftest.py

class _Canary:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):       # unpickling this writes the canary file
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


GOOD = _safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
CONFIG = json.dumps({"model_type": "bert", "architectures": ["BertModel"]}).encode()


def _import(client, archive: bytes):
    return client.post("/api/v1/models/import", files={"file": ("model.zip", archive)}, data={"name": "mine"})


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pkl", "innocent.json.weights"])
def test_pickle_canary_is_refused_and_never_unpickled(client_a, server, tmp_path, name):
    canary = tmp_path / f"canary-{name}"
    payload = pickle.dumps(_Canary(canary))
    r = _import(client_a, _zip_bytes({"config.json": CONFIG, name: payload, "model.safetensors": GOOD}))
    assert r.status_code == 422 and r.json()["error"]["code"] == "pickle", r.text
    # and as a dataset: read as data, never unpickled
    r = client_a.post("/api/v1/datasets", files={"file": ("data.pkl", payload)})
    assert r.status_code == 422
    assert not canary.exists()


def test_model_folder_with_remote_code_never_runs_it(client_a, tmp_path):
    canary = tmp_path / "remote-code-ran"
    code = f"open({str(canary)!r}, 'w').write('pwned')\n".encode()
    config = json.dumps({"model_type": "evil", "auto_map": {"AutoModel": "modeling_evil.EvilModel"}}).encode()
    r = _import(client_a, _zip_bytes({"config.json": config, "modeling_evil.py": code, "model.safetensors": GOOD}))
    assert r.status_code == 422 and r.json()["error"]["code"] == "remote_code"
    r = _import(client_a, _zip_bytes({"config.json": config, "model.safetensors": GOOD}))
    assert r.status_code == 422 and r.json()["error"]["code"] == "remote_code"
    # the library path too: a local folder asking for remote code is refused before loading
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_bytes(config)
    (folder / "modeling_evil.py").write_bytes(code)
    (folder / "model.safetensors").write_bytes(GOOD)
    with pytest.raises(UnsafeModel):
        resolve_model(str(folder))
    assert not canary.exists()


def test_a_safe_model_imports_and_lists(client_a):
    r = _import(client_a, _zip_bytes({"m/config.json": CONFIG, "m/model.safetensors": GOOD}))
    assert r.status_code == 201, r.text
    ids = {m["id"] for m in client_a.get("/api/v1/models").json()["data"]}
    assert r.json()["id"] in ids and r.json()["tensors"] == 1


headers = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.text(max_size=8), st.one_of(
        st.none(), st.integers(), st.text(max_size=5),
        st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "Q9", ""]),
                               "shape": st.lists(st.integers(-3, 10**12), max_size=4),
                               "data_offsets": st.lists(st.integers(-5, 10**12), max_size=3)})), max_size=4)
    .map(lambda h: json.dumps(h).encode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=headers, length_delta=st.integers(-20, 20), data=st.binary(max_size=64))
def test_fuzzed_safetensors_headers_never_crash_the_server(client_a, header, length_delta, data):
    blob = struct.pack("<Q", max(0, len(header) + length_delta)) + header + data
    r = _import(client_a, _zip_bytes({"config.json": CONFIG, "model.safetensors": blob}))
    assert r.status_code in (201, 422), r.text          # never a 500
    assert client_a.get("/healthz").status_code == 200


@pytest.mark.parametrize("model", ["/etc", "..", "/", "upload:ffffffffffffffff", "upload:../../x"])
def test_a_job_cannot_name_a_server_path_as_its_model(client_a, banking_subset, model):
    with open(banking_subset[1], "rb") as f:
        ds = client_a.post("/api/v1/datasets", files={"file": ("t.csv", f)}).json()
    r = client_a.post("/api/v1/jobs", json={"dataset_id": ds["id"], "strategy": "zero-shot", "model": model})
    assert r.status_code == 422 and r.json()["error"]["param"] == "model", r.text
