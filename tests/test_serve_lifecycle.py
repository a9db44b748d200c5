"""runtime/serve.running: a server is polled ready a bounded number of times and always stopped."""

import os
import sys
import textwrap

import pytest

from recipe_ft.runtime import serve
from recipe_ft.schemas.errors import RecipeError

SERVER = textwrap.dedent("""
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass

    print("up", flush=True)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_stopped_when_the_block_raises(tmp_path):
    port = serve.free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(RuntimeError, match="bench failed"):
        with serve.running([sys.executable, "-c", SERVER, str(port)], url, tmp_path / "s.log", 60) as proc:
            pid = proc.pid
            assert proc.poll() is None
            raise RuntimeError("bench failed")
    assert proc.poll() is not None and _gone(pid)
    assert "up" in (tmp_path / "s.log").read_text()


def test_a_server_that_exits_is_reported_with_its_log(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('cannot load the model'); sys.exit(3)"]
    with pytest.raises(RecipeError, match="exited with code 3") as err:
        with serve.running(cmd, f"http://127.0.0.1:{serve.free_port()}", tmp_path / "s.log", 60):
            pytest.fail("not ready, so never yielded")
    assert "cannot load the model" in err.value.message


def test_a_server_that_never_answers_is_given_up_after_bounded_tries(tmp_path):
    cmd = [sys.executable, "-c", "import time; time.sleep(600)"]
    with pytest.raises(RecipeError, match="did not answer /health after 2 tries"):
        with serve.running(cmd, f"http://127.0.0.1:{serve.free_port()}", tmp_path / "s.log", 1.0):
            pytest.fail("never yielded")


def test_vllm_command_binds_loopback_and_names_the_model(tmp_path):
    cmd = serve.command("vllm", tmp_path / "merged", None, "triage", 8123, 512, False)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--served-model-name") + 1] == "triage"
    lora = serve.command("vllm", tmp_path / "base", tmp_path / "adapter", "triage", 8123, 512, False)
    assert f"triage={tmp_path / 'adapter'}" in lora and "--enable-lora" in lora
    ours = serve.command("transformers", tmp_path / "m", None, "triage", 8123, 512, False)
    assert ours[1:3] == ["-m", "recipe_ft.runtime.openai_server"] and "127.0.0.1" in ours
