"""Fixtures: the real billing service, and a scripted stub for the client's own retry logic.

The real service is either the one at ``HYDRA_BILLING_URL`` (with ``HYDRA_SERVICE_TOKEN``, and
optionally ``HYDRA_ADMIN_TOKEN``), or the binary at ``HYDRA_BILLING_BIN`` (default
``/var/tmp/hydra-billing-target/debug/hydra-billing``) started here with ``serve`` on a fresh
SQLite file and a port of its choosing, and stopped after the session.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, List, Optional

import pytest

from hydra_billing import BillingClient

DEFAULT_BIN = "/var/tmp/hydra-billing-target/debug/hydra-billing"
SERVICE_TOKEN = "fake-service-token-pytest-0123456789abcdef"
ADMIN_TOKEN = "fake-admin-token-pytest-0123456789abcdef00"
START_DEADLINE_S = 30.0


@dataclass
class Server:
    url: str
    service_token: str
    #: Only for the tests that need an admin call; None when an external server gave none.
    admin_token: Optional[str]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1.0) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_healthy(url: str, deadline: float, proc: "Optional[subprocess.Popen[str]]" = None) -> None:
    """Polls ``/healthz`` until it answers 200; fails at the deadline or if the process exits."""
    while not _healthy(url):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"hydra-billing serve exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}/healthz did not answer 200 within {START_DEADLINE_S:.0f}s")
        time.sleep(0.05)  # the poll's interval


def _announced_port(lines: "queue.Queue[Optional[str]]", deadline: float, seen: List[str]) -> int:
    """The port from serve's "listening" log line (JSON, ``fields.port``)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError("serve did not announce its port in time")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError("serve closed its output before announcing its port")
        seen.append(line)
        try:
            port = json.loads(line).get("fields", {}).get("port")
        except ValueError:
            continue
        if isinstance(port, int):
            return port


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    url = os.environ.get("HYDRA_BILLING_URL")
    token = os.environ.get("HYDRA_SERVICE_TOKEN")
    if url and token:
        url = url.rstrip("/")
        _wait_healthy(url, time.monotonic() + START_DEADLINE_S)
        yield Server(url, token, os.environ.get("HYDRA_ADMIN_TOKEN") or None)
        return

    binary = os.environ.get("HYDRA_BILLING_BIN", DEFAULT_BIN)
    if not os.access(binary, os.X_OK):
        pytest.fail(
            f"no billing service: set HYDRA_BILLING_URL and HYDRA_SERVICE_TOKEN, or build {binary} "
            "(or point HYDRA_BILLING_BIN at it)"
        )
    with tempfile.TemporaryDirectory(prefix="hydra-billing-pytest-") as tmp:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": f"sqlite://{tmp}/billing.db",
            "BIND": "127.0.0.1:0",
            "PUBLIC_URL": "http://billing.test",
            "HYDRA_AUTH_SECRET": "fake-auth-secret-pytest-0123456789abcdef",
            "HYDRA_SERVICE_TOKEN": SERVICE_TOKEN,
            "HYDRA_ADMIN_TOKEN": ADMIN_TOKEN,
            "STRIPE_SECRET_KEY": "sk_test_fake_pytest",
            "STRIPE_WEBHOOK_SECRET": "whsec_fake_pytest",
            "STRIPE_TEAM_MONTHLY_PRICE_ID": "price_fake_team_monthly",
            "STRIPE_TEAM_ANNUAL_PRICE_ID": "price_fake_team_annual",
            "STRIPE_BUSINESS_MONTHLY_PRICE_ID": "price_fake_business_monthly",
            "STRIPE_BUSINESS_ANNUAL_PRICE_ID": "price_fake_business_annual",
            # Nothing listens there: the service calls never reach Stripe.
            "STRIPE_API_BASE": "http://127.0.0.1:9",
            "RUST_LOG": "info",
        }
        stderr = open(os.path.join(tmp, "stderr.log"), "w+b")
        proc = subprocess.Popen(
            [binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1
        )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        seen: List[str] = []
        try:
            deadline = time.monotonic() + START_DEADLINE_S
            try:
                port = _announced_port(lines, deadline, seen)
                url = f"http://127.0.0.1:{port}"
                _wait_healthy(url, deadline, proc)
            except RuntimeError as e:
                stderr.seek(0)
                pytest.fail(f"{e}\nstdout:\n{''.join(seen)}\nstderr:\n{stderr.read().decode(errors='replace')}")
            yield Server(url, SERVICE_TOKEN, ADMIN_TOKEN)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stderr.close()


@pytest.fixture
def billing(server: Server) -> BillingClient:
    # No retries against the real service: a retried reserve could hold an extra unit and make
    # the quota counts below lie. The retry logic is tested against the stub.
    return BillingClient(server.url, server.service_token, timeout=15.0, retries=0)


@pytest.fixture
def tenant_id() -> str:
    """A tenant no other test (or earlier run on the same database) has used."""
    return f"py-{uuid.uuid4().hex[:16]}"


# ------------------------------------------------------------------------------------------------
# The stub: answers a scripted list of responses, one per request, and records the requests.


@dataclass
class Answer:
    status: int
    body: object = None
    headers: Dict[str, str] = field(default_factory=dict)
    #: Hold the answer until the stub stops (a server that never answers).
    hang: bool = False


@dataclass
class Seen:
    method: str
    path: str
    at: float
    headers: Dict[str, str]
    body: bytes


class Stub:
    def __init__(self) -> None:
        self.answers: "queue.Queue[Answer]" = queue.Queue()
        self.requests: List[Seen] = []
        self.stopping = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stub.requests.append(
                    Seen(self.command, self.path, time.monotonic(), dict(self.headers.items()), body)
                )
                try:
                    answer = stub.answers.get_nowait()
                except queue.Empty:
                    answer = Answer(500, {"error": {"code": "internal_error", "message": "stub: no answer scripted"}})
                if answer.hang:
                    stub.stopping.wait()
                    return
                raw = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                if "Content-Type" not in answer.headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def script(self, *answers: Answer) -> None:
        for a in answers:
            self.answers.put(a)

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL that refuses connections: the port is bound (so nobody else takes it) but
    never listened on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def error(status: int, code: str, headers: Optional[Dict[str, str]] = None, **details: object) -> Answer:
    """An answer in the service's error shape."""
    return Answer(status, {"error": {"code": code, "message": f"stub {code}", **details}}, headers or {})
