# -*- test-case-name: tests.test_pages,tests.test_status -*-
"""
The operators' pages beside the API: C{/metrics} for Prometheus,
C{/healthz} for probes and C{/status} for people.

C{/metrics} and C{/healthz} need no token, as scrapers and probes carry
none; they show counts and names, never mail.  The API listens on loopback
by default; whoever opens it wider should put it behind a proxy that
guards them.  C{/status} takes the API token as a bearer token, or from a
form that leaves, in an HttpOnly cookie limited to C{/status}, a digest of
the token that opens nothing else: a browser cannot send a bearer token,
and a token in the address would end up in the access log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Callable, Mapping, Protocol, Sequence

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from ace_mail import __version__
from ace_mail.accounts import AccountStatus
from ace_mail.metrics import QUEUE_STATES, Metrics
from ace_mail.queue import QueueEntry
from ace_mail.sender import Route, ServerStatus
from ace_mail.status import (
    STYLE,
    Check,
    QueueStateView,
    RouteView,
    ServerView,
    Snapshot,
    renderLogin,
    renderStatus,
)
from ace_mail.store import IContactStore

_log = Logger()

COOKIE = b"ace-mail-status"
STORE_TIMEOUT = 5.0
"""
Seconds the store has to answer before it counts as down.
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_PROMETHEUS_TEXT = CONTENT_TYPE_PLAIN_0_0_4.encode()


class _Queue(Protocol):
    def list(self) -> list[QueueEntry]: ...


class _Listening(Protocol):
    numPorts: int


class _Sender(Protocol):
    def serverStatus(self) -> list[ServerStatus]: ...


class Monitor:
    """
    What the operators' pages show, gathered from ace-mail's parts.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        metrics: Metrics,
        *,
        queue: _Queue,
        sender: _Sender,
        routes: Mapping[str, Route],
        store: IContactStore,
        retention: float,
        accounts: Callable[[], Sequence[AccountStatus]],
        token: str,
        tokenPath: str,
        hostname: str,
        node: str = "",
    ) -> None:
        """
        @param retention: Seconds an ended contact stays answerable.
        @param accounts: Gives each POP3 account's status.
        @param token: The API token.
        @param tokenPath: Where an operator finds the token, for the form.
        @param hostname: The server's name, for the page's title.
        @param node: This node's name among the nodes that share a store.
        """
        self.reactor = reactor
        self.metrics = metrics
        self.queue = queue
        self.sender = sender
        self.routes = routes
        self.store = store
        self.retention = retention
        self.accounts = accounts
        self.tokenPath = tokenPath
        self.hostname = hostname
        self.node = node
        self.cookie = hmac.new(
            token.encode(), b"ace-mail status page", hashlib.sha256
        ).hexdigest()
        self._token = token.encode()
        self._listeners: list[tuple[str, _Listening]] = []

    def addListener(self, name: str, factory: _Listening) -> None:
        """
        Count a listener as down while C{factory} listens on no port.
        """
        self._listeners.append((name, factory))

    def resource(self, api: IResource) -> IResource:
        """
        @return: The root of the web site: these pages, and C{api} for
            every other path.
        """
        return _Site(self, api)

    def health(self) -> Deferred[list[Check]]:
        """
        @return: Fires with the checks: each listener listens, and the
            contact store answers a trivial query within L{STORE_TIMEOUT}.
        """
        checks = [
            Check(f"{name} listener", None if factory.numPorts else "not listening")
            for name, factory in self._listeners
        ]
        pinging = self.store.ping()
        pinging.addTimeout(STORE_TIMEOUT, self.reactor)

        def answered(result: object) -> list[Check]:
            problem = None
            if isinstance(result, Failure):
                problem = f"no answer: {result.getErrorMessage()}"
            return checks + [Check("contact store", problem)]

        return pinging.addBoth(answered)

    def contactCounts(self) -> Deferred[dict[str, int] | None]:
        """
        @return: Fires with the contacts by state, or with L{None} (logged)
            when the store does not answer.
        """
        counting = self.store.countContacts(self.reactor.seconds() - self.retention)
        counting.addTimeout(STORE_TIMEOUT, self.reactor)

        def failed(reason: Failure) -> None:
            _log.warn(
                "Cannot count the contacts for the operators' pages: {reason}",
                reason=reason.getErrorMessage(),
            )

        return counting.addErrback(failed)

    def exposition(self) -> Deferred[bytes]:
        """
        @return: Fires with the metrics in Prometheus's text format, the
            contact counts fresh from the store.
        """

        def counted(counts: dict[str, int] | None) -> bytes:
            self.metrics.setContacts(counts)
            return self.metrics.exposition()

        return self.contactCounts().addCallback(counted)

    def snapshot(self) -> Deferred[Snapshot]:
        """
        @return: Fires with everything the status page shows, now.
        """
        checking = self.health()
        counting = self.contactCounts()

        def counted(counts: dict[str, int] | None) -> Deferred[Snapshot]:
            return checking.addCallback(lambda checks: self._snapshot(checks, counts))

        return counting.addCallback(counted)

    def _snapshot(self, checks: list[Check], counts: dict[str, int] | None) -> Snapshot:
        entries = self.queue.list()
        queue = []
        for state in QUEUE_STATES:
            inState = [entry for entry in entries if entry.state == state]
            oldest = min(inState, key=lambda entry: entry.created, default=None)
            queue.append(QueueStateView(state, len(inState), oldest))
        return Snapshot(
            now=self.reactor.seconds(),
            hostname=self.hostname,
            version=__version__,
            checks=tuple(checks),
            routes=self._routeViews(),
            queue=tuple(queue),
            accounts=tuple(self.accounts()),
            contacts=None if counts is None else tuple(counts.items()),
            perMinute=tuple(self.metrics.rate.perMinute()),
            node=self.node,
        )

    def _routeViews(self) -> tuple[RouteView, ...]:
        statuses = {status.name: status for status in self.sender.serverStatus()}
        totals = self.metrics.deliveryTotals()
        views = []
        for route in self.routes.values():
            servers = []
            for server in route.servers:
                status = statuses.get(server.name)
                described = server.describe()
                servers.append(
                    ServerView(
                        name=server.name,
                        address=f"{server.host}:{server.port}",
                        healthy=status is None or status.healthy,
                        setAsideUntil=None if status is None else status.setAsideUntil,
                        connections=0 if status is None else status.openConnections,
                        delivered=totals.get((described, "delivered"), 0),
                        deferred=totals.get((described, "deferred"), 0),
                        failed=totals.get((described, "failed"), 0),
                    )
                )
            views.append(RouteView(route.name, tuple(servers)))
        return tuple(views)

    def signedIn(self, request: Request) -> bool:
        """
        @return: Whether C{request} carries the token as a bearer token or
            the status page's cookie.
        """
        header = request.getHeader(b"Authorization") or b""
        cookie = request.getCookie(COOKIE) or b""
        bearer = header.startswith(b"Bearer ") and self.isToken(header[7:])
        return bearer or hmac.compare_digest(cookie, self.cookie.encode())

    def isToken(self, offered: bytes) -> bool:
        """
        @return: Whether C{offered} is the API token.
        """
        return hmac.compare_digest(offered.strip(), self._token)


def _send(
    request: Request, status: int, contentType: bytes, body: bytes, page: bool = False
) -> None:
    if request.channel is None:
        return
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", contentType)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    if page:
        request.setHeader(b"Content-Security-Policy", _POLICY.encode())
        request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.write(body)
    request.finish()


def _broken(request: Request, what: str) -> Callable[[Failure], None]:
    def failed(reason: Failure) -> None:
        _log.failure("Cannot answer {what}", reason, what=what)
        body = b"ace-mail could not answer this request; see its log.\n"
        _send(request, 500, b"text/plain; charset=utf-8", body)

    return failed


class _Page(Resource):
    """
    One of the operators' pages, drawn from the L{Monitor}.
    """

    def __init__(self, monitor: Monitor) -> None:
        super().__init__()
        self.monitor = monitor


class _Metrics(_Page):
    """
    C{/metrics}: Prometheus's text format, without a token.
    """

    def render_GET(self, request: Request) -> Any:
        exposing = self.monitor.exposition()
        exposing.addCallback(lambda body: _send(request, 200, _PROMETHEUS_TEXT, body))
        exposing.addErrback(_broken(request, "GET /metrics"))
        return NOT_DONE_YET


class _Health(_Page):
    """
    C{/healthz}: 200 when every check is up, else 503; JSON, without a token.
    """

    def render_GET(self, request: Request) -> Any:
        def checked(checks: list[Check]) -> None:
            up = all(check.problem is None for check in checks)
            body = {
                "status": "up" if up else "down",
                "checks": {check.name: check.problem or "up" for check in checks},
            }
            text = json.dumps(body).encode() + b"\n"
            _send(request, 200 if up else 503, b"application/json", text)

        checking = self.monitor.health().addCallback(checked)
        checking.addErrback(_broken(request, "GET /healthz"))
        return NOT_DONE_YET


class _Status(_Page):
    """
    C{/status}: the page for a bearer token or the cookie, else the form
    that sets the cookie.
    """

    def render_GET(self, request: Request) -> Any:
        if not self.monitor.signedIn(request):
            return self.login(request, None)
        snapshotting = self.monitor.snapshot()
        snapshotting.addCallback(
            lambda snapshot: _send(
                request, 200, b"text/html; charset=utf-8", renderStatus(snapshot), True
            )
        )
        snapshotting.addErrback(_broken(request, "GET /status"))
        return NOT_DONE_YET

    def render_POST(self, request: Request) -> Any:
        offered = (request.args or {}).get(b"token", [b""])[-1]
        if not self.monitor.isToken(offered):
            return self.login(request, "That is not the API token.")
        request.addCookie(
            COOKIE,
            self.monitor.cookie,
            path=b"/status",
            httpOnly=True,
            sameSite="strict",
        )
        request.setHeader(b"Location", b"/status")
        _send(request, 303, b"text/plain; charset=utf-8", b"See /status.\n")
        return NOT_DONE_YET

    def login(self, request: Request, problem: str | None) -> Any:
        body = renderLogin(problem, self.monitor.tokenPath)
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="ace-mail"')
        _send(request, 401, b"text/html; charset=utf-8", body, True)
        return NOT_DONE_YET


class _Site(Resource):
    """
    The operators' pages by their first path segment; every other path is
    the API's.
    """

    def __init__(self, monitor: Monitor, api: IResource) -> None:
        super().__init__()
        self.api = api
        self.pages: dict[bytes, IResource] = {
            b"metrics": _Metrics(monitor),
            b"healthz": _Health(monitor),
            b"status": _Status(monitor),
        }

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        return self.pages.get(path, self.api)
