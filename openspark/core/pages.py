"""Helpers for the server-rendered pages."""

from __future__ import annotations

from collections.abc import Mapping


def js_strings(strings: Mapping) -> dict[str, str]:
    """A page's UI strings for its script (rendered with `json_script`), translated now, in
    the request's language (the mappings hold lazy translations)."""
    return {key: str(value) for key, value in strings.items()}
