"""Who may write which agency's data, and the audit of a write refused for it.

A `feed` key writes only its own agency's data; an `admin` key writes any (`WRITERS`). An item or a
consent belongs to the agency of the record it hangs on. A feed's write of another agency's data is
refused (403, never naming that agency) and audited as `write_refused` (principal, agency, kind, id) in a
transaction of its own, so the refusal is on record although the request wrote nothing.
"""

from __future__ import annotations

from typing import NoReturn

from api.service.audit import audit_fields, record_event
from api.service.refusals import Refusal
from api.service.store import Store
from scoring.item import Principal, Role

WRITERS = {Role.feed, Role.admin}


def is_foreign_write(principal: Principal, agency: str | None) -> bool:
    """True when `principal` is a feed and `agency` is not its own (admins write every agency's data)."""
    return principal.role == Role.feed and agency != principal.agency


def own_records_only(principal: Principal) -> str:
    return f"a feed of {principal.agency} may write only its own agency's records"


def refuse_write(store: Store, principal: Principal, kind: str, ident: str, refusal: Refusal) -> NoReturn:
    """Audit a refused write as `write_refused`, then raise `refusal`. The audit event is committed in a
    transaction of its own: call this outside any open transaction (the refused one wrote nothing)."""
    record_event(store, "write_refused", {**audit_fields(principal, "agency"), "kind": kind, "id": ident},
                 principal=principal.name)
    raise refusal
