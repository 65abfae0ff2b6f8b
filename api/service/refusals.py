"""What the service refuses, and why: the exceptions its functions raise for a request they will not carry out.

Each carries the status that names it in HTTP (api/web/errors.py answers it as the JSON error of that status)
and a message for the caller, which never names another agency's data. A function that raises one has written
nothing: the transaction it was in rolls back.
"""

from __future__ import annotations


class Refusal(Exception):
    """A request the service will not carry out; `message` says why."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Forbidden(Refusal):
    """The principal may not do this (to this agency's data)."""

    status = 403


class NotFound(Refusal):
    """What the request names is not in the store."""

    status = 404


class Conflict(Refusal):
    """The request contradicts what the store holds (an item moving to another agency's record, a second feedback)."""

    status = 409


class FieldRefusal(Refusal):
    """A request whose fields fit the schema but break a rule the service checks against the store (an unknown
    program, a basis the caller may not use): 422 with a message per field, as schema errors are answered."""

    status = 422

    def __init__(self, fields: dict[str, str]):
        super().__init__("the request does not meet the service's rules")
        self.fields = fields
