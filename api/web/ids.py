"""Ids in URLs: `<int:…>` matches ASCII digits only.

Werkzeug's own integer converter matches `\\d+`, which in Python's regular expressions is any Unicode decimal
digit, so `/v1/referrals/１２` (fullwidth) would be another spelling of referral 12: an alias that slips past
anything comparing paths and that logs and audits would show differently. `create_app` installs this one as
`int` before it registers the blueprints.

Routes whose unknown ids must be answered exactly as ids that are not the caller's (a referral: the same
status and body, so that neither a probe nor a malformed id tells anything apart) take the id as text and
read it with `id_number`.
"""

from __future__ import annotations

import re

from werkzeug.routing import IntegerConverter

from api.service.store import MAX_ID

_DIGITS = re.compile(r"[0-9]{1,19}")


class AsciiInteger(IntegerConverter):
    """Werkzeug's `int` converter (with its `min`, `max` and `fixed_digits`) over the digits 0-9 only."""

    regex = r"[0-9]+"


def id_number(text: str) -> int | None:
    """The row id `text` spells in ASCII digits, or None when it spells none (or one above the store's `MAX_ID`)."""
    if not _DIGITS.fullmatch(text) or int(text) > MAX_ID:
        return None
    return int(text)
