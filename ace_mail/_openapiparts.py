# -*- test-case-name: tests.test_openapi -*-
"""
The pieces of the OpenAPI document: its schemas, its shared answers, and the
helpers that write operations.
"""

from __future__ import annotations

from typing import Any

TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
}
CONTACT_ID = {"type": "string", "pattern": "^[A-Za-z2-7]{16,64}$"}
QUEUE_ID = {"type": "string", "pattern": "^[a-z2-7]{1,64}$"}
MAILBOX = {"type": "string", "format": "email", "maxLength": 254}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """
    @return: The schema of C{schema} or C{null}.
    """
    return {"anyOf": [schema, {"type": "null"}]}


def jsonObject(properties: dict[str, Any], *optional: str) -> dict[str, Any]:
    """
    @return: The schema of a JSON object with these properties and no
        others, all required but the C{optional} ones.
    """
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def ref(name: str) -> dict[str, str]:
    """
    @return: A reference to the component schema C{name}.
    """
    return {"$ref": f"#/components/schemas/{name}"}


def jsonAnswer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """
    @return: A response with a JSON body of C{schema}.
    """
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def error(description: str) -> dict[str, Any]:
    """
    @return: A reference to the shared error response C{description}.
    """
    return {"$ref": f"#/components/responses/{description}"}


def operation(
    summary: str,
    answers: dict[str, Any],
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    optionalBody: bool = False,
    posted: bool = False,
) -> dict[str, Any]:
    """
    @return: An operation that takes the bearer token and so may answer
        401, with a JSON request body of schema C{body} if given.
    @param posted: Whether the operation is a POST, whose body the API
        reads as JSON even when it takes none, so that it may answer 400
        and 413.
    """
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {**answers, "401": error("Unauthorized")},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": not optionalBody,
            "content": {"application/json": {"schema": body}},
        }
    if body is not None or posted:
        operation["responses"].update(
            {"400": error("BadRequest"), "413": error("TooLarge")}
        )
    if parameters:
        operation["parameters"] = parameters
    return operation


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """
    @return: An optional query parameter.
    """
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


SCHEMAS: dict[str, Any] = {
    "Error": jsonObject(
        {
            "error": jsonObject(
                {
                    "code": {"type": "string", "minLength": 1},
                    "message": {"type": "string", "minLength": 1},
                }
            )
        }
    ),
    "Queued": jsonObject({"queueId": QUEUE_ID}),
    "QueueEntry": jsonObject(
        {
            "queueId": QUEUE_ID,
            "state": {"enum": ["queued", "active", "deferred"]},
            "from": {"type": "string"},
            "to": {"type": "array", "items": {"type": "string"}},
            "route": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "attempts": {"type": "integer", "minimum": 0},
            "created": TIME,
            "nextAttempt": nullable(TIME),
            "lastError": nullable({"type": "string"}),
        },
    ),
    "Contact": jsonObject(
        {
            "id": CONTACT_ID,
            "address": {"type": "string", "description": "id@smtpProxyRerouteName"},
            "customer": {"type": "string"},
            "entrance": {"type": "string"},
            "subject": {"type": "string"},
            "externalId": nullable({"type": "string"}),
            "state": {"enum": ["open", "ended"]},
            "created": TIME,
            "ended": nullable(TIME),
            "expires": nullable(TIME),
        },
    ),
    "Account": jsonObject(
        {
            "name": {"type": "string"},
            "polling": {"type": "boolean"},
            "lastPoll": nullable(TIME),
            "lastResult": nullable({"type": "string"}),
            "messagesTaken": {"type": "integer", "minimum": 0},
            "messagesTooLarge": {"type": "integer", "minimum": 0},
            "errors": {"type": "integer", "minimum": 0},
            "consecutiveFailures": {"type": "integer", "minimum": 0},
            "nextPoll": nullable(TIME),
            "lease": nullable(
                {
                    "type": "string",
                    "description": "Which node polls it, with a shared store.",
                }
            ),
        },
    ),
    "NewContact": jsonObject(
        {
            "customer": {"type": "string", "description": "Name <address>"},
            "entrance": {"type": "string"},
            "subject": {"type": "string", "maxLength": 998},
            "messageId": {"type": "string", "pattern": "^<[^<>\\s@]+@[^<>\\s@]+>$"},
            "externalId": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "entrance",
        "subject",
        "messageId",
        "externalId",
    ),
    "Outgoing": jsonObject(
        {
            "from": MAILBOX,
            "to": {
                "type": "array",
                "items": MAILBOX,
                "minItems": 1,
                "maxItems": 1000,
            },
            "message": {"type": "string", "description": "An RFC 5322 message"},
        }
    ),
    "Deliver": jsonObject({"agent": MAILBOX}),
    "Attachment": jsonObject(
        {
            "filename": {"type": "string", "minLength": 1, "maxLength": 255},
            "contentType": {
                "type": "string",
                "pattern": "^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
                "/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$",
            },
            "contentBase64": {"type": "string", "contentEncoding": "base64"},
        }
    ),
    "Reply": jsonObject(
        {
            "text": {"type": "string"},
            "html": {"type": "string"},
            "subject": {"type": "string", "maxLength": 998},
            "attachments": {
                "type": "array",
                "items": ref("Attachment"),
                "maxItems": 100,
            },
        },
        "html",
        "subject",
        "attachments",
    ),
}

RESPONSES: dict[str, Any] = {
    name: jsonAnswer(description, ref("Error"))
    for name, description in [
        ("BadRequest", "The request is malformed; the message names the field."),
        ("Unauthorized", "The bearer token is missing or wrong."),
        ("NotFound", "There is no such thing, or it expired."),
        ("Conflict", "The contact cannot be sent as asked; the message says why."),
        ("TooLarge", "The request body is larger than the API takes."),
        ("Unavailable", "The message could not be stored; try again later."),
    ]
}
