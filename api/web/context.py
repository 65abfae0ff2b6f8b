"""The running `Service` (api.service.runtime) of the application serving the current request.

`create_app` puts it in `app.extensions[EXTENSION]`; every view and the authentication reach it through
`service()`.
"""

from __future__ import annotations

from flask import current_app

from api.service.runtime import Service

EXTENSION = "briefing"


def service() -> Service:
    """The service of the application handling this request."""
    return current_app.extensions[EXTENSION]
