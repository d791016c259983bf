"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright against the live
ASGI server; screenshots of the main states are kept in test-artifacts/screenshots/."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
AXE = Path(__file__).with_name("vendor") / "axe.min.js"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")

# Playwright's sync API runs an event loop in this thread; the ORM calls our fixtures make
# are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-quic"],
        )  # fmt: skip
        yield browser
        browser.close()


def _new_page(browser, base_url: str, **options):
    context = browser.new_context(base_url=base_url, locale="en-US", **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    # Every dialog is recorded (an XSS test asserts none opened); our own confirm() prompts
    # are accepted, anything else is dismissed.
    dialogs: list[tuple[str, str]] = []

    def on_dialog(dialog):
        dialogs.append((dialog.type, dialog.message))
        dialog.accept() if dialog.type == "confirm" else dialog.dismiss()

    page.on("dialog", on_dialog)
    page.dialogs = dialogs
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    return page


@pytest.fixture
def page(browser, asgi_server):
    page = _new_page(browser, asgi_server.url)
    yield page
    page.context.close()


@pytest.fixture
def chat_page(browser, chat_asgi, chat_worker, glm_server):
    """A page on the full chat stack: uvicorn, a Celery worker, the GLM test server."""
    page = _new_page(browser, chat_asgi.url)
    yield page
    page.context.close()
    assert page.errors == [], page.errors


@pytest.fixture
def phone_page(browser, asgi_server):
    page = _new_page(browser, asgi_server.url, viewport={"width": 390, "height": 844},
                     is_mobile=True, has_touch=True)  # fmt: skip
    yield page
    page.context.close()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page) -> list[dict]:
    # Evaluated through the DevTools protocol: a <script> tag would be an inline script,
    # which the pages' Content-Security-Policy refuses.
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => (await axe.run(document)).violations")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
            for v in result]  # fmt: skip


def login(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login" not in url)
