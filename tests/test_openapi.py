"""
Tests for L{ace_mail.openapi}: the document is valid OpenAPI 3.1, it
describes every endpoint, and every answer of the API conforms to it, for
requests written by hand and for requests that hypothesis generates from
the document itself.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from ace_mail import tap
from ace_mail._services import Listener
from ace_mail.accounts import AccountStatus
from ace_mail.envelope import Envelope
from ace_mail.openapi import document
from ace_mail.queue import QueueEntry
from ace_mail.spool import newQueueId
from tests.apiharness import ContactApiCase, Response, send

DOCUMENT = document()
METHODS = ("get", "post", "delete", "put", "patch")
PAGES = ("/metrics", "/healthz", "/status")
FORM = "application/x-www-form-urlencoded"


def resolve(node: Any) -> Any:
    """
    @return: C{node} with every C{$ref} of the document replaced by what it
        names, so that each schema stands alone.
    """
    if isinstance(node, list):
        return [resolve(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return resolve(target)
    return {key: resolve(value) for key, value in node.items()}


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    """
    @return: Every operation of the document by method and path template,
        resolved, with the parameters of its path item added.
    """
    found = {}
    for template, item in DOCUMENT["paths"].items():
        for method in METHODS:
            if method in item:
                operation = resolve(item[method])
                operation["parameters"] = resolve(item.get("parameters", [])) + (
                    operation.get("parameters", [])
                )
                found[(method, template)] = operation
    return found


OPERATIONS = operations()


def templatePattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")


def conforms(
    case: SynchronousTestCase, method: str, template: str, response: Response
) -> None:
    """
    Fail C{case} unless C{response} is one the document allows for the
    operation: a status it lists, a content type it lists for that status,
    and a JSON body valid against its schema.
    """
    where = f"{method.upper()} {template} -> {response.status}"
    answers = OPERATIONS[(method, template)]["responses"]
    case.assertIn(str(response.status), answers, f"{where}: {response.body[:300]!r}")
    content = answers[str(response.status)].get("content", {})
    contentType = response.headers.get("content-type", "").split(";")[0].strip()
    case.assertIn(contentType, content, where)
    if contentType == "application/json":
        schema = content[contentType]["schema"]
        validator = Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        errors = [e.message for e in validator.iter_errors(response.json())]
        case.assertEqual(errors, [], f"{where}: {response.body[:300]!r}")


class ConformanceQueue:
    """
    A queue that accepts everything and lists two messages, one of which
    may be retried or deleted.
    """

    def __init__(self) -> None:
        entry = QueueEntry(
            queueId="aaaaaaaaaaaaaaaa",
            sender="support@example.com",
            recipients=("ann@customer.example",),
            route="outgoing",
            state="deferred",
            attempts=2,
            created=1_800_000_000.0,
            nextAttempt=1_800_000_600.0,
            lastError="451 4.3.0 try later",
            size=1234,
        )
        self.entries = {entry.queueId: entry}
        self.accepted = 0

    def enqueue(self, envelope: Envelope, message: bytes) -> Deferred[str]:
        self.accepted += 1
        return succeed(newQueueId())

    def list(self) -> list[QueueEntry]:
        return list(self.entries.values())

    def get(self, queueId: str) -> QueueEntry | None:
        return self.entries.get(queueId)

    def retry(self, queueId: str) -> bool:
        return queueId in self.entries

    def delete(self, queueId: str, why: str) -> bool:
        return queueId in self.entries


class DocumentTests(SynchronousTestCase):
    """
    The document itself.
    """

    def test_valid(self) -> None:
        """
        The document is valid OpenAPI 3.1.
        """
        validate(DOCUMENT)
        self.assertEqual(DOCUMENT["openapi"], "3.1.0")

    def test_freshCopy(self) -> None:
        """
        Each call gives a copy, so that no caller can change the next one's.
        """
        first = document()
        first["paths"].clear()
        self.assertEqual(document(), DOCUMENT)

    def test_securedButProbes(self) -> None:
        """
        Every operation takes the bearer token but the probes' pages
        C{/metrics} and C{/healthz} and signing in to C{/status}.
        """
        open = {
            (method, template)
            for (method, template), operation in OPERATIONS.items()
            if operation.get("security", DOCUMENT["security"]) == []
        }
        self.assertEqual(
            open, {("get", "/metrics"), ("get", "/healthz"), ("post", "/status")}
        )


class ApiConformanceTests(ContactApiCase):
    """
    The API's answers, checked against the document.
    """

    def setUp(self) -> None:
        super().setUp()
        self.queue = ConformanceQueue()  # type: ignore[assignment]
        self.api.queue = self.queue  # type: ignore[assignment]
        self.contacts.enqueue = self.queue.enqueue
        self.statuses.append(
            AccountStatus("acme-pop", lastPoll=1_800_000_000.0, lastResult="ok")
        )
        self.statuses.append(AccountStatus("sales-pop", polling=True))
        contacts = [self.arrive()[1], self.arrive(uidl="u2", entrance="shop")[1]]
        contacts.append(self.create(subject="By API", externalId="7")["id"])
        self.known = {"contactId": contacts, "queueId": list(self.queue.entries)}

    def call(
        self, method: str, template: str, path: str, body: Any = None, raw: Any = None
    ) -> Response:
        response = send(self.site, method.upper(), path, body, raw=raw)
        conforms(self, method, template, response)
        return response

    def test_everyRouteDocumented(self) -> None:
        """
        Every route of the API is in the document with its method, and
        every operation of the document but the operators' pages is a route
        of the API.
        """
        routes = {(m.decode().lower(), p.pattern) for m, p, _ in self.api.routes}
        documented = set()
        for method, template in OPERATIONS:
            if template in PAGES:
                continue
            example = re.sub(r"\{[^}]+\}", "abcdefghijklmnopqrst", template)
            served = [
                (m, pattern)
                for m, pattern in routes
                if m == method and re.match(pattern, example)
            ]
            self.assertEqual(len(served), 1, f"{method} {template}")
            documented.update(served)
        self.assertEqual(routes - documented, set())

    def test_byHand(self) -> None:
        """
        One request of every kind, each answer valid against the document:
        successes, refusals, unknown contacts and messages, and 401.
        """
        one, _, made = self.known["contactId"]
        q = "aaaaaaaaaaaaaaaa"
        outgoing = {
            "from": "a@example.com",
            "to": ["b@example.net"],
            "message": "Subject: x\n\nHi\n",
        }
        for method, template, path, body in [
            ("post", "/v1/outgoing", "/v1/outgoing", outgoing),
            ("post", "/v1/outgoing", "/v1/outgoing", {"from": "x"}),
            ("get", "/v1/queue", "/v1/queue", None),
            ("get", "/v1/queue/{queueId}", f"/v1/queue/{q}", None),
            ("get", "/v1/queue/{queueId}", "/v1/queue/bbbb", None),
            ("delete", "/v1/queue/{queueId}", f"/v1/queue/{q}", None),
            ("delete", "/v1/queue/{queueId}", "/v1/queue/bbbb", None),
            ("post", "/v1/queue/{queueId}/retry", f"/v1/queue/{q}/retry", None),
            ("post", "/v1/queue/{queueId}/retry", "/v1/queue/bbbb/retry", None),
            ("get", "/v1/openapi.json", "/v1/openapi.json", None),
            ("post", "/v1/contacts", "/v1/contacts", {"customer": "a@b.example"}),
            ("post", "/v1/contacts", "/v1/contacts", {"customer": "nobody"}),
            ("get", "/v1/contacts", "/v1/contacts?limit=1", None),
            ("get", "/v1/contacts", "/v1/contacts?state=closed", None),
            ("get", "/v1/contacts/{contactId}", f"/v1/contacts/{one}", None),
            ("get", "/v1/contacts/{contactId}", "/v1/contacts/" + "b" * 20, None),
            ("post", "/v1/contacts/{contactId}/end", f"/v1/contacts/{made}/end", None),
            (
                "post",
                "/v1/contacts/{contactId}/deliver",
                f"/v1/contacts/{one}/deliver",
                {"agent": "a@agents.example"},
            ),
            (
                "post",
                "/v1/contacts/{contactId}/deliver",
                f"/v1/contacts/{one}/deliver",
                {"agent": "nobody@agents.example"},
            ),
            (
                "post",
                "/v1/contacts/{contactId}/reply",
                f"/v1/contacts/{one}/reply",
                {"text": "Hi", "html": "<p>Hi</p>"},
            ),
            (
                "post",
                "/v1/contacts/{contactId}/reply",
                f"/v1/contacts/{one}/reply",
                {"text": "Hi", "attachments": [{"filename": "a"}]},
            ),
            (
                "get",
                "/v1/contacts/{contactId}/message",
                f"/v1/contacts/{one}/message",
                None,
            ),
            (
                "get",
                "/v1/contacts/{contactId}/message",
                f"/v1/contacts/{made}/message",
                None,
            ),
            ("get", "/v1/accounts", "/v1/accounts", None),
        ]:
            self.call(method, template, path, body)
        for method, template in OPERATIONS:
            if template in PAGES:
                continue
            path = re.sub(r"\{[^}]+\}", "abcdefghijklmnopqrst", template)
            response = send(self.site, method.upper(), path, None, token=None)
            self.assertEqual(response.status, 401, path)
            conforms(self, method, template, response)
        self.call("post", "/v1/contacts", "/v1/contacts", raw=b"x" * 80_000)
        self.call("post", "/v1/contacts", "/v1/contacts", raw=b"{")

    def test_generated(self) -> None:
        """
        For every operation, requests that hypothesis generates from the
        document (path and query parameters and bodies from their schemas,
        or bodies of any JSON) get answers that the document allows: never
        a 500, never a status or a shape it does not list.
        """
        for (method, template), operation in sorted(OPERATIONS.items()):
            if template not in PAGES:
                self.fuzz(method, template, operation)

    def fuzz(self, method: str, template: str, operation: dict[str, Any]) -> None:
        @settings(
            max_examples=40,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(st.data())
        def run(data: st.DataObject) -> None:
            path = template
            query = {}
            for parameter in operation["parameters"]:
                schema = parameter["schema"]
                if parameter["in"] == "path":
                    known = st.sampled_from(self.known[parameter["name"]])
                    value = data.draw(known | from_schema(schema), parameter["name"])
                    path = path.replace("{" + parameter["name"] + "}", quote(value))
                elif data.draw(st.booleans(), f"has {parameter['name']}"):
                    query[parameter["name"]] = str(data.draw(from_schema(schema)))
            if query:
                path += "?" + urlencode(query)
            body = None
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                schema = content["application/json"]["schema"]
                anyJson = st.recursive(
                    st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=8,
                )
                body = data.draw(from_schema(schema) | anyJson, "body")
            raw = None if body is not None else b""
            response = send(self.site, method.upper(), path, body, raw=raw)
            conforms(self, method, template, response)

        run()


class PageConformanceTests(SynchronousTestCase):
    """
    The operators' pages of a whole ace-mail made by L{tap.makeService},
    checked against the document.
    """

    def setUp(self) -> None:
        options = tap.Options()
        dataDir = self.mktemp()
        options.parseOptions(["--dataDir", dataDir, "--api", "tcp:0"])
        service = tap.makeService(options, reactor=MemoryReactorClock())
        [listener] = [s for s in service if isinstance(s, Listener) and s.what == "API"]  # type: ignore[attr-defined]
        self.site: Site = listener.factory
        with open(f"{dataDir}/api-token") as f:
            self.token = f.read().strip()

    def test_pages(self) -> None:
        """
        C{/metrics}, C{/healthz} and C{/status} answer as the document says,
        signed in or not.
        """
        for method, template, token, raw in [
            ("get", "/metrics", None, None),
            ("get", "/healthz", None, None),
            ("get", "/status", self.token, None),
            ("get", "/status", None, None),
            ("post", "/status", None, b"token=wrong"),
            ("post", "/status", None, f"token={self.token}".encode()),
        ]:
            response = send(
                self.site,
                method.upper(),
                template,
                None,
                token=token,
                raw=raw,
                contentType=None if raw is None else FORM,
            )
            conforms(self, method, template, response)

    def test_unknownPath(self) -> None:
        """
        A path the document does not list is 404 with the error shape.
        """
        response = send(self.site, "GET", "/v1/nothing", None, token=self.token)
        self.assertEqual(response.status, 404)
        self.assertEqual(json.loads(response.body)["error"]["code"], "notFound")
