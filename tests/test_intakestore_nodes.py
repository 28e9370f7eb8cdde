"""
Tests for what several ace-mail nodes share through one PostgreSQL contact
store: contacts, stored originals, intake records, the answer limit and the
account leases; and what each keeps its own: its pending messages.
"""

from __future__ import annotations

from typing import Any

from attrs import evolve
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from ace_mail.spool import newQueueId
from ace_mail.store import ANSWER, CREATED, DUPLICATE, REFUSED, Taken
from tests.pgharness import PostgresStoreCase
from tests.test_intakestore import message, plan, writeArrival


def pause(seconds: float) -> Any:
    """
    @return: A L{Deferred} that fires after C{seconds} of the real clock,
        which the database's leases also follow.
    """
    return deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


class TwoNodesTests(PostgresStoreCase):
    """
    The stores of the nodes C{node-a} and C{node-b}, each with its own
    originals directory, on one database.
    """

    def setUp(self) -> None:
        super().setUp()
        self.other = self.openStore("node-b")
        self.addCleanup(self.other.close)

    async def connectAll(self) -> None:
        """
        Have both nodes connect all their pool's connections, so that the
        work that follows runs at the same time rather than one connection
        after another.
        """
        await gatherResults(
            [node.ping() for node in (self.store, self.other) for _ in range(5)]
        )

    async def test_contactSharedAtOnce(self) -> None:
        """
        A contact created on one node is found by the other as soon as its
        creation has fired.
        """
        contact = await self.store.create(
            entrance="acme",
            customerAddress="ann@customer.example",
            customerName="Ann Lee",
            subject="Broken kettle",
            messageId=None,
            references=(),
            externalId=None,
            now=1000.0,
        )
        self.assertEqual(await self.other.get(contact.id.upper()), contact)

    async def test_originalReadOnOtherNode(self) -> None:
        """
        The original of an arrival recorded by one node is read by the other,
        which has another originals directory, with the same bytes.
        """
        arrival = writeArrival(self.store, "u1")
        taken = await self.store.recordArrival(arrival, plan())
        self.assertNotEqual(
            self.store.originalsDirectory, self.other.originalsDirectory
        )
        name = await self.other.originalOf(taken.contactId)
        self.assertEqual(name, arrival.original)
        opened = await self.other.readOriginal(name)
        assert opened is not None
        with opened:
            self.assertEqual(opened.read(), message("u1", "<u1@customer.example>"))

    async def test_pendingDispatchesPerNode(self) -> None:
        """
        Each node's pending messages are its own: those of its arrivals and
        those it added.
        """
        first = await self.store.recordArrival(writeArrival(self.store, "u1"), plan())
        second = await self.other.recordArrival(
            writeArrival(self.other, "u2", customerAddress="bob@x.example"), plan()
        )
        added = evolve(
            first.dispatches[0], queueId=newQueueId(), messageId="<added@acme.example>"
        )
        await self.other.addDispatch(added)

        def queueIds(dispatches: list[Any]) -> set[str]:
            return {dispatch.queueId for dispatch in dispatches}

        self.assertEqual(
            queueIds(await self.store.pendingDispatches()), queueIds(first.dispatches)
        )
        self.assertEqual(
            queueIds(await self.other.pendingDispatches()),
            queueIds(second.dispatches) | {added.queueId},
        )

    async def test_sameMessageOnTwoNodes(self) -> None:
        """
        When both nodes record the same message at the same time, as after a
        lease was taken over from a stalled node, one makes the contact and
        the other is told it is a duplicate of it; so too for a message that
        is refused.  Over 8 messages there are 8 contacts and 8 answers.
        """
        await self.connectAll()
        outcomes = []
        for number in range(10):
            uidl = f"u{number}"
            address = f"c{number}@customer.example" if number < 8 else None
            changes: dict[str, Any] = {"customerAddress": address}
            taken: list[Taken] = await gatherResults(
                [
                    node.recordArrival(writeArrival(node, uidl, **changes), plan())
                    for node in (self.store, self.other)
                ]
            )
            outcomes.append(sorted(t.outcome for t in taken))
            self.assertEqual(taken[0].contactId, taken[1].contactId)
        self.assertEqual(
            outcomes, [[CREATED, DUPLICATE]] * 8 + [[DUPLICATE, REFUSED]] * 2
        )
        self.assertEqual(self.rowsOutside("SELECT count(*) FROM contact"), [(8,)])
        answers = "SELECT count(*) FROM dispatch WHERE kind = %s"
        self.assertEqual(self.rowsOutside(answers, ANSWER), [(8,)])

    async def test_answerLimitShared(self) -> None:
        """
        The answer limit counts the answers of every node: with a limit of
        2, ten new emails from one address taken at the same time, five on
        each node, get 2 answers.
        """
        await self.connectAll()
        arrivals = []
        for number in range(10):
            node = (self.store, self.other)[number % 2]
            arrival = writeArrival(node, f"u{number}", messageId=None)
            arrivals.append(node.recordArrival(arrival, plan(2, agent=False)))
        taken: list[Taken] = await gatherResults(arrivals)
        self.assertEqual([t.outcome for t in taken], [CREATED] * 10)
        self.assertEqual(sum(len(t.dispatches) for t in taken), 2)
        answers = "SELECT count(*) FROM dispatch WHERE kind = %s"
        self.assertEqual(self.rowsOutside(answers, ANSWER), [(2,)])

    async def test_leaseHeldByOneNode(self) -> None:
        """
        The first node to ask holds a lease and may renew it; the other is
        refused, even when it releases the lease, until the holder releases
        it.  Leases of other names are apart.
        """
        lease = "account:acme-pop"
        self.assertTrue(await self.store.holdLease(lease, 30))
        self.assertFalse(await self.other.holdLease(lease, 30))
        self.assertTrue(await self.store.holdLease(lease, 30))
        self.assertTrue(await self.other.holdLease("account:sales-pop", 30))
        await self.other.releaseLease(lease)
        self.assertFalse(await self.other.holdLease(lease, 30))
        await self.store.releaseLease(lease)
        self.assertTrue(await self.other.holdLease(lease, 30))
        self.assertFalse(await self.store.holdLease(lease, 30))

    async def test_leaseExpiresUnlessRenewed(self) -> None:
        """
        A lease of one second that its holder renews after half a second is
        still held 1.1 seconds after it was first taken, and then expires
        one second after the renewal, when the other node takes it.
        """
        lease = "account:acme-pop"
        self.assertTrue(await self.store.holdLease(lease, 1.0))
        await pause(0.5)
        self.assertTrue(await self.store.holdLease(lease, 1.0))
        await pause(0.6)
        self.assertFalse(await self.other.holdLease(lease, 1.0))
        await pause(0.5)
        self.assertTrue(await self.other.holdLease(lease, 1.0))
        self.assertFalse(await self.store.holdLease(lease, 1.0))
