"""What a client gets back for its mistakes, shared by write validation and search parsing.

At most `MAX_ERRORS` problems per request: the checks stop collecting there, before any more
work (a "did you mean" hint costs a fuzzy match), so a body with thousands of mistakes costs
no more than one with fifty.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_ERRORS = 50  # a body with thousands of mistakes gets the first fifty
_HINT_NAME_LENGTH = 100  # longer names are cut before matching: the cost stays small


def did_you_mean(name: object, candidates: Iterable[str]) -> str:
    """` (did you mean "name"?)` when one of `candidates` is close to `name`, else "".

    >>> did_you_mean("nmae", ["name", "capacity"])
    ' (did you mean "name"?)'
    """
    if not isinstance(name, str):
        return ""
    match = difflib.get_close_matches(name[:_HINT_NAME_LENGTH], list(candidates), n=1)
    return f' (did you mean "{match[0]}"?)' if match else ""
