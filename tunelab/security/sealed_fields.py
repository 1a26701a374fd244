"""Texts from a tenant's data that a job's result carries (the few misclassified test rows shown
as examples of errors) are kept in the database sealed with the tenant's key, like every other
copy of its data: the database itself is not encrypted, its rows and WAL are plain files.

`seal` replaces each list under a text-bearing key with one ciphertext under `<key>_sealed`;
`unseal` puts it back for the tenant's own pages. Everything else passes through unchanged."""

from __future__ import annotations

import json
from typing import Any

from .crypto import Cipher

TEXT_KEYS = ("error_examples", "examples")
SUFFIX = "_sealed"


def seal(value: Any, cipher: Cipher) -> Any:
    if isinstance(value, list):
        return [seal(v, cipher) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in TEXT_KEYS and isinstance(item, list) and item:
            out[key + SUFFIX] = cipher.encrypt_text(json.dumps(item))
        else:
            out[key] = seal(item, cipher)
    return out


def unseal(value: Any, cipher: Cipher) -> Any:
    if isinstance(value, list):
        return [unseal(v, cipher) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        plain = key[:-len(SUFFIX)] if key.endswith(SUFFIX) else None
        if plain in TEXT_KEYS and isinstance(item, str):
            try:
                out[plain] = json.loads(cipher.decrypt_text(item))
            except Exception:          # a key rotated away or a damaged row: show no examples
                out[plain] = []
        else:
            out[key] = unseal(item, cipher)
    return out
