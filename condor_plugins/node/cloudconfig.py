"""The hand-written YAML of the ``#cloud-config`` document, and ``redact``.

The YAML is written by hand (no PyYAML dependency on the provisioner host): a
small fixed layout where every scalar is a double-quoted string with escapes,
and file contents are literal blocks with an explicit indentation indicator,
or base64 when they are not printable UTF-8 text.  The tests parse it back
with PyYAML (what cloud-init itself uses) and validate it with
``cloud-init schema``.  ``redact(user_data)`` hides the token and every other
secret for display.
"""

from __future__ import annotations

import base64
import re
from typing import List

from .context import ContextError

REDACTED = "<redacted>"


# ------------------------------------------------------------------ YAML

def _q(text: str) -> str:
    """A YAML double-quoted scalar that PyYAML and YAML 1.2 read back exactly."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= code <= 0x7E:
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:
            raise ContextError(f"text contains a lone surrogate: {text!r}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# Characters a literal block may carry verbatim: printable, and no character
# that YAML 1.1 (PyYAML) treats as a line break or a byte order mark.
_LITERAL_OK = re.compile("[\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                         "\U00010000-\U0010ffff]*\\Z")


def _content_lines(content: bytes, indent: int) -> List[str]:
    """``content:`` (and ``encoding:``) lines for one write_files item."""
    pad = " " * indent
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.strip("\n") == "":
        return [f"{pad}content: {_q(text)}"]  # empty, or nothing but line breaks
    if text is None or not _LITERAL_OK.match(text):
        b64 = base64.b64encode(content).decode("ascii")
        return [f"{pad}encoding: b64", f"{pad}content: {_q(b64)}"]
    if text.endswith("\n\n"):
        chomp = "+"
    elif text.endswith("\n"):
        chomp = ""
    else:
        chomp = "-"
    body = text[:-1] if text.endswith("\n") else text
    # Explicit indentation indicator (2, relative to the item's keys): content
    # may start with spaces or blank lines.
    lines = [f"{pad}content: |2{chomp}"]
    for line in body.split("\n"):
        lines.append(f"{pad}  {line}" if line else "")
    return lines


# ------------------------------------------------------------------ redaction

# IDTOKENs (and other JWTs): base64url of '{"' ... three dot-separated parts.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def redact(user_data: str) -> str:
    """``user_data`` for display: the content of every written file that only
    its owner may read (the token, secret template files) and anything that
    looks like a JWT are replaced with ``<redacted>``.  The result is still a
    valid cloud-config document."""
    out: List[str] = []
    item: List[str] = []

    def flush() -> None:
        perms = ""
        for ln in item:
            m = re.match(r'\s*(?:- )?permissions:\s*"?([0-7]+)"?\s*$', ln)
            if m:
                perms = m.group(1)
        if not re.fullmatch(r"[0-7]{1,3}00", perms):
            out.extend(item)
        else:
            skipping = False
            for n, ln in enumerate(item):
                m = re.match(r"(?:  - |    )([A-Za-z_]+):", ln)
                if n == 0 or (m and ln[4:5] != " "):
                    key = m.group(1) if m else ""
                    skipping = key in ("content", "encoding")
                    if key == "content":
                        out.append(f"    content: {_q(REDACTED)}")
                if not skipping:
                    out.append(ln)
        item.clear()

    in_files = False
    for ln in user_data.split("\n"):
        if ln and not ln.startswith((" ", "#")):
            flush()
            in_files = ln.startswith("write_files:")
            out.append(ln)
        elif in_files and ln.startswith("  - "):
            flush()
            item.append(ln)
        elif item:
            item.append(ln)
        else:
            out.append(ln)
    flush()
    return _JWT.sub(REDACTED, "\n".join(out))
