"""The knowledge-base page in real Chromium: create, upload with progress, ready, retrieval
test, a refused file with a readable error, retry and delete — through a real worker."""

import pytest
from playwright.sync_api import expect

from knowledge.models import Document
from tests.conftest import PASSWORD
from tests.ui.conftest import axe_violations, login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TEXT = (
    "OpenSpark keeps answers grounded. The warranty for the Model X kettle lasts 24 months.\n\n"
    "Returns are accepted within 30 days when the receipt is shown.\n"
)


def _new_base(page, user, name: str) -> None:
    """Log in and create a knowledge base on the page; it opens at once."""
    login(page, user.username, PASSWORD)
    page.goto("/knowledge/")
    page.fill("#kb-new-name", name)
    page.click("#kb-create button[type=submit]")
    expect(page.locator("#kb-name")).to_have_text(name)


def test_create_upload_search_and_delete(page, celery_worker, user, tmp_path):
    good = tmp_path / "kettle-warranty.txt"
    good.write_text(TEXT)
    bad = tmp_path / "program.exe"
    bad.write_bytes(b"MZ\x90\x00binary")

    _new_base(page, user, "Support docs")

    page.set_input_files("#file-input", [str(good), str(bad)])
    refused = page.locator("#doc-rows tr", has_text="program.exe")
    expect(refused).to_contain_text("Unsupported file type")
    ready = page.locator("#doc-rows tr", has_text="kettle-warranty.txt")
    expect(ready).to_have_attribute("data-status", "ready", timeout=90_000)
    assert Document.objects.get(title="kettle-warranty.txt").chunk_count >= 1
    screenshot(page, "knowledge-ready")

    page.fill("#search-query", "How long is the kettle warranty?")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#search-results")).not_to_contain_text("Searching", timeout=30_000)
    expect(page.locator(".hit").first).to_contain_text("24 months")

    ready.locator("button.delete").click()
    expect(page.locator("#doc-rows tr", has_text="kettle-warranty.txt")).to_have_count(0)
    assert not Document.objects.filter(title="kettle-warranty.txt").exists()
    assert axe_violations(page) == []


def test_failed_document_shows_reason_and_retry(page, celery_worker, user, tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not really a pdf\n%%EOF")
    _new_base(page, user, "Broken")
    page.set_input_files("#file-input", str(broken))
    row = page.locator("#doc-rows tr", has_text="broken.pdf")
    expect(row).to_have_attribute("data-status", "failed", timeout=60_000)
    expect(row.locator(".form-error")).to_be_visible()
    assert "Traceback" not in row.inner_text()
    row.locator("button.retry").click()
    expect(row).to_have_attribute("data-status", "failed", timeout=60_000)
