"""The catalog and bring-your-own folders: safetensors only, never remote code."""

from __future__ import annotations

import json
import shutil

import pytest

from tunelab.models import ModelNotFound, UnsafeModel, list_models, resolve_model


def test_catalog_model_resolves_from_the_installed_package():
    spec = resolve_model("minilm")
    assert spec.parameters == 22713216 and spec.max_length == 256
    assert (spec.path / "model.safetensors").is_file()
    assert resolve_model("all-MiniLM-L6-v2").path == spec.path
    assert "minilm" in [m.name for m in list_models()]


def test_bring_your_own_folder(tmp_path):
    src = resolve_model("minilm").path
    dest = tmp_path / "my-encoder"
    shutil.copytree(src, dest)
    spec = resolve_model(str(dest))
    assert spec.name == "my-encoder" and spec.ref == str(dest.resolve())
    assert spec.parameters > 20_000_000


@pytest.mark.parametrize("mutate, error, message", [
    (lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"), UnsafeModel, "no .safetensors"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {**json.loads((d / "config.json").read_text()), "auto_map": {"AutoModel": "x.Y"}})),
     UnsafeModel, "trust_remote_code"),
    (lambda d: (d / "config.json").unlink(), UnsafeModel, "config.json"),
])
def test_unsafe_folders_are_refused(tmp_path, mutate, error, message):
    dest = tmp_path / "m"
    shutil.copytree(resolve_model("minilm").path, dest)
    mutate(dest)
    with pytest.raises(error, match=message):
        resolve_model(str(dest))


def test_unknown_model_names_the_catalog():
    with pytest.raises(ModelNotFound, match="minilm"):
        resolve_model("gpt-17")


def test_classifier_load_is_quiet_about_the_new_head_and_warns_about_missing_base_weights(tmp_path, caplog, capfd):
    from safetensors.torch import load_file, save_file

    from tunelab.models.loading import load_classifier

    src = resolve_model("minilm").path
    with caplog.at_level("WARNING", logger="tunelab.models.loading"):
        load_classifier(src, ["a", "b"])
    assert not caplog.records
    assert "MISSING" not in capfd.readouterr().err        # transformers' load report is not shown

    dest = tmp_path / "partial"
    shutil.copytree(src, dest)
    weights = load_file(str(dest / "model.safetensors"))
    kept = {k: v for k, v in weights.items() if ".layer.5." not in k}
    assert len(kept) < len(weights)
    save_file(kept, str(dest / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level("WARNING", logger="tunelab.models.loading"):
        load_classifier(dest, ["a", "b"])
    assert any("start random" in r.getMessage() and "layer.5" in r.getMessage() for r in caplog.records)
