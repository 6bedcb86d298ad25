#!/usr/bin/env python3
"""A stand-in for a chat webhook: prints every request it gets and answers 200.

    python3 examples/scripts/notify-receiver.py [PORT]      # default 8099 (make run's NOTIFY_URL)

Listens on 127.0.0.1 only. A request to a path ending in /fail answers 500 (to watch a run fail
and retry). Standard library only, so it runs without the venv.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_PORT = 8099
MAX_BODY = 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        body = self.rfile.read(length).decode("utf-8", "replace")
        print(f"{self.command} {self.path} {self.headers.get('Content-Type', '-')}\n{body}", flush=True)
        failing = self.path.rstrip("/").endswith("/fail")
        self.send_response(500 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": false}\n' if failing else b'{"ok": true}\n')

    do_PUT = do_PATCH = do_POST

    def log_message(self, format: str, *args: object) -> None:  # quiet: the body is the log
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("port", nargs="?", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on, on 127.0.0.1 (default {DEFAULT_PORT})")
    port = parser.parse_args().port
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
