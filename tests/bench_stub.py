"""A local OpenAI-compatible stub for the bench tests: 127.0.0.1 only, scripted answers, joined on close.

`behave(k, body)` gets the k-th request (0-based, in arrival order) and returns one of
("ok", delay_seconds, answer), ("error", http_status) or ("hang",): the last waits until the stub closes.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Stub:
    def __init__(self, behave):
        self.behave = behave
        self.count = 0
        self.auth: list = []
        self.bodies: list = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    k = stub.count
                    stub.count += 1
                    stub.auth.append(self.headers.get("Authorization"))
                    stub.bodies.append(body)
                action = stub.behave(k, body)
                if action[0] == "error":
                    self.send_response(action[1])
                    self.end_headers()
                    self.wfile.write(b"scripted failure")
                    return
                if action[0] == "hang":
                    stub.release.wait()
                    return
                _, delay, answer = action
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                pieces = [answer[i:i + 3] for i in range(0, len(answer), 3)]
                try:
                    for piece in pieces:
                        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                        self.wfile.flush()
                    usage = {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": len(pieces)}}
                    self.wfile.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.block_on_close = True  # server_close joins the handler threads
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
