# -*- test-case-name: tests.test_proxy_server -*-
"""
The ESMTP commands of the proxy, one connection at a time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, BinaryIO, Callable

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..address import isMailbox
from ..envelope import Envelope
from ..rewrite import RewriteError
from ..spool import MessageParts, Range, SpoolClosed
from ..store import STORE_UNREACHABLE, Contact, Entrance, IIntakeStore
from . import _replies as replies
from ._data import MessageReader
from ._policy import (
    Refused,
    checkMailParameters,
    checkRecipient,
    checkSender,
    parsePath,
)
from ._sasl import MECHANISMS, SaslExchange
from ._session import Mode, Session
from ._transaction import (
    EnqueueFailed,
    Transaction,
    enqueueAll,
    lookUpContact,
    readHeader,
)

if TYPE_CHECKING:
    from ._factory import ProxyFactory

_log = Logger()

COMMAND_LINE_LIMIT = 512
AUTH_LINE_LIMIT = 12288
MAX_AUTH_FAILURES = 3
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MESSAGE_ID = re.compile(
    rb"^Message-ID:(?:\r\n)? (<[^>\r\n]+>)\r$", re.MULTILINE | re.IGNORECASE
)


class ProxyProtocol(Session):
    """
    One ESMTP session with an agent's mail client or the company's server.

    Commands are handled one at a time, in order; see L{Session}. Replies to
    contacts are accepted only from trusted networks or after AUTH, and the
    message is answered with 250 only once every copy of it is queued.
    """

    def __init__(self, factory: ProxyFactory) -> None:
        super().__init__(factory)
        self._trusted = False
        self._secure = factory.implicitTls
        self._helo: str | None = None
        self._user: bytes | None = None
        self._authFailures = 0
        self._sasl: SaslExchange | None = None
        self._transaction: Transaction | None = None
        self._reader: MessageReader | None = None
        self._file: BinaryIO | None = None
        self._accepted = 0

    def sessionStarted(self) -> None:
        self._trusted = self.factory.policy.isTrusted(self.host)
        self.write(f"220 {self.settings.heloName} ESMTP ace-mail proxy ready")

    def sessionEnded(self) -> None:
        # One line per session, at its end only: the log is a large part of
        # the cost of a message.
        _log.info(
            "{peer} disconnected after {messages} messages (trusted: {trusted})",
            peer=self.peer,
            messages=self._accepted,
            trusted=self._trusted,
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._file is not None:
            self.factory.scratch.give(self._file)
            self._file = None
        super().connectionLost(reason)

    def lineReceived(self, line: bytes) -> None:
        auth = self.mode is Mode.AUTH or line[:5].upper() == b"AUTH "
        limit = AUTH_LINE_LIMIT if auth else COMMAND_LINE_LIMIT
        if len(line) + 2 > limit:
            self._endAuth()
            self.refuse(replies.lineTooLong(limit))
            return
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self._endAuth()
            self.refuse(replies.NOT_ASCII)
            return
        if self._sasl is not None:
            exchange = self._sasl
            self._authStep(exchange, lambda: exchange.respond(text))
            return
        if _CONTROL.search(text):
            self.refuse(replies.CONTROL_IN_COMMAND)
            return
        verb, _, argument = text.partition(" ")
        handler = getattr(self, "do_" + verb.upper(), None) if verb.isalpha() else None
        if handler is None:
            self.refuse(replies.UNKNOWN_COMMAND)
            return
        handler(argument.strip(" "))

    def do_EHLO(self, argument: str) -> None:
        if not self._greet(argument, "EHLO"):
            return
        lines = [
            f"{self.settings.heloName} greets {argument}",
            f"SIZE {self.settings.maxMessageSize}",
            "8BITMIME",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
        ]
        if self.factory.tlsContext is not None and not self._secure:
            lines.append("STARTTLS")
        if self.factory.checker is not None and self._secure:
            lines.append("AUTH " + " ".join(MECHANISMS))
        last = lines.pop()
        self.write("".join(f"250-{line}\r\n" for line in lines) + f"250 {last}")

    def do_HELO(self, argument: str) -> None:
        if self._greet(argument, "HELO"):
            self.write(f"250 {self.settings.heloName} greets {argument}")

    def _greet(self, argument: str, verb: str) -> bool:
        if not argument:
            self.refuse(replies.greetingSyntax(verb))
            return False
        self._helo = argument
        self._transaction = None
        return True

    def do_MAIL(self, argument: str) -> None:
        if self._helo is None:
            self.refuse(replies.HELO_FIRST)
            return
        if self._transaction is not None:
            self.refuse(replies.NESTED_MAIL)
            return
        try:
            address, parameters = parsePath(argument, "FROM")
            checkSender(address)
            checkMailParameters(parameters, self.settings.maxMessageSize)
        except Refused as e:
            self.refuse(e.refusal)
            return
        self._transaction = Transaction(address)
        self.write(f"250 2.1.0 sender <{address}> OK")

    def do_RCPT(self, argument: str) -> None:
        transaction = self._transaction
        if transaction is None:
            self.refuse(replies.MAIL_FIRST)
            return
        try:
            address, parameters = parsePath(argument, "TO")
            if parameters:
                raise Refused(replies.RCPT_PARAMETERS)
            if transaction.recipients >= self.settings.maxRecipients:
                raise Refused(replies.tooManyRecipients(self.settings.maxRecipients))
            if not (self._trusted or self._user is not None):
                raise Refused(replies.relayDenied(address))
            recipient = checkRecipient(address, self.settings.rerouteName)
        except Refused as e:
            self.refuse(e.refusal)
            return
        contactId = recipient.contactId
        if contactId is None:
            transaction.addPassThrough(address)
            self.write(f"250 2.1.5 recipient <{address}> OK")
            return

        def accepted(found: tuple[Contact, Entrance]) -> None:
            transaction.addContact(*found)
            self.write(f"250 2.1.5 contact {contactId} OK")

        def failed(reason: Failure) -> None:
            if isinstance(reason.value, Refused):
                self.refuse(reason.value.refusal, contactId=contactId)
                return
            if reason.check(*STORE_UNREACHABLE):
                _log.warn(
                    "{peer} cannot look up contact {contactId} now, the contact"
                    " store does not answer: {reason}",
                    peer=self.peer,
                    contactId=contactId,
                    reason=reason.getErrorMessage(),
                )
            else:
                _log.failure(
                    "{peer} cannot look up contact {contactId}",
                    reason,
                    peer=self.peer,
                    contactId=contactId,
                )
            self.refuse(replies.storeFailed(contactId), contactId=contactId)

        lookup = lookUpContact(
            self.factory.store,
            self.factory.entrances,
            self.settings,
            self.factory.clock.seconds(),
            transaction.sender,
            contactId,
        )
        self.wait(Deferred.fromCoroutine(lookup), accepted, failed)

    def do_DATA(self, argument: str) -> None:
        if argument:
            self.refuse(replies.NO_ARGUMENT)
            return
        if self._transaction is None:
            self.refuse(replies.MAIL_FIRST)
            return
        if not self._transaction.recipients:
            self.refuse(replies.NO_RECIPIENTS)
            return
        try:
            self._file = self.factory.scratch.take()
        except OSError:
            _log.failure("{peer} cannot create a file for a message", peer=self.peer)
            self.refuse(replies.NO_TEMPORARY_FILE)
            return
        settings = self.settings
        self._reader = MessageReader(
            self._file, settings.maxMessageSize, settings.maxLineLength
        )
        self.mode = Mode.DATA
        self.write("354 End data with <CR><LF>.<CR><LF>")

    def feedData(self, data: bytes) -> bytes | None:
        reader, file, transaction = self._reader, self._file, self._transaction
        assert reader is not None and file is not None and transaction is not None
        rest = reader.feed(data)
        if rest is None:
            return None
        self.mode = Mode.COMMAND
        self._reader, self._file, self._transaction = None, None, None
        if reader.refusal is not None:
            self.factory.scratch.give(file)
            contactIds = sorted(transaction.contacts)
            self.refuse(reader.refusal, size=reader.size, contactIds=contactIds)
            return rest
        self._queue(transaction, file)
        return rest

    def _queue(self, transaction: Transaction, file: BinaryIO) -> None:
        """
        Queue the copies of a received message; they are its header blocks
        in memory and its body in C{file}, which is given back once they are
        all stored or refused.
        """
        contactIds = sorted(transaction.contacts)
        # A user name that is an address is the agent's too; a plain name is
        # not hidden, as it would hide every header that has the word.
        user = (self._user or b"").decode("ascii", "replace")
        hide = [transaction.sender, user if isMailbox(user) else ""]
        try:
            file.flush()
            header, body = readHeader(file)
            copies = transaction.copies(
                header, body, self.settings.route, hide, self.settings.entranceRoutes
            )
        except RewriteError as e:
            self.factory.scratch.give(file)
            self.refuse(replies.rewriteRefused(str(e)), contactIds=contactIds)
            return
        except Exception:
            self.factory.scratch.give(file)
            _log.failure(
                "{peer} cannot rewrite the reply to {contactIds}",
                peer=self.peer,
                contactIds=contactIds,
            )
            self.refuse(replies.REWRITE_FAILED, contactIds=contactIds)
            return
        size = len(header) + body.length

        def stored(queueIds: list[str]) -> None:
            self._accepted += 1
            _log.info(
                "{peer} message of {size} bytes queued as {queueIds} "
                "(contacts: {contactIds})",
                peer=self.peer,
                size=size,
                queueIds=queueIds,
                contactIds=contactIds,
            )
            self.write(f"250 2.0.0 message accepted as {', '.join(queueIds)}")

        def failed(reason: Failure) -> None:
            error = reason.value
            storedIds = error.stored if isinstance(error, EnqueueFailed) else []
            cause = error.__cause__ if error is not None else None
            why = Failure(cause) if cause is not None else reason
            if why.check(OSError, SpoolClosed):
                _log.error(
                    "{peer} message refused, the queue could not store it "
                    "(contacts: {contactIds}; copies queued and deleted again: "
                    "{queueIds}): {reason}",
                    peer=self.peer,
                    contactIds=contactIds,
                    queueIds=storedIds,
                    reason=why.getErrorMessage(),
                )
            else:
                _log.failure(
                    "{peer} cannot queue a message (contacts: {contactIds}); "
                    "copies queued and deleted again: {queueIds}",
                    why,
                    peer=self.peer,
                    contactIds=contactIds,
                    queueIds=storedIds,
                )
            self.refuse(replies.NOT_QUEUED, queueIds=storedIds)

        threads = [
            (contactId, copy.pieces[0])
            for contactId, (_, copy) in zip(transaction.contacts, copies, strict=False)
        ]
        queued = self._rememberThenQueue(threads, copies, file)
        self.wait(Deferred.fromCoroutine(queued), stored, failed)

    async def _rememberThenQueue(
        self,
        threads: list[tuple[str, bytes | Range]],
        copies: list[tuple[Envelope, MessageParts]],
        file: BinaryIO,
    ) -> list[str]:
        """
        Keep the Message-ID of each customer's copy with its contact, so that
        the customer's answer to it joins the contact, then queue every copy.
        A Message-ID that cannot be kept only weakens that threading, so it
        is logged and the reply still goes.

        @param file: The file that the copies' bodies are in, given back
            once they are all stored or refused.
        """
        store = self.factory.store
        try:
            if IIntakeStore.providedBy(store):
                for contactId, header in threads:
                    await self._rememberMessageId(store, contactId, header)
            return await enqueueAll(self.factory.queue, copies)
        finally:
            self.factory.scratch.give(file)

    async def _rememberMessageId(
        self, store: IIntakeStore, contactId: str, header: bytes | Range
    ) -> None:
        found = _MESSAGE_ID.search(header) if isinstance(header, bytes) else None
        if found is None:
            return
        messageId = found.group(1).decode("ascii", "replace")
        try:
            await store.recordMessageId(contactId, messageId)
        except Exception:
            _log.failure(
                "{peer} cannot keep Message-ID {messageId} of contact {contactId}",
                peer=self.peer,
                messageId=messageId,
                contactId=contactId,
            )

    def do_RSET(self, argument: str) -> None:
        self._transaction = None
        self.write("250 2.0.0 reset")

    def do_NOOP(self, argument: str) -> None:
        self.write("250 2.0.0 OK")

    def do_VRFY(self, argument: str) -> None:
        if not argument:
            self.refuse(replies.VRFY_SYNTAX)
            return
        self.write(
            "252 2.5.2 cannot verify the address; send mail and it will be tried"
        )

    def do_HELP(self, argument: str) -> None:
        self.write(
            "214 2.0.0 commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP "
            "STARTTLS AUTH"
        )

    def do_QUIT(self, argument: str) -> None:
        self.write(f"221 2.0.0 {self.settings.heloName} closing the connection")
        self.closing = True
        self.wire.loseConnection()

    def do_STARTTLS(self, argument: str) -> None:
        if argument:
            self.refuse(replies.NO_ARGUMENT)
            return
        if self._secure:
            self.refuse(replies.TLS_ACTIVE)
            return
        if self.factory.tlsContext is None:
            self.refuse(replies.NO_TLS)
            return
        injected = self.discardInput()
        if injected:
            self.factory.refusals["starttls-injection"] += 1
            _log.warn(
                "{peer} discarded {size} bytes sent after STARTTLS",
                peer=self.peer,
                size=injected,
            )
        self.write("220 2.0.0 Ready to start TLS")
        self._helo, self._transaction, self._user = None, None, None
        self.wire.startTLS(self.factory.tlsContext)
        self._secure = True

    def do_AUTH(self, argument: str) -> None:
        if self.factory.checker is None:
            self.refuse(replies.NO_AUTH)
            return
        if not self._secure:
            self.refuse(replies.AUTH_NEEDS_TLS)
            return
        if (
            self._helo is None
            or self._user is not None
            or self._transaction is not None
        ):
            self.refuse(replies.AUTH_SEQUENCE)
            return
        mechanism, _, initial = argument.partition(" ")
        if mechanism.upper() not in MECHANISMS:
            self.refuse(replies.AUTH_MECHANISM)
            return
        exchange = SaslExchange(mechanism.upper())
        self._authStep(exchange, lambda: exchange.start(initial.strip(" ") or None))

    def _authStep(
        self,
        exchange: SaslExchange,
        step: Callable[[], bytes | UsernamePassword],
    ) -> None:
        try:
            result = step()
        except Refused as e:
            self._endAuth()
            self.refuse(e.refusal)
            return
        if isinstance(result, bytes):
            self.mode, self._sasl = Mode.AUTH, exchange
            self.write("334 " + result.decode("ascii"))
            return
        self._endAuth()
        self._checkCredentials(result)

    def _checkCredentials(self, credentials: UsernamePassword) -> None:
        checker = self.factory.checker
        assert checker is not None
        user = credentials.username.decode("utf-8", "replace")

        def authenticated(avatarId: bytes) -> None:
            self._user = avatarId
            _log.info("{peer} authenticated as {user}", peer=self.peer, user=user)
            self.write("235 2.7.0 authentication succeeded")

        def failed(reason: Failure) -> None:
            if not reason.check(UnauthorizedLogin, UnhandledCredentials):
                _log.failure(
                    "{peer} cannot check the credentials of {user}",
                    reason,
                    peer=self.peer,
                    user=user,
                )
                self.refuse(replies.AUTH_ERROR, user=user)
                return
            self._authFailures += 1
            self.refuse(replies.AUTH_FAILED, user=user)
            if self._authFailures >= MAX_AUTH_FAILURES:
                self.closeWith(replies.AUTH_FAILURES)

        self.wait(
            maybeDeferred(checker.requestAvatarId, credentials), authenticated, failed
        )

    def _endAuth(self) -> None:
        if self.mode is Mode.AUTH:
            self.mode, self._sasl = Mode.COMMAND, None
