# -*- test-case-name: tests.test_proxy_auth -*-
"""
The SASL exchanges of SMTP AUTH (RFC 4954): PLAIN and LOGIN.
"""

from __future__ import annotations

import binascii

from twisted.cred.credentials import UsernamePassword

from ._policy import Refusal, Refused

MECHANISMS = ("PLAIN", "LOGIN")

_USERNAME_PROMPT = b"VXNlcm5hbWU6"
_PASSWORD_PROMPT = b"UGFzc3dvcmQ6"


def _decode(text: str) -> bytes:
    if text == "=":
        return b""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Refused(
            Refusal(501, "5.5.2", "cannot decode the response as base64", "auth-syntax")
        ) from None


def _plain(response: bytes) -> UsernamePassword:
    parts = response.split(b"\0")
    if len(parts) != 3 or not parts[1]:
        raise Refused(
            Refusal(
                501,
                "5.5.2",
                "expected authzid NUL authcid NUL password in the PLAIN response",
                "auth-syntax",
            )
        )
    authzid, authcid, password = parts
    if authzid not in (b"", authcid):
        raise Refused(
            Refusal(
                535,
                "5.7.8",
                "authentication credentials invalid: acting for another user is not allowed",
                "auth-failed",
            )
        )
    return UsernamePassword(authcid, password)


class SaslExchange:
    """
    One AUTH dialogue, from the command to the credentials.

    Each step returns either a challenge for a C{334} reply or the finished
    L{UsernamePassword}.
    """

    def __init__(self, mechanism: str) -> None:
        """
        @param mechanism: One of L{MECHANISMS}, in upper case.
        """
        self._mechanism = mechanism
        self._username: bytes | None = None

    def start(self, initial: str | None) -> bytes | UsernamePassword:
        """
        @param initial: The initial response given with the AUTH command,
            if any.
        @raise Refused: When the initial response cannot be decoded.
        """
        if initial is None:
            return b"" if self._mechanism == "PLAIN" else _USERNAME_PROMPT
        return self.respond(initial)

    def respond(self, line: str) -> bytes | UsernamePassword:
        """
        Take the client's answer to the last challenge.

        @raise Refused: When the client cancels with C{*} or the answer
            cannot be decoded.
        """
        if line == "*":
            raise Refused(
                Refusal(501, "5.0.0", "authentication cancelled", "auth-cancelled")
            )
        response = _decode(line)
        if self._mechanism == "PLAIN":
            return _plain(response)
        if self._username is None:
            self._username = response
            return _PASSWORD_PROMPT
        return UsernamePassword(self._username, response)
