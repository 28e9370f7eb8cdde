# -*- test-case-name: tests.e2e.test_outgoing -*-
"""
An SMTP sink for the end-to-end tests and the benchmark: a real aiosmtpd
server on loopback that keeps every message it accepts as one file.

Run as C{python sink.py --port PORT --dir DIR}. It prints C{ready} on its
standard output once it listens, then stores each message in C{DIR/new} the
way a maildir does (written in C{DIR/tmp}, then renamed), and answers 250
only after the file is in place. The envelope of each message (MAIL FROM and
the RCPT TO addresses) is in C{DIR/envelope/NAME.json}, in place before the
message is. It runs until it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class MaildirHandler:
    """
    An aiosmtpd handler that stores each message in a maildir-like folder,
    and its envelope beside it.

    @ivar directory: The folder holding C{tmp}, C{new} and C{envelope}.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        for folder in ("tmp", "new", "envelope"):
            os.makedirs(os.path.join(directory, folder), exist_ok=True)

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """
        Store the envelope and the message, then accept it.
        """
        name = uuid.uuid4().hex
        temporary = os.path.join(self.directory, "tmp", name)
        addresses = {"mailFrom": envelope.mail_from, "recipients": envelope.rcpt_tos}
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(addresses, f)
        os.rename(temporary, os.path.join(self.directory, "envelope", name + ".json"))
        content = envelope.original_content or b""
        with open(temporary, "wb") as f:
            f.write(content)
        os.rename(temporary, os.path.join(self.directory, "new", name))
        return "250 2.0.0 Stored"


async def serve(port: int, directory: str) -> None:
    """
    Listen on 127.0.0.1:C{port} until the process is killed.
    """
    handler = MaildirHandler(directory)
    loop = asyncio.get_running_loop()

    def makeProtocol() -> Any:
        return SMTP(
            handler,
            hostname="sink.test",
            command_call_limit=None,
            timeout=60,
        )

    server = await loop.create_server(
        makeProtocol, host="127.0.0.1", port=port, reuse_address=True
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    """
    Parse the command line and serve.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.dir))


if __name__ == "__main__":
    main()
