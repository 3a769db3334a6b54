"""Media types from content, never from the client's `Content-Type`.

`detect_mime` looks at the first bytes of an upload (puremagic signatures, then a small text
and markup sniffer); `is_active_type` says which types a browser could execute, so downloads
can send them as sandboxed attachments.
"""

from __future__ import annotations

import codecs
import re

import puremagic

__all__ = ["HEAD_BYTES", "OCTET_STREAM", "detect_mime", "is_active_type"]

HEAD_BYTES = 8 * 1024
"""How much of the start of a file `detect_mime` needs."""

OCTET_STREAM = "application/octet-stream"
# puremagic scores pure file-extension guesses at 0.1; below this a match says nothing about
# the content, and the extension is the client's word.
_MIN_CONFIDENCE = 0.2
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_BOMS = (codecs.BOM_UTF8,)
# Controls that plain text may contain: tab, LF, FF, CR, ESC (ANSI colours in logs).
_TEXT_CONTROLS = frozenset(b"\t\n\x0c\r\x1b")
_HTML_STARTS = (
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<body",
    b"<script",
    b"<iframe",
    b"<frameset",
    b"<style",
    b"<title",
    b"<meta",
    b"<link",
    b"<div",
    b"<table",
    b"<img",
    b"<a ",
    b"<p>",
    b"<br",
    b"<h1",
    b"<font",
    b"<b>",
    b"<!--",
)
_ACTIVE = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/javascript",
        "text/ecmascript",
        "application/x-shockwave-flash",
        "application/vnd.adobe.flash.movie",
        "multipart/x-mixed-replace",
    }
)


def is_active_type(mime: str) -> bool:
    """True when a browser might run script from content of this type: HTML, XHTML, SVG,
    any XML (`*/xml`, `*+xml`), JavaScript and a few plugin types. Parameters are ignored.
    PDF is not: browsers render it in an isolated viewer, and inline preview is wanted.
    """
    base = mime.split(";", 1)[0].strip().lower()
    if base in _ACTIVE:
        return True
    return base.endswith(("+xml", "/xml")) or "javascript" in base or "ecmascript" in base


def _from_magic(head: bytes, filename: str | None) -> str | None:
    try:
        matches = puremagic.magic_string(head, filename or None)
    except Exception:  # puremagic raises PureError/ValueError and more on odd input
        return None
    for match in matches:
        mime = (match.mime_type or "").strip().lower()
        if match.confidence >= _MIN_CONFIDENCE and _MIME.fullmatch(mime):
            return mime
    return None


def _decode_text(head: bytes) -> str | None:
    """The head as text if it looks like UTF-8 text (a multi-byte character cut by the
    8 KiB limit is fine), else None."""
    if any(b < 0x20 and b not in _TEXT_CONTROLS for b in head) or b"\x7f" in head:
        return None
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        return decoder.decode(head, final=False)
    except UnicodeDecodeError:
        return None


def _sniff_markup(head: bytes) -> str | None:
    for bom in _BOMS:
        if head.startswith(bom):
            head = head[len(bom) :]
    start = head.lstrip(b" \t\r\n\x0c")[:1024].lower()
    if not start.startswith(b"<"):
        return None
    if start.startswith(b"<svg") or (
        start.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in start
    ):
        return "image/svg+xml"
    if start.startswith(_HTML_STARTS):
        return "text/html"
    if start.startswith((b"<?xml", b"<!doctype")):
        return "application/xml"
    if b"<html" in start or b"<script" in start:
        return "text/html"
    return None


def detect_mime(head: bytes, filename: str | None = None) -> str:
    """The media type of a file from its first bytes (`HEAD_BYTES` is enough).

    Binary signatures win; otherwise UTF-8 text is `text/plain`, unless it starts (after a
    BOM and whitespace, case-insensitively) like HTML, SVG or XML. Anything else is
    `application/octet-stream`. `filename` only breaks ties between content matches.
    Never raises.

    >>> detect_mime(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(16))
    'image/png'
    >>> detect_mime(b"  <SVG xmlns='http://www.w3.org/2000/svg'>")
    'image/svg+xml'
    >>> detect_mime("grüße".encode())
    'text/plain'
    """
    head = bytes(head[:HEAD_BYTES])
    if not head:
        return OCTET_STREAM
    if _decode_text(head) is not None:
        # Markup first: puremagic's text heuristics know fewer spellings of HTML than
        # browsers do, and an active type must never be missed.
        markup = _sniff_markup(head)
        if markup is not None:
            return markup
    found = _from_magic(head, filename)
    if found is not None:
        return found
    if _decode_text(head) is not None:
        return "text/plain"
    return OCTET_STREAM
