"""The private cloud's ingress settings as plain nginx: `nginx -t`, then nginx for real on loopback.

ingress-nginx is configured through its ConfigMap keys (policies.nginx_controller_config); the
same values render as the nginx directives those keys stand for (policies.nginx_directives).
Here Debian's nginx loads them in front of a header-echoing upstream: TLS 1.2 is refused,
TLS 1.3 is served, and the client's identity reaches the upstream.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.config import PrivateIngressConfig
from components.ingress import policies
from tests.loopback import free_port

HOST = "demo.inference.onprem.example.com"


def _nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if shutil.os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        pytest.fail("nginx is missing: `make` installs Debian's nginx as root (Makefile DEB_PACKAGES)")
    return path


def _certificate(directory) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False).sign(key, hashes.SHA256()))  # fmt: skip
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return str(cert_path), str(key_path)


def _conf(directory, config: PrivateIngressConfig, port: int, upstream: int) -> str:
    cert, key = _certificate(directory)
    directives = "\n    ".join(policies.nginx_directives(config, 4096, 70))
    text = f"""
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi; uwsgi_temp_path {directory}/uwsgi; scgi_temp_path {directory}/scgi;
    {directives}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {HOST};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
}}
"""
    path = directory / "nginx.conf"
    path.write_text(text)
    return str(path)


class _Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def run_nginx(tmp_path):
    processes, servers = [], []

    def start(config: PrivateIngressConfig) -> int:
        upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        servers.append(upstream)
        port = free_port()
        conf = _conf(tmp_path, config, port, upstream.server_address[1])
        checked = subprocess.run([_nginx(), "-t", "-c", conf], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        processes.append(subprocess.Popen([_nginx(), "-c", conf, "-g", "daemon off;"], stderr=subprocess.PIPE))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return port
            except OSError:
                time.sleep(0.05)
        raise TimeoutError((tmp_path / "error.log").read_text())

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)
    for server in servers:
        server.shutdown()


def _request(port: int, version: ssl.TLSVersion, headers: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, dict]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw, server_hostname=HOST) as tls:
        lines = ["POST / HTTP/1.1", f"Host: {HOST}", f"Content-Length: {len(body)}", "Connection: close",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]  # fmt: skip
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, (json.loads(payload) if status == 200 else {})


def test_nginx_accepts_the_rendered_settings(tmp_path):
    config = PrivateIngressConfig(domain="inference.onprem.example.com", trusted_proxy_cidrs=["192.168.40.0/28"])
    conf = _conf(tmp_path, config, free_port(), free_port())
    result = subprocess.run([_nginx(), "-t", "-c", conf], capture_output=True, text=True)
    assert result.returncode == 0 and "syntax is ok" in result.stderr, result.stderr


def test_nginx_refuses_a_typo(tmp_path):
    config = PrivateIngressConfig(domain="inference.onprem.example.com")
    conf = _conf(tmp_path, config, free_port(), free_port())
    (tmp_path / "nginx.conf").write_text(open(conf).read().replace("ssl_protocols TLSv1.3;", "ssl_protocols TLSv1.4;"))
    assert subprocess.run([_nginx(), "-t", "-c", conf], capture_output=True).returncode != 0


def test_only_tls13_is_served_and_identity_reaches_the_server(run_nginx):
    config = PrivateIngressConfig(domain="inference.onprem.example.com", trusted_proxy_cidrs=["127.0.0.0/8"])
    port = run_nginx(config)
    with pytest.raises(ssl.SSLError):
        _request(port, ssl.TLSVersion.TLSv1_2)
    status, seen = _request(port, ssl.TLSVersion.TLSv1_3, {"X-Forwarded-For": "203.0.113.7"})
    assert status == 200
    # The load balancer in front (trusted) said who the client is: that becomes the client.
    assert seen["x-real-ip"] == "203.0.113.7" and seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-for"].split(", ")[0] == "203.0.113.7"
    status, _ = _request(port, ssl.TLSVersion.TLSv1_3, body=b"x" * 5000)
    assert status == 413  # the servers' body limit, at the edge


def test_an_untrusted_peer_cannot_claim_another_address(run_nginx):
    port = run_nginx(PrivateIngressConfig(domain="inference.onprem.example.com"))
    status, seen = _request(port, ssl.TLSVersion.TLSv1_3, {"X-Forwarded-For": "203.0.113.7"})
    assert status == 200 and seen["x-real-ip"] == "127.0.0.1"  # the peer, not the header


def test_the_ingress_nginx_keys_say_the_same():
    config = PrivateIngressConfig(domain="x.example.com", trusted_proxy_cidrs=[ipaddress.IPv4Network("10.0.0.0/8")])
    keys = policies.nginx_controller_config(config, 4096, 70)
    directives = policies.nginx_directives(config, 4096, 70)
    assert keys["ssl-protocols"] == "TLSv1.3" and "ssl_protocols TLSv1.3;" in directives
    assert keys["proxy-body-size"] == "4096" and "client_max_body_size 4096;" in directives
    assert keys["proxy-real-ip-cidr"] == "10.0.0.0/8" and "set_real_ip_from 10.0.0.0/8;" in directives
    assert keys["use-forwarded-headers"] == "true" and "real_ip_header X-Forwarded-For;" in directives
    assert keys["proxy-read-timeout"] == "70" and "proxy_read_timeout 70s;" in directives
    assert keys["proxy-buffering"] == "off" and "proxy_buffering off;" in directives
    untrusted = policies.nginx_controller_config(PrivateIngressConfig(domain="x.example.com"), 4096, 70)
    assert untrusted["use-forwarded-headers"] == "false" and "proxy-real-ip-cidr" not in untrusted
