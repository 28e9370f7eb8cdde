"""
The many-sessions scenario: hold thousands of idle SMTP sessions open on a
server and time the banner of one more.
"""

from __future__ import annotations

import socket
import time

from _common import LOOPBACK, peakKiB


def _banner(port: int, timeout: float) -> tuple[socket.socket, float]:
    """
    Connect to C{port} and read the first line of the greeting.

    @return: The connected socket and the seconds from connect to banner.
    @raise OSError: If there is no banner within C{timeout} seconds.
    """
    started = time.monotonic()
    connection = socket.create_connection((LOOPBACK, port), timeout=timeout)
    received = b""
    while b"\n" not in received:
        chunk = connection.recv(512)
        if not chunk:
            connection.close()
            raise OSError(f"port {port} closed the session before its banner")
        received += chunk
    if not received.startswith(b"220"):
        connection.close()
        raise OSError(f"port {port} greeted with {received[:80]!r}")
    return connection, time.monotonic() - started


def idleSessions(port: int, pid: int, count: int, deadline: float) -> dict[str, float]:
    """
    Open C{count} sessions to C{port}, each until its banner, and leave them
    idle; then time the banner of one more session, and close them all.

    @param pid: The server's process, whose peak memory is read.
    @return: C{opened} sessions, C{peakMiB} of the server with them all
        open, and C{bannerSeconds} of the extra session.
    """
    held: list[socket.socket] = []
    try:
        for _ignored in range(count):
            if time.monotonic() > deadline:
                break
            held.append(_banner(port, 10)[0])
        time.sleep(1)
        peak = peakKiB(pid) / 1024
        extra, seconds = _banner(port, 10)
        extra.close()
    finally:
        for connection in held:
            connection.close()
    print(
        f"{len(held)} idle sessions: server peak RSS {peak:.1f} MiB; a new "
        f"session's banner after {1000 * seconds:.1f} ms",
        flush=True,
    )
    return {"opened": len(held), "peakMiB": peak, "bannerSeconds": seconds}
