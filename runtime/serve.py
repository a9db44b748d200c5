"""`recipe bench --serve`: start the exported model on 127.0.0.1, wait until it answers, always stop it.

vLLM serves it when vLLM is installed and a GPU is present; otherwise runtime/openai_server.py
(transformers, CPU included). Readiness is polled on GET /health a bounded number of times; the server
runs in its own process group, which is terminated (then killed) when the block ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError

HOST = "127.0.0.1"
POLL_SECONDS = 0.5


@dataclass
class Served:
    url: str
    model: str
    engine: str  # "vllm" | "transformers"
    pid: int
    port: int
    command: list
    log: Path

    def to_dict(self) -> dict:
        return {"url": self.url, "model": self.model, "engine": self.engine, "pid": self.pid, "port": self.port,
                "command": self.command, "log": str(self.log)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def choose_engine() -> str:
    return "vllm" if importlib.util.find_spec("vllm") is not None and has_gpu() else "transformers"


def command(engine: str, model_dir: Path, adapter: Optional[Path], name: str, port: int, max_len: int,
            trust_remote_code: bool) -> list[str]:
    if engine == "vllm":
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", name, "--host", HOST, "--port", str(port), "--max-model-len", str(max_len)]
        if adapter is not None:
            cmd = [*cmd[:-2], "--enable-lora", "--lora-modules", f"{name}={adapter}", *cmd[-2:]]
            cmd[cmd.index("--served-model-name") + 1] = f"{name}-base"
        return cmd + (["--trust-remote-code"] if trust_remote_code else [])
    cmd = [sys.executable, "-m", "recipe_ft.runtime.openai_server", "--model", str(model_dir), "--name", name,
           "--host", HOST, "--port", str(port)]
    if adapter is not None:
        cmd += ["--adapter", str(adapter)]
    return cmd + (["--trust-remote-code"] if trust_remote_code else [])


def wait_ready(url: str, proc: subprocess.Popen, tries: int) -> None:
    """Poll GET /health up to `tries` times; RecipeError if the server exits or never answers."""
    for _ in range(tries):
        if proc.poll() is not None:
            raise RecipeError(f"the model server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=POLL_SECONDS * 4) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_SECONDS)
    raise RecipeError(f"the model server at {url} did not answer /health after {tries} tries "
                      f"({tries * POLL_SECONDS:g} s); raise --serve-timeout")


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def _sigterm_as_exit():
    """While serving, SIGTERM unwinds like Ctrl-C does, so the server is still stopped."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running(cmd: list, url: str, log_path: Path, ready_timeout: float):
    """Run a server command in its own process group; yield its Popen once GET /health answers; always stop it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("w", encoding="utf-8") as out, _sigterm_as_exit():
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            try:
                wait_ready(url, proc, max(1, int(ready_timeout / POLL_SECONDS)))
            except RecipeError as exc:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-1500:]
                raise RecipeError(f"{exc.message}\n{tail}".rstrip()) from None
            yield proc
        finally:
            stop(proc)


@contextlib.contextmanager
def serve(model_dir: Path, name: str, log_path: Path, adapter: Optional[Path] = None, max_len: int = 2048,
          trust_remote_code: bool = False, ready_timeout: float = 300.0, engine: Optional[str] = None,
          log=print):
    """Start the model's server, yield a Served once /health answers, stop it on the way out."""
    engine = engine or choose_engine()
    port = free_port()
    cmd = command(engine, model_dir, adapter, name, port, max_len, trust_remote_code)
    url = f"http://{HOST}:{port}"
    log(f"serving {model_dir} with {engine} on {url} (log: {log_path})")
    with running(cmd, url, log_path, ready_timeout) as proc:
        yield Served(url, name, engine, proc.pid, port, cmd, log_path)
