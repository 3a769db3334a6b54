"""Client file names made safe to store and to send back in `Content-Disposition`.

A name is data, never a path: the blob path comes only from the SHA-256. Sanitising keeps
letters of every script (no transliteration) and removes what could traverse, spoof or
inject: path parts, control and bidi characters, Windows reserved names.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

__all__ = ["DEFAULT_FILENAME", "content_disposition", "sanitize_filename"]

DEFAULT_FILENAME = "file"
MAX_EXTENSION_LENGTH = 16

# Bidi embeddings/overrides/isolates and marks (Trojan Source style spoofing), the BOM, and
# line/paragraph separators, which some clients treat as line breaks in headers.
_REMOVED = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c", "\ufeff", "\u2028", "\u2029"]
)
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{p}{d}" for p in ("COM", "LPT") for d in "123456789\u00b9\u00b2\u00b3"]
)
_LEADING = " .-"
_TRAILING = " ."
# RFC 8187 attr-char minus ALPHA/DIGIT (which quote() always keeps).
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"


def _keep(ch: str) -> bool:
    if ch in _REMOVED:
        return False
    # Cc: C0, DEL and C1 controls (NUL included); Cs: lone surrogates, which cannot be
    # encoded as UTF-8 and would fail later in the database or a header.
    return unicodedata.category(ch) not in ("Cc", "Cs")


def _is_reserved(name: str) -> bool:
    # Windows reserves the device name before the first dot, whatever follows it.
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    return stem in _RESERVED


def _truncate(name: str, max_length: int) -> str:
    if len(name) <= max_length:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and len(ext) + 1 <= min(MAX_EXTENSION_LENGTH, max_length - 1):
        suffix = "." + ext
        return stem[: max_length - len(suffix)] + suffix
    return name[:max_length]


def _sanitize_once(name: str, max_length: int) -> str:
    name = "".join(ch for ch in name if _keep(ch))
    name = unicodedata.normalize("NFC", name)
    # Keep only the last path segment, whichever separator the client's OS used.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = name.lstrip(_LEADING).rstrip(_TRAILING)
    name = name.strip()
    if _is_reserved(name):
        name = "_" + name
    name = _truncate(name, max_length).rstrip(_TRAILING).strip()
    return name or DEFAULT_FILENAME[:max_length]


def sanitize_filename(name: str | None, *, max_length: int = 255) -> str:
    """A safe, non-empty version of a client-supplied file name, at most `max_length`
    characters, keeping its extension when it has to be shortened.

    >>> sanitize_filename("../../etc/passwd")
    'passwd'
    >>> sanitize_filename("CON.txt")
    '_CON.txt'
    >>> sanitize_filename("résumé\u202egpj.exe")
    'résumégpj.exe'
    >>> sanitize_filename(" .. ")
    'file'
    """
    if max_length < 1:
        raise ValueError("max_length must be positive")
    if not name:
        return DEFAULT_FILENAME[:max_length]
    # Each step only removes characters or prefixes "_", so a few passes reach a fixed point;
    # the loop makes idempotency hold even where one step uncovers work for another
    # (e.g. NFC after removing a control between a letter and its accent).
    result = _sanitize_once(name, max_length)
    for _ in range(4):
        again = _sanitize_once(result, max_length)
        if again == result:
            break
        result = again
    return result


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A `Content-Disposition` value per RFC 6266: an ASCII `filename` fallback (anything
    else, and quotes and backslashes, become `_`) and the exact name as UTF-8 `filename*`.

    >>> content_disposition('naïve "x".pdf')
    'attachment; filename="na_ve _x_.pdf"; filename*=UTF-8\\'\\'na%C3%AFve%20%22x%22.pdf'
    """
    if disposition not in ("attachment", "inline"):
        raise ValueError("disposition must be 'attachment' or 'inline'")
    if not filename:
        return disposition
    # `%` is replaced too: some clients percent-decode the plain `filename` parameter.
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in filename)
    encoded = quote(filename, safe=_ATTR_CHAR_SAFE, encoding="utf-8", errors="replace")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
