# -*- test-case-name: tests.test_api -*-
"""
The JSON HTTP API through which ACE hands ace-mail its mail and watches the
queue.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from email.utils import formatdate
from typing import Any, Callable, Iterable

from attrs import frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from ace_mail._time import utcText
from ace_mail.address import isMailbox
from ace_mail.envelope import Envelope
from ace_mail.openapi import document
from ace_mail.queue import Queue, QueueEntry
from ace_mail.rawanswer import RawAnswer
from ace_mail.spool import SpoolClosed
from ace_mail.store import STORE_UNREACHABLE

_log = Logger()
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_MAX_RECIPIENTS = 1000


class ApiError(Exception):
    """
    A request that cannot be carried out, with its HTTP status and a
    sentence for the caller.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@frozen
class Answer:
    """
    An endpoint's answer: the HTTP status and the JSON body.
    """

    status: int
    body: Any


class LimitedRequest(Request):
    """
    A request whose body may not exceed C{maxBody} bytes; the excess is
    discarded as it arrives and the request is answered with 413.
    """

    maxBody = 1 << 20
    _received = 0
    _tooLarge = False

    @classmethod
    def withLimit(cls, maxBody: int) -> type[LimitedRequest]:
        """
        @return: A subclass with the given limit, for C{Site.requestFactory}.
        """
        return type("LimitedRequest", (cls,), {"maxBody": maxBody})

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.maxBody:
            self._tooLarge = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self.maxBody:
            self._tooLarge = True
        if not self._tooLarge:
            super().handleContentChunk(data)

    def process(self) -> None:
        if self._tooLarge:
            _writeJson(
                self,
                413,
                _errorBody(
                    "tooLarge", f"the request body is larger than {self.maxBody} bytes"
                ),
            )
            return
        super().process()


def _errorBody(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _writeJson(request: Request, status: int, body: Any) -> None:
    if request.channel is None:
        return
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    if status == 401:
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="ace-mail"')
    request.write(json.dumps(body, indent=None).encode("utf-8") + b"\n")
    request.finish()


def _writeAnswer(answer: Answer | RawAnswer, request: Request) -> None:
    if isinstance(answer, RawAnswer):
        answer.writeTo(request)
    else:
        _writeJson(request, answer.status, answer.body)


def rfc3339(seconds: float | None) -> str | None:
    """
    @return: The POSIX time C{seconds} as RFC 3339 text in UTC, or L{None}.
    """
    if seconds is None:
        return None
    return utcText(seconds)


def entryJson(entry: QueueEntry) -> dict[str, Any]:
    """
    @return: One queue entry as the API shows it.
    """
    return {
        "queueId": entry.queueId,
        "state": entry.state,
        "from": entry.sender,
        "to": list(entry.recipients),
        "route": entry.route,
        "size": entry.size,
        "attempts": entry.attempts,
        "created": rfc3339(entry.created),
        "nextAttempt": rfc3339(entry.nextAttempt),
        "lastError": entry.lastError or None,
    }


def field(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    """
    @return: The field C{name} of a request body, checked to be a C{kind};
        L{None} when it is absent and not C{required}.
    @raise ApiError: When it is missing or of another kind.
    """
    if name not in body or (body[name] is None and not required):
        if required:
            raise ApiError(400, "badRequest", f"the field {name!r} is missing")
        return None
    value = body[name]
    if not isinstance(value, kind):
        raise ApiError(
            400, "badRequest", f"the field {name!r} must be a {_KIND_NAMES[kind]}"
        )
    return value


_KIND_NAMES: dict[type, str] = {str: "string", list: "list", dict: "JSON object"}


class Api:
    """
    The API's behaviour, free of HTTP details so that tests can call it.

    @ivar queue: Where accepted mail goes.
    @ivar token: The bearer token that every request must carry.
    """

    def __init__(
        self,
        reactor: Any,
        queue: Queue,
        token: str,
        *,
        heloName: str,
        messageSizeLimit: int,
        moreRoutes: Iterable[tuple[bytes, re.Pattern[str], Callable[..., Any]]] = (),
    ) -> None:
        self.reactor = reactor
        self.queue = queue
        self.token = token
        self.heloName = heloName
        self.messageSizeLimit = messageSizeLimit
        self.routes: list[tuple[bytes, re.Pattern[str], Callable[..., Any]]] = [
            (b"POST", re.compile(r"^/v1/outgoing$"), self.postOutgoing),
            (b"GET", re.compile(r"^/v1/queue$"), self.getQueue),
            (b"GET", re.compile(r"^/v1/queue/([a-z2-7]{1,64})$"), self.getQueueEntry),
            (
                b"DELETE",
                re.compile(r"^/v1/queue/([a-z2-7]{1,64})$"),
                self.deleteQueueEntry,
            ),
            (
                b"POST",
                re.compile(r"^/v1/queue/([a-z2-7]{1,64})/retry$"),
                self.retryQueueEntry,
            ),
            (b"GET", re.compile(r"^/v1/openapi\.json$"), self.getOpenApi),
            *moreRoutes,
        ]

    def resource(self) -> IResource:
        """
        @return: The root resource to serve.
        """
        return _Root(self)

    def authorized(self, header: bytes | None) -> bool:
        """
        @return: Whether an Authorization header carries the token.
        """
        if header is None or not header.startswith(b"Bearer "):
            return False
        offered = header[len(b"Bearer ") :].strip()
        return hmac.compare_digest(offered, self.token.encode("utf-8"))

    def postOutgoing(self, body: Any) -> Deferred[Answer]:
        """
        Accept one message for the route C{outgoing}; the answer comes once
        it is on disk.
        """
        if not isinstance(body, dict):
            raise ApiError(400, "badRequest", "the request body must be a JSON object")
        unknown = sorted(set(body) - {"from", "to", "message"})
        if unknown:
            raise ApiError(400, "badRequest", f"unknown field {unknown[0]!r}")
        sender = field(body, "from", str)
        recipients = field(body, "to", list)
        text = field(body, "message", str)
        if not isMailbox(sender):
            raise ApiError(
                400, "badAddress", f"'from' is not a mail address: {sender!r}"
            )
        if not recipients or len(recipients) > _MAX_RECIPIENTS:
            raise ApiError(
                400, "badRequest", f"'to' must list 1 to {_MAX_RECIPIENTS} addresses"
            )
        for recipient in recipients:
            if not isinstance(recipient, str) or not isMailbox(recipient):
                raise ApiError(
                    400,
                    "badAddress",
                    f"'to' holds something that is not a mail "
                    f"address: {recipient!r}",
                )
        message = self.prepare(text)
        envelope = Envelope(sender, tuple(recipients), "outgoing")
        accepted = self.queue.enqueue(envelope, message)
        return accepted.addCallback(lambda queueId: Answer(202, {"queueId": queueId}))

    def prepare(self, text: str) -> bytes:
        """
        Check a submitted message and complete it the way a submission
        server does: CRLF line ends, and a Date and a Message-ID when absent.
        """
        try:
            message = _LINE_ENDS.sub(b"\r\n", text.encode("utf-8"))
        except UnicodeEncodeError:
            raise ApiError(
                400, "badMessage", "'message' holds a lone surrogate, not text"
            ) from None
        if len(message) > self.messageSizeLimit:
            raise ApiError(
                400,
                "tooLarge",
                f"'message' is larger than the limit of {self.messageSizeLimit} bytes",
            )
        longest = max(len(line) for line in message.split(b"\r\n"))
        if longest > 998:
            raise ApiError(
                400,
                "badMessage",
                f"'message' has a line of {longest} bytes; RFC 5322 allows at most "
                "998, so encode long lines (quoted-printable or base64)",
            )
        headerEnd = message.find(b"\r\n\r\n")
        head = message if headerEnd < 0 else message[: headerEnd + 2]
        if not _HEADER_LINE.match(head):
            raise ApiError(
                400,
                "badMessage",
                "'message' must be an RFC 5322 message that starts with a header "
                "field such as 'From: ...'",
            )
        names = {
            line.split(b":", 1)[0].strip().lower()
            for line in head.split(b"\r\n")
            if line and line[:1] not in b" \t"
        }
        added = b""
        if b"date" not in names:
            added += b"Date: " + formatdate(self.reactor.seconds()).encode() + b"\r\n"
        if b"message-id" not in names:
            identifier = f"<{secrets.token_hex(12)}@{self.heloName}>".encode()
            added += b"Message-ID: " + identifier + b"\r\n"
        return added + message

    def getOpenApi(self, query: dict[str, str]) -> Answer:
        """
        The OpenAPI document that describes this API.
        """
        return Answer(200, document())

    def getQueue(self, body: Any) -> Answer:
        """
        List the whole queue, oldest first.
        """
        entries = sorted(self.queue.list(), key=lambda e: (e.created, e.queueId))
        return Answer(200, {"queue": [entryJson(e) for e in entries]})

    def retryQueueEntry(self, body: Any, queueId: str) -> Answer:
        """
        Make one message due now, as C{postqueue -i} does.
        """
        if not self.queue.retry(queueId):
            raise ApiError(404, "notFound", f"no message {queueId} in the queue")
        _log.info("{queueId}: retry asked for over the API", queueId=queueId)
        return Answer(202, {"queueId": queueId})

    def deleteQueueEntry(self, body: Any, queueId: str) -> Answer:
        """
        Drop one message without a bounce, as C{postsuper -d} does.
        """
        if not self.queue.delete(queueId, "over the API"):
            raise ApiError(404, "notFound", f"no message {queueId} in the queue")
        return Answer(200, {"queueId": queueId, "deleted": True})

    def getQueueEntry(self, body: Any, queueId: str) -> Answer:
        """
        Show one message in the queue.
        """
        entry = self.queue.get(queueId)
        if entry is None:
            raise ApiError(404, "notFound", f"no message {queueId} in the queue")
        return Answer(200, entryJson(entry))


class _Root(Resource):
    """
    Every path of the API, dispatched by L{Api.routes}.
    """

    isLeaf = True

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api

    def render(self, request: Request) -> Any:
        d = maybeDeferred(self.dispatch, request)
        d.addCallback(_writeAnswer, request)
        d.addErrback(self.failed, request)
        return NOT_DONE_YET

    def dispatch(self, request: Request) -> Any:
        if not self.api.authorized(request.getHeader(b"Authorization")):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        path = request.path.decode("utf-8", "replace")
        allowed = []
        for method, pattern, handler in self.api.routes:
            match = pattern.match(path)
            if match is None:
                continue
            allowed.append(method)
            if method == request.method:
                return handler(self.readBody(request), *match.groups())
        if allowed:
            raise ApiError(
                405, "methodNotAllowed", f"{path} takes only {allowed[0].decode()}"
            )
        raise ApiError(404, "notFound", f"no such endpoint: {path}")

    def readBody(self, request: Request) -> Any:
        """
        @return: What the handler works on: the JSON body of a POST, or the
            query parameters of a GET as a C{dict} of text.
        """
        if request.method != b"POST":
            return {
                name.decode("utf-8", "replace"): values[-1].decode("utf-8", "replace")
                for name, values in (request.args or {}).items()
            }
        content = request.content
        if content is None:
            return None
        content.seek(0)
        raw = content.read()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ApiError(
                400, "badJson", f"the request body is not valid JSON: {e}"
            ) from None

    def failed(self, reason: Failure, request: Request) -> None:
        error = reason.value
        if isinstance(error, ApiError):
            _writeJson(request, error.status, _errorBody(error.code, error.message))
            return
        if reason.check(*STORE_UNREACHABLE):
            _log.warn(
                "{method} {path}: the contact store does not answer: {reason}",
                method=request.method,
                path=request.path,
                reason=reason.getErrorMessage(),
            )
            _writeJson(
                request,
                503,
                _errorBody(
                    "storeUnavailable",
                    "the contact store does not answer now; try again later",
                ),
            )
            return
        if reason.check(OSError, SpoolClosed):
            _log.error(
                "Cannot store a message submitted by {method} {path}: {reason}",
                method=request.method,
                path=request.path,
                reason=reason.getErrorMessage(),
            )
            _writeJson(
                request,
                503,
                _errorBody(
                    "storageUnavailable",
                    "the message could not be stored and was not accepted; "
                    "try again later",
                ),
            )
            return
        _log.failure(
            "API request {method} {path} failed",
            reason,
            method=request.method,
            path=request.path,
        )
        _writeJson(
            request,
            500,
            _errorBody(
                "internal", "ace-mail could not answer this request; see its log"
            ),
        )
