"""detect_mime and is_active_type: content decides, the client's name only breaks ties."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.mime import OCTET_STREAM, detect_mime, is_active_type

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(16)


@pytest.mark.parametrize(
    ("head", "filename", "expected"),
    [
        (PNG, None, "image/png"),
        (PNG, "evil.html", "image/png"),  # the name never overrides content
        (b"GIF89a" + bytes(20), "x.gif", "image/gif"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "doc.pdf", "application/pdf"),
        (b"PK\x03\x04" + bytes(30), "a.zip", "application/zip"),
        (b"hello world\n", None, "text/plain"),
        (b"hello world\n", "x.html", "text/plain"),
        (b"hello world\n", "x.js", "text/plain"),
        ("Grüße, 世界\n".encode(), None, "text/plain"),
        (b"<!DOCTYPE html><p>x", "notes.txt", "text/html"),
        (b"\n\n   <HTML><script>alert(1)</script>", None, "text/html"),
        (codecs.BOM_UTF8 + b"<html>", None, "text/html"),
        (b"<!-- comment --><script>x</script>", None, "text/html"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>", "cat.png", "image/svg+xml"),
        (b'<?xml version="1.0"?>\n<svg onload="x()"/>', None, "image/svg+xml"),
        (b'<?xml version="1.0"?><note/>', None, "application/xml"),
        (b"", None, OCTET_STREAM),
        (b"\x00\x01\x02\x03garbage\xff", None, OCTET_STREAM),
    ],
)
def test_detect(head: bytes, filename: str | None, expected: str) -> None:
    assert detect_mime(head, filename) == expected


def test_utf16_markup_is_never_an_active_type() -> None:
    # Browsers honour the declared type under nosniff, so non-UTF-8 markup stays inert.
    assert not is_active_type(detect_mime(b"\xff\xfe<\x00h\x00t\x00m\x00l\x00>\x00"))


def test_a_multibyte_character_cut_at_the_head_limit_is_still_text() -> None:
    head = ("a" * 8191 + "é").encode()[:8192]
    assert detect_mime(head) == "text/plain"


@given(st.binary(max_size=512), st.one_of(st.none(), st.text(max_size=20)))
def test_never_raises_and_returns_a_media_type(head: bytes, filename: str | None) -> None:
    mime = detect_mime(head, filename)
    assert "/" in mime and mime == mime.strip() and "\n" not in mime


@pytest.mark.parametrize(
    "mime",
    [
        "text/html",
        "TEXT/HTML; charset=utf-8",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "application/atom+xml",
        "application/javascript",
        "text/javascript",
        "application/x-javascript",
        "application/ecmascript",
    ],
)
def test_active(mime: str) -> None:
    assert is_active_type(mime)


@pytest.mark.parametrize(
    "mime", ["text/plain", "image/png", "application/pdf", "application/json", OCTET_STREAM]
)
def test_passive(mime: str) -> None:
    assert not is_active_type(mime)
