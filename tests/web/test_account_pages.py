"""Keys and members, password sign-in, sign-out, the wizard's own validation, and a phone-sized
screen: the pages around the journey."""

from __future__ import annotations

import re

import httpx

from service.helpers import upload


def test_keys_members_password_and_sign_out(tab, web_server):
    hooli = web_server.create_tenant("hooli", "gavin@hooli.test")
    page = tab.page
    tab.sign_in(hooli["api_key"])
    tab.goto("/settings")

    # A new key is shown once, then listed by prefix only; revoking it is immediate.
    page.get_by_label("New key's name").fill("nightly retrain")
    page.get_by_role("button", name="Create a key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("tl-")
    with web_server.client(key) as api:
        assert api.get("/api/v1/tenants/me").status_code == 200
    tab.goto("/settings")
    assert key not in page.content()
    row = page.locator("tr", has_text="nightly retrain")
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_url(re.compile(r".*/settings$"))
    assert page.locator("tr", has_text="nightly retrain").get_by_text("revoked").is_visible()
    with web_server.client(key) as api:
        assert api.get("/api/v1/tenants/me").status_code == 401

    # Members: add one with a first password, change the role; refused duplicates say why.
    page.get_by_label("Email", exact=True).fill("richard@hooli.test")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_label("First password").fill("pied-piper-42")
    page.get_by_role("button", name="Add member").click()
    assert page.get_by_text("Added richard@hooli.test as viewer.").is_visible()
    page.get_by_label("Email", exact=True).fill("richard@hooli.test")
    page.get_by_role("button", name="Add member").click()
    assert page.get_by_text("already a member").is_visible()
    page.get_by_label("Role of richard@hooli.test").select_option("member")
    page.locator("tr", has_text="richard@hooli.test").get_by_role("button", name="Save").click()
    assert page.get_by_text("richard@hooli.test is now member.").is_visible()
    tab.shot("14-keys-members")

    # Sign out, then in as the new member with email and password.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login$"))
    assert tab.goto("/datasets").url.endswith("/login?next=/datasets")
    page.get_by_role("tab", name="Email and password").click()
    page.get_by_role("textbox", name="Email").fill("richard@hooli.test")
    page.locator("#password").fill("wrong password")
    page.locator("#panel-password").get_by_role("button", name="Sign in").click()
    assert page.get_by_text("That email and password did not work.").is_visible()
    page.locator("#password").fill("pied-piper-42")
    page.locator("#panel-password").get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/datasets$"))
    assert page.get_by_text("hooli · member").is_visible()

    # Changing the password keeps this session and ends the others that used the old one.
    old_cookie = next(c["value"] for c in tab.context.cookies() if c["name"] == "tl_session")
    tab.goto("/settings")
    page.get_by_label("New password").fill("hooli-xyz-2")
    page.get_by_label("Again").fill("hooli-xyz-2")
    page.get_by_role("button", name="Save password").click()
    assert page.get_by_text("Password set").is_visible()
    assert tab.goto("/jobs").url.endswith("/jobs")
    with httpx.Client(base_url=web_server.url, cookies={"tl_session": old_cookie}) as stolen:
        assert stolen.get("/jobs", follow_redirects=False).status_code == 303
    assert tab.goto("/audit").status == 403                       # admins only
    assert page.get_by_role("heading", name="Not allowed").is_visible()


def test_wizard_refuses_bad_input_and_fits_a_phone(browser, web_server, shared_copy):
    pied = web_server.create_tenant("pied-piper", "ops@pied.test")
    with web_server.client(pied["api_key"]) as api:
        upload(api, shared_copy / "financial_phrasebank.csv")
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    from .conftest import Page

    tab = Page(context, web_server.url)
    page = tab.page
    tab.sign_in(pied["api_key"])
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the datasets page scrolls sideways on a phone ({width}px)"
    tab.shot("16-mobile-datasets", full=False)

    tab.goto("/train")                                            # one dataset: chosen already
    assert page.get_by_text("Transfer learning or fine-tuning?").is_visible()
    page.locator("input[name=strategy][value=lora]").check()
    page.wait_for_function("() => document.querySelector('button[value=train]').textContent.includes('lora')")
    page.get_by_text("Advanced: lora hyperparameters").click()
    page.get_by_label("r", exact=True).fill("zero")
    page.get_by_role("button", name="Start training (lora)").click()
    error = page.locator("#wizard-error")
    error.wait_for()
    assert "r" in error.inner_text() and "integer" in error.inner_text()
    page.fill("#limit", "-5")
    page.locator("#limit").press("Tab")
    page.get_by_text("Rows to use must be a whole number").wait_for()
    page.fill("#limit", "")
    page.locator("#limit").press("Tab")
    page.get_by_text("Rows to use must be a whole number").wait_for(state="detached")
    page.get_by_text("Or compare several strategies on the same split").click()
    for box in page.locator("input[name=compare]:checked").all()[1:]:
        box.uncheck()
    page.get_by_role("button", name="Compare these strategies").click()
    page.get_by_text("Tick at least two strategies to compare.").wait_for()
    tab.goto("/jobs")
    assert page.get_by_text("No jobs yet").is_visible()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the jobs page scrolls sideways on a phone ({width}px)"
    context.close()
    assert not tab.errors, tab.errors
