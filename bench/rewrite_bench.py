"""
Messages per second of the reply rewrite, in-process: L{rewriteHeader} as
the proxy calls it (the header block found by L{headerEnd}, a SHA-256 of
the whole message, the envelope sender to hide) and L{rewriteReply} over
the whole message, on replies of about 4 KiB.

    python bench/rewrite_bench.py                   # every kind, 2,000 each
    python bench/rewrite_bench.py --kind outlook --messages 500 --repeat 5
    python bench/rewrite_bench.py --profile 30      # and cProfile's top 30

Three kinds of reply, each made anew for every message (its own agent,
contact, subject, Message-ID and date, drawn from a seeded generator), so
that nothing is the same from one message to the next:

  - C{smtp-source}: what C{bench/run} sends, four header fields over lines
    of C{X};
  - C{thunderbird}: a plain text reply with the threading, MIME and client
    headers of a desktop mail client, in German or English;
  - C{outlook}: a reply through an Exchange server, with its Received,
    DKIM, ARC, Thread-Index and organisation headers and a multipart body.

Each figure is in messages per CPU second of this process (the machine
may be shared), the best of C{--repeat} rounds over the same messages; the
spread of the rounds is printed beside it.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import os
import pstats
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ace_mail.rewrite import headerEnd, rewriteHeader, rewriteReply  # noqa: E402
from ace_mail.store import Contact, Entrance  # noqa: E402

ENTRANCE = Entrance("default", "support@example.com", "Support")
NAMES = ["Anna Müller", "John Smith", "Zoë Ødegård", "李雷", "Jean-Luc Picard", ""]
WORDS = "invoice order delivery refund question account address parcel".split()
SIZE = 4096


def _words(rng: random.Random, count: int) -> str:
    """
    C{count} words of a customer service reply.
    """
    return " ".join(rng.choice(WORDS) for _ in range(count))


def _contact(rng: random.Random) -> Contact:
    """
    A contact of its own customer, subject and Message-ID.
    """
    number = rng.randrange(10**6)
    contactId = "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20)
    )
    return Contact(
        id=contactId,
        entrance="default",
        customerAddress=f"customer{number}@customer.example",
        customerName=rng.choice(NAMES),
        subject=f"Question about my {_words(rng, 3)}",
        messageId=f"<{number}.{rng.randrange(10**9)}@customer.example>",
        references=(f"<{number}.0@customer.example>",),
        externalId=None,
        created=0.0,
        ended=None,
    )


def _padded(header: str, body: str, line: str) -> bytes:
    """
    The header block over C{body} and as many C{line}s as fill the message
    to about L{SIZE} bytes.
    """
    message = (header + "\r\n" + body).encode("utf-8")
    missing = max(0, SIZE - len(message)) // len(line.encode("utf-8"))
    return message + (line * missing).encode("utf-8")


def smtpSource(rng: random.Random, agent: str, contact: Contact, date: str) -> bytes:
    """
    A message as C{smtp-source -l 4096} writes it.
    """
    header = (
        f"From: <{agent}>\r\nTo: <{contact.id}@ace.test>\r\nDate: {date}\r\n"
        f"Message-Id: <{rng.randrange(16**4):04x}.0003.0000@vm>\r\n"
    )
    return _padded(header, "", "X" * 78 + "\r\n")


def thunderbird(rng: random.Random, agent: str, contact: Contact, date: str) -> bytes:
    """
    A plain text reply from a desktop client, quoting the customer.
    """
    name = rng.choice(NAMES[:-1])
    header = (
        f"Message-ID: <{rng.randrange(10**12):x}@agents.example>\r\n"
        f"Date: {date}\r\n"
        "MIME-Version: 1.0\r\n"
        "User-Agent: Mozilla Thunderbird\r\n"
        f"Subject: Re: {contact.subject}\r\n"
        "Content-Language: de-DE, en-GB\r\n"
        f"To: Support <{contact.id}@ace.test>\r\n"
        f"References: {contact.references[0]}\r\n {contact.messageId}\r\n"
        f"From: {name} <{agent}>\r\n"
        f"In-Reply-To: <{contact.id}.copy@ace.test>\r\n"
        "Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
    )
    body = f"Hallo,\r\n\r\nIhre {_words(rng, 6)} ist erledigt.\r\n\r\n"
    return _padded(header, body, f"> {_words(rng, 9)}\r\n")


def outlook(rng: random.Random, agent: str, contact: Contact, date: str) -> bytes:
    """
    A multipart reply through Exchange, with its relay and organisation
    headers.
    """
    boundary = f"_000_{rng.randrange(16**16):016x}_"
    index = base64.b64encode(rng.randbytes(22)).decode("ascii")
    signature = base64.b64encode(rng.randbytes(180)).decode("ascii")
    host = f"pc{rng.randrange(1000)}.agents.example"
    header = (
        f"Received: from {host} ([10.1.{rng.randrange(255)}.{rng.randrange(255)}])\r\n"
        f" by mx1.agents.example with ESMTPSA id {rng.randrange(10**9)};\r\n {date}\r\n"
        f"Received: from mx1.agents.example by relay.agents.example; {date}\r\n"
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=agents.example;\r\n"
        " s=selector1; h=From:Date:Subject:Message-ID:Content-Type:MIME-Version;\r\n"
        f" bh={signature[:44]};\r\n b={signature[44:]}\r\n"
        f"From: {rng.choice(NAMES[:-1])} <{agent}>\r\n"
        f'To: "{contact.customerName}" <{contact.id}@ace.test>\r\n'
        f"Subject: AW: {contact.subject}\r\n"
        f"Thread-Topic: {contact.subject}\r\n"
        f"Thread-Index: {index}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <AM0PR{rng.randrange(10**8)}@AM0PR.eurprd.example>\r\n"
        f"References: {contact.messageId}\r\n"
        f"In-Reply-To: {contact.messageId}\r\n"
        "Accept-Language: de-DE, en-US\r\n"
        "Content-Language: de-DE\r\n"
        "X-MS-Has-Attach: \r\n"
        "X-MS-Exchange-Organization-AuthAs: Internal\r\n"
        f"X-Originating-IP: [10.1.{rng.randrange(255)}.{rng.randrange(255)}]\r\n"
        "Content-Type: multipart/alternative;\r\n"
        f'\tboundary="{boundary}"\r\n'
        "MIME-Version: 1.0\r\n"
    )
    body = (
        f'--{boundary}\r\nContent-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        f"Guten Tag,\r\n\r\n{_words(rng, 12)}\r\n\r\n"
    )
    return (
        _padded(header, body, f"{_words(rng, 10)}\r\n") + f"--{boundary}--\r\n".encode()
    )


KINDS: dict[str, Callable[[random.Random, str, Contact, str], bytes]] = {
    "smtp-source": smtpSource,
    "thunderbird": thunderbird,
    "outlook": outlook,
}


def replies(kind: str, count: int, seed: int) -> list[tuple[bytes, Contact, str]]:
    """
    @return: C{count} replies of one kind, each with its contact and agent.
    """
    rng = random.Random(seed)
    start = datetime(2024, 12, 3, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    made = []
    for n in range(count):
        agent = (
            f"{rng.choice(['john.smith', 'anna', 'agent7', 'k.ng'])}{n}@agents.example"
        )
        contact = _contact(rng)
        date = format_datetime(start + timedelta(seconds=37 * n))
        made.append((KINDS[kind](rng, agent, contact, date), contact, agent))
    return made


def throughHeader(batch: list[tuple[bytes, Contact, str]]) -> None:
    """
    Rewrite each reply as the proxy does: its header block alone.
    """
    for message, contact, agent in batch:
        end = headerEnd(message[: message.rfind(b"\n") + 1])
        header = message if end is None else message[:end]
        rewriteHeader(header, hashlib.sha256(message), contact, ENTRANCE, hide=[agent])


def throughReply(batch: list[tuple[bytes, Contact, str]]) -> None:
    """
    Rewrite each reply whole.
    """
    for message, contact, agent in batch:
        rewriteReply(message, contact, ENTRANCE, hide=[agent])


def rounds(
    run: Callable[[list[tuple[bytes, Contact, str]]], None],
    batch: list[tuple[bytes, Contact, str]],
    repeat: int,
) -> list[float]:
    """
    @return: The messages per CPU second of each round: the machine may be
        shared, and this process's CPU time is what the rewrite costs.
    """
    rates = []
    for _ in range(repeat):
        started = time.process_time()
        run(batch)
        rates.append(len(batch) / (time.process_time() - started))
    return rates


def main() -> None:
    """
    Rewrite each kind of reply, print its figures and, if asked, its
    profile.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=list(KINDS), action="append")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--profile", type=int, metavar="N", help="print cProfile's top N functions"
    )
    arguments = parser.parse_args()

    print(
        f"{'kind':<12} {'bytes':>6} {'function':<14} {'msgs/s':>8} {'us/msg':>7}  rounds"
    )
    for kind in arguments.kind or list(KINDS):
        batch = replies(kind, arguments.messages, arguments.seed)
        size = statistics.mean(len(message) for message, _, _ in batch)
        for label, run in (
            ("rewriteHeader", throughHeader),
            ("rewriteReply", throughReply),
        ):
            rates = rounds(run, batch, arguments.repeat)
            spread = " ".join(f"{rate:.0f}" for rate in rates)
            print(
                f"{kind:<12} {size:>6.0f} {label:<14} {max(rates):>8.0f} "
                f"{1e6 / max(rates):>7.0f}  {spread}",
                flush=True,
            )
        if arguments.profile:
            profiler = cProfile.Profile()
            profiler.runcall(throughHeader, batch)
            print(f"\ncProfile of rewriteHeader, {kind}, {len(batch)} messages:")
            stats = pstats.Stats(profiler).strip_dirs().sort_stats("cumulative")
            stats.print_stats(arguments.profile)


if __name__ == "__main__":
    main()
