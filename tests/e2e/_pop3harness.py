# -*- test-case-name: tests.e2e.test_accounts -*-
"""
A real POP3 server for the end-to-end tests and the benchmark: Debian's
Dovecot as an ordinary process with its own config file, a maildir filled
with generated customer emails, and ace-mail configured to poll it.

Every wait here is bounded in time, and every address is 127.0.0.1.
"""

from __future__ import annotations

import email.policy
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from attrs import frozen

from tests.e2e._harness import LOOPBACK, ProxyAceMail, Sink, freePort, waitFor

CERTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "certs")
CONTACT_TAG = re.compile(r"\[#([a-z2-7]{20})\]")
POP3_USER = "customer-mail"


_DOVECOT_CONFIG = """\
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
instance_name = acemail-{instance}
protocols = pop3
listen = {loopback}
disable_plaintext_auth = no
auth_mechanisms = plain apop
first_valid_uid = {firstUid}
first_valid_gid = {firstGid}
mail_fsync = always
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {directory}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}
}}
mail_location = maildir:{maildir}
{users}{ssl}
service pop3-login {{
  inet_listener pop3 {{
    address = {loopback}
    port = {port}
  }}
  inet_listener pop3s {{
    {pop3s}
  }}
}}
"""


def dovecotProgram() -> str | None:
    """
    @return: The path of Dovecot's master program, or L{None} when Debian's
        C{dovecot-pop3d} is not installed.
    """
    found = shutil.which("dovecot")
    if found is None and os.access("/usr/sbin/dovecot", os.X_OK):
        found = "/usr/sbin/dovecot"
    return found


def _mailOwner() -> tuple[int, int, str]:
    """
    The uid, gid and user name that own the mailbox: C{nobody} when the tests
    run as root (Dovecot refuses uid 0 for mail), else the user running them.
    """
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return nobody.pw_uid, nobody.pw_gid, nobody.pw_name
    me = pwd.getpwuid(os.geteuid())
    return me.pw_uid, me.pw_gid, me.pw_name


class Dovecot:
    """
    One Dovecot POP3 server on 127.0.0.1 serving one maildir to one user
    with a generated password.

    Its folder is in the system's temporary folder rather than the test's,
    because Dovecot's UNIX sockets live under C{base_dir} and a socket's path
    may not be longer than 107 bytes.

    @ivar port: The plain POP3 port, which offers STLS when C{tls} is set.
    @ivar tlsPort: The implicit-TLS (POP3S) port, or L{None} without C{tls}.
    @ivar password: The mailbox's password, new for each server.
    @ivar maildir: The maildir the mailbox is.
    """

    def __init__(self, tls: bool = False) -> None:
        self.tls = tls
        self.directory = tempfile.mkdtemp(prefix="acemail-dovecot-")
        os.chmod(self.directory, 0o755)
        self.port = freePort()
        self.tlsPort = freePort() if tls else None
        self.username = POP3_USER
        self.password = secrets.token_urlsafe(18)
        self.uid, self.gid, self.owner = _mailOwner()
        self.maildir = os.path.join(self.directory, "home", "Maildir")
        self.configPath = os.path.join(self.directory, "dovecot.conf")
        self.logPath = os.path.join(self.directory, "dovecot.log")
        self.process: subprocess.Popen[bytes] | None = None
        self._delivered = 0

    def config(self) -> str:
        """
        The text of Dovecot's config file: plain authentication allowed on
        loopback, and TLS (STLS and POP3S) with the test certificate when
        C{tls} is set.
        """
        users = ""
        if os.geteuid() != 0:
            users = f"default_login_user = {self.owner}\n"
            users += f"default_internal_user = {self.owner}\n"
        pop3s = "port = 0"
        ssl = "ssl = no"
        if self.tlsPort is not None:
            pop3s = f"address = {LOOPBACK}\n    port = {self.tlsPort}\n    ssl = yes"
            ssl = (
                f"ssl = yes\nssl_cert = <{os.path.join(CERTS, 'server.pem')}\n"
                f"ssl_key = <{os.path.join(CERTS, 'server.key')}"
            )
        return _DOVECOT_CONFIG.format(
            directory=self.directory,
            instance=os.path.basename(self.directory),
            loopback=LOOPBACK,
            firstUid=min(self.uid, 500),
            firstGid=min(self.gid, 500),
            uid=self.uid,
            gid=self.gid,
            home=os.path.dirname(self.maildir),
            maildir=self.maildir,
            users=users,
            ssl=ssl,
            port=self.port,
            pop3s=pop3s,
        )

    def internalUser(self) -> tuple[int, int]:
        """
        @return: The uid and gid of Dovecot's unprivileged processes, such as
            the one that reads the password file: Debian's C{dovecot} user
            when run as root.
        """
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        internal = pwd.getpwnam("dovecot")
        return internal.pw_uid, internal.pw_gid

    def start(self) -> None:
        """
        Write the config, the password file and the empty maildir, start
        Dovecot in the foreground as a child, and wait (at most 20 s) until
        it listens.

        @raise AssertionError: If Dovecot is missing or exits at start.
        """
        program = dovecotProgram()
        if program is None:
            raise AssertionError("dovecot is not installed; .ci/run installs it")
        with open(self.configPath, "w", encoding="ascii") as f:
            f.write(self.config())
        passwd = os.path.join(self.directory, "passwd")
        with open(passwd, "w", encoding="ascii") as f:
            f.write(f"{self.username}:{{PLAIN}}{self.password}\n")
        os.chmod(passwd, 0o600)
        os.chown(passwd, *self.internalUser())
        for folder in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir, folder), exist_ok=True)
        for folder, _, _ in os.walk(os.path.dirname(self.maildir)):
            os.chown(folder, self.uid, self.gid)
        with open(self.logPath, "ab") as log:
            self.process = subprocess.Popen(
                [program, "-F", "-c", self.configPath],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process
        ports = [p for p in (self.port, self.tlsPort) if p is not None]
        waitFor(
            "dovecot to listen",
            lambda: process.poll() is not None or all(map(_listening, ports)),
            20,
        )
        if process.poll() is not None:
            raise AssertionError(f"dovecot exited at start:\n{self.logTail()}")

    def stop(self) -> None:
        """
        Stop Dovecot and every process it started (SIGKILL after 5 s), then
        remove its folder.
        """
        if self.process is not None:
            self._signalAll(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self._signalAll(signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def _signalAll(self, number: int) -> None:
        """
        Send a signal to Dovecot's process group: the master and its
        children, which L{start} put in a session of their own.
        """
        assert self.process is not None
        try:
            os.killpg(self.process.pid, number)
        except ProcessLookupError:
            pass

    def deliver(self, messages: Iterable[bytes]) -> None:
        """
        Put messages into the maildir's C{new} folder the way a delivery
        agent does: each written under C{tmp}, owned by the mailbox's user,
        then renamed into place.
        """
        stamp = int(time.time())
        for content in messages:
            self._delivered += 1
            name = f"{stamp}.M{self._delivered}P{os.getpid()}.acemail,S={len(content)}"
            temporary = os.path.join(self.maildir, "tmp", name)
            with open(temporary, "wb") as f:
                f.write(content)
            os.chown(temporary, self.uid, self.gid)
            os.rename(temporary, os.path.join(self.maildir, "new", name))

    def waiting(self) -> int:
        """
        @return: How many messages the mailbox holds: those not yet seen by
            a POP3 session (in C{new}) and those seen but not expunged (in
            C{cur}).
        """
        return sum(
            len(os.listdir(os.path.join(self.maildir, folder)))
            for folder in ("new", "cur")
        )

    def logLines(self, containing: str) -> list[str]:
        """
        @return: The lines of Dovecot's log that contain C{containing}.
        """
        with open(self.logPath, encoding="utf-8", errors="replace") as f:
            return [line for line in f if containing in line]

    def logTail(self, lines: int = 30) -> str:
        """
        The last lines of Dovecot's log, for failure messages.
        """
        try:
            with open(self.logPath, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


@frozen
class CustomerEmail:
    """
    One generated email from a customer.

    @ivar address: The customer's address.
    @ivar name: The customer's display name.
    @ivar messageId: Its Message-ID, with the angle brackets.
    @ivar content: The message as a maildir holds it, with LF line ends.
    """

    address: str
    name: str
    subject: str
    messageId: str
    content: bytes


def customerEmail(
    tag: str,
    index: int,
    *,
    subject: str | None = None,
    size: int = 0,
    attachment: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> CustomerEmail:
    """
    A customer's email with a unique Message-ID.

    @param tag: Makes the Message-ID unique between runs and tests.
    @param index: Names the customer, C{customerINDEX@customer.example}.
    @param size: Pad the text to about this many bytes.
    @param attachment: Attach these bytes as C{invoice-INDEX.pdf}.
    @param headers: More header fields, such as C{In-Reply-To}.
    """
    name = f"Customer {index}"
    address = f"customer{index}@customer.example"
    messageId = f"<{tag}-{index}@customer.example>"
    subject = subject if subject is not None else f"Question {index} about my order"
    message = EmailMessage(policy=email.policy.default)
    message["From"] = f"{name} <{address}>"
    message["To"] = "Acme Support <support@acme.example>"
    message["Subject"] = subject
    message["Date"] = "Thu, 03 Dec 2026 10:00:00 +0000"
    message["Message-ID"] = messageId
    for field, value in headers:
        message[field] = value
    text = [f"Hello, this is customer {index}.", "Where is my order?"]
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusm."
    while sum(len(t) + 1 for t in text) < size - 600:
        text.append(line)
    message.set_content("\n".join(text) + "\n")
    if attachment is not None:
        message.add_attachment(
            attachment,
            maintype="application",
            subtype="pdf",
            filename=f"invoice-{index}.pdf",
        )
    return CustomerEmail(address, name, subject, messageId, message.as_bytes())


def accountConfig(
    dovecot: Dovecot,
    *,
    tls: str = "none",
    agentMailbox: str | None = None,
    autoAnswerLimit: int = 3,
    pollInterval: str = "0.5s",
    caFile: str | None = None,
) -> str:
    """
    An ace-mail config file with one entrance, C{acme}, whose one account
    polls C{dovecot}.

    @param tls: C{"none"} (the plain port), C{"starttls"} (STLS on the plain
        port) or C{"implicit"} (the POP3S port).
    """
    port = dovecot.tlsPort if tls == "implicit" else dovecot.port
    lines = [
        f"autoAnswerLimit = {autoAnswerLimit}",
        "[[entrance]]",
        'name = "acme"',
        'address = "Acme Support <support@acme.example>"',
        'autoAnswerText = "Dear {customerName}, we got your email about '
        '{subject}. Your case is {contactId}."',
        'autoAnswerSubject = "Re: {subject} [#{contactId}]"',
    ]
    if agentMailbox is not None:
        lines.append(f'agentMailbox = "{agentMailbox}"')
    lines += [
        "  [[entrance.account]]",
        '  name = "acme-pop"',
        f'  host = "{LOOPBACK}"',
        f"  port = {port}",
        f'  tls = "{tls}"',
        f"  allowPlaintext = {'true' if tls == 'none' else 'false'}",
        f'  username = "{dovecot.username}"',
        f'  password = "{dovecot.password}"',
        f'  pollInterval = "{pollInterval}"',
        "  keepOnServer = false",
        '  timeout = "20s"',
    ]
    if caFile is not None:
        lines.append(f'  caFile = "{caFile}"')
    return "\n".join(lines) + "\n"


class AccountAceMail(ProxyAceMail):
    """
    C{twistd -n ace-mail} with its proxy on and a config file whose entrance
    has a POP3 account, with the contact endpoints of its API.
    """

    def __init__(
        self,
        dataDir: str,
        sinkPort: int,
        logPath: str,
        configPath: str,
        options: Sequence[str] = (),
    ) -> None:
        super().__init__(
            dataDir, sinkPort, logPath, ["--config", configPath] + list(options)
        )

    def contact(self, contactId: str) -> dict[str, Any]:
        """
        The contact that C{GET /v1/contacts/ID} shows.

        @raise AssertionError: If ace-mail does not answer 200.
        """
        status, answer = self._request("GET", f"/v1/contacts/{contactId}")
        if status != 200:
            raise AssertionError(f"GET /v1/contacts/{contactId} answered {status}")
        contact: dict[str, Any] = answer
        return contact

    def contacts(self) -> list[dict[str, Any]]:
        """
        Every contact, as C{GET /v1/contacts} lists them, a page of 1,000 at
        a time (at most 100 pages).

        @raise AssertionError: If ace-mail does not answer 200.
        """
        listed: list[dict[str, Any]] = []
        path = "/v1/contacts?limit=1000"
        for _ in range(100):
            status, answer = self._request("GET", path)
            if status != 200:
                raise AssertionError(f"GET {path} answered {status}: {answer}")
            listed += answer["contacts"]
            if not answer.get("cursor"):
                return listed
            path = "/v1/contacts?limit=1000&cursor=" + quote(answer["cursor"])
        raise AssertionError("GET /v1/contacts gave more than 100 pages")

    def accounts(self) -> dict[str, dict[str, Any]]:
        """
        The status of each POP3 account, by name, from C{GET /v1/accounts}.

        @raise AssertionError: If ace-mail does not answer 200.
        """
        status, answer = self._request("GET", "/v1/accounts")
        if status != 200:
            raise AssertionError(f"GET /v1/accounts answered {status}: {answer}")
        return {account["name"]: account for account in answer["accounts"]}

    def deliver(self, contactId: str, agent: str) -> str:
        """
        Send the physical email of a contact to an agent's mailbox with
        C{POST /v1/contacts/ID/deliver}.

        @return: The queue id of the physical email.
        @raise AssertionError: If ace-mail does not answer 202.
        """
        status, answer = self._request(
            "POST", f"/v1/contacts/{contactId}/deliver", {"agent": agent}
        )
        if status != 202:
            raise AssertionError(
                f"POST /v1/contacts/{contactId}/deliver answered {status}: {answer}"
            )
        queueId: str = answer["queueId"]
        return queueId


@frozen
class Answer:
    """
    An automatic answer that reached the sink.

    @ivar contactId: The contact id in its subject's tag, or C{""}.
    @ivar mailFrom: Its envelope sender.
    @ivar recipients: Its envelope recipients.
    @ivar headers: Its header fields, parsed.
    """

    contactId: str
    mailFrom: str
    recipients: tuple[str, ...]
    headers: Any
    content: bytes


def answers(sink: Sink) -> list[Answer]:
    """
    The automatic answers the sink holds: messages whose C{Auto-Submitted}
    is C{auto-replied}.
    """
    found = []
    parser = BytesParser(policy=email.policy.default)
    for delivery in sink.deliveries():
        message = parser.parsebytes(delivery.content, headersonly=True)
        auto = str(message.get("Auto-Submitted", "")).split(";")[0].strip().lower()
        if auto != "auto-replied":
            continue
        tag = CONTACT_TAG.search(str(message.get("Subject", "")))
        found.append(
            Answer(
                tag.group(1) if tag else "",
                delivery.mailFrom,
                delivery.recipients,
                message,
                delivery.content,
            )
        )
    return found


def storedCopies(sink: Sink) -> dict[str, list[tuple[float, str]]]:
    """
    Each Message-ID at the sink, with when the sink stored each copy of it
    (the file's mtime) and the SHA-256 of the copy, oldest first.
    """
    copies: dict[str, list[tuple[float, str]]] = {}
    parser = BytesParser(policy=email.policy.default)
    for path in sink.files():
        with open(path, "rb") as f:
            content = f.read()
        messageId = str(parser.parsebytes(content, headersonly=True)["Message-ID"])
        digest = hashlib.sha256(content).hexdigest()
        copies.setdefault(messageId, []).append((os.stat(path).st_mtime, digest))
    return {messageId: sorted(found) for messageId, found in copies.items()}
