"""The header bell in real Chromium: the unread count arrives live over the socket, and
clears — on every open page — when the notifications are read."""

import pytest
from playwright.sync_api import expect

from openspark.core.presence import presence_page_open
from openspark.core.selectors import notification_preferences_get
from openspark.core.services import notification_send
from tests.conftest import PASSWORD
from tests.knowledge.conftest import wait_for
from tests.ui.conftest import axe_violations, login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_bell_count_appears_live_and_clears_when_read(page, user):
    login(page, user.username, PASSWORD)
    page.goto("/knowledge/")
    count = page.locator("#notification-count")
    expect(page.get_by_test_id("notification-bell")).to_be_visible()
    expect(count).to_be_hidden()
    wait_for(lambda: presence_page_open(user_id=user.id), timeout=15)  # the page's socket is up

    notification_send(user=user, title="“Handbook.pdf” is ready", body="12 passages")
    notification_send(user=user, title="Reply ready", url="/knowledge/")
    expect(count).to_have_text("2")
    expect(page.get_by_test_id("notification-bell")).to_have_accessible_name(
        "Notifications 2 unread"
    )
    screenshot(page, "notifications-bell-unread")

    # A second tab on the list: reading there clears the first tab's bell too.
    other = page.context.new_page()
    other.goto("/notifications/")
    items = other.locator("[data-notification-id]")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("Reply ready")
    expect(other.locator("li.unread")).to_have_count(2)
    assert axe_violations(other) == []
    other.get_by_text("“Handbook.pdf” is ready").click()  # no link: marked read in place
    expect(other.locator("li.unread")).to_have_count(1)
    expect(count).to_have_text("1")
    other.get_by_role("button", name="Mark all as read").click()
    expect(other.locator("li.unread")).to_have_count(0)
    expect(count).to_be_hidden()
    expect(other.locator("#notification-count")).to_be_hidden()
    screenshot(other, "notifications-page")


def test_email_preferences_on_the_account_page(page, user):
    login(page, user.username, PASSWORD)
    page.goto("/accounts/")
    ready = page.get_by_label("A document is ready")
    expect(ready).to_be_checked()
    expect(page.get_by_label("A reply finished while no page was open")).not_to_be_checked()
    expect(page.get_by_label("Rate limiter alerts (staff)")).to_have_count(0)
    ready.uncheck()
    page.locator("#notify-prefs button[type=submit]").click()
    expect(page.locator("#notify-status")).to_have_text("Saved.")
    assert notification_preferences_get(user=user)["document_ready"] is False
    page.reload()
    expect(page.get_by_label("A document is ready")).not_to_be_checked()
    assert axe_violations(page) == []
