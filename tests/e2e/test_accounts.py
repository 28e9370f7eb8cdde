"""
End-to-end tests of the email accounts: a real C{twistd -n ace-mail} polls
a real Dovecot POP3 server on loopback, turns its customer emails into
contacts, answers them at an aiosmtpd sink, and carries the whole loop from
the mailbox to the agent and back to the customer.
"""

from __future__ import annotations

import email.policy
import os
import smtplib
import time
import uuid
from collections import Counter
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any, Callable

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e._harness import LOOPBACK, Delivery, Sink, freePort, settled, waitFor
from tests.e2e._pop3harness import (
    CERTS,
    AccountAceMail,
    Answer,
    CustomerEmail,
    Dovecot,
    accountConfig,
    answers,
    customerEmail,
    dovecotProgram,
    storedCopies,
)
from tests.e2e.test_proxy import agentReply, headerAddresses, revealed

ENTRANCE = "support@acme.example"
AGENT = "agent@agents.example"
AGENT_MAILBOX = "agents@acme.example"
ADDRESS_HEADERS = ("From", "Reply-To", "To", "Cc", "Bcc", "Mail-Followup-To")


class _AccountTestCase(SynchronousTestCase):
    """
    Starts Dovecot and a sink; each test fills the mailbox and starts
    ace-mail with a config whose entrance C{acme} polls the mailbox.
    """

    tls = False

    def setUp(self) -> None:
        if dovecotProgram() is None and not os.environ.get("CI"):
            raise SkipTest("dovecot is not installed; .ci/run installs it")
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.tag = uuid.uuid4().hex[:12]
        self.dovecot = Dovecot(tls=self.tls)
        self.addCleanup(self.dovecot.stop)
        self.dovecot.start()
        self.sink = Sink(freePort(), os.path.join(self.base, "sink"))
        self.addCleanup(self.sink.kill)
        self.sink.start()

    def startAceMail(self, **config: Any) -> AccountAceMail:
        """
        Write the config (L{accountConfig} with C{config}) and start ace-mail.
        """
        path = os.path.join(self.base, "ace-mail.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(accountConfig(self.dovecot, **config))
        self.aceMail = AccountAceMail(
            os.path.join(self.base, "data"),
            self.sink.port,
            os.path.join(self.base, "ace-mail.log"),
            path,
        )
        self.addCleanup(self.aceMail.kill)
        self.aceMail.start()
        return self.aceMail

    def emails(self, count: int, first: int = 0, **options: Any) -> list[CustomerEmail]:
        """
        Put C{count} customer emails into the mailbox.
        """
        made = [
            customerEmail(self.tag, n, **options) for n in range(first, first + count)
        ]
        self.dovecot.deliver(e.content for e in made)
        return made

    def waitFor(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        """
        L{waitFor}, with the tails of ace-mail's and Dovecot's logs in the
        failure.
        """
        try:
            waitFor(what, condition, timeout)
        except AssertionError as e:
            self.fail(
                f"{e}\nace-mail's log ends with:\n{self.aceMail.logTail()}\n"
                f"dovecot's log ends with:\n{self.dovecot.logTail()}"
            )

    def answered(self, count: int, timeout: float = 60) -> list[Answer]:
        """
        Wait until the sink holds C{count} automatic answers and the mailbox
        is empty, then until the sink takes no more.

        @return: Every automatic answer the sink holds.
        """
        self.waitFor(
            f"{count} automatic answers and an empty mailbox",
            lambda: self.dovecot.waiting() == 0 and len(answers(self.sink)) >= count,
            timeout,
        )
        settled([self.sink], quiet=1.0, timeout=30)
        return answers(self.sink)

    def sentTo(self, address: str, count: int) -> list[Delivery]:
        """
        Wait (at most 30 s) until the sink holds C{count} messages for
        C{address}.
        """

        def found() -> list[Delivery]:
            return [d for d in self.sink.deliveries() if address in d.recipients]

        self.waitFor(
            f"{count} messages for {address}", lambda: len(found()) >= count, 30
        )
        return found()


def parsed(content: bytes) -> Any:
    """
    @return: A message parsed with the standard library's default policy.
    """
    return BytesParser(policy=email.policy.default).parsebytes(content)


def replyAllAddresses(content: bytes) -> set[str]:
    """
    @return: Every address in the header fields that "reply" and "reply all"
        read, in lower case.
    """
    message = parsed(content)
    values = [str(v) for name in ADDRESS_HEADERS for v in message.get_all(name, [])]
    return {address.lower() for _, address in getaddresses(values)}


class ContactsFromMailboxTests(_AccountTestCase):
    """
    Plain POP3 on loopback (allowed explicitly): emails become contacts and
    each customer gets one automatic answer.
    """

    def test_eachEmailBecomesOneAnsweredContact(self) -> None:
        """
        Each of five emails, some with attachments, becomes its own contact
        of entrance acme, and its customer gets exactly one automatic answer
        from the entrance's address, threaded under the email, with the
        template filled in; the mailbox is emptied.
        """
        sent = self.emails(3) + self.emails(2, first=3, attachment=b"%PDF-1.4 x")
        aceMail = self.startAceMail()

        got = self.answered(5)
        self.assertEqual(len(got), 5, [a.recipients for a in got])
        byCustomer = {a.recipients: a for a in got}
        self.assertEqual(set(byCustomer), {(e.address,) for e in sent})
        self.assertEqual(len({a.contactId for a in got}), 5)
        for original in sent:
            answer = byCustomer[(original.address,)]
            self.assertEqual(answer.mailFrom, ENTRANCE)
            self.assertEqual(
                headerAddresses(answer.content, "From"),
                [("Acme Support", ENTRANCE)],
            )
            self.assertEqual(str(answer.headers["In-Reply-To"]), original.messageId)
            self.assertEqual(
                str(answer.headers["Subject"]),
                f"Re: {original.subject} [#{answer.contactId}]",
            )
            body = parsed(answer.content).get_body(("plain",)).get_content()
            self.assertIn(f"Dear {original.name}", body)
            self.assertIn(answer.contactId, body)
            contact = aceMail.contact(answer.contactId)
            self.assertEqual(contact["entrance"], "acme")
            self.assertEqual(contact["subject"], original.subject)
            self.assertIn(original.address, contact["customer"])

    def test_customersReplyThreadsOntoContact(self) -> None:
        """
        A customer's answer to the automatic answer (In-Reply-To its
        Message-ID) and an email whose subject carries the contact's tag both
        join the existing contact: neither gets an answer. A new email of the
        same customer on another matter opens a second contact.
        """
        [first] = self.emails(1)
        aceMail = self.startAceMail(autoAnswerLimit=10)
        [answer] = self.answered(1)
        answerId = str(answer.headers["Message-ID"])

        reply = customerEmail(
            self.tag + "-reply",
            0,
            subject=f"Re: {answer.headers['Subject']}",
            headers=[("In-Reply-To", answerId), ("References", answerId)],
        )
        tagged = customerEmail(
            self.tag + "-tagged", 0, subject=f"One more thing [#{answer.contactId}]"
        )
        other = customerEmail(self.tag + "-other", 0, subject="A new order")
        self.dovecot.deliver([reply.content, tagged.content, other.content])

        got = self.answered(2)
        self.assertEqual(
            sorted(str(a.headers["In-Reply-To"]) for a in got),
            sorted([first.messageId, other.messageId]),
        )
        [second] = [a for a in got if a.contactId != answer.contactId]
        self.assertEqual(aceMail.contact(second.contactId)["subject"], "A new order")
        listed = {c["id"] for c in aceMail.contacts()}
        self.assertEqual(listed, {answer.contactId, second.contactId})


class KillDuringRetrievalTests(_AccountTestCase):
    """
    ace-mail killed with SIGKILL while it empties a large mailbox.
    """

    def test_killedThriceThenExactlyOnce(self) -> None:
        """
        Killed with SIGKILL twice while it retrieves 500 emails and once
        while it sends their answers, and started again each time, ace-mail
        ends with exactly 500 contacts and 500 automatic answers: one per
        email, none twice. The only copies the sink may hold twice are
        answers it stored within two seconds of a kill, sent again whole
        because ace-mail died before it read their 250 (RFC 1047).
        """
        sent = self.emails(500)
        aceMail = self.startAceMail(autoAnswerLimit=10)

        def taken() -> int:
            count: int = aceMail.accounts()["acme-pop"]["messagesTaken"]
            return count

        kills = []
        for what, condition, retrieving in [
            ("50 messages taken", lambda: taken() >= 50, True),
            ("50 more messages taken", lambda: taken() >= 50, True),
            ("250 answers at the sink", lambda: len(answers(self.sink)) >= 250, False),
        ]:
            self.waitFor(what, condition, 180)
            waiting = self.dovecot.waiting()
            kills.append(time.time())
            aceMail.kill()
            if retrieving:
                self.assertGreater(waiting, 0, f"the mailbox was empty at {what}")
            aceMail.start()

        got = self.answered(500, timeout=300)
        distinct = {str(a.headers["Message-ID"]): a for a in got}.values()
        customers = Counter(a.recipients for a in distinct)
        self.assertEqual([c for c, n in customers.items() if n > 1], [])
        self.assertEqual(set(customers), {(e.address,) for e in sent})
        self.assertEqual(len({a.contactId for a in distinct}), 500)
        listed = aceMail.contacts()
        self.assertEqual(len(listed), 500)
        self.assertEqual({c["id"] for c in listed}, {a.contactId for a in got})
        resent = {m: c for m, c in storedCopies(self.sink).items() if len(c) > 1}
        for messageId, copies in resent.items():
            self.assertEqual(len({digest for _, digest in copies}), 1, messageId)
            first = copies[0][0]
            self.assertTrue(
                len(copies) == 2 and any(abs(first - k) <= 2 for k in kills),
                f"{messageId} was stored {len(copies)} times, first at {first}, "
                f"the kills at {kills}",
            )


class WholeLoopTests(_AccountTestCase):
    """
    From the customer's mailbox to the agent's mail client and back to the
    customer.
    """

    def test_mailboxToAgentToCustomer(self) -> None:
        """
        An email in the mailbox becomes a contact; deliver sends its physical
        email, attachment intact, to the agent from the contact address with
        no way to reply to the customer directly; the agent's reply through
        the proxy reaches the customer from the entrance's address without
        the agent's address.
        """
        pdf = b"%PDF-1.4\n" + os.urandom(3000)
        [original] = self.emails(
            1, attachment=pdf, headers=[("Cc", "Bob <bob@customer.example>")]
        )
        aceMail = self.startAceMail()
        [answer] = self.answered(1)
        contactAddress = f"{answer.contactId}@{aceMail.rerouteName}"

        aceMail.deliver(answer.contactId, AGENT)
        [physical] = self.sentTo(AGENT, 1)
        copy = parsed(physical.content)
        contactMailbox = [(original.name, contactAddress)]
        self.assertEqual(headerAddresses(physical.content, "From"), contactMailbox)
        self.assertEqual(headerAddresses(physical.content, "Reply-To"), contactMailbox)
        self.assertEqual(
            replyAllAddresses(physical.content) - {AGENT}, {contactAddress}
        )
        self.assertEqual(str(copy["Subject"]), original.subject)
        text = copy.get_body(("plain",)).get_content()
        self.assertIn("Hello, this is customer 0.", text)
        [attached] = list(copy.iter_attachments())
        self.assertEqual(attached.get_filename(), "invoice-0.pdf")
        self.assertEqual(attached.get_content(), pdf)

        with smtplib.SMTP(LOOPBACK, aceMail.proxyPort, timeout=30) as client:
            client.ehlo("agentpc.agents.example")
            reply = agentReply(contactAddress, f"Re: {original.subject}")
            self.assertEqual(client.sendmail(AGENT, [contactAddress], reply), {})
        [delivered] = [
            d
            for d in self.sentTo(original.address, 2)
            if "Auto-Submitted" not in parsed(d.content)
        ]
        self.assertEqual(delivered.mailFrom, ENTRANCE)
        self.assertEqual(delivered.recipients, (original.address,))
        self.assertEqual(
            headerAddresses(delivered.content, "From"), [("Acme Support", ENTRANCE)]
        )
        self.assertEqual(revealed(delivered.content, AGENT), [])

    def test_agentMailboxGetsEveryNewContact(self) -> None:
        """
        An entrance with an agent mailbox sends it the physical email of
        every new contact, from that contact's address.
        """
        self.emails(2)
        self.startAceMail(agentMailbox=AGENT_MAILBOX)
        got = self.answered(2)
        physical = self.sentTo(AGENT_MAILBOX, 2)
        settled([self.sink], quiet=1.0, timeout=30)
        self.assertEqual(len(self.sentTo(AGENT_MAILBOX, 2)), 2)
        senders = {headerAddresses(d.content, "From")[0][1] for d in physical}
        self.assertEqual(senders, {f"{a.contactId}@ace.test" for a in got})


class TlsAccountTests(_AccountTestCase):
    """
    Accounts that reach Dovecot over STLS or implicit TLS, verifying its
    certificate.
    """

    tls = True

    def loggedIn(self) -> list[str]:
        """
        @return: Dovecot's log lines for a login of the mailbox's user.
        """
        return self.dovecot.logLines(f"Login: user=<{self.dovecot.username}>")

    def assertTakenOverTls(self, tls: str) -> None:
        """
        An account with this C{tls} and the test CA logs in over TLS, only,
        and takes the mailbox's emails.
        """
        self.emails(2)
        self.startAceMail(tls=tls, caFile=os.path.join(CERTS, "ca.pem"))
        self.assertEqual(len(self.answered(2)), 2)
        logins = self.loggedIn()
        self.assertNotEqual(logins, [])
        self.assertEqual([line for line in logins if ", TLS," not in line], [])

    def test_startTls(self) -> None:
        """
        An account with C{tls = "starttls"} and the test CA logs in after
        STLS and takes the mailbox's emails.
        """
        self.assertTakenOverTls("starttls")

    def test_implicitTls(self) -> None:
        """
        An account with C{tls = "implicit"} on the POP3S port and the test CA
        logs in over TLS and takes the mailbox's emails.
        """
        self.assertTakenOverTls("implicit")

    def test_untrustedCertificateSendsNoPassword(self) -> None:
        """
        Without the test CA, certificate verification (on by default) fails:
        ace-mail connects, never logs in, takes nothing, and the account's
        status counts the failed polls.
        """
        self.emails(2)
        ended = "pop3-login: Info: Disconnected"
        before = len(self.dovecot.logLines(ended))
        aceMail = self.startAceMail(tls="starttls")
        self.waitFor(
            "ace-mail to try the server twice",
            lambda: len(self.dovecot.logLines(ended)) >= before + 2,
            30,
        )
        self.assertEqual(self.loggedIn(), [])
        self.assertEqual(self.dovecot.waiting(), 2)
        self.assertEqual(answers(self.sink), [])
        status = aceMail.accounts()["acme-pop"]
        self.assertEqual(status["messagesTaken"], 0)
        self.assertGreaterEqual(status["errors"], 1)
        self.assertNotIn(status["lastResult"], (None, "ok"))
