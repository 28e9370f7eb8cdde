# -*- test-case-name: tests.e2e.test_webhook -*-
"""
A webhook receiver for the end-to-end tests: a small HTTP server on
loopback that keeps every POST it is sent.

Run as C{python webhookreceiver.py --port PORT --file FILE}. It answers each
POST with 204 once it has appended one JSON line to C{FILE}: the request's
path, its C{X-Ace-Mail-*} and C{Content-Type} headers, and its body as text.
It runs until it is killed.
"""

from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver(BaseHTTPRequestHandler):
    """
    Keeps each POST as one line of the file in C{server.file}.
    """

    server: ReceiverServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {
            name.lower(): value
            for name, value in self.headers.items()
            if name.lower().startswith("x-ace-mail-") or name.lower() == "content-type"
        }
        record = {"path": self.path, "headers": headers, "body": body.decode("utf-8")}
        with open(self.server.file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class ReceiverServer(HTTPServer):
    """
    The server, with the file its handler writes to.
    """

    file = ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", required=True)
    options = parser.parse_args()
    server = ReceiverServer(("127.0.0.1", options.port), Receiver)
    server.file = options.file
    server.serve_forever()


if __name__ == "__main__":
    main()
