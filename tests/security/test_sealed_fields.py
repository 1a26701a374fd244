"""The few test texts a result carries as examples of errors reach the database sealed, and come
back whole for the tenant's own pages (the end-to-end check is test_encryption's marker scan)."""

from __future__ import annotations

import json
import os

import pytest

from tunelab.security.crypto import Cipher
from tunelab.security.sealed_fields import seal, unseal

SECRET = "zanzibar-quokka-7781 my account number"
EXAMPLES = [{"text": SECRET, "true": "spam", "predicted": "ham"}]


@pytest.mark.parametrize("result", [
    {"metrics": {"macro_f1": 0.9, "error_examples": EXAMPLES}},                               # a train job
    {"results": [{"strategy": "full", "in_words": {"weakest": [{"label": "spam", "examples": EXAMPLES}]}}]},
    {"metrics": {"macro_f1": 0.9, "error_examples": []}},                                     # nothing to seal
    {"metrics": {"task": "causal-lm"}},
])
def test_sealed_in_the_row_whole_on_the_page(result):
    mine, other = Cipher(os.urandom(32), "ten_a"), Cipher(os.urandom(32), "ten_b")
    stored = seal(result, mine)
    assert SECRET not in json.dumps(stored)
    assert unseal(stored, mine) == result
    if SECRET in json.dumps(result):              # another tenant's key opens nothing, and breaks nothing
        assert SECRET not in json.dumps(unseal(stored, other))
