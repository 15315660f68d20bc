"""A security-event webhook receiver that verifies each delivery with PyPI's `standardwebhooks`
(the Standard Webhooks reference library), for tests/security_events.rs.

usage: webhook_receiver.py <whsec_ secret> <ok|fail|hang>
Prints `PORT <n>` once listening on 127.0.0.1, then one JSON line per request:
{"verified": true, "id": ..., "event": {...}} or {"verified": false, "error": ...}.
`ok` answers 204 to verified deliveries (400 otherwise), `fail` answers 503 to everything,
`hang` never answers in time.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

secret, mode = sys.argv[1], sys.argv[2]
webhook = Webhook(secret)
lock = threading.Lock()


def emit(record):
    with lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as a production receiver does (HTTP/1.0 would close every connection).
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = webhook.verify(body, headers)
            emit({"verified": True, "id": headers.get("webhook-id"), "event": event})
            status = 204
        except Exception as error:  # the library raises its own verification errors
            emit({"verified": False, "error": str(error)})
            status = 400
        if mode == "hang":
            time.sleep(30)
        if mode == "fail":
            status = 503
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
