"""Rules for text that arrives from outside and is stored or shown to a person."""

from __future__ import annotations

import json
from typing import Any


def has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a lone UTF-16 surrogate anywhere (``"\\ud800"``).

    JSON's ``\\u`` escapes can spell one (RFC 8259 §8.2 leaves such strings' behaviour open), but it
    is no Unicode text: it cannot be encoded as UTF-8, PostgreSQL refuses it on insert and SQLite
    stores it only to fail later when a response is encoded.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (TypeError, ValueError, RecursionError):
        return False
    return False
