#!/usr/bin/env python3
"""Runs deploy/proxy/nginx.conf and deploy/proxy/Caddyfile for real, on loopback ports, in front
of an echo server standing in for hydra-billing, and checks what the configs promise: the webhook
body arrives byte for byte, X-Forwarded-For is the peer and not what the client claims, 1 MiB
passes and one byte more does not, /metrics never reaches the service, plain HTTP redirects.

Usage: proxies.py --nginx PATH --caddy PATH (scripts/check-deploy fetches both from Debian)."""

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
HOST = "billing.example.com"
LIMIT = 1024 * 1024  # BODY_LIMIT_BYTES in src/http/mod.rs


class Echo(BaseHTTPRequestHandler):
    """Answers every request with what reached it: path, body digest, forwarded headers."""

    protocol_version = "HTTP/1.1"

    def _any(self):
        body = b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                body += self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
        else:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
        out = json.dumps({
            "path": self.path, "len": len(body), "sha256": hashlib.sha256(body).hexdigest(),
            "xff": self.headers.get_all("x-forwarded-for"), "host": self.headers.get("host"),
            "proto": self.headers.get("x-forwarded-proto"), "request_id": self.headers.get("x-request-id"),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _any

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a proxy that refuses a body mid-stream drops the upstream connection: expected


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name):
    for _ in range(100):
        if proc is not None and proc.poll() is not None:
            sys.exit(f"FAIL {name} exited at start with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"FAIL {name} does not listen on {port}")


def request(port, method, path, body=None, headers=None, tls=True):
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
        # SNI must name the site, or neither server picks its certificate.
        conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname=HOST)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    hdrs = {"Host": f"{HOST}:{port}" if tls else HOST, **(headers or {})}
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), data
    except (ConnectionError, http.client.HTTPException) as e:
        # A proxy may close the connection while a refused body is still being sent.
        return None, {}, str(e).encode()
    finally:
        conn.close()


def check(name, port, http_port, refused_statuses, failures):
    def fail(msg):
        failures.append(f"{name}: {msg}")

    # A signed Stripe payload is compared as bytes: CRLF, tabs, trailing spaces, non-ASCII.
    hook = '{\r\n  "id": "evt_1",\t"data": {"name": "caf\u00e9 \u2603"},  "amount": 1.50 }\r\n  '.encode()
    hook += bytes(range(256))
    status, _, data = request(port, "POST", "/api/webhooks/stripe", hook, {
        "Stripe-Signature": "t=1,v1=abc", "Content-Type": "application/json",
        "X-Forwarded-For": "203.0.113.66"})
    if status != 200:
        fail(f"webhook: status {status}, {data[:200]!r}")
    else:
        got = json.loads(data)
        if got["sha256"] != hashlib.sha256(hook).hexdigest() or got["len"] != len(hook):
            fail(f"webhook: the body changed on the way ({got['len']} bytes, expected {len(hook)})")
        if got["xff"] != ["127.0.0.1"]:
            fail(f"webhook: X-Forwarded-For {got['xff']}, expected only the peer 127.0.0.1")
        if got["proto"] != "https":
            fail(f"webhook: X-Forwarded-Proto {got['proto']}")
        if not got["host"] or not got["host"].startswith(HOST):
            fail(f"webhook: Host {got['host']}")
        if not got["request_id"]:
            fail("webhook: no X-Request-Id passed on")

    status, _, data = request(port, "POST", "/api/billing/checkout", b"a" * LIMIT)
    if status != 200 or json.loads(data)["len"] != LIMIT:
        fail(f"a body of exactly 1 MiB: status {status}, {data[:200]!r}")
    status, _, data = request(port, "POST", "/api/webhooks/stripe", b"a" * (LIMIT + 1))
    if status not in refused_statuses:
        fail(f"a body of 1 MiB + 1 byte: status {status}, expected {refused_statuses}")

    for path in ("/metrics", "//metrics", "/./metrics", "/%6Detrics", "/metrics/", "/metrics?x=1"):
        status, _, data = request(port, "GET", path)
        if status != 404:
            fail(f"GET {path}: status {status}, expected 404 from the proxy ({data[:100]!r})")
    status, _, _ = request(port, "GET", "/healthz")
    if status != 200:
        fail(f"GET /healthz: status {status}, expected it passed on")

    status, headers, _ = request(http_port, "GET", "/billing?x=1", tls=False)
    location = headers.get("Location", "")
    if status not in (301, 302, 307, 308) or not location.startswith(f"https://{HOST}") or "/billing?x=1" not in location:
        fail(f"plain HTTP: status {status}, Location {location!r}, expected a redirect to https")


def run_nginx(binary, work, upstream, failures):
    port, http_port = free_port(), free_port()
    certs = work / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={HOST}",
                    "-keyout", certs / "key.pem", "-out", certs / "cert.pem", "-days", "1"],
                   check=True, capture_output=True)
    site = (DEPLOY / "proxy/nginx.conf").read_text()
    subs = [
        (f"/etc/letsencrypt/live/{HOST}/fullchain.pem", str(certs / "cert.pem")),
        (f"/etc/letsencrypt/live/{HOST}/privkey.pem", str(certs / "key.pem")),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;"),
    ]
    for old, new in subs:
        if old not in site:
            sys.exit(f"FAIL nginx.conf no longer contains {old!r}: update deploy/check/proxies.py")
        site = site.replace(old, new)
    site = re.sub(r"^\s*listen \[::\].*\n", "", site, flags=re.M)  # loopback IPv4 only here
    (work / "site.conf").write_text(site)
    # Only the http-context file is the deliverable; this main file is what Debian's would do.
    (work / "nginx.conf").write_text(f"""
pid {work}/nginx.pid;
error_log {work}/error.log;
daemon off;
events {{}}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/site.conf;
}}
""")
    cmd = [binary, "-p", str(work), "-c", str(work / "nginx.conf")]
    test = subprocess.run(cmd + ["-t"], capture_output=True, text=True)
    if test.returncode != 0:
        failures.append(f"nginx -t: {test.stderr.strip()}")
        return
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc, "nginx")
        check("nginx", port, http_port, (413,), failures)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_caddy(binary, work, upstream, failures):
    port, http_port = free_port(), free_port()
    site = (DEPLOY / "proxy/Caddyfile").read_text()
    for old, new in [(f"{HOST} {{", f"{HOST}:{port} {{"), ("reverse_proxy 127.0.0.1:8000", f"reverse_proxy 127.0.0.1:{upstream}")]:
        if old not in site:
            sys.exit(f"FAIL Caddyfile no longer contains {old!r}: update deploy/check/proxies.py")
        site = site.replace(old, new)
    # Local ports, a local CA instead of ACME, no admin endpoint, nothing added to trust stores.
    glob = f"{{\n\thttp_port {http_port}\n\thttps_port {port}\n\tadmin off\n\tlocal_certs\n\tskip_install_trust\n}}\n\n"
    (work / "Caddyfile").write_text(glob + site)
    env = {**os.environ, "XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config"), "HOME": str(work)}
    cmd = [binary, "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"]
    valid = subprocess.run([binary, "validate", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"],
                           capture_output=True, text=True, env=env)
    if valid.returncode != 0:
        failures.append(f"caddy validate: {valid.stderr.strip()[-2000:]}")
        return
    log = open(work / "caddy.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    try:
        wait_port(port, proc, "caddy")
        # Caddy 2.6 answers an over-limit body 502 (caddyserver/caddy#5652), later ones 413.
        check("caddy", port, http_port, (413, 502, None), failures)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nginx", required=True)
    ap.add_argument("--caddy", required=True)
    args = ap.parse_args()
    upstream = free_port()
    server = Server(("127.0.0.1", upstream), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    failures = []
    work = Path(tempfile.mkdtemp(prefix="hydra-proxies-"))
    # nginx's workers run as nobody and write bodies over 16 KiB to client_body_temp_path.
    work.chmod(0o755)
    try:
        (work / "nginx").mkdir()
        (work / "caddy").mkdir()
        run_nginx(args.nginx, work / "nginx", upstream, failures)
        run_caddy(args.caddy, work / "caddy", upstream, failures)
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print("ok: nginx and caddy pass the webhook body unchanged, set X-Forwarded-For to the peer, "
          "take 1 MiB and refuse more, hide /metrics, redirect HTTP to HTTPS")


if __name__ == "__main__":
    main()
