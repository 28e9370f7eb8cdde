# -*- test-case-name: tests.test_store -*-
"""
What every contact store does, whatever keeps the data.
"""

from __future__ import annotations

from typing import BinaryIO

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from ace_mail.store._contact import Contact, ContactQuery
from ace_mail.store._intake import Arrival, Dispatch, Plan, Taken


class ContactStoreError(Exception):
    """
    The contact store cannot be used; the message is one sentence that names
    the file or the database and says what to do.
    """


class IContactStore(Interface):
    """
    The contacts that agents may answer through the SMTP proxy.

    Every method but L{close} returns a L{Deferred}, so that a store whose
    database is across the network can do the same work without blocking.
    Contact ids are compared without regard to letter case, as some mail
    servers fold the case of the local part that carries them.
    """

    def create(
        *,
        entrance: str,
        customerAddress: str,
        customerName: str,
        subject: str,
        messageId: str | None,
        references: tuple[str, ...],
        externalId: str | None,
        now: float,
    ) -> Deferred[Contact]:
        """
        Make and keep a new open contact with a new id.

        @param now: The creation time, in POSIX seconds.
        @return: A L{Deferred} that fires with the new L{Contact} once it is
            on disk.
        """

    def get(contactId: str) -> Deferred[Contact | None]:
        """
        Look a contact up.

        @return: A L{Deferred} that fires with the L{Contact}, or with L{None}
            if there is none with that id.
        """

    def end(contactId: str, now: float) -> Deferred[Contact | None]:
        """
        Mark a contact as ended in ACE Agent.  Ending an ended contact keeps
        the first end time.

        @param now: The end time, in POSIX seconds.
        @return: A L{Deferred} that fires with the contact as it now is, or
            with L{None} if there is none with that id.
        """

    def listContacts(query: ContactQuery) -> Deferred[list[Contact]]:
        """
        List contacts oldest first, in pages.

        @return: A L{Deferred} that fires with at most C{query.limit}
            contacts that match C{query}.
        """

    def purge(endedBefore: float) -> Deferred[int]:
        """
        Delete the contacts that were ended before a time, and all that is
        kept with them, their stored original emails included.  The caller
        works out the time from its retention.

        @param endedBefore: In POSIX seconds; a contact ended at exactly this
            time is kept, and open contacts are always kept.
        @return: A L{Deferred} that fires with the number of contacts deleted.
        """

    def countContacts(endedSince: float) -> Deferred[dict[str, int]]:
        """
        Count the contacts by state, for the operators' figures.

        @param endedSince: Contacts ended before this POSIX time are expired.
        @return: A L{Deferred} that fires with the number of C{"open"},
            C{"ended"} and C{"expired"} (not yet purged) contacts.
        """

    def ping() -> Deferred[None]:
        """
        Run a trivial query, to tell that the store answers.

        @return: A L{Deferred} that fires once it has answered, or fails.
        """

    def close() -> None:
        """
        Release the database.  No other method may be called afterwards.
        """


class IIntakeStore(IContactStore):
    """
    A contact store that also keeps what email intake needs: the messages taken from each POP3 account, the
    stored originals, and the automatic answers and physical emails it must
    send exactly once.

    Message-IDs that ace-mail sends for a contact are kept so that a
    customer's answer to one of them is attached to that contact.
    """

    originalsDirectory = Attribute(
        "The directory of the stored original emails, named by the records."
    )

    def seen(account: str, uidl: str) -> Deferred[bool]:
        """
        @return: A L{Deferred} that fires with whether this account's message
            with this UIDL was taken already.
        """

    def retireUidl(
        account: str, uidl: str, digest: str, messageId: str | None
    ) -> Deferred[bool]:
        """
        Tell a message under a seen UIDL from the one taken under it before.
        RFC 1939 lets a server reuse a UIDL once its message is deleted, so
        a message with another digest, and another Message-ID or none, is
        another message: the earlier record is moved off the UIDL, keeping
        its contact and original, so that the new one can be recorded.

        @param digest: The SHA-256 of the message now under the UIDL.
        @param messageId: Its Message-ID, or L{None}.
        @return: A L{Deferred} that fires with C{True} once the UIDL is
            free, or C{False} when it is the same message (same digest, or
            same Message-ID with bytes that the server changed).
        """

    def recordArrival(arrival: Arrival, plan: Plan) -> Deferred[Taken]:
        """
        Decide what an arrival is and record it in one transaction: a
        duplicate (by account and UIDL, or by account, Message-ID and
        digest), refused, attached to an open or unexpired contact of its
        entrance (by a Message-ID that ace-mail sent for it, then by the
        subject tag), or a new contact.  A new contact gets the planned
        automatic answer unless its address had C{plan.answerLimit} answers
        within C{plan.answerWindow}; new and attached messages get the
        planned physical email.  Their Message-IDs are kept for threading.

        @return: A L{Deferred} that fires with the decision once committed.
        """

    def addDispatch(dispatch: Dispatch) -> Deferred[None]:
        """
        Note a pending message for a contact, and keep its Message-ID.

        @return: A L{Deferred} that fires once it is committed.
        """

    def settleDispatch(queueId: str, state: str) -> Deferred[None]:
        """
        Mark a pending message as queued, or as dropped.

        @return: A L{Deferred} that fires once it is committed.
        """

    def pendingDispatches() -> Deferred[list[Dispatch]]:
        """
        @return: A L{Deferred} that fires with the messages still pending,
            oldest first.
        """

    def recordMessageId(contactId: str, messageId: str) -> Deferred[None]:
        """
        Keep the Message-ID of a message sent for a contact, such as an
        agent's reply rewritten by the proxy, so that the customer's answer
        to it is attached to the contact.

        The commit does not wait for the disk: the Message-ID is kept if the
        process dies, and may be lost only with the machine, which costs the
        threading of that one message and nothing else.

        @return: A L{Deferred} that fires once it is committed.
        """

    def originalOf(contactId: str) -> Deferred[str | None]:
        """
        @return: A L{Deferred} that fires with the name of the stored
            original that opened the contact, or L{None} if it has none.
        """

    def readOriginal(name: str) -> Deferred[BinaryIO | None]:
        """
        Open a stored original, on whichever node took it.

        @param name: Its name, as L{originalOf} or a L{Dispatch} gives it.
        @return: A L{Deferred} that fires with it as a binary file open for
            reading, which the caller closes, or with L{None} when it is not
            kept (any more).
        """


class ILeases(Interface):
    """
    Named leases that several ace-mail nodes sharing one store take turns
    to hold, such as the right to poll one POP3 account.  The store's own
    clock decides expiry, so that the nodes' clocks need not agree.
    """

    node = Attribute("The name of this node, which holds the leases it takes.")

    def holdLease(name: str, seconds: float) -> Deferred[bool]:
        """
        Take the lease C{name} for this node, or renew it if this node holds
        it already, for C{seconds} from now.

        @return: A L{Deferred} that fires with C{True} when this node holds
            the lease until then, or C{False} when another node holds it and
            it has not expired; it fails when the store cannot be reached.
        """

    def releaseLease(name: str) -> Deferred[None]:
        """
        Give up the lease C{name} if this node holds it, so that another
        node may take it at once.
        """
