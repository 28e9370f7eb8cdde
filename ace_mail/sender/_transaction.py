# -*- test-case-name: tests.test_sender_transaction -*-
"""
One mail transaction on an open session: MAIL FROM, RCPT TO and DATA.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from attrs import field, frozen
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from ..envelope import MessageSource, Reply
from ._protocol import SessionFailure, SMTPConnection
from ._settings import Timeouts


@frozen
class TransactionResult:
    """
    What one transaction on one server achieved.

    @ivar reply: The reply that ended it.
    @ivar delivered: The recipients the server took the message for.
    @ivar permanent: Recipients refused for good, with the reply.
    @ivar temporary: Recipients refused for now, with the reply.
    @ivar failover: C{True} if nothing was delivered and the C{temporary}
        recipients should be tried on the next server at once.
    @ivar setAside: C{True} if the server failed and should be tried last
        for a while.
    @ivar stale: C{True} if the server closed the connection before it
        answered MAIL FROM: on a connection that was idle, this is the
        server's idle timeout, not a failure.
    """

    reply: Reply
    delivered: tuple[str, ...] = ()
    permanent: Mapping[str, Reply] = field(factory=dict)
    temporary: Mapping[str, Reply] = field(factory=dict)
    failover: bool = False
    setAside: bool = False
    stale: bool = False


async def transact(
    connection: SMTPConnection,
    timeouts: Timeouts,
    sender: str,
    recipients: Sequence[str],
    message: MessageSource,
) -> TransactionResult:
    """
    Offer one message to one server for some recipients.

    @param connection: An open session, ready for MAIL FROM.
    @param timeouts: The timeouts for each reply.
    @param sender: The envelope sender.
    @param recipients: The recipients to offer the message to.
    @param message: The message.
    @return: What happened; never fails for SMTP or network trouble.
    """
    limit = connection.extensions.get("SIZE")
    if limit is not None and limit.isdigit() and 0 < int(limit) < message.size:
        refusal = Reply(
            552,
            f"5.3.4 the message of {message.size} bytes exceeds the limit of"
            f" {limit} bytes of {connection.peer}",
        )
        return TransactionResult(refusal, permanent=dict.fromkeys(recipients, refusal))

    mailReply: Reply | None = None
    permanent: dict[str, Reply] = {}
    temporary: dict[str, Reply] = {}
    try:
        mailReply, rcptReplies = await _envelope(
            connection, timeouts, sender, recipients, message.size
        )
        if not (200 <= mailReply.code < 300 or mailReply.isPermanent):
            return TransactionResult(
                mailReply,
                temporary=dict.fromkeys(recipients, mailReply),
                failover=True,
                setAside=True,
                stale=mailReply.code == 421,
            )
        if mailReply.isPermanent:
            return TransactionResult(
                mailReply, permanent=dict.fromkeys(recipients, mailReply)
            )

        accepted = []
        for recipient, reply in zip(recipients, rcptReplies, strict=False):
            if reply.code == 421:
                raise SessionFailure(reply)
            if 200 <= reply.code < 300:
                accepted.append(recipient)
            elif reply.isPermanent:
                permanent[recipient] = reply
            else:
                temporary[recipient] = reply
        if not accepted:
            return TransactionResult(
                rcptReplies[-1],
                permanent=permanent,
                temporary=temporary,
                failover=bool(temporary),
            )

        final = await connection.command("DATA", timeouts.dataInit)
        if final.code == 354:
            final = await connection.sendContent(
                message, timeouts.dataXfer, timeouts.dataDone
            )
        elif final.code < 400:
            raise SessionFailure(
                Reply(421, f"{connection.peer} answered DATA with {final}")
            )
    except SessionFailure as failure:
        undelivered = [r for r in recipients if r not in permanent]
        return TransactionResult(
            failure.reply,
            permanent=permanent,
            temporary=dict.fromkeys(undelivered, failure.reply),
            failover=True,
            setAside=True,
            stale=mailReply is None and failure.closedByPeer,
        )

    if 200 <= final.code < 300:
        return TransactionResult(
            final, tuple(accepted), permanent=permanent, temporary=temporary
        )
    if final.isPermanent:
        permanent.update(dict.fromkeys(accepted, final))
        return TransactionResult(final, permanent=permanent, temporary=temporary)
    temporary.update(dict.fromkeys(accepted, final))
    return TransactionResult(
        final,
        permanent=permanent,
        temporary=temporary,
        failover=True,
        setAside=final.code == 421,
    )


async def _envelope(
    connection: SMTPConnection,
    timeouts: Timeouts,
    sender: str,
    recipients: Sequence[str],
    size: int,
) -> tuple[Reply, list[Reply]]:
    """
    Send MAIL FROM and the RCPT TOs: all at once if the server offers
    PIPELINING (RFC 2920), else each after the reply to the one before.

    @return: The reply to MAIL FROM and, if it was positive, the reply to
        each RCPT TO in order.
    @raise SessionFailure: If the connection failed.
    """
    mail = f"MAIL FROM:<{sender}>"
    if "SIZE" in connection.extensions:
        mail += f" SIZE={size}"
    rcpts = [(f"RCPT TO:<{r}>", timeouts.rcpt, "RCPT TO") for r in recipients]

    if "PIPELINING" not in connection.extensions:
        mailReply = await connection.command(mail, timeouts.mail, "MAIL FROM")
        if not 200 <= mailReply.code < 300:
            return mailReply, []
        replies = []
        for line, timeout, what in rcpts:
            reply = await connection.command(line, timeout, what)
            replies.append(reply)
            if reply.code == 421:
                break
        return mailReply, replies

    pending: list[Deferred[Reply]] = connection.pipeline(
        [(mail, timeouts.mail, "MAIL FROM")] + rcpts
    )
    results = await DeferredList(pending, consumeErrors=True)
    replies = []
    for _, value in results:
        if isinstance(value, Failure):
            value.raiseException()
        replies.append(value)
    return replies[0], replies[1:]
