"""
The accept-only peer of the benchmarks: a minimal aiosmtpd server that writes
each message to a file of its own and fsyncs it before answering 250.

    python bench/peers/aiosmtpd_fsync.py --port 2525 --dir /tmp/peer-spool

It listens on 127.0.0.1 only and runs until it is signalled.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class FsyncHandler:
    """
    Store every message in C{directory}, fsync'd, then answer 250.

    @ivar directory: Where the message files go.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.numbers = itertools.count()

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """
        Write the envelope and the content to a new file and fsync it.
        """
        content = envelope.original_content or b""
        head = f"{envelope.mail_from}\n{' '.join(envelope.rcpt_tos)}\n\n".encode()
        path = os.path.join(self.directory, f"{os.getpid()}.{next(self.numbers)}")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, head + content)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return "250 OK stored"


async def serve(port: int, directory: str) -> None:
    """
    Listen on 127.0.0.1:C{port} until cancelled.
    """
    handler = FsyncHandler(directory)
    loop = asyncio.get_running_loop()

    def protocol() -> Any:
        return SMTP(handler, hostname="peer.test", data_size_limit=None)

    server = await loop.create_server(protocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="where messages are stored")
    options = parser.parse_args()
    os.makedirs(options.dir, exist_ok=True)
    asyncio.run(serve(options.port, options.dir))


if __name__ == "__main__":
    main()
