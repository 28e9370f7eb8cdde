# -*- test-case-name: tests.test_proxy_server -*-
"""
The negative replies of the SMTP session, each with its reason key.
"""

from __future__ import annotations

from ._policy import Refusal

# Sequence and syntax.
UNKNOWN_COMMAND = Refusal(500, "5.5.1", "command not recognized", "unknown-command")
NOT_ASCII = Refusal(500, "5.5.2", "commands must be ASCII", "command-not-ascii")
CONTROL_IN_COMMAND = Refusal(
    501,
    "5.5.2",
    "CR, LF, NUL and other control characters are not allowed in a command",
    "control-character",
)
UNTERMINATED_LINE = Refusal(
    421,
    "4.7.0",
    "line too long without CRLF; closing the connection",
    "line-unterminated",
)
HELO_FIRST = Refusal(503, "5.5.1", "send EHLO or HELO first", "bad-sequence")
MAIL_FIRST = Refusal(503, "5.5.1", "send MAIL FROM first", "bad-sequence")
NESTED_MAIL = Refusal(
    503, "5.5.1", "a transaction is already open; send RSET first", "bad-sequence"
)
NO_ARGUMENT = Refusal(501, "5.5.4", "this command takes no argument", "syntax")
VRFY_SYNTAX = Refusal(501, "5.5.4", "syntax: VRFY address", "syntax")
RCPT_PARAMETERS = Refusal(555, "5.5.4", "RCPT parameters are not supported", "syntax")
NO_RECIPIENTS = Refusal(554, "5.5.1", "no valid recipients", "no-recipients")

# Storing and sending.
NO_TEMPORARY_FILE = Refusal(
    451, "4.3.0", "cannot take a message now; try again later", "temporary-file"
)
REWRITE_FAILED = Refusal(
    554,
    "5.6.0",
    "the reply could not be rewritten for the customer; nothing was sent",
    "rewrite-failed",
)
NOT_QUEUED = Refusal(
    451, "4.3.0", "the message could not be stored; try again later", "queue-failure"
)

# TLS and AUTH.
TLS_ACTIVE = Refusal(503, "5.5.1", "TLS is already active", "bad-sequence")
NO_TLS = Refusal(502, "5.5.1", "STARTTLS is not available here", "tls-unavailable")
NO_AUTH = Refusal(502, "5.5.1", "AUTH is not available here", "auth-unavailable")
AUTH_NEEDS_TLS = Refusal(
    538, "5.7.11", "encryption required: send STARTTLS before AUTH", "auth-without-tls"
)
AUTH_SEQUENCE = Refusal(
    503,
    "5.5.1",
    "AUTH is allowed once, after EHLO and outside a transaction",
    "bad-sequence",
)
AUTH_MECHANISM = Refusal(
    504,
    "5.5.4",
    "unrecognized authentication type; use PLAIN or LOGIN",
    "auth-mechanism",
)
AUTH_FAILED = Refusal(535, "5.7.8", "authentication credentials invalid", "auth-failed")
AUTH_ERROR = Refusal(
    454, "4.7.0", "temporary authentication failure; try again later", "auth-error"
)
AUTH_FAILURES = Refusal(
    421,
    "4.7.0",
    "too many failed authentications; closing the connection",
    "auth-failures",
)


def rewriteRefused(sentence: str) -> Refusal:
    return Refusal(
        554, "5.6.0", f"the reply was not sent: {sentence}", "rewrite-refused"
    )


def lineTooLong(limit: int) -> Refusal:
    return Refusal(
        500, "5.5.2", f"line too long: at most {limit} bytes", "command-too-long"
    )


def greetingSyntax(verb: str) -> Refusal:
    return Refusal(501, "5.5.4", f"syntax: {verb} your-host-name", "syntax")


def tooManyRecipients(limit: int) -> Refusal:
    return Refusal(
        452,
        "4.5.3",
        f"too many recipients: at most {limit} a message; "
        "send the rest in another message",
        "too-many-recipients",
    )


def relayDenied(address: str) -> Refusal:
    return Refusal(
        550,
        "5.7.1",
        f"<{address}>: relay access denied: authenticate or send from a trusted "
        "network",
        "relay-denied",
    )


def storeFailed(contactId: str) -> Refusal:
    return Refusal(
        451,
        "4.3.0",
        f"cannot look up contact {contactId} now; try again later",
        "store-failure",
    )


def timedOut(where: str, seconds: float) -> Refusal:
    return Refusal(
        421,
        "4.4.2",
        f"no input {where} for {seconds:g} seconds; closing the connection",
        "timeout",
    )


def tooManyConnections(heloName: str) -> Refusal:
    return Refusal(
        421,
        "4.7.0",
        f"{heloName} is serving too many connections; try again later",
        "too-many-connections",
    )


def tooManyFromClient(heloName: str, host: str | None) -> Refusal:
    return Refusal(
        421,
        "4.7.0",
        f"{heloName}: too many connections from {host}; try again later",
        "too-many-connections-from-client",
    )
