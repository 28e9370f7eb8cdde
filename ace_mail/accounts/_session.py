# -*- test-case-name: tests.test_accounts_poller,tests.test_accounts_hostile -*-
"""
One poll of one POP3 account: log in, list, hand each new message to
intake and delete it only once intake has it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from typing import Any, Callable, Protocol, TypeVar

from attrs import define
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredSemaphore,
    FirstError,
    TimeoutError,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger, LogLevel

from .._entrances import AccountConfig
from ..store import STORE_UNREACHABLE
from . import _tls
from ._listing import MessageInfo, parseMailbox, parseStat
from ._protocol import POP3Connection, POP3Error, Response, quote

_log = Logger()

PIPELINE_WINDOW = 8
"""
How many messages are in retrieval or in intake at once when the server
allows pipelining; without it, two (one on the wire, one in intake).
"""

_CHALLENGE = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,500}>")

_T = TypeVar("_T")


class TakeResult(Protocol):
    """
    What L{Intake.take} says about a message (an C{IntakeResult}).
    """

    @property
    def contactId(self) -> str | None: ...

    @property
    def outcome(self) -> str: ...


class Intake(Protocol):
    """
    What the poller needs of C{ace_mail.intake.Intake}.
    """

    @property
    def incomingDir(self) -> str: ...

    def seen(self, account: str, uidl: str) -> Deferred[bool]: ...

    def take(self, account: AccountConfig, uidl: str, path: str) -> Deferred[Any]: ...


@define
class Tally:
    """
    What polls did with messages, counted as it happens.
    """

    taken: int = 0
    tooLarge: int = 0


class _IntakeFailed(POP3Error):
    """
    Intake could not take a message; the server is told QUIT so that the
    messages taken before are deleted.
    """


def _intakeFailed(error: Exception, message: str, **fields: Any) -> None:
    """
    Log why intake failed: a contact store that does not answer is a
    warning, as the poll is only tried again later; anything else is a bug,
    logged with its traceback.
    """
    if isinstance(error, STORE_UNREACHABLE):
        _log.warn(
            message + ": the contact store does not answer ({error})",
            error=error,
            **fields,
        )
    else:
        _log.failure(message, None, LogLevel.critical, **fields)


class PollSession:
    """
    One connection to an account's server, from connecting to QUIT.
    """

    def __init__(
        self,
        clock: IReactorTime,
        account: AccountConfig,
        intake: Intake,
        endpointFactory: Callable[[AccountConfig], IStreamClientEndpoint],
        tally: Tally,
    ) -> None:
        """
        @param endpointFactory: Makes the endpoint to reach the server.
        @param tally: Counts what this poll does with messages.
        """
        self._clock = clock
        self._account = account
        self._intake = intake
        self._endpointFactory = endpointFactory
        self._tally = tally
        self._peer = f"{account.host}:{account.port}"
        self._connecting: Deferred[POP3Connection] | None = None
        self._connection: POP3Connection | None = None
        self._abortReason: str | None = None
        self._failure: POP3Error | None = None

    async def run(self) -> None:
        """
        Poll once.

        @raise POP3Error: With the sentence that says why the poll failed.
        """
        connection = await self._connect()
        try:
            await self._logIn(connection)
            messages = await self._list(connection)
            try:
                await self._collect(connection, messages)
            except _IntakeFailed:
                try:
                    await self._quit(connection)
                except POP3Error:
                    pass
                raise
            await self._quit(connection)
        finally:
            connection.abort(self._abortReason or f"the poll of {self._peer} ended")

    def abort(self, reason: str) -> None:
        """
        End the poll now: the server undoes the deletions of this session.

        @param reason: The sentence the poll fails with.
        """
        self._abortReason = reason
        if self._connection is not None:
            self._connection.abort(reason)
        elif self._connecting is not None:
            self._connecting.cancel()

    async def _connect(self) -> POP3Connection:
        timeout = self._account.timeout
        endpoint = self._endpointFactory(self._account)
        connection = POP3Connection(self._clock, self._peer, timeout)
        self._connecting = connectProtocol(endpoint, connection)
        self._connecting.addTimeout(timeout, self._clock)
        try:
            await self._connecting
        except TimeoutError:
            raise POP3Error(
                f"cannot connect to {self._peer}: no connection within {timeout:g}"
                " seconds"
            ) from None
        except CancelledError:
            raise POP3Error(self._abortReason or "the poll was cancelled") from None
        except Exception as e:
            raise POP3Error(f"cannot connect to {self._peer}: {e}") from None
        self._connection = connection
        return connection

    async def _logIn(self, connection: POP3Connection) -> None:
        account = self._account
        greeting = await connection.greeting
        self._check(greeting, "the connection")
        capabilities = await self._capabilities(connection)

        if account.tls == "starttls":
            if "STLS" not in capabilities:
                raise POP3Error(
                    f"{self._peer} does not offer STLS, and the account requires it"
                    ' (tls = "starttls")'
                )
            self._check(
                await connection.startTLS(_tls.clientTLSOptions(account)), "STLS"
            )
            capabilities = await self._capabilities(connection)
        connection.pipelining = "PIPELINING" in capabilities

        if account.apop:
            challenge = _CHALLENGE.search(greeting.text)
            if challenge is None:
                raise POP3Error(
                    f"{self._peer} offers no APOP challenge in its greeting, and the"
                    " account uses APOP"
                )
            if " " in account.username:
                raise POP3Error("an APOP user name may not contain a space")
            secret = (challenge.group() + account.password).encode("utf-8")
            digest = hashlib.md5(secret, usedforsecurity=False).hexdigest()
            line = f"APOP {account.username} {digest}"
            self._check(await connection.command(line, "APOP"), "the login")
        else:
            user = f"USER {account.username}"
            self._check(await connection.command(user, "USER"), "the login")
            password = f"PASS {account.password}"
            self._check(await connection.command(password, "PASS"), "the login")
        _log.info(
            "{account}: logged in to {peer}",
            account=account.name,
            peer=self._peer,
        )

    async def _capabilities(self, connection: POP3Connection) -> set[str]:
        response = await connection.listing("CAPA")
        if not response.ok:
            return set()
        return {
            line.split(b" ", 1)[0].decode("ascii", "replace").upper()
            for line in response.lines
        }

    async def _list(self, connection: POP3Connection) -> list[MessageInfo]:
        stat, uidl, sizes = await _gather(
            [
                connection.command("STAT"),
                connection.listing("UIDL"),
                connection.listing("LIST"),
            ]
        )
        for response, command in ((stat, "STAT"), (uidl, "UIDL"), (sizes, "LIST")):
            self._check(response, command)
        count = parseStat(self._peer, stat.text)
        return parseMailbox(self._peer, count, uidl.lines, sizes.lines)

    async def _collect(
        self, connection: POP3Connection, messages: list[MessageInfo]
    ) -> None:
        account = self._account
        try:
            seen = await _gather(
                [
                    maybeDeferred(self._intake.seen, account.name, m.uid)
                    for m in messages
                ]
            )
        except Exception as e:
            _intakeFailed(e, "{account}: intake.seen failed", account=account.name)
            raise _IntakeFailed(
                f"intake could not say which messages are new: {e}"
            ) from None

        deletions: list[Deferred[None]] = []
        fetches: list[Deferred[None]] = []
        window = DeferredSemaphore(PIPELINE_WINDOW if connection.pipelining else 2)
        for message, wasSeen in zip(messages, seen, strict=True):
            if wasSeen and account.keepOnServer:
                continue
            if message.size > account.maxMessageSize:
                self._tally.tooLarge += 1
                _log.warn(
                    "{account}: message {uidl} left on the server: its {size} bytes"
                    " are more than maxMessageSize ({maxMessageSize})",
                    account=account.name,
                    uidl=message.uid,
                    size=message.size,
                    maxMessageSize=account.maxMessageSize,
                )
            else:
                await window.acquire()
                if self._failure is not None:
                    break
                fetch = self._fetch(connection, message, deletions)
                fetches.append(Deferred.fromCoroutine(fetch).addBoth(_release, window))

        await DeferredList(fetches, consumeErrors=True)
        await DeferredList(deletions, consumeErrors=True)
        if self._failure is not None:
            raise self._failure

    async def _fetch(
        self,
        connection: POP3Connection,
        message: MessageInfo,
        deletions: list[Deferred[None]],
    ) -> None:
        """
        Retrieve one message, hand it to intake, then delete it; a failure
        is kept to end the poll once the messages under way are done.
        """
        account = self._account
        try:
            path = await self._retrieve(connection, message)
            result = await self._take(message, path)
        except POP3Error as e:
            self._failure = self._failure or e
            return
        except Exception as e:
            _log.failure(
                "{account}: fetching message {uidl} failed",
                account=account.name,
                uidl=message.uid,
            )
            self._failure = self._failure or POP3Error(f"an internal error: {e!r}")
            return

        self._tally.taken += 1
        _log.info(
            "{account}: message {uidl} taken: {outcome}, contact {contactId}",
            account=account.name,
            uidl=message.uid,
            outcome=result.outcome,
            contactId=result.contactId,
        )
        if not account.keepOnServer:
            deletions.append(self._delete(connection, message))

    async def _take(self, message: MessageInfo, path: str) -> TakeResult:
        try:
            return await maybeDeferred(
                self._intake.take, self._account, message.uid, path
            )
        except Exception as e:
            _intakeFailed(
                e,
                "{account}: intake failed to take message {uidl}",
                account=self._account.name,
                uidl=message.uid,
            )
            raise _IntakeFailed(
                f"intake could not take message {message.uid}: {e}"
            ) from None

    async def _retrieve(self, connection: POP3Connection, message: MessageInfo) -> str:
        """
        @return: The path of the file that now holds the message, written
            and fsync'd in intake's incoming directory.
        """
        name = f"message {message.index} (UIDL {message.uid}) from {self._peer}"
        try:
            descriptor, path = tempfile.mkstemp(dir=self._intake.incomingDir)
        except OSError as e:
            raise _IntakeFailed(
                f"cannot write in {self._intake.incomingDir}: {e.strerror}"
            ) from None
        try:
            with open(descriptor, "wb") as sink:
                response = await connection.retrieve(
                    f"RETR {message.index}", sink, self._account.maxMessageSize, name
                )
                self._check(response, f"RETR {message.index} (UIDL {message.uid})")
                sink.flush()
                os.fsync(sink.fileno())
        except OSError as e:
            os.unlink(path)
            raise _IntakeFailed(f"cannot write {path}: {e.strerror}") from None
        except BaseException:
            os.unlink(path)
            raise
        return path

    def _delete(
        self, connection: POP3Connection, message: MessageInfo
    ) -> Deferred[None]:
        def deleted(response: Response) -> None:
            if not response.ok:
                _log.warn(
                    "{account}: {peer} refused to delete message {uidl}: {reply}",
                    account=self._account.name,
                    peer=self._peer,
                    uidl=message.uid,
                    reply=quote(response.text),
                )

        return connection.command(f"DELE {message.index}").addCallback(deleted)

    async def _quit(self, connection: POP3Connection) -> None:
        response = await connection.command("QUIT")
        connection.close()
        self._check(response, "QUIT; its deletions may be undone")

    def _check(self, response: Response, what: str) -> None:
        """
        @raise POP3Error: When C{response} is C{-ERR}.
        """
        if not response.ok:
            raise POP3Error(f"{self._peer} refused {what}: -ERR {quote(response.text)}")


def _release(result: _T, semaphore: DeferredSemaphore) -> _T:
    semaphore.release()
    return result


async def _gather(deferreds: list[Deferred[_T]]) -> list[_T]:
    """
    Wait for every one of C{deferreds}.

    @raise Exception: The first failure; the others' failures are consumed.
    """
    try:
        return await gatherResults(deferreds, consumeErrors=True)
    except FirstError as e:
        error = e.subFailure.value
        assert error is not None
        raise error from None
