# -*- test-case-name: tests.test_sender_session -*-
"""
Opening an SMTP session: the greeting, EHLO, STARTTLS and AUTH.
"""

from __future__ import annotations

from base64 import b64encode

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from ..envelope import Reply
from ._protocol import SessionFailure, SMTPConnection
from ._settings import Server, Timeouts


def serverFault(connection: SMTPConnection, stage: str, reply: Reply) -> SessionFailure:
    """
    Describe a server that cannot take mail now.

    @param connection: The connection to the server.
    @param stage: The command or step that failed, for example C{"EHLO"}.
    @param reply: The server's reply; a temporary one is kept as it is, a
        permanent one becomes a 421 that quotes it, since a refused greeting
        or EHLO says nothing final about the message.
    @return: The failure to raise.
    """
    if not reply.isPermanent:
        return SessionFailure(reply)
    return SessionFailure(
        Reply(421, f"{connection.peer} refused {stage}: {reply.code} {reply.text}")
    )


async def openSession(
    connection: SMTPConnection,
    server: Server,
    heloName: str,
    timeouts: Timeouts,
    tlsOptions: IOpenSSLClientConnectionCreator | None,
) -> None:
    """
    Bring a new connection to the point where it can send MAIL FROM.

    @param connection: The connection, just made.
    @param server: The server it goes to.
    @param heloName: The name to give in EHLO.
    @param timeouts: The timeouts for each reply.
    @param tlsOptions: What to start TLS with if the server offers STARTTLS,
        or C{None} never to use STARTTLS.
    @raise SessionFailure: If the server cannot take mail now.
    """
    greeting = await connection.greeting
    if greeting.code != 220:
        raise serverFault(connection, "the connection", greeting)

    await _hello(connection, heloName, timeouts)
    secure = server.tls == "implicit"
    if tlsOptions is not None and "STARTTLS" in connection.extensions:
        reply = await connection.command("STARTTLS", timeouts.starttls)
        if reply.code == 220:
            connection.startTLS(tlsOptions)
            secure = True
            await _hello(connection, heloName, timeouts)
        elif server.tls == "required" or not reply.isPermanent:
            raise serverFault(connection, "STARTTLS", reply)

    if server.tls == "required" and not secure:
        raise SessionFailure(
            Reply(421, f"{connection.peer} does not offer STARTTLS, which is required")
        )

    if server.username is not None:
        if not secure and server.tls != "none":
            raise SessionFailure(
                Reply(421, f"not sending credentials to {connection.peer} without TLS")
            )
        await _authenticate(connection, server, timeouts)


async def _hello(connection: SMTPConnection, heloName: str, timeouts: Timeouts) -> None:
    """
    Say EHLO, and HELO if the server does not know EHLO, and remember the
    extensions that the server offers.
    """
    reply = await connection.command(f"EHLO {heloName}", timeouts.helo)
    connection.extensions = {}
    if reply.code == 250:
        for line in reply.text.split("\n")[1:]:
            keyword, _, parameters = line.strip().partition(" ")
            connection.extensions[keyword.upper()] = parameters
        return

    if not reply.isPermanent:
        raise serverFault(connection, "EHLO", reply)

    reply = await connection.command(f"HELO {heloName}", timeouts.helo)
    if reply.code != 250:
        raise serverFault(connection, "HELO", reply)


async def _authenticate(
    connection: SMTPConnection, server: Server, timeouts: Timeouts
) -> None:
    """
    Log in with AUTH PLAIN if the server offers it, else with AUTH LOGIN.
    """
    username = (server.username or "").encode("utf-8")
    password = (server.password or "").encode("utf-8")
    mechanisms = connection.extensions.get("AUTH", "").upper().split()
    if "PLAIN" in mechanisms:
        token = b64encode(b"\0" + username + b"\0" + password).decode("ascii")
        reply = await connection.command(f"AUTH PLAIN {token}", timeouts.helo, "AUTH")
    elif "LOGIN" in mechanisms:
        reply = await connection.command("AUTH LOGIN", timeouts.helo, "AUTH")
        for secret in (username, password):
            if reply.code != 334:
                break
            reply = await connection.command(
                b64encode(secret).decode("ascii"), timeouts.helo, "AUTH LOGIN"
            )
    else:
        raise SessionFailure(
            Reply(421, f"{connection.peer} offers neither AUTH PLAIN nor AUTH LOGIN")
        )

    if reply.code != 235:
        raise serverFault(connection, "AUTH", reply)
