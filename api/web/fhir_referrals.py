"""`GET /fhir/ServiceRequest/<id>` and `GET /fhir/Task/<id>`: a referral as FHIR R4 closed-loop referral resources.

Why: receiving programs and clinical referrers that speak FHIR track a referral the way the HL7 SDOH Clinical
Care IG does: a `ServiceRequest` says what was asked, and a `Task` (profile `SDOHCC-TaskForReferralManagement`)
whose status follows FHIR TaskStatus tracks it to its outcome. Both are renderings of `referral_for`
(api/service/referral_reads.py), which judges the caller's side, audits the read (`referral_read`) and answers
404 to anyone on neither side; this module adds no access rule of its own, and reads only the keys the
caller's view holds.

Who: the receiving program's `provider` keys, and the referring agency's clinical responders (co-responder,
EMS). Law-enforcement roles are refused by role (403): the Task carries an outcome they may never see, and
their coarse status (requested, accepted or closed) is not a FHIR TaskStatus.

A referrer who sees only the coarse view of a Part 2 program (no consent names the disclosure: program shown
as `GENERIC_PROGRAM`, no kind, a coarse status) gets 404, the answer for no such referral: a FHIR resource
could only name the program or misstate the status, and 42 CFR Part 2 protects the program's involvement.

Every answer is `application/fhir+json`; every error (401, 403, 404) an OperationOutcome (api/web/fhir.py).
"""

from __future__ import annotations


from flask import Blueprint, Response

from api.service.referral_reads import referral_for
from api.service.referrals import NOT_YOURS
from api.service.refusals import NotFound
from api.web.auth import requires
from api.web.context import service
from api.web.fhir import Refused, fhir_response, issue, as_operation_outcome
from api.web.ids import id_number
from scoring.item import Principal, Role
from scoring.referral import TaskStatus, Urgency
from scoring.referral_policy import GENERIC_PROGRAM

SDOHCC_TASK = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-TaskForReferralManagement"
TASK_CODES = "http://hl7.org/fhir/CodeSystem/task-code"
REASON_SYSTEM = "urn:briefing:referral-reason"
BUSINESS_STATUS_SYSTEM = "urn:briefing:referral-business-status"
OUTCOME_SYSTEM = "urn:briefing:referral-outcome"
TASK_STATUSES = frozenset(s.value for s in TaskStatus)

#: A referral's TaskStatus as its ServiceRequest's status (FHIR RequestStatus).
REQUEST_STATUS = {TaskStatus.requested: "active", TaskStatus.accepted: "active", TaskStatus.in_progress: "active",
                  TaskStatus.completed: "completed", TaskStatus.cancelled: "revoked", TaskStatus.rejected: "revoked",
                  TaskStatus.failed: "revoked"}
#: A referral's urgency as its ServiceRequest's priority (FHIR RequestPriority).
PRIORITY = {Urgency.warm_handoff.value: "stat", Urgency.follow_up.value: "routine"}

blueprint = Blueprint("fhir_referrals", __name__)


def _not_found() -> Refused:
    return Refused(404, [issue("not-found", NOT_YOURS)])


def _visible(principal: Principal, logical_id: str) -> dict:
    """The caller's view of the referral (read and audited by `referral_for`), or a 404 OperationOutcome when
    there is none or the caller's view is the coarse one of a Part 2 program it may not name. The route takes
    any id, so that an id that is not a referral's number is answered as FHIR too, not by Flask's router."""
    referral_id = id_number(logical_id)
    if referral_id is None:
        raise _not_found()
    current = service()
    try:
        view = referral_for(current.store, principal, referral_id, current.reference_key, current.clock())
    except NotFound:
        raise _not_found() from None
    program = view.get("program") or {}
    coarse = (program.get("name") == GENERIC_PROGRAM or "kind" not in program
              or view.get("status") not in TASK_STATUSES)
    if coarse:
        raise _not_found()
    return view


def _present(elements: dict[str, object]) -> dict:
    """The elements (name: value) whose value the caller's view held: those built from an absent key are None."""
    return {element: value for element, value in elements.items() if value is not None}


def service_request(view: dict) -> dict:
    """The referral as a FHIR R4 ServiceRequest: what was asked of which program, for whom, by when."""
    status = TaskStatus(view["status"])
    resource = {"resourceType": "ServiceRequest", "id": str(view["id"]), "status": REQUEST_STATUS[status],
                "intent": "order"}
    resource.update(_present({
        "code": view.get("reason") and {"coding": [{"system": REASON_SYSTEM, "code": view["reason"]}]},
        "priority": PRIORITY.get(view.get("urgency")),
        "subject": view.get("person") and {"reference": f"Patient/{view['person']}"},
        "authoredOn": view.get("created_at"),
        "occurrencePeriod": view.get("due_by") and {"end": view["due_by"]},
        "requester": view.get("referrer_agency") and {"display": view["referrer_agency"]},
        "performer": [{"display": view["program"]["name"]}],
        "note": view.get("note") and [{"text": view["note"]}],
    }))
    return resource


def task(view: dict) -> dict:
    """The referral as a FHIR R4 Task (SDOHCC-TaskForReferralManagement) fulfilling its ServiceRequest."""
    referral_id = str(view["id"])
    business, outcome = view.get("business_status"), view.get("outcome")
    resource = {"resourceType": "Task", "id": referral_id, "meta": {"profile": [SDOHCC_TASK]},
                "status": TaskStatus(view["status"]).value, "intent": "order",
                "code": {"coding": [{"system": TASK_CODES, "code": "fulfill"}]},
                "focus": {"reference": f"ServiceRequest/{referral_id}"}}
    resource.update(_present({
        "businessStatus": business and {"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": business}],
                                        "text": business},
        "for": view.get("person") and {"reference": f"Patient/{view['person']}"},
        "authoredOn": view.get("created_at"),
        "lastModified": view.get("updated_at"),
        "requester": view.get("referrer_agency") and {"display": view["referrer_agency"]},
        "owner": {"display": view["program"]["name"]},
        "output": outcome and [{"type": {"text": "outcome"},
                                "valueCodeableConcept": {"coding": [{"system": OUTCOME_SYSTEM, "code": outcome}]}}],
    }))
    return resource


@blueprint.get("/fhir/ServiceRequest/<referral_id>")
@as_operation_outcome
@requires(Role.provider, Role.co_responder, Role.ems)
def read_service_request(principal: Principal, referral_id: str) -> Response:
    return fhir_response(service_request(_visible(principal, referral_id)))


@blueprint.get("/fhir/Task/<referral_id>")
@as_operation_outcome
@requires(Role.provider, Role.co_responder, Role.ems)
def read_task(principal: Principal, referral_id: str) -> Response:
    return fhir_response(task(_visible(principal, referral_id)))
