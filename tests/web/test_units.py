"""The UI's pure parts, without a browser: session signing, the advisor, the wizard's form
parsing, and every template compiles."""

from __future__ import annotations

import time

import pytest

from tunelab.strategies import ConfigError
from tunelab.web import session as sess
from tunelab.web import wizard
from tunelab.web.advisor import DataFacts, advise, recommend
from tunelab.web.deps import HERE, safe_next, templates


def test_session_cookie_is_signed_and_expires(tmp_path):
    secret = sess.load_secret(tmp_path)
    assert sess.load_secret(tmp_path) == secret                       # created once, then reused
    assert (tmp_path / sess.SECRET_FILE).stat().st_mode & 0o777 == 0o600
    payload = sess.new_session("usr_1", "ten_1", None)
    cookie = sess.sign(secret, payload)
    assert sess.unsign(secret, cookie) == payload
    body, mac = cookie.split(".")
    assert sess.unsign(secret, body + "." + mac[:-1] + ("0" if mac[-1] != "0" else "1")) is None
    assert sess.unsign(b"another secret, long enough to be one", cookie) is None
    assert sess.unsign(secret, "garbage") is None and sess.unsign(secret, None) is None
    old = sess.sign(secret, payload | {"iat": int(time.time()) - sess.SESSION_SECONDS - 1})
    assert sess.unsign(secret, old) is None
    assert not sess.tokens_match(payload["csrf"], None) and sess.tokens_match(payload["csrf"], payload["csrf"])


@pytest.mark.parametrize("url, expected", [("/jobs/x?y=1", "/jobs/x?y=1"), ("//evil.test", "/datasets"),
                                           ("https://evil.test", "/datasets"), ("/\\evil", "/datasets"),
                                           (None, "/datasets")])
def test_next_stays_on_this_site(url, expected):
    assert safe_next(url) == expected


def facts(rows, labels, smallest, p95=20):
    return DataFacts(rows, labels, smallest, mean_tokens=p95 / 2, p95_tokens=p95)


def test_advisor_recommends_from_size_labels_and_budget():
    assert recommend(facts(60, 10, 4))[0] == "zero-shot"
    assert recommend(facts(300, 10, 20))[0] == "few-shot"
    assert recommend(facts(5000, 2, 700))[0] == "linear-probe"                 # short texts, balanced
    assert recommend(facts(5000, 2, 700, p95=200))[0] == "lora"                # long texts
    assert recommend(facts(5000, 2, 700, p95=200), budget="fast")[0] == "linear-probe"
    assert recommend(facts(20000, 2, 700), budget="best")[0] == "lora"         # no GPU: full is too slow
    assert recommend(facts(20000, 2, 700), budget="best", cuda=True)[0] == "full"
    sms = DataFacts.from_stats({"rows": 5572, "num_labels": 2, "label_counts": {"ham": 4825, "spam": 747},
                                "length": {"mean": 24.0, "p95": 60}}, limit=1000)
    assert sms.rows == 1000 and sms.smallest_class == 134
    advice = advise(sms, 22_700_000, ["zero-shot", "linear-probe", "lora"], history={"lora": 0.5})
    assert advice.recommended == "linear-probe"
    assert advice.seconds["zero-shot"] < advice.seconds["linear-probe"] < 600
    assert advice.seconds["lora"] == 500 and advice.basis["lora"] == "from your past runs"


def test_wizard_sends_only_changed_hyperparameters():
    form = {"p.lora.__shown": "1", "p.lora.r": "8", "p.lora.epochs": "3", "p.lora.learning_rate": "2e-4",
            "p.lora.target_modules": "query, value", "p.lora.freeze_embeddings": None}
    assert wizard.params_from_form("lora", form) == {"r": 8, "learning_rate": 0.0002,
                                                     "target_modules": ["query", "value"]}
    assert wizard.params_from_form("lora", {"p.lora.r": "8"}) == {}              # fieldset not shown: defaults
    with pytest.raises(ConfigError, match="r"):
        wizard.params_from_form("lora", {"p.lora.__shown": "1", "p.lora.r": "eight"})
    full = {"p.full.__shown": "1"}                                              # unchecked box: an override
    assert wizard.params_from_form("full", full) == {"freeze_embeddings": False}
    zs = {"p.zero-shot.__shown": "1", "p.zero-shot.label_descriptions": "spam: an unwanted advert\nham: a message"}
    assert wizard.params_from_form("zero-shot", zs) == {"label_descriptions": {"spam": "an unwanted advert",
                                                                               "ham": "a message"}}
    assert wizard.positive_int(" 1,000 ", "rows") == 1000 and wizard.positive_int("", "rows") is None
    with pytest.raises(ConfigError):
        wizard.positive_int("-5", "rows")


def test_every_template_compiles():
    names = sorted(p.name for p in (HERE / "templates").glob("*.html"))
    assert len(names) >= 15
    for name in names:
        templates.env.get_template(name)
