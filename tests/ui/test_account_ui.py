"""Sign up, log in, account page, API keys and the language switch in real Chromium."""

import re

import pytest
from playwright.sync_api import expect

from accounts.models import ApiKey
from tests.conftest import PASSWORD
from tests.factories import plan
from tests.ui.conftest import axe_violations, login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_signup_then_account_page_shows_the_plan(page):
    page.goto("/accounts/signup/")
    page.fill("#id_username", "newcomer")
    page.fill("#id_password1", "Sp4rk-pass-long!")
    page.fill("#id_password2", "Sp4rk-pass-long!")
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/signup" not in url)
    page.goto("/accounts/")
    expect(page.get_by_test_id("plan")).to_have_attribute("data-plan-tier", "free")
    expect(page.locator('[data-testid=rate-limits] tr[data-layer="plan"]')).to_contain_text("100")
    # The storage quotas: nothing used yet, against the free tier's limits.
    expect(page.get_by_test_id("plan")).to_contain_text("Document storage")
    expect(page.get_by_test_id("plan")).to_contain_text("0 B / 200 MB")
    expect(page.get_by_test_id("plan")).to_contain_text("Knowledge bases")


def test_account_page_shows_each_limit_of_the_plan_and_this_minutes_use(page, user):
    user.plan = plan("pro")
    user.save()
    login(page, user.username, PASSWORD)
    page.goto("/accounts/")
    limits = page.get_by_test_id("rate-limits")
    for layer, label, limit in [
        ("plan", "All requests", "500"),
        ("endpoint:conversations", "Conversations", "300"),
        ("endpoint:messages", "Sending messages", "600"),
        ("endpoint:polling", "Reading replies and tasks (polling)", "300"),
        ("endpoint:knowledge", "Knowledge", "150"),
    ]:
        row = limits.locator(f'tr[data-layer="{layer}"]')
        expect(row.locator("th")).to_have_text(label)
        expect(row.locator("td").first).to_have_text(limit)
    # This minute's use: at least the page's own GET me/ (user ids, and so limiter keys, can
    # repeat across tests on the live server, so only a lower bound holds).
    expect(limits.locator('tr[data-layer="plan"] td').nth(1)).to_have_text(re.compile(r"^[1-9]"))
    screenshot(page, "account-rate-limits")
    page.select_option("#language-select", "zh-hans")
    page.wait_for_load_state()
    expect(limits.locator('tr[data-layer="endpoint:polling"] th')).to_have_text(
        "读取回复和任务（轮询）"  # noqa: RUF001
    )


def test_api_key_created_shown_once_copied_and_revoked(page, user):
    login(page, user.username, PASSWORD)
    page.goto("/accounts/")
    page.fill("#key-name", "laptop")
    page.click("#key-form button[type=submit]")
    key_input = page.locator("#new-key-value")
    expect(key_input).to_have_value(re.compile(r"^osk_"))
    raw_key = key_input.input_value()
    assert ApiKey.objects.get(user=user, name="laptop").key_hash != raw_key
    screenshot(page, "account-api-key-created")

    page.reload()
    expect(page.locator("tr[data-key-id]")).to_have_count(1)
    assert raw_key not in page.content()  # shown once: never again after a reload

    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("tr[data-key-id]")).to_contain_text("Revoked")
    assert [kind for kind, _ in page.dialogs] == ["confirm"]
    assert ApiKey.objects.get(user=user, name="laptop").revoked_at is not None


def test_language_switch_to_chinese_and_back(page, user):
    login(page, user.username, PASSWORD)
    page.goto("/accounts/")
    page.select_option("#language-select", "zh-hans")
    page.wait_for_load_state()
    expect(page.locator("#keys-heading")).to_have_text("API 密钥")
    page.select_option("#language-select", "en")
    page.wait_for_load_state()
    expect(page.locator("#keys-heading")).to_have_text("API keys")


def test_account_and_login_pages_are_axe_clean(page, user):
    page.goto("/accounts/login/")
    assert axe_violations(page) == []
    login(page, user.username, PASSWORD)
    page.goto("/accounts/")
    expect(page.get_by_test_id("plan")).to_be_visible()
    assert axe_violations(page) == []
