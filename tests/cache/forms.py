"""Submit a Django admin change form the way a browser does: every field as rendered, with
the test's changes on top."""

from __future__ import annotations

from html.parser import HTMLParser


class _FormParser(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == self.form_id:
            self.inside = True
        if not self.inside:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if kind in ("submit", "button", "file", "image"):
                return
            if kind in ("checkbox", "radio") and "checked" not in attrs:
                return
            default = "on" if kind == "checkbox" else ""  # what a browser sends
            self.data.setdefault(name, []).append(attrs.get("value") or default)
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in attrs:
            self.data[self._select].append(attrs.get("value") or "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea][0] += data


def admin_form_post(client, url: str, form_id: str, **changes):
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    parser = _FormParser(form_id)
    parser.feed(page.content.decode())
    data = {name: values for name, values in parser.data.items() if values}
    for name, value in changes.items():
        if value is False:
            data.pop(name, None)  # an unchecked checkbox is not submitted
        else:
            data[name] = ["on" if value is True else str(value)]
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    return response
