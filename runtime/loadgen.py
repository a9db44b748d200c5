"""A bounded load generator for OpenAI-compatible `/v1/chat/completions` endpoints. Stdlib only.

Requests stream (server-sent events) so that the time to the first token is measured. Two modes:
a fixed request rate (open loop: a request starts every 1/rate seconds whether or not earlier ones
have finished, the way real traffic arrives) or a fixed concurrency (closed loop: N requests always in
flight). Both stop by themselves: no request starts after `max_requests` have started or after
`duration` seconds, and every request gives up after `timeout` seconds, so a run lasts at most about
duration + timeout. In-flight requests are capped at `max_in_flight` in rate mode (a request that
would exceed it is counted as not sent, `dropped`, rather than queued without bound).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

CHAT_PATH = "/v1/chat/completions"


@dataclass
class Outcome:
    """One request: when it started and ended (seconds from the run's start), and what came back."""

    index: int  # order in which requests started
    example: int  # which held-out example it carried
    start: float
    end: float = 0.0
    first_token: Optional[float] = None  # seconds after start
    token_times: list = field(default_factory=list)  # seconds from the run's start, one per content chunk
    text: str = ""
    output_tokens: Optional[int] = None  # from the server's usage figures, when it sends them
    prompt_tokens: Optional[int] = None
    status: Optional[int] = None
    error: Optional[str] = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def tokens(self) -> int:
        """Output tokens: the server's count when given, else the number of streamed content chunks."""
        return self.output_tokens if self.output_tokens is not None else len(self.token_times)


@dataclass
class Load:
    rate: Optional[float] = None  # requests per second (open loop)
    concurrency: Optional[int] = None  # requests in flight (closed loop)
    duration: float = 60.0  # seconds during which requests may start
    max_requests: int = 500
    timeout: float = 60.0  # per request, seconds, from start to the last byte
    max_tokens: int = 64
    max_in_flight: int = 256

    def describe(self) -> str:
        how = f"{self.rate:g} requests/s" if self.rate else f"{self.concurrency} concurrent"
        return (f"{how}, for at most {self.duration:g} s or {self.max_requests} requests, {self.timeout:g} s "
                f"timeout, max_tokens {self.max_tokens}")


@dataclass
class Endpoint:
    url: str  # base URL, ".../v1" or the full chat completions URL
    model: str
    api_key: Optional[str] = None  # from the environment; never written anywhere

    @property
    def chat_url(self) -> str:
        parts = urlsplit(self.url)  # the path goes before a query string (e.g. ?api-version=...)
        path = parts.path.rstrip("/")
        if not path.endswith(CHAT_PATH):
            path += "/chat/completions" if path.endswith("/v1") else CHAT_PATH
        return parts._replace(path=path).geturl()

    @property
    def shown_url(self) -> str:
        """chat_url as reports and logs show it: query values masked (they may hold a key)."""
        parts = urlsplit(self.chat_url)
        query = "&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&") if pair)
        return parts._replace(query=query).geturl()


@dataclass
class LoadResult:
    outcomes: list
    wall_seconds: float  # from the first start to the last end
    dropped: int = 0  # not sent because max_in_flight requests were already open


def chat_body(model: str, messages: list, max_tokens: int) -> dict:
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}


def as_messages(prompt) -> list:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _connection(url: str, timeout: float):
    parts = urlsplit(url)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout,
                                           context=ssl.create_default_context())
    if parts.scheme != "http":
        raise ValueError(f"{url}: expected an http:// or https:// URL")
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)


def send(endpoint: Endpoint, messages: list, load: Load, outcome: Outcome, t0: float,
         stop: threading.Event) -> Outcome:
    """One streamed chat completion; fills `outcome` (never raises)."""
    url = endpoint.chat_url
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    body = json.dumps(chat_body(endpoint.model, messages, load.max_tokens)).encode()
    deadline = t0 + outcome.start + load.timeout
    conn = None
    pieces = []
    try:
        conn = _connection(url, load.timeout)
        conn.request("POST", path, body=body, headers=headers)
        sock = conn.sock  # the response may take the socket over from the connection (HTTP/1.0, close)
        sock.settimeout(max(0.01, deadline - time.perf_counter()))
        resp = conn.getresponse()
        outcome.status = resp.status
        if resp.status != 200:
            detail = resp.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
            outcome.error = f"HTTP {resp.status}" + (f": {detail[:200]}" if detail else "")
            return outcome
        if (resp.getheader("Content-Type") or "").startswith("application/json"):  # the server did not stream
            _whole(json.loads(resp.read()), outcome, pieces, time.perf_counter() - t0)
            return outcome
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or stop.is_set():
                outcome.timed_out = True
                break
            sock.settimeout(left)
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            try:
                event = json.loads(data)
            except json.JSONDecodeError:
                outcome.error = f"not a server-sent JSON event: {data[:80]!r}"
                break
            if event.get("error"):
                outcome.error = f"stream error: {str(event['error'])[:200]}"
                break
            usage = event.get("usage")
            if usage:
                outcome.output_tokens = usage.get("completion_tokens")
                outcome.prompt_tokens = usage.get("prompt_tokens")
            for choice in event.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    now = time.perf_counter() - t0
                    if outcome.first_token is None:
                        outcome.first_token = now - outcome.start
                    outcome.token_times.append(now)
                    pieces.append(content)
    except (socket.timeout, TimeoutError):
        outcome.timed_out = True
    except Exception as exc:  # noqa: BLE001 - any failure is this request's error, never the run's
        outcome.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        outcome.end = time.perf_counter() - t0
        outcome.text = "".join(pieces).strip()
        if conn is not None:
            conn.close()
    return outcome


def _whole(body: dict, outcome: Outcome, pieces: list, now: float) -> None:
    """A non-streamed completion: no time to first token; one content piece."""
    if body.get("error"):
        outcome.error = f"error: {str(body['error'])[:200]}"
        return
    content = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    usage = body.get("usage") or {}
    outcome.output_tokens = usage.get("completion_tokens")
    outcome.prompt_tokens = usage.get("prompt_tokens")
    if content:
        pieces.append(content)
        outcome.token_times.append(now)


def run(endpoint: Endpoint, prompts: list, load: Load) -> LoadResult:
    """Drive the endpoint with prompts (cycled) at the given load; returns when every request is done."""
    if not prompts:
        raise ValueError("no prompts to send")
    if (load.rate is None) == (load.concurrency is None):
        raise ValueError("give exactly one of rate or concurrency")
    messages = [as_messages(p) for p in prompts]
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = {"next": 0, "dropped": 0, "open": 0}
    t0 = time.perf_counter()

    def claim() -> Optional[Outcome]:
        with lock:
            i = counter["next"]
            now = time.perf_counter() - t0
            if i >= load.max_requests or now >= load.duration:
                return None
            counter["next"] = i + 1
            outcome = Outcome(index=i, example=i % len(messages), start=now)
            outcomes.append(outcome)
            return outcome

    def one(outcome: Outcome) -> None:
        try:
            send(endpoint, messages[outcome.example], load, outcome, t0, stop)
        finally:
            with lock:
                counter["open"] -= 1

    threads: list[threading.Thread] = []
    if load.concurrency:
        def worker() -> None:
            while True:
                outcome = claim()
                if outcome is None:
                    return
                with lock:
                    counter["open"] += 1
                one(outcome)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(load.concurrency)]
        for t in threads:
            t.start()
    else:
        interval = 1.0 / load.rate
        k = 0
        while True:
            due = t0 + k * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            with lock:
                full = counter["open"] >= load.max_in_flight
                if not full:
                    counter["open"] += 1
            if full:
                if k * interval >= load.duration or k >= load.max_requests:
                    break
                counter["dropped"] += 1
                k += 1
                continue
            outcome = claim()
            if outcome is None:
                with lock:
                    counter["open"] -= 1
                break
            t = threading.Thread(target=one, args=(outcome,), daemon=True)
            t.start()
            threads.append(t)
            k += 1
    # Every request ends by its own deadline; the join is bounded by it too, plus a margin.
    limit = time.perf_counter() + load.timeout + 5.0
    for t in threads:
        t.join(max(0.0, limit - time.perf_counter()))
    stop.set()
    for t in threads:
        t.join(5.0)
    with lock:
        done = sorted(outcomes, key=lambda o: o.index)
    wall = (max(o.end for o in done) - min(o.start for o in done)) if done else 0.0
    return LoadResult(done, wall, counter["dropped"])
