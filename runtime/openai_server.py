"""A small OpenAI-compatible server on transformers, for `recipe bench --serve` where vLLM is not available.

    python -m recipe_ft.runtime.openai_server --model DIR [--adapter DIR] --port N [--name NAME]

Serves GET /health, GET /v1/models and POST /v1/chat/completions (streamed as server-sent events, or
not), greedy decoding. Generation runs one request at a time (a lock): on a CPU that is what the
hardware sustains; concurrent requests queue, and their time to first token shows it. Binds only the
given host (127.0.0.1 by default).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_DONE = object()


class Generator:
    def __init__(self, model_dir: str, adapter: str | None = None, trust_remote_code: bool = False):
        import torch
        from transformers import AutoTokenizer

        from . import text_model

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(adapter or model_dir, trust_remote_code=trust_remote_code)
        model = text_model.load(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        self.model = model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lock = threading.Lock()

    def prompt_ids(self, messages: list) -> list[int]:
        tok = self.tokenizer
        if tok.chat_template:
            return list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                return_dict=True)["input_ids"])
        text = "\n".join(m.get("content", "") for m in messages)
        return tok(text)["input_ids"]

    def stream(self, ids: list[int], max_tokens: int):
        """Yields new token ids one at a time (generation runs in a thread)."""
        from transformers.generation.streamers import BaseStreamer

        out: queue.Queue = queue.Queue()

        class Streamer(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:  # the prompt
                    self.first = False
                    return
                for t in value.reshape(-1).tolist():
                    out.put(t)

            def end(self):
                out.put(_DONE)

        torch = self.torch
        inputs = torch.tensor([ids], device=self.device)

        def work():
            try:
                with self.lock, torch.no_grad():
                    self.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                                        max_new_tokens=max_tokens, do_sample=False, streamer=Streamer(),
                                        pad_token_id=self.tokenizer.pad_token_id,
                                        eos_token_id=self.tokenizer.eos_token_id)
            except Exception as exc:  # reported to the client as a stream error
                out.put(exc)
                out.put(_DONE)

        threading.Thread(target=work, daemon=True).start()
        eos = self.tokenizer.eos_token_id
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            if item == eos:
                continue
            yield item


def make_handler(gen: Generator, name: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the response ends when the connection closes: no chunking needed

        def log_message(self, fmt, *args):  # quiet: the bench keeps its own figures
            pass

        def _json(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self._json(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "recipe"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path != "/v1/chat/completions":
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages = req["messages"]
                max_tokens = int(req.get("max_tokens") or req.get("max_completion_tokens") or 64)
                ids = gen.prompt_ids(messages)
            except (ValueError, KeyError, TypeError) as exc:
                self._json(400, {"error": {"message": f"bad request: {exc}"}})
                return
            rid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
            new: list[int] = []
            if not req.get("stream"):
                new = list(gen.stream(ids, max_tokens))
                text = gen.tokenizer.decode(new, skip_special_tokens=True)
                self._json(200, {"id": rid, "object": "chat.completion", "created": created, "model": name,
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                              "finish_reason": "length" if len(new) >= max_tokens else "stop"}],
                                 "usage": _usage(ids, new)})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()

            def event(delta: dict, finish=None, usage=None) -> None:
                body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
                if usage:
                    body["usage"] = usage
                self.wfile.write(b"data: " + json.dumps(body).encode() + b"\n\n")
                self.wfile.flush()

            try:
                event({"role": "assistant", "content": ""})
                shown = ""
                for token in gen.stream(ids, max_tokens):
                    new.append(token)
                    text = gen.tokenizer.decode(new, skip_special_tokens=True)
                    if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
                        continue
                    piece, shown = text[len(shown):], text
                    if piece:
                        event({"content": piece})
                rest = gen.tokenizer.decode(new, skip_special_tokens=True)[len(shown):]
                if rest:  # what was held back: an incomplete UTF-8 sequence at the very end
                    event({"content": rest})
                event({}, "length" if len(new) >= max_tokens else "stop")
                if (req.get("stream_options") or {}).get("include_usage"):
                    event({}, usage=_usage(ids, new))
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                return
            except Exception as exc:  # generation failed: say so in the stream
                self.wfile.write(b"data: " + json.dumps({"error": {"message": str(exc)}}).encode() + b"\n\n")

    return Handler


def _usage(ids: list, new: list) -> dict:
    return {"prompt_tokens": len(ids), "completion_tokens": len(new), "total_tokens": len(ids) + len(new)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--adapter")
    p.add_argument("--name", default="model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--trust-remote-code", action="store_true")
    args = p.parse_args(argv)
    gen = Generator(args.model, args.adapter, args.trust_remote_code)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(gen, args.name))
    server.daemon_threads = True
    print(f"serving {args.model} as {args.name} on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
