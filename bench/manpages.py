"""The benches' public document collection: Debian's manual pages (section 1), English (`manpages`
and the pages installed packages ship) and Simplified Chinese (`apt-get install manpages-zh`).
Each page's NAME line is the question ("ls - list directory contents" → "list directory
contents"), its body without the NAME line the document, and the page itself the known answer:
a known-item search. Used by bench/knowledge.py and bench/search.py."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

MAX_BODY_CHARS = 6000


# --- the document collection -----------------------------------------------------------------

_INLINE = [
    (re.compile(r"\\f(\(..|\[[^\]]*\]|.)"), ""),
    (re.compile(r"\\\*(\(..|\[[^\]]*\]|.)"), ""),
    (re.compile(r"\\\((em|en|hy)"), "-"),
    (re.compile(r"\\\(.."), ""),
    (re.compile(r"\\[-&/,]"), lambda m: "-" if m.group(0) == "\\-" else ""),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\ "), " "),
]


def _groff_to_text(source: str) -> list[str]:
    lines = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].partition(" ")
            if macro in ("SH", "SS", "B", "I", "BR", "IR", "BI", "IB", "RB", "RI"):
                lines.append(rest.replace('"', ""))
            elif macro in ("PP", "P", "LP", "TP", "IP", "br", "sp"):
                lines.append("")
            continue
        lines.append(line)
    text = "\n".join(lines)
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return text.splitlines()


def load_manpages(
    folder: Path, limit: int, *, max_body_chars: int = MAX_BODY_CHARS
) -> list[tuple[str, str, str]]:
    """[(command, question, body)] from the NAME line and the rest of each page."""
    pages = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.1.gz")):
        try:
            source = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if source.startswith(".so "):
            continue  # an alias of another page
        lines = _groff_to_text(source)
        heads = [i for i, line in enumerate(lines) if line.strip().upper() in ("NAME", "名称")]
        if not heads:
            continue
        after = [line for line in lines[heads[0] + 1 :]]
        name_line = next((line for line in after if line.strip()), "")
        if " - " not in name_line:
            continue
        command, question = (part.strip() for part in name_line.split(" - ", 1))
        body = "\n".join(after[after.index(name_line) + 1 :]).strip()[:max_body_chars]
        # Aliases ship the same page under several names: one copy, one answer.
        if len(question) >= 4 and len(body) >= 200 and command not in seen and body not in seen:
            seen.update((command, body))
            pages.append((command, question, body))
        if len(pages) == limit:
            break
    return pages
