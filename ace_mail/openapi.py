# -*- test-case-name: tests.test_openapi -*-
"""
The OpenAPI 3.1 document of ace-mail's HTTP API, served at
C{/v1/openapi.json}.  Its schemas are JSON Schema 2020-12; tests check every
answer of the API against them.
"""

from __future__ import annotations

import copy
from typing import Any

from ace_mail._openapiparts import (
    CONTACT_ID,
    QUEUE_ID,
    RESPONSES,
    SCHEMAS,
    error,
    jsonAnswer,
    jsonObject,
    nullable,
    operation,
    query,
    ref,
)

_CONTACT_PATH = {
    "name": "contactId",
    "in": "path",
    "required": True,
    "description": "A contact id; its letter case does not matter.",
    "schema": CONTACT_ID,
}
_QUEUED = jsonAnswer("Queued: on disk, due at once.", ref("Queued"))
_QUEUE_PATH = {"name": "queueId", "in": "path", "required": True, "schema": QUEUE_ID}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_CONTACT = jsonAnswer("The contact.", ref("Contact"))

_PATHS: dict[str, Any] = {
    "/v1/outgoing": {
        "post": operation(
            "Queue one message for the route outgoing.",
            {"202": _QUEUED, "503": error("Unavailable")},
            body=ref("Outgoing"),
        )
    },
    "/v1/queue": {
        "get": operation(
            "List the queue, oldest first.",
            {
                "200": jsonAnswer(
                    "The queue.",
                    jsonObject(
                        {"queue": {"type": "array", "items": ref("QueueEntry")}}
                    ),
                )
            },
        )
    },
    "/v1/queue/{queueId}": {
        "parameters": [_QUEUE_PATH],
        "get": operation(
            "Show one message of the queue.",
            {
                "200": jsonAnswer("The message.", ref("QueueEntry")),
                "404": error("NotFound"),
            },
        ),
        "delete": operation(
            "Drop one message without a bounce.",
            {
                "200": jsonAnswer(
                    "Dropped.",
                    jsonObject({"queueId": QUEUE_ID, "deleted": {"const": True}}),
                ),
                "404": error("NotFound"),
            },
        ),
    },
    "/v1/queue/{queueId}/retry": {
        "parameters": [_QUEUE_PATH],
        "post": operation(
            "Make one message due now.",
            {"202": jsonAnswer("Due now.", ref("Queued")), "404": error("NotFound")},
            posted=True,
        ),
    },
    "/v1/openapi.json": {
        "get": operation(
            "This document.",
            {"200": jsonAnswer("The OpenAPI document.", {"type": "object"})},
        )
    },
    "/v1/contacts": {
        "post": operation(
            "Make a contact, for channels other than POP3.",
            {
                "201": jsonAnswer("The new contact.", ref("Contact")),
                "503": error("Unavailable"),
            },
            body=ref("NewContact"),
        ),
        "get": operation(
            "List unexpired contacts, oldest first, a page at a time.",
            {
                "200": jsonAnswer(
                    "A page of contacts; cursor continues it, or is null at the end.",
                    jsonObject(
                        {
                            "contacts": {"type": "array", "items": ref("Contact")},
                            "cursor": nullable({"type": "string"}),
                        }
                    ),
                ),
                "400": error("BadRequest"),
                "503": error("Unavailable"),
            },
            parameters=[
                query("state", {"enum": ["open", "ended"]}, "Only these."),
                query("entrance", {"type": "string"}, "Only this entrance's."),
                query("since", {"type": "string"}, "Created at or after (RFC 3339)."),
                query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                    "The most contacts in the page; 100 by default.",
                ),
                query("cursor", {"type": "string"}, "Continue a listing."),
            ],
        ),
    },
    "/v1/contacts/{contactId}": {
        "parameters": [_CONTACT_PATH],
        "get": operation(
            "Show a contact.",
            {
                "200": _CONTACT,
                "400": error("BadRequest"),
                "404": error("NotFound"),
                "503": error("Unavailable"),
            },
        ),
    },
    "/v1/contacts/{contactId}/end": {
        "parameters": [_CONTACT_PATH],
        "post": operation(
            "End a contact; replies are taken until it expires.",
            {"200": _CONTACT, "404": error("NotFound"), "503": error("Unavailable")},
            body=jsonObject({}),
            optionalBody=True,
        ),
    },
    "/v1/contacts/{contactId}/deliver": {
        "parameters": [_CONTACT_PATH],
        "post": operation(
            "Queue the contact's physical email to an agent's mailbox.",
            {
                "202": _QUEUED,
                "404": error("NotFound"),
                "409": error("Conflict"),
                "503": error("Unavailable"),
            },
            body=ref("Deliver"),
        ),
    },
    "/v1/contacts/{contactId}/reply": {
        "parameters": [_CONTACT_PATH],
        "post": operation(
            "Send an agent's typed reply to the customer, from the entrance.",
            {
                "202": _QUEUED,
                "404": error("NotFound"),
                "409": error("Conflict"),
                "503": error("Unavailable"),
            },
            body=ref("Reply"),
        ),
    },
    "/v1/contacts/{contactId}/message": {
        "parameters": [_CONTACT_PATH],
        "get": operation(
            "The customer's email that opened the contact, as it was taken.",
            {
                "200": {
                    "description": "The stored email.",
                    "content": {"message/rfc822": {"schema": {"type": "string"}}},
                },
                "400": error("BadRequest"),
                "404": error("NotFound"),
                "503": error("Unavailable"),
            },
        ),
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics, without a token.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The Prometheus text format, version 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Whether the listeners are up and the store answers.",
            "security": [],
            "responses": {
                code: jsonAnswer(
                    description,
                    jsonObject(
                        {
                            "status": {"enum": ["up", "down"]},
                            "checks": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        }
                    ),
                )
                for code, description in [("200", "All up."), ("503", "Not all up.")]
            },
        }
    },
    "/status": {
        "get": {
            "summary": "The status page for operators, in HTML.",
            "security": [{"bearer": []}, {"statusCookie": []}],
            "responses": {
                "200": {"description": "The page.", "content": _HTML},
                "401": {"description": "The page to sign in.", "content": _HTML},
            },
        },
        "post": {
            "summary": "Sign in to the status page with the API token.",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": jsonObject({"token": {"type": "string"}})
                    }
                },
            },
            "responses": {
                "303": {
                    "description": "Signed in: a cookie, and on to the page.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {"description": "The wrong token.", "content": _HTML},
            },
        },
    },
    "/v1/accounts": {
        "get": operation(
            "Each POP3 account's status.",
            {
                "200": jsonAnswer(
                    "The accounts.",
                    jsonObject(
                        {"accounts": {"type": "array", "items": ref("Account")}}
                    ),
                ),
                "400": error("BadRequest"),
            },
        )
    },
}


def document() -> dict[str, Any]:
    """
    @return: The OpenAPI document, a new JSON-ready structure on each call.
    """
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "ace-mail",
                "version": "1",
                "description": (
                    "The HTTP API of ace-mail, the mail server of the ACE contact "
                    "centre. Every request carries the bearer token; every error "
                    "is an Error object."
                ),
            },
            "security": [{"bearer": []}],
            "paths": _PATHS,
            "components": {
                "schemas": SCHEMAS,
                "responses": RESPONSES,
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "statusCookie": {
                        "type": "apiKey",
                        "in": "cookie",
                        "name": "ace-mail-status",
                    },
                },
            },
        }
    )
