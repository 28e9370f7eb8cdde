# -*- test-case-name: tests.test_apicontacts,tests.test_apireply -*-
"""
The checks on what callers send to the API: the fields of a JSON body, the
parameters of a query, and the typed reply with its attachments.  Every
refusal is an L{ApiError} with status 400 whose message names the field.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from ace_mail.api import ApiError, field
from ace_mail.replymail import Attachment, TypedReply

_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MIME_TYPE = re.compile(rf"^{_MIME_NAME}/{_MIME_NAME}$")
_REPLY_FIELDS = {"text", "html", "subject", "attachments"}
_ATTACHMENT_FIELDS = {"filename", "contentType", "contentBase64"}
_MOST_ATTACHMENTS = 100
_LONGEST_LINE = 998
_LONGEST_FILENAME = 255


def _badRequest(message: str) -> ApiError:
    return ApiError(400, "badRequest", message)


def objectBody(body: Any, allowed: set[str], required: bool = True) -> dict[str, Any]:
    """
    @param body: A request's JSON body, or L{None} when it had none.
    @param allowed: The names of the fields it may have.
    @param required: Whether a body must be given; if not, none is the
        same as C{{}}.
    @return: The body, a JSON object with no other fields than C{allowed}.
    @raise ApiError: Otherwise.
    """
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise _badRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _badRequest(f"unknown field {unknown[0]!r}")
    return body


def noParameters(query: dict[str, str]) -> None:
    """
    @raise ApiError: If a query string has any parameter, for an endpoint
        that takes none.
    """
    if query:
        raise _badRequest(f"unknown parameter {sorted(query)[0]!r}")


def checkText(value: str, name: str, limit: int, oneLine: bool = False) -> str:
    """
    @param name: The field's name, for the message.
    @param limit: The most bytes that the text may take in UTF-8.
    @param oneLine: Whether it must be one line, without CR or LF.
    @return: C{value}.
    @raise ApiError: When it is larger than C{limit}, not one line when it
        must be, or not encodable as UTF-8 (it holds a lone surrogate).
    """
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _badRequest(f"{name!r} holds a lone surrogate, not text") from None
    if size > limit:
        raise ApiError(
            400, "tooLarge", f"{name!r} is larger than the limit of {limit} bytes"
        )
    if oneLine and ("\r" in value or "\n" in value):
        raise _badRequest(f"{name!r} must be one line")
    return value


def textField(
    body: dict[str, Any], name: str, limit: int, *, oneLine: bool = False
) -> str:
    """
    @return: The text field C{name} of a body, checked by L{checkText}.
    @raise ApiError: When it is missing, not text, or fails L{checkText}.
    """
    return checkText(field(body, name, str), name, limit, oneLine)


def optionalText(
    body: dict[str, Any], name: str, limit: int, *, oneLine: bool = False
) -> str | None:
    """
    @return: Like L{textField}, or L{None} when the field is absent or
        C{null}.
    """
    value = field(body, name, str, required=False)
    return None if value is None else checkText(value, name, limit, oneLine)


def parseTime(text: str, name: str) -> float:
    """
    @return: The RFC 3339 time C{text} in POSIX seconds.
    @raise ApiError: If it is not one, or has no time zone.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, "badRequest", f"{name!r} must be an RFC 3339 time"
        ) from None
    if moment.tzinfo is None:
        raise ApiError(400, "badRequest", f"{name!r} needs a time zone, such as Z")
    return moment.timestamp()


def writeCursor(created: float, contactId: str) -> str:
    """
    @return: The cursor of a page of contacts that ends with this one.
    """
    raw = f"{created!r}:{contactId}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def readCursor(cursor: str) -> tuple[float, str]:
    """
    @return: The creation time and id of the contact a cursor names.
    @raise ApiError: If it is not a cursor that L{writeCursor} made.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, contactId = raw.decode("ascii").split(":", 1)
        return float(created), contactId
    except ValueError:
        raise ApiError(
            400, "badRequest", "'cursor' is not one that this API gave out"
        ) from None


def _content(value: str, name: str, limit: int) -> bytes:
    """
    @return: The bytes of base64 text; white space in it is ignored.
    @raise ApiError: If it is not base64, or would decode to more than
        C{limit} bytes.
    """
    compact = "".join(value.split())
    if len(compact) // 4 * 3 - compact[-2:].count("=") > limit:
        raise ApiError(
            400, "tooLarge", f"{name!r} is larger than the limit of {limit} bytes"
        )
    try:
        return base64.b64decode(compact.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _badRequest(f"{name!r} is not valid base64") from None


def _attachment(item: Any, index: int, limit: int) -> Attachment:
    prefix = f"attachments[{index}]"
    if not isinstance(item, dict):
        raise _badRequest(f"{prefix!r} must be a JSON object")
    unknown = sorted(set(item) - _ATTACHMENT_FIELDS)
    if unknown:
        raise _badRequest(f"unknown field {prefix + '.' + unknown[0]!r}")
    named = {f"{prefix}.{key}": value for key, value in item.items()}
    filename = textField(named, f"{prefix}.filename", _LONGEST_FILENAME)
    contentType = textField(named, f"{prefix}.contentType", 255)
    encoded = field(named, f"{prefix}.contentBase64", str)
    if not filename.strip():
        raise _badRequest(f"{prefix + '.filename'!r} must not be empty")
    mainType = contentType.partition("/")[0].lower()
    if not _MIME_TYPE.match(contentType) or mainType in ("multipart", "message"):
        raise _badRequest(
            f"{prefix + '.contentType'!r} must be a MIME type such as "
            "application/pdf, without parameters, and not multipart or message"
        )
    content = _content(encoded, f"{prefix}.contentBase64", limit)
    return Attachment(filename, contentType.lower(), content)


def readReply(body: Any, limit: int) -> TypedReply:
    """
    Check the body of a typed reply:
    C{{"text", "html"?, "subject"?, "attachments"?}}, each attachment
    C{{"filename", "contentType", "contentBase64"}}.

    @param limit: The largest message, in bytes: the text, the HTML and the
        attachments together, decoded, may not be larger.
    @return: The reply.
    @raise ApiError: When a field is missing, unknown, of the wrong kind,
        too large or badly formed; the message names it.
    """
    body = objectBody(body, _REPLY_FIELDS)
    text = textField(body, "text", limit)
    html = optionalText(body, "html", limit)
    subject = optionalText(body, "subject", _LONGEST_LINE, oneLine=True)
    items = field(body, "attachments", list, required=False) or []
    if len(items) > _MOST_ATTACHMENTS:
        raise _badRequest(f"'attachments' may list at most {_MOST_ATTACHMENTS} files")
    attachments = [_attachment(item, i, limit) for i, item in enumerate(items)]
    total = len(text.encode("utf-8")) + len((html or "").encode("utf-8"))
    total += sum(len(attachment.content) for attachment in attachments)
    if total > limit:
        raise ApiError(
            400,
            "tooLarge",
            f"'text', 'html' and 'attachments' together are larger than the "
            f"limit of {limit} bytes",
        )
    return TypedReply(text, html, subject, attachments)
