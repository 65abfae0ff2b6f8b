"""schemathesis over `/openapi.json`: generated requests never get a 5xx, every answer fits the document.

Each operation is called with a key whose role may call it (and, for responders, that may claim
every purpose), so the generated bodies reach the handlers rather than stopping at 403; the
checks run on whatever comes back: success answers against `api.web.schemas`, errors against `Error`.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.service.keys import create_key
from api.service.throttle import FailureThrottle
from api.web.app import create_app
from scoring.item import Purpose, Role
from tests.loaded_county import loaded_county

ROLE_OF_PATH = {"/v1/briefings": "officer", "/v1/match": "officer", "/v1/feedback": "officer",
                "/v1/persons/{person_id}": "steward", "/v1/audit/events": "auditor", "/fhir/Patient/$match": "officer"}

# Where a schema-valid body may rightly get 422 because a rule is not expressible in JSON Schema
# (every other check still applies there; the rule itself is tested where named).
RULES_BEYOND_THE_SCHEMA = {
    "/fhir/Patient/$match": "a `resource` parameter must be present; elements outside R4 are refused (test_fhir.py)",
    "/v1/consents/{consent_id}/revoke": "a revocation cannot take effect in the future (test_withdraw.py)",
    "/v1/briefings": "incident.received_at must lie within a day ahead of and 30 years before the server's clock "
                     "(test_briefings_policy.py)",
    "/v1/context-items": "an item is observed or verified no more than a day in the future (adversarial/test_blackbox.py)",
    "/v1/consents": "categories are Briefing's legal and item categories, at least one legal "
                    "(adversarial/test_blackbox.py)",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    county = tmp_path_factory.mktemp("county")
    db, store = loaded_county(county, 300, 31)
    keys = {"officer": create_key(store, "pd", Role.officer, "METRO_PD", list(Purpose)),
            "steward": create_key(store, "st", Role.steward, "COUNTY", []),
            "auditor": create_key(store, "au", Role.auditor, "COUNTY", []),
            "admin": create_key(store, "ad", Role.admin, "COUNTY", [])}
    app = create_app(db)
    # schemathesis sends many unauthenticated requests from one address on purpose (it checks they
    # are refused); the throttle would rightly answer 429 to them, so it is loosened here only.
    app.extensions["briefing"].throttle = FailureThrottle(per_credential=10**6, per_address=10**6)
    return app, keys


def test_every_answer_conforms_to_the_openapi_document_and_none_is_a_server_error(served):
    app, keys = served
    # Walked by hand: schemathesis's pytest plugin does not run under pytest 9.
    api = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # No store can hold a NUL character, so every endpoint refuses one with 422 (a rule beyond the schema,
    # tested in tests/adversarial/test_input_attacks.py): generated data holds none.
    api.config.generation.update(allow_x00=False)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        role = ROLE_OF_PATH.get(operation.path, "admin")
        excluded = [positive_data_acceptance] if operation.path in RULES_BEYOND_THE_SCHEMA else []

        @given(case=operation.as_strategy())
        # Derandomized: RFC 3339 allows a leap second (23:59:60) that Python cannot hold, so a random
        # run may rightly get 422 for a "schema-valid" time; the fixed examples keep CI deterministic.
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def check(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {keys[role]}"}, excluded_checks=excluded)

        check()
