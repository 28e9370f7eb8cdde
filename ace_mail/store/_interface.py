# -*- test-case-name: tests.test_store -*-
"""
What every contact store does, whatever keeps the data.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from ace_mail.store._contact import Contact


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

    def purge(endedBefore: float) -> Deferred[int]:
        """
        Delete the contacts that were ended before a time, and all that is
        kept with them.  The caller works out the time from its retention.

        @param endedBefore: In POSIX seconds; a contact ended at exactly this
            time is kept, and open contacts are always kept.
        @return: A L{Deferred} that fires with the number of contacts deleted.
        """

    def close() -> None:
        """
        Release the database.  No other method may be called afterwards.
        """
