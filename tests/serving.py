"""``mafl serve`` as a real subprocess on 127.0.0.1 for tests: started, waited for, killed."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from helpers import subprocess_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppThread:
    """uvicorn serving an ASGI ``app`` on 127.0.0.1 (a free port unless given) in a thread of the test process."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "AppThread":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and self.thread.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        if not self.server.started:  # the port taken, or the app failed to start: say so, not a later refused call
            self.__exit__()
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{self.port} within 30 s")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ServeProcess:
    def __init__(self, args: list[str], log: Path, port: int | None = None, env: dict | None = None):
        self.args, self.log, self.env = list(args), Path(log), env or {}
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> "ServeProcess":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mafl", "serve", *self.args, "--port", str(self.port)], stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, env=subprocess_env(OMP_NUM_THREADS="1", **self.env))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mafl serve exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"mafl serve did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.contextmanager
def mafl_serve(args: list[str], log: Path, **kwargs) -> Iterator[ServeProcess]:
    server = ServeProcess(args, log, **kwargs).start()
    try:
        yield server
    finally:
        server.kill()


def api_call(url: str, path: str, body=None, *, key: str | None = None, raw: bytes | None = None,
             timeout: float = 120, headers: dict | None = None) -> tuple[int, dict | str]:
    """(status, JSON or text) of one request to ``url + path``: ``body`` as JSON, or the bytes ``raw`` as they
    are; GET when there is neither."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"{url}{path}", data=data,
                                 headers={"content-type": "application/json",
                                          **({"authorization": f"Bearer {key}"} if key else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def server_metrics(port: int) -> dict[str, int]:
    """``GET /metrics`` of ``mafl serve``: {name without the mafl_serve_ prefix and _total suffix: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            out[name.removeprefix("mafl_serve_").removesuffix("_total")] = int(float(value))
    return out


def rss_mib(pid: int) -> float:
    """The resident memory of process ``pid`` (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


QUESTION = "What is the result of 3+4*5+6-7*8? Make sure to state your answer at the end of the response."


def make_adapters(base: str, names: list[str], out: Path) -> dict[str, str]:
    """LoRA adapters with random non-zero weights: each model answers differently."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = {}
    for k, name in enumerate(names):
        torch.manual_seed(k + 1)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                               LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
        model.save_pretrained(out / name)
        paths[name] = str(out / name)
    return paths
