"""The chat page in real Chromium against uvicorn, a Celery worker and the GLM test server."""

import time

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation, Message
from conversations.services import conversation_update
from openspark.llm.testserver import FIXED_SENTENCE
from tests.conftest import PASSWORD
from tests.ui.conftest import axe_violations, login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def last_reply(page):
    return page.locator(".msg-assistant").last


def _send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def _reply_text(page) -> str:
    return last_reply(page).locator(".msg-body").inner_text()


def _wait_status(page, status: str, timeout: float = 20_000) -> None:
    expect(last_reply(page)).to_have_attribute("data-status", status, timeout=timeout)


def test_message_streams_in_pieces_and_completes(chat_page, glm_server, user):
    glm_server.first_token_delay, glm_server.token_delay = 0.2, 0.08
    login(chat_page, user.username, PASSWORD)
    _send(chat_page, "hello streaming world")
    expect(chat_page.locator(".msg-user")).to_have_text("hello streaming world")

    seen: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if last_reply(chat_page).count() and not last_reply(chat_page).locator(".thinking").count():
            length = len(_reply_text(chat_page).strip())
            if length and (not seen or length != seen[-1]):
                seen.append(length)
            if last_reply(chat_page).get_attribute("data-status") == "completed":
                break
        time.sleep(0.05)
    assert len(seen) >= 3, f"text did not arrive in pieces: {seen}"
    assert seen == sorted(seen)
    expect(last_reply(chat_page).locator(".msg-body")).to_have_text(
        f"Echo: hello streaming world. {FIXED_SENTENCE}"
    )
    screenshot(chat_page, "chat-completed")
    # The new conversation is in the list and in the URL.
    conversation = Conversation.objects.get(owner=user)
    expect(chat_page.locator(f'li[data-conversation-id="{conversation.id}"]')).to_be_visible()
    assert f"c={conversation.id}" in chat_page.url


def test_shift_enter_is_a_new_line_and_escape_stops(chat_page, glm_server, user):
    glm_server.token_delay = 0.05
    login(chat_page, user.username, PASSWORD)
    chat_page.fill("#prompt", "first line")
    chat_page.press("#prompt", "Shift+Enter")
    chat_page.type("#prompt", "second line [[tokens:400]]")
    assert chat_page.input_value("#prompt") == "first line\nsecond line [[tokens:400]]"
    chat_page.press("#prompt", "Enter")
    expect(last_reply(chat_page).locator(".cursor")).to_be_visible()
    expect(chat_page.locator("#stop")).to_be_visible()
    screenshot(chat_page, "chat-streaming")
    chat_page.keyboard.press("Escape")
    _wait_status(chat_page, "stopped")
    expect(chat_page.locator("#send")).to_be_visible()
    reply = Message.objects.get(role="assistant", conversation__owner=user)
    assert reply.status == "stopped"
    assert 0 < len(reply.content) < 400 * 3


def test_regenerate_and_copy(chat_page, user):
    login(chat_page, user.username, PASSWORD)
    _send(chat_page, "regenerate me")
    _wait_status(chat_page, "completed")
    chat_page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    last_reply(chat_page).locator("button.copy").click()
    expect(last_reply(chat_page).locator("button.copy")).to_have_attribute("data-copied", "true")
    last_reply(chat_page).locator("button.regenerate").click()
    expect(chat_page.locator(".msg-assistant")).to_have_count(2)
    _wait_status(chat_page, "completed")
    replies = Message.objects.filter(role="assistant", conversation__owner=user)
    assert replies.count() == 2
    assert {r.reply_to_id for r in replies} == {Message.objects.get(role="user").id}


def test_reload_mid_reply_resumes_to_the_full_text(chat_page, glm_server, user):
    glm_server.token_delay = 0.03
    login(chat_page, user.username, PASSWORD)
    _send(chat_page, "resume after reload [[tokens:120]]")
    expect(last_reply(chat_page).locator(".cursor")).to_be_visible()
    # A function, not an expression: Playwright evals expressions, which the CSP forbids.
    chat_page.wait_for_function(
        "() => document.querySelector('.msg-assistant .msg-body').innerText.length > 20"
    )
    chat_page.reload()
    _wait_status(chat_page, "completed", timeout=30_000)
    reply = Message.objects.get(role="assistant", conversation__owner=user)
    assert reply.status == "completed"
    shown = last_reply(chat_page).locator(".msg-body").inner_text()
    assert " ".join(shown.split()) == " ".join(reply.content.split())


def test_rename_and_delete_a_conversation(chat_page, user):
    login(chat_page, user.username, PASSWORD)
    _send(chat_page, "a conversation to rename")
    _wait_status(chat_page, "completed")
    conversation = Conversation.objects.get(owner=user)
    item = chat_page.locator(f'li[data-conversation-id="{conversation.id}"]')
    item.hover()
    item.locator("button.rename").click()
    # An update arriving mid-edit (here: the title changed in another tab) must not redraw
    # the list under the input.
    conversation_update(user=user, conversation_id=conversation.id, title="From elsewhere")
    expect(chat_page.locator("#conv-title")).to_have_text("From elsewhere")
    chat_page.fill(".rename-input", "Renamed chat")
    chat_page.press(".rename-input", "Enter")
    expect(item.locator(".conv-link")).to_have_text("Renamed chat")
    assert Conversation.objects.get(pk=conversation.pk).title == "Renamed chat"

    chat_page.fill("#conv-search", "nothing like it")
    expect(item).to_have_count(0)
    chat_page.fill("#conv-search", "renamed")
    expect(item).to_be_visible()

    item.hover()
    item.locator("button.delete").click()
    expect(item).to_have_count(0)
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_xss_in_model_output_and_title_is_rendered_as_text(chat_page, user):
    payload = '<img src=x onerror="alert(1)"> <script>alert(2)</script> [x](javascript:alert(3))'
    login(chat_page, user.username, PASSWORD)
    _send(chat_page, payload)
    _wait_status(chat_page, "completed")
    conversation = Conversation.objects.get(owner=user)
    Conversation.objects.filter(pk=conversation.pk).update(title='<img src=y onerror="alert(4)">')
    chat_page.reload()
    _wait_status(chat_page, "completed")
    # The model echoed the payload: shown as text, nothing injected, nothing ran.
    body = last_reply(chat_page).locator(".msg-body")
    expect(body).to_contain_text('<img src=x onerror="alert(1)">')
    expect(body).to_contain_text("<script>alert(2)</script>")
    assert body.locator("img, script, iframe").count() == 0
    assert body.locator("a[href^='javascript']").count() == 0
    expect(chat_page.locator(".conv-link").first).to_have_text('<img src=y onerror="alert(4)">')
    assert chat_page.locator("#conv-list img, #conv-title img").count() == 0
    assert chat_page.dialogs == []


def test_failed_reply_is_shown_with_retry(chat_page, glm_server, user):
    glm_server.fail_next(20, status=500, code="500")
    login(chat_page, user.username, PASSWORD)
    _send(chat_page, "this will fail")
    _wait_status(chat_page, "failed", timeout=30_000)
    error = last_reply(chat_page).locator(".msg-error")
    expect(error).to_be_visible()
    assert "Traceback" not in error.inner_text()
    screenshot(chat_page, "chat-failed")
    glm_server.reset()
    error.get_by_role("button", name="Retry").click()
    _wait_status(chat_page, "completed")
    expect(last_reply(chat_page).locator(".msg-body")).to_contain_text("Echo: this will fail")


def test_chat_page_is_axe_clean(chat_page, user):
    login(chat_page, user.username, PASSWORD)
    _send(chat_page, "accessibility check with `code`")
    _wait_status(chat_page, "completed")
    assert axe_violations(chat_page) == []


def test_offline_mode_notice(page, user, settings):
    # The plain asgi_server has no model configured: the offline provider answers.
    login(page, user.username, PASSWORD)
    expect(page.locator("#offline-notice")).to_be_visible()
    expect(page.locator("#offline-notice")).to_contain_text("Offline mode")


def test_phone_width_sidebar_toggles(phone_page, user):
    login(phone_page, user.username, PASSWORD)
    expect(phone_page.locator("#new-chat")).not_to_be_in_viewport()
    phone_page.click("#sidebar-toggle")
    expect(phone_page.locator("#new-chat")).to_be_in_viewport()
    phone_page.wait_for_timeout(300)  # the slide-in transition
    expect(phone_page.locator("#prompt")).to_be_visible()
    screenshot(phone_page, "chat-phone")


def test_cited_answer_opens_the_snippet(chat_page, celery_worker, user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from knowledge.models import Document
    from knowledge.services import documents_upload, knowledge_base_create

    base = knowledge_base_create(owner=user, name="Kettles")
    text = b"The warranty for the Model X kettle lasts 24 months from the date of purchase.\n"
    documents_upload(knowledge_base=base, user=user, files=[SimpleUploadedFile("kettle.txt", text)])
    deadline = time.monotonic() + 120
    while Document.objects.get(knowledge_base=base).status != "ready":
        assert time.monotonic() < deadline, Document.objects.get(knowledge_base=base).error
        time.sleep(0.3)

    login(chat_page, user.username, PASSWORD)
    chat_page.click(".kb-picker summary")
    chat_page.check(f"#kb-{base.id}")
    chat_page.click(".kb-picker summary")
    _send(chat_page, "How long is the kettle warranty?")
    # The chat worker loads the embedding model on its first retrieval (tens of seconds here).
    _wait_status(chat_page, "completed", timeout=120_000)
    reply = last_reply(chat_page)
    expect(reply.locator(".citations")).to_contain_text("kettle.txt")
    reply.locator("button.cite").first.click()
    expect(chat_page.locator("#citation-dialog")).to_be_visible()
    # The whole passage, read from the knowledge API (document_content cache).
    expect(chat_page.locator("#citation-context .cited")).to_contain_text("24 months")
    expect(chat_page.locator("#citation-title")).to_contain_text("kettle.txt")
    screenshot(chat_page, "chat-citation")
    saved = Message.objects.get(role="assistant", conversation__owner=user)
    assert saved.citations and saved.citations[0]["document_title"] == "kettle.txt"
