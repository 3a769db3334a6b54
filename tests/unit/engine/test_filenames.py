"""sanitize_filename and content_disposition: examples from RELIABILITY B5 and properties."""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.filenames import content_disposition, sanitize_filename

RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{d}" for p in ("COM", "LPT") for d in "123456789¹²³"
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\x", "x"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("a\x00b.txt", "ab.txt"),
        ("evil\r\nSet-Cookie: x.txt", "evilSet-Cookie: x.txt"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("\u2066x\u2069.txt", "x.txt"),
        ("a\x7fb\x85c", "abc"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("LPT9.tar.gz", "_LPT9.tar.gz"),
        ("COM1 .txt", "_COM1 .txt"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("-rf", "rf"),
        (".bashrc", "bashrc"),
        ("  .. - name.txt. . ", "name.txt"),
        ("Отчёт 2024.docx", "Отчёт 2024.docx"),
        ("会議メモ.txt", "会議メモ.txt"),
        ("تقرير.pdf", "تقرير.pdf"),
        ("e\u0301.txt", "\u00e9.txt"),
        ("", "file"),
        (None, "file"),
        ("...", "file"),
        ("dir/", "file"),
        ("\x00\x01", "file"),
    ],
)
def test_examples(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_long_name_keeps_extension() -> None:
    name = sanitize_filename("a" * 1000 + ".pdf")
    assert len(name) == 255 and name.endswith(".pdf")
    assert sanitize_filename("b" * 300) == "b" * 255
    assert sanitize_filename("x." + "y" * 300, max_length=10) == "x." + "y" * 8


def test_truncation_cannot_produce_a_reserved_name() -> None:
    assert sanitize_filename("CONSOLE.txt", max_length=7) not in {"CON.txt"}
    assert sanitize_filename("AUXILIARY", max_length=3) != "AUX"


pieces = st.one_of(
    st.text(max_size=5),  # any code point, controls and bidi included
    st.sampled_from(list("/\\.- \x00\r\n\u202e\u2066\u0301\u00b9\ud800\x85")),
    st.sampled_from(["CON", "nul", "Com1", "LPT3", ".txt", "aux "]),
)
names = st.lists(pieces, max_size=12).map("".join)


def is_reserved(name: str) -> bool:
    return name.split(".", 1)[0].rstrip(" ").upper() in RESERVED


@settings(max_examples=500)
@given(names, st.integers(min_value=1, max_value=300))
def test_sanitized_names_are_safe(raw: str, max_length: int) -> None:
    name = sanitize_filename(raw, max_length=max_length)
    assert name
    assert len(name) <= max_length
    assert not set(name) & {"/", "\\", "\x00"}
    assert all(unicodedata.category(ch) not in ("Cc", "Cs") for ch in name)
    assert not set(name) & {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
    assert not is_reserved(name)
    assert not name.startswith((".", "-", " "))
    assert not name.endswith((".", " "))
    assert unicodedata.is_normalized("NFC", name)
    assert sanitize_filename(name, max_length=max_length) == name


@given(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=50))
def test_letters_of_any_script_are_kept(raw: str) -> None:
    expected = unicodedata.normalize("NFC", raw)
    if not is_reserved(expected):
        assert sanitize_filename(raw) == expected


def test_content_disposition_ascii() -> None:
    assert content_disposition("report.pdf") == (
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    )
    assert content_disposition("a b.txt", "inline").startswith('inline; filename="a b.txt"')
    assert content_disposition("") == "attachment"


def test_content_disposition_unicode_and_specials() -> None:
    value = content_disposition('Отчёт "final" \\ 100%.pdf')
    fallback = value.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback == "_____ _final_ _ 100_.pdf"
    encoded = value.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == 'Отчёт "final" \\ 100%.pdf'


def test_content_disposition_rejects_other_dispositions() -> None:
    with pytest.raises(ValueError):
        content_disposition("x", "form-data; name=x")


@given(st.text())
def test_content_disposition_is_a_safe_header(filename: str) -> None:
    value = content_disposition(filename)
    assert value.isascii()
    assert all(" " <= ch <= "~" for ch in value)
    # One quoted fallback only: no quote can end it early.
    if filename:
        assert value.count('"') == 2
        encoded = value.split("filename*=UTF-8''", 1)[1]
        assert ";" not in encoded and " " not in encoded
