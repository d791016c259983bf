"""The pages under the Content-Security-Policy in real Chromium: the header is sent and the
browser reports no violation (no inline script or handler, nothing from elsewhere) while the
pages do their work — chat over the websocket with a rendered Markdown reply, knowledge
upload, account keys, the admin and Swagger UI."""

import re

import pytest
from playwright.sync_api import expect

from knowledge.services import knowledge_base_create
from tests.conftest import PASSWORD
from tests.ui.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Runs in every document before the page's own scripts (not subject to the page's CSP).
WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.effectiveDirective} blocked ${event.blockedURI || "inline"} at ` +
    `${event.sourceFile}:${event.lineNumber}`);
});
"""


def _watched(page):
    page.add_init_script(WATCH)
    console: list[str] = []
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and console.append(message.text),
    )
    page.csp_console = console
    return page


def _visit(page, path: str) -> None:
    response = page.goto(path)
    assert response.ok, (path, response.status)
    policy = response.headers.get("content-security-policy", "")
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives.get("script-src") == "'self'", (path, policy)


def _assert_no_violations(page) -> None:
    reported = page.evaluate("window.__cspViolations")
    assert reported == [] and page.csp_console == [], (page.url, reported, page.csp_console)


def test_the_chat_page_works_under_the_csp(chat_page, glm_server, user):
    page = _watched(chat_page)
    login(page, user.username, PASSWORD)
    _visit(page, "/")
    expect(page.locator("#prompt")).to_be_editable()
    page.fill("#prompt", "Show **bold** and `code`")  # the test server echoes it
    page.press("#prompt", "Enter")
    reply = page.locator(".msg-assistant").last
    expect(reply).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(reply.locator(".msg-body strong")).to_have_text("bold")  # marked and DOMPurify ran
    expect(reply.locator(".msg-body code")).to_have_text("code")
    _assert_no_violations(page)

    page.select_option("#language-select", "zh-hans")  # the shared script's submit on change
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    _assert_no_violations(page)


def test_the_knowledge_and_account_pages_work_under_the_csp(page, user, tmp_path):
    page = _watched(page)
    notes = tmp_path / "notes.txt"
    notes.write_text("The body limit and the policy.\n")
    login(page, user.username, PASSWORD)

    _visit(page, "/knowledge/")
    page.fill("#kb-new-name", "Under the policy")
    page.click("#kb-create button[type=submit]")
    expect(page.locator("#kb-name")).to_have_text("Under the policy")
    page.set_input_files("#file-input", str(notes))
    expect(page.locator("#doc-rows tr", has_text="notes.txt")).to_be_visible()
    _assert_no_violations(page)

    _visit(page, "/accounts/")
    page.fill("#key-name", "policy")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#new-key-value")).to_have_value(re.compile(r"^osk_"))
    _assert_no_violations(page)


def test_the_admin_and_swagger_ui_work_under_the_csp(page, staff_user):
    page = _watched(page)
    base = knowledge_base_create(owner=staff_user, name="Admin base")
    login(page, staff_user.username, PASSWORD)
    for path in [
        "/admin/",
        "/admin/knowledge/knowledgebase/",
        f"/admin/knowledge/knowledgebase/{base.id}/change/",
        f"/admin/knowledge/knowledgebase/{base.id}/upload/",
        "/admin/knowledge/document/",
        "/admin/accounts/user/add/",
        "/admin/cache/",
    ]:
        _visit(page, path)
        expect(page.locator("#content")).to_be_visible()
        _assert_no_violations(page)

    response = page.goto("/api/docs/")
    assert "style-src 'self' 'unsafe-inline'" in response.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("OpenSpark API")
    expect(page.locator(".opblock").first).to_be_visible()
    _assert_no_violations(page)
