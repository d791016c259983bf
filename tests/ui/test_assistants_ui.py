"""Assistants in real Chromium, under the pages' Content-Security-Policy, against uvicorn, a
Celery worker and the GLM test server: pick an assistant, see its opening and suggested
questions, click one and get a streamed reply; export the conversation; create an assistant
on the assistants page and start a chat with it."""

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from assistants.models import Assistant
from assistants.services import assistant_create
from conversations.models import Conversation
from openspark.llm.testserver import FIXED_SENTENCE
from tests.conftest import PASSWORD
from tests.factories import UserFactory, plan
from tests.ui.conftest import axe_violations, login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Runs before the page's scripts (outside its CSP) and records every violation.
WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.effectiveDirective} ${event.blockedURI || "inline"}`);
});
"""


def no_csp_violations(page) -> None:
    assert page.evaluate("window.__cspViolations") == []


def test_pick_an_assistant_ask_a_suggested_question_and_export(chat_page, glm_server, user):
    glm_server.first_token_delay, glm_server.token_delay = 0.1, 0.05
    owner = UserFactory(plan=plan("pro"))
    assistant_create(user=owner, name="Other helper", visibility="everyone")
    assistant = assistant_create(
        user=owner,
        name="Travel guide",
        icon="globe",
        system_prompt="You are a travel guide.",
        opening_message="Hello! I plan trips.\nAsk me anything about Kyoto.",
        suggested_questions=["What to see in Kyoto", "Best season for Kyoto"],
        visibility="everyone",
    )
    page = chat_page
    page.add_init_script(WATCH)
    login(page, user.username, PASSWORD)
    page.goto("/")
    expect(page.locator(".empty-chat")).to_be_visible()  # the default assistant's hint
    page.select_option("#assistant-picker", str(assistant.id))
    welcome = page.locator(".assistant-welcome")
    expect(welcome.locator("h2")).to_have_text("Travel guide")
    expect(welcome.locator(".opening")).to_have_text(
        "Hello! I plan trips.\nAsk me anything about Kyoto."
    )
    expect(welcome.locator("button.suggestion")).to_have_text(
        ["What to see in Kyoto", "Best season for Kyoto"]
    )
    screenshot(page, "assistant-welcome")
    assert axe_violations(page) == []

    welcome.get_by_role("button", name="Best season for Kyoto").click()
    expect(page.locator(".msg-user")).to_have_text("Best season for Kyoto")
    reply = page.locator(".msg-assistant").last
    expect(reply.locator(".cursor")).to_be_visible()  # streaming, text arriving
    expect(reply).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(reply.locator(".msg-body")).to_have_text(
        f"Echo: Best season for Kyoto. {FIXED_SENTENCE}"
    )
    conversation = Conversation.objects.get(owner=user)
    assert conversation.assistant_id == assistant.id
    request = glm_server.requests_to("/chat/completions")[0]  # then the title's
    assert request.json["messages"][0]["content"] == "You are a travel guide."
    expect(page.locator("#assistant-badge")).to_have_text("Travel guide")
    expect(page.locator("#assistant-picker-wrap")).to_be_hidden()

    page.click("#export-menu summary")
    with page.expect_download() as markdown:
        page.click("#export-md")
    assert markdown.value.suggested_filename == f"conversation-{conversation.id}.md"
    text = Path(markdown.value.path()).read_text(encoding="utf-8")
    assert "- Assistant: Travel guide" in text and "Best season for Kyoto" in text
    page.click("#export-menu summary")
    with page.expect_download() as as_json:
        page.click("#export-json")
    data = json.loads(Path(as_json.value.path()).read_text(encoding="utf-8"))
    assert data["assistant"]["name"] == "Travel guide"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    no_csp_violations(page)


def test_create_an_assistant_on_its_page_and_start_a_chat(chat_page):
    page = chat_page
    page.add_init_script(WATCH)
    creator = UserFactory(plan=plan("pro"))
    login(page, creator.username, PASSWORD)
    page.goto("/assistants/")
    expect(page.locator("#assistant-list")).to_contain_text("No assistants yet.")
    page.click("#assistant-new")
    page.fill("#as-name", "Tutor")
    page.locator('.icon-choice label[title="cap"]').click()
    page.fill("#as-opening", "Let us learn.")
    page.fill("#as-questions", "Explain photosynthesis\nWhat is a prime number")
    page.fill("#as-temperature", "1.5")  # out of range: refused with the field named
    page.click("#assistant-form button[type=submit]")
    expect(page.locator("#assistant-form-error")).to_contain_text("temperature")
    page.fill("#as-temperature", "0.4")
    page.click("#assistant-form button[type=submit]")
    card = page.locator(".assistant-card", has_text="Tutor")
    expect(card).to_be_visible()
    expect(card.locator(".assistant-icon")).to_have_attribute("data-icon", "cap")
    assistant = Assistant.objects.get(owner=creator)
    assert (assistant.temperature, assistant.icon) == (0.4, "cap")
    assert assistant.suggested_questions == ["Explain photosynthesis", "What is a prime number"]
    screenshot(page, "assistants-page")
    assert axe_violations(page) == []

    card.get_by_role("link", name="Start chat").click()
    page.wait_for_url(lambda url: "/assistants/" not in url)
    expect(page.locator("#assistant-picker")).to_have_value(str(assistant.id))
    expect(page.locator(".assistant-welcome .opening")).to_have_text("Let us learn.")
    no_csp_violations(page)


def test_a_plan_without_assistants_can_only_use_them(chat_page, user):
    page = chat_page
    login(page, user.username, PASSWORD)
    page.goto("/assistants/")
    expect(page.locator("#assistants-plan")).to_be_visible()
    expect(page.locator("#assistant-new")).to_be_hidden()
