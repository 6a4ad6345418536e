"""Listen addresses, TLS and authentication on the platform's listeners.

Real components: a second Collector with TLS and bearer-token authentication on its OTLP receivers, sending
to the session stack's Kafka, so an accepted span is found in the session's ClickHouse; a refused one (no
token, a wrong token, plain HTTP to the TLS port) is not. A stack whose Kafka serves SASL_SSL, through which
the Collector, ClickHouse's Kafka engine and the Python producer all pass. Pure units: every component's
listen address rendered into its configuration (the Collector's by its own binary), the exposure warnings,
the settings' checks. The embedded ClickHouse cannot serve TLS (shown against the real engine): the client
factory's TLS options are checked through a TLS proxy in front of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from metrics_platform import clickhouse
from metrics_platform.settings import Settings
from metrics_platform.stack import clickhouse_server, collector, dagster_services, kafka_broker, network, superset
from tests import otlp_json
from tests.collector_helpers import post_otlp
from tests.helpers import flat_event, free_ports, ingest, trace_id, wait_for

# --- Certificates, made here ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A private CA and a server certificate it signed (for localhost and 127.0.0.1), as PEM files."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr[-1000:]}"


def make_pki(directory: Path) -> Pki:
    """A fresh CA and a server certificate it signed, made with the openssl CLI (no extra Python package).

    Keys are PKCS#8 (what Kafka's PEM keystore reads) and owner-only, like the platform's secrets.
    """
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make test certificates (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *curve, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=metrics-platform test CA", cwd=directory)  # fmt: skip
    _openssl("req", *curve, "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=localhost", cwd=directory)
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
             "-out", "server.pem", "-days", "1", "-extfile", "server.ext", cwd=directory)  # fmt: skip
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    pki.key.chmod(0o600)
    return pki


# --- A Collector with TLS and a bearer token, in front of the session stack's Kafka ---------------------------


class _Recorded(logging.Handler):
    """Keeps the messages logged while it is attached."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def tls_collector(stack, tmp_path_factory) -> Iterator[tuple[Settings, Pki, list[str]]]:
    """A second Collector (own state directory and ports) with METRICS_PLATFORM_OTLP_TLS_* and OTLP_AUTH on,
    listening on every interface; also yields the warnings its start logged."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    names = ("OTLP_GRPC_PORT", "OTLP_HTTP_PORT", "COLLECTOR_HEALTH_PORT", "COLLECTOR_METRICS_PORT")
    env = {f"METRICS_PLATFORM_{name}": str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}
    env |= {
        "METRICS_PLATFORM_STATE_DIR": str(stack.state_dir.with_name(stack.state_dir.name + "-tls")),
        "METRICS_PLATFORM_OTLP_TLS_CERT": str(pki.cert),
        "METRICS_PLATFORM_OTLP_TLS_KEY": str(pki.key),
        "METRICS_PLATFORM_OTLP_TLS_CA": str(pki.ca),
        "METRICS_PLATFORM_OTLP_AUTH": "true",
        "METRICS_PLATFORM_COLLECTOR_LISTEN_HOST": "0.0.0.0",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        secured = Settings.from_env()
    collector.stop(secured)  # a leftover of an interrupted session
    shutil.rmtree(secured.state_dir, ignore_errors=True)
    recorded = _Recorded()
    network.LOG.addHandler(recorded)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        try:
            collector.start(secured)
        except BaseException:
            collector.stop(secured)
            raise
        finally:
            network.LOG.removeHandler(recorded)
    try:
        yield secured, pki, recorded.messages
    finally:
        collector.stop(secured)


def _post(settings: Settings, body: dict, headers: dict[str, str], url: str | None = None, ca: Path | None = None):
    """POST an OTLP/HTTP JSON request: (status, body), or the connection's error."""
    request = urllib.request.Request(
        url or f"{settings.collector.otlp_http_endpoint}/v1/traces",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _span_request(service: str) -> tuple[str, dict]:
    trace = trace_id()
    root = otlp_json.span(trace, "POST /answer", {"route": "POST /answer"}, kind=otlp_json.SERVER)
    return trace, otlp_json.request({"service.name": service}, [root])


def _in_inbox(ch, trace: str) -> int:
    return ch.command("SELECT count() FROM span_inbox WHERE trace_id = {t:String}", parameters={"t": trace})


def test_otlp_over_tls_with_the_token_reaches_clickhouse_and_others_are_refused(tls_collector, ch) -> None:
    secured, pki, _ = tls_collector
    token_file = secured.state_dir / "secrets" / network.OTLP_TOKEN_SECRET
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert secured.collector.otlp_http_endpoint.startswith("https://127.0.0.1:")
    good = network.otlp_headers(secured)
    assert good == {"Authorization": f"Bearer {token_file.read_text().strip()}"}

    # Refused first: no token, a wrong token, the token's scheme alone. 401 before anything is queued.
    refused = []
    for headers in ({}, {"Authorization": "Bearer wrong-" + network.otlp_token(secured)}, {"Authorization": "Bearer"}):
        trace, body = _span_request("net-tls-refused")
        status, answer = _post(secured, body, headers, ca=pki.ca)
        assert status == 401, (headers.keys(), status, answer[:200])
        refused.append(trace)

    # The right token over TLS: accepted, and the span reaches ClickHouse through Kafka.
    trace, body = _span_request("net-tls-accepted")
    status, answer = _post(secured, body, good, ca=pki.ca)
    assert status == 200, answer[:200]
    wait_for(lambda: _in_inbox(ch, trace), 60, "the span sent over TLS with the token in ClickHouse")
    assert all(_in_inbox(ch, t) == 0 for t in refused)


def test_plain_http_or_an_unknown_ca_cannot_reach_a_tls_receiver(tls_collector) -> None:
    secured, pki, _ = tls_collector
    trace, body = _span_request("net-tls-plain")
    # Go's TLS server answers a plain-HTTP request with a 400 naming the mistake and hangs up.
    data = json.dumps(body).encode()
    token = network.otlp_headers(secured)["Authorization"]
    request = (
        f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {token}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data
    with socket.create_connection(("127.0.0.1", secured.collector.otlp_http_port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # the server closes without reading the rest
    assert answer.startswith(b"HTTP/1.0 400 Bad Request"), answer[:200]
    assert b"Client sent an HTTP request to an HTTPS server" in answer
    # The system's CAs do not know the private CA: the client refuses the server.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _post(secured, body, network.otlp_headers(secured))


def _this_machines_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    result = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    return next((a for a in result.stdout.split() if "." in a and not a.startswith("127.")), None)


def test_a_receiver_on_every_interface_warns_and_answers_there(tls_collector) -> None:
    secured, pki, warnings = tls_collector
    c = secured.collector
    assert warnings == [
        f"the OpenTelemetry Collector listens on every interface, not loopback: OTLP gRPC :{c.otlp_grpc_port}, "
        f"OTLP HTTP :{c.otlp_http_port} reachable from other machines (TLS; bearer token required)"
    ]
    address = _this_machines_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to dial")
    # Dialled on the machine's own address (as another machine would), the certificate still names localhost.
    context = ssl.create_default_context(cafile=str(pki.ca))
    request = (f"POST /v1/traces HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
               f"Authorization: {network.otlp_headers(secured)['Authorization']}\r\n"
               "Content-Length: 2\r\nConnection: close\r\n\r\n{}").encode()  # fmt: skip
    with (
        socket.create_connection((address, c.otlp_http_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        assert tls.recv(65536).startswith(b"HTTP/1.1 200"), "an empty export over TLS with the token"


def test_otlp_grpc_over_tls_needs_the_token(tls_collector, ch) -> None:
    secured, pki, _ = tls_collector
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    trace = trace_id()
    start = time.time_ns() - 10_000_000_000
    span = Span(trace_id=bytes.fromhex(trace), span_id=os.urandom(8), name="POST /grpc", kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start, end_time_unix_nano=start + 100_000_000)  # fmt: skip
    service = KeyValue(key="service.name", value=AnyValue(string_value="net-tls-grpc"))
    message = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=Resource(attributes=[service]), scope_spans=[ScopeSpans(spans=[span])])]
    )
    with grpc.secure_channel(f"127.0.0.1:{secured.collector.otlp_grpc_port}", credentials) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            export(message, timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = [(name.lower(), value) for name, value in network.otlp_headers(secured).items()]
        export(message, timeout=30, metadata=metadata)
    wait_for(lambda: _in_inbox(ch, trace), 60, "the span sent over gRPC/TLS in ClickHouse")


def test_the_cli_probe_and_demo_sender_use_the_token_and_ca(tls_collector) -> None:
    from metrics_platform.cli import _otlp_problem
    from metrics_platform.demo import run_demo

    secured, pki, _ = tls_collector
    url = secured.collector.otlp_http_endpoint
    assert _otlp_problem(url, network.otlp_headers(secured), str(pki.ca)) is None
    assert _otlp_problem(url, {}, str(pki.ca)) == "answered HTTP 401 to an empty export"
    stats = run_demo(url, rate=20, duration_s=1, seed=5, progress=False,
                     headers=network.otlp_headers(secured), certificate_file=str(pki.ca))  # fmt: skip
    assert stats.requests > 0
    # The Collector counts what its receivers accepted: the demo's spans, none refused.
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{secured.collector.metrics_port}/metrics", timeout=10)
    text = metrics.read().decode()
    accepted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("otelcol_receiver_accepted_spans") and 'transport="http"' in line
    )
    assert accepted >= stats.spans, (accepted, stats.spans)


# --- Kafka over TLS (SASL_SSL): a second stack ---------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_tls_stack(settings, tmp_path_factory) -> Iterator[Settings]:
    """Kafka, ClickHouse and the Collector with METRICS_PLATFORM_KAFKA_SECURITY_PROTOCOL=SASL_SSL: the broker
    serves TLS with a certificate of a private CA, which every client verifies."""
    from metrics_platform.stack import platform

    pki = make_pki(tmp_path_factory.mktemp("kafka-pki"))
    names = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "CLICKHOUSE_HTTP_PORT", "CLICKHOUSE_TCP_PORT", "OTLP_GRPC_PORT",
             "OTLP_HTTP_PORT", "COLLECTOR_HEALTH_PORT", "COLLECTOR_METRICS_PORT")  # fmt: skip
    env = {f"METRICS_PLATFORM_{name}": str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}
    env |= {
        "METRICS_PLATFORM_STATE_DIR": str(settings.state_dir.with_name(settings.state_dir.name + "-kafka-tls")),
        "METRICS_PLATFORM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "METRICS_PLATFORM_KAFKA_SSL_CA_LOCATION": str(pki.ca),
        "METRICS_PLATFORM_KAFKA_BROKER_TLS_CERT": str(pki.cert),
        "METRICS_PLATFORM_KAFKA_BROKER_TLS_KEY": str(pki.key),
    }
    # Every process the stack starts reads its settings from this environment; the other tests keep theirs.
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        secured = Settings.from_env()
        platform.down(secured, report=lambda _: None)
        for path in secured.state_dir.glob("*"):
            if path.is_dir() and path.name != "secrets":
                shutil.rmtree(path)
        try:
            platform.up(secured, report=lambda _: None, with_dagster=False)
        except BaseException:
            platform.down(secured, report=lambda _: None)
            raise
    try:
        yield secured
    finally:
        platform.down(secured, report=lambda _: None)


def test_spans_flow_end_to_end_over_kafka_tls(kafka_tls_stack, tmp_path: Path) -> None:
    k = kafka_tls_stack.kafka
    text = (kafka_tls_stack.state_dir / "kafka" / "server.properties").read_text()
    assert f"listeners=SASL_SSL://127.0.0.1:{kafka_broker._port(kafka_tls_stack)}," in text
    assert stat.S_IMODE(kafka_broker.keystore_path(kafka_tls_stack).stat().st_mode) == 0o600
    config = (kafka_tls_stack.state_dir / "clickhouse" / "run" / "config.xml").read_text()
    assert "<security_protocol>sasl_ssl</security_protocol>" in config
    assert f"<ssl_ca_location>{k.ssl_ca_location}</ssl_ca_location>" in config
    ch = clickhouse.client(kafka_tls_stack.clickhouse)
    try:
        # OTLP → the Collector's kafka exporter (TLS + SCRAM) → Kafka → ClickHouse's Kafka engine (TLS + PLAIN).
        trace, body = _span_request("net-kafka-tls-otlp")
        status, answer = post_otlp(kafka_tls_stack, body)
        assert status == 200, answer
        wait_for(lambda: _in_inbox(ch, trace), 60, "the span sent through Kafka over TLS in ClickHouse")
        # The platform's Python producer → the events topic → ClickHouse.
        ingest(k, ch, "net-kafka-tls-flat", [flat_event("net-kafka-tls-flat") for _ in range(3)])
    finally:
        ch.close()
    # A client that does not speak TLS, or trusts another CA, gets nothing.
    other_ca = make_pki(tmp_path / "other").ca
    for overrides in ({"security.protocol": "sasl_plaintext"}, {"ssl.ca.location": str(other_ca)}):
        config = {"bootstrap.servers": k.bootstrap_servers, **k.librdkafka_security(), **overrides, "log_level": 0}
        with pytest.raises(KafkaException):
            AdminClient(config).list_topics(timeout=5)


# --- ClickHouse: the embedded engine cannot serve TLS; the client factory's TLS is real --------------------------


def test_embedded_engine_refuses_tls_listeners(tmp_path: Path) -> None:
    """SYSTEM START LISTEN HTTPS is refused by the clickhouse-local code path the embedded server runs."""

    script = (
        "import os, sys; from metrics_platform.stack import clickhouse_server as s; e = s._load_engine(); "
        "os.chdir(sys.argv[1]); e.query('SYSTEM START LISTEN HTTPS', 'TabSeparated', path=sys.argv[2])"
    )
    (tmp_path / "run").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run"), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The engine reports the refusal on stderr (the call itself returns).
    assert "supports only TCP and HTTP listeners" in result.stderr + result.stdout, result.stderr[-500:]
    assert "got 'HTTPS'. (UNSUPPORTED_METHOD)" in result.stderr + result.stdout


class _TlsProxy:
    """A TLS-terminating TCP proxy (as an operator would put nginx or stunnel in front of the embedded server)."""

    def __init__(self, pki: Pki, target_port: int) -> None:
        self.port = free_ports(1)[0]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert, pki.key)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
            await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

        async def serve() -> None:
            self._server = await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=context)
            ready.set()

        def run() -> None:
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_clickhouse_client_factory_speaks_tls_with_the_configured_ca(stack, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    proxy = _TlsProxy(pki, stack.clickhouse.http_port)
    try:
        secure = dataclasses.replace(stack.clickhouse, http_port=proxy.port, secure=True, ca_cert=str(pki.ca))
        assert secure.url == f"https://127.0.0.1:{proxy.port}"
        client = clickhouse.client(secure)
        try:
            assert client.command("SELECT currentUser()") == stack.clickhouse.user
        finally:
            client.close()
        # Without the CA the server's certificate is not trusted.
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            clickhouse.client(dataclasses.replace(secure, ca_cert=""))
    finally:
        proxy.close()


# --- Pure units: listen addresses rendered into every component, warnings, settings ---------------------------


def _settings_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Settings:
    monkeypatch.setenv("METRICS_PLATFORM_STATE_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(f"METRICS_PLATFORM_{name}", value)
    return Settings.from_env()


_LISTEN = ("COLLECTOR", "KAFKA", "CLICKHOUSE", "DAGSTER", "SUPERSET")


def test_defaults_listen_on_loopback_only(monkeypatch, tmp_path, caplog) -> None:
    for component in _LISTEN:
        monkeypatch.delenv(f"METRICS_PLATFORM_{component}_LISTEN_HOST", raising=False)
    s = _settings_with(monkeypatch, tmp_path)
    assert collector.otlp_network_environment(s) == {"METRICS_PLATFORM_COLLECTOR_LISTEN_HOST": "127.0.0.1"}
    assert collector.render_network_config(s) is None
    properties = kafka_broker.render_properties(s, tmp_path / "kafka")
    assert f"listeners=PLAINTEXT://127.0.0.1:{kafka_broker._port(s)},CONTROLLER://127.0.0.1:" in properties
    assert f"advertised.listeners=PLAINTEXT://127.0.0.1:{kafka_broker._port(s)}" in properties
    config = clickhouse_server.render_config(1, 2, s.clickhouse.listen_host)
    assert config.count("<listen_host>") == 1 and "<listen_host>127.0.0.1</listen_host>" in config
    assert dagster_services.webserver_argv(s, Path("/bin"), "w.yaml")[-4:-2] == ["-h", "127.0.0.1"]
    assert f"127.0.0.1:{s.superset.port}" in superset.gunicorn_argv(s, Path("/venv"))
    with caplog.at_level(logging.WARNING, logger=network.LOG.name):
        assert network.warn_if_exposed("Kafka", s.kafka.listen_host, {"broker": 1}, "x") is None
    assert caplog.records == []


def test_non_loopback_listen_settings_render_into_every_component(monkeypatch, tmp_path) -> None:
    s = _settings_with(
        monkeypatch, tmp_path, COLLECTOR_LISTEN_HOST="0.0.0.0", KAFKA_LISTEN_HOST="10.1.2.3",
        KAFKA_ADVERTISED_HOST="kafka.example.internal", CLICKHOUSE_LISTEN_HOST="10.1.2.3",
        DAGSTER_LISTEN_HOST="0.0.0.0", SUPERSET_LISTEN_HOST="::",
    )  # fmt: skip
    # Collector: both receivers on every interface (resolved by the real binary in the next test).
    assert collector.environment(s)["METRICS_PLATFORM_COLLECTOR_LISTEN_HOST"] == "0.0.0.0"
    assert s.collector.otlp_http_endpoint == f"http://127.0.0.1:{s.collector.otlp_http_port}"
    # Kafka: the clients' listener on the address, advertised under the name clients dial.
    port = kafka_broker._port(s)
    assert s.kafka.bootstrap_servers == f"10.1.2.3:{port}"
    properties = kafka_broker.render_properties(s, tmp_path / "kafka")
    assert f"listeners=PLAINTEXT://10.1.2.3:{port},CONTROLLER://127.0.0.1:{s.kafka.controller_port}" in properties
    assert f"advertised.listeners=PLAINTEXT://kafka.example.internal:{port}" in properties
    # ClickHouse: the address, plus loopback for the server's own helpers.
    config = clickhouse_server.render_config(1, 2, s.clickhouse.listen_host)
    assert "<listen_host>127.0.0.1</listen_host>" in config and "<listen_host>10.1.2.3</listen_host>" in config
    assert s.clickhouse.url == f"http://10.1.2.3:{s.clickhouse.http_port}"
    # Dagster and Superset: their command lines.
    assert dagster_services.webserver_argv(s, Path("/bin"), "w.yaml")[-4:-2] == ["-h", "0.0.0.0"]
    assert dagster_services.ui_url(s) == f"http://127.0.0.1:{s.dagster_port}"
    assert f"[::]:{s.superset.port}" in superset.gunicorn_argv(s, Path("/venv"))
    # Kafka on every interface advertises this machine's name unless told otherwise.
    monkeypatch.delenv("METRICS_PLATFORM_KAFKA_ADVERTISED_HOST")
    everywhere = _settings_with(monkeypatch, tmp_path, KAFKA_LISTEN_HOST="0.0.0.0")
    assert everywhere.kafka.advertised_host == socket.getfqdn()
    assert everywhere.kafka.bootstrap_servers == f"127.0.0.1:{port}"


def _resolved_collector_config(settings: Settings) -> dict:
    """The configuration the real Collector binary resolves from config.yaml, the PII file and the network file
    with the launcher's environment (``print-config``: no ports opened)."""
    configs = [collector.CONFIG, collector.render_pii_config(settings)]
    configs += [path for path in [collector.write_network_config(settings)] if path]
    argv = [str(collector.build(settings)), "print-config", "--mode=unredacted", "--format=json"]
    argv += [arg for path in configs for arg in ("--config", str(path))]
    env = {**os.environ, **collector.environment(settings)}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_collector_resolves_listen_address_tls_and_token(monkeypatch, tmp_path) -> None:
    pki = make_pki(tmp_path / "pki")
    s = _settings_with(monkeypatch, tmp_path, COLLECTOR_LISTEN_HOST="0.0.0.0", OTLP_TLS_CERT=str(pki.cert),
                       OTLP_TLS_KEY=str(pki.key), OTLP_AUTH="true")  # fmt: skip
    config = _resolved_collector_config(s)
    c = s.collector
    for name, port in (("grpc", c.otlp_grpc_port), ("http", c.otlp_http_port)):
        protocol = config["receivers"]["otlp"]["protocols"][name]
        assert protocol["endpoint"] == f"0.0.0.0:{port}"
        assert protocol["tls"] == {"cert_file": str(pki.cert), "key_file": str(pki.key)}
        assert protocol["auth"] == {"authenticator": "bearertokenauth"}
    assert config["extensions"]["bearertokenauth"]["filename"] == str(network.otlp_token_file(s))
    assert config["service"]["extensions"] == ["health_check", "file_storage", "bearertokenauth"]
    # Health and metrics stay on loopback; the PII processors and the Kafka exporter are untouched.
    assert config["extensions"]["health_check"]["endpoint"] == f"127.0.0.1:{c.health_port}"
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["processors"] == [
        "memory_limiter",
        "transform/span_name",
        "spanredaction/pii",
    ]
    assert pipeline["exporters"] == ["kafka"]

    # Defaults: loopback, no TLS block at all, no authenticator.
    for name in ("COLLECTOR_LISTEN_HOST", "OTLP_TLS_CERT", "OTLP_TLS_KEY", "OTLP_AUTH"):
        monkeypatch.delenv(f"METRICS_PLATFORM_{name}")
    plain = _resolved_collector_config(Settings.from_env())
    for name in ("grpc", "http"):
        protocol = plain["receivers"]["otlp"]["protocols"][name]
        assert protocol["endpoint"].startswith("127.0.0.1:") and protocol.get("tls") is None
        assert protocol.get("auth") is None
    assert plain["service"]["extensions"] == ["health_check", "file_storage"]


def test_tls_and_token_render_into_the_collector_config(monkeypatch, tmp_path) -> None:
    s = _settings_with(
        monkeypatch, tmp_path, OTLP_TLS_CERT="c.pem", OTLP_TLS_KEY="k.pem", OTLP_AUTH="1", COLLECTOR_LISTEN_HOST="::"
    )
    assert s.collector.otlp_http_endpoint.startswith("https://127.0.0.1:")
    assert collector.environment(s)["METRICS_PLATFORM_COLLECTOR_LISTEN_HOST"] == "[::]"
    config = collector.render_network_config(s)
    token_file = tmp_path / "secrets" / network.OTLP_TOKEN_SECRET
    tls = {"cert_file": str(Path("c.pem").resolve()), "key_file": str(Path("k.pem").resolve())}
    protocol = {"tls": tls, "auth": {"authenticator": "bearertokenauth"}}
    assert config == {
        "receivers": {"otlp": {"protocols": {"grpc": protocol, "http": protocol}}},
        "extensions": {"bearertokenauth": {"filename": str(token_file)}},
        "service": {"extensions": ["health_check", "file_storage", "bearertokenauth"]},
    }
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(network.otlp_token(s)) >= 32
    # config.yaml's own extension list is the one repeated here, so nothing else is lost by the override.
    assert "  extensions: [health_check, file_storage]\n" in collector.CONFIG.read_text()
    # TLS alone: no extension, no auth. An operator's token file is used as it is.
    only_tls = _settings_with(monkeypatch, tmp_path, OTLP_AUTH="0")
    assert collector.render_network_config(only_tls) == {
        "receivers": {"otlp": {"protocols": {"grpc": {"tls": tls}, "http": {"tls": tls}}}}
    }
    (tmp_path / "tokens").write_text("first-token\nsecond-token\n")
    own = _settings_with(monkeypatch, tmp_path, OTLP_AUTH="1", OTLP_TOKEN_FILE=str(tmp_path / "tokens"))
    assert network.otlp_headers(own) == {"Authorization": "Bearer first-token"}
    monkeypatch.delenv("METRICS_PLATFORM_OTLP_TLS_KEY")
    with pytest.raises(ValueError, match="OTLP_TLS_CERT and METRICS_PLATFORM_OTLP_TLS_KEY must be set together"):
        Settings.from_env()


def test_exposure_warnings_say_what_is_reachable(caplog) -> None:
    assert network.exposure_warning("Kafka", "127.0.0.1", {"broker": 9092}, "x") is None
    assert network.exposure_warning("Kafka", "localhost", {"broker": 9092}, "x") is None
    assert network.exposure_warning("Kafka", "::1", {"broker": 9092}, "x") is None
    with caplog.at_level(logging.WARNING, logger=network.LOG.name):
        message = network.warn_if_exposed(
            "the OpenTelemetry Collector", "0.0.0.0", {"OTLP gRPC": 4317, "OTLP HTTP": 4318}, "no TLS; no auth"
        )
    assert message == (
        "the OpenTelemetry Collector listens on every interface, not loopback: OTLP gRPC :4317, OTLP HTTP :4318 "
        "reachable from other machines (no TLS; no auth)"
    )
    assert [r.getMessage() for r in caplog.records] == [message]
    assert "listens on 10.0.0.7" in network.exposure_warning("ClickHouse", "10.0.0.7", {"HTTP": 8123}, "no TLS")
    assert network.host_port("::", 1) == "[::]:1" and network.host_port("10.0.0.7", 1) == "10.0.0.7:1"


def test_one_set_of_kafka_tls_settings_for_broker_and_clients(monkeypatch, tmp_path) -> None:
    with pytest.raises(ValueError, match="KAFKA_BROKER_TLS_CERT, _KEY"):
        _settings_with(monkeypatch, tmp_path, KAFKA_SECURITY_PROTOCOL="SSL")
    s = _settings_with(monkeypatch, tmp_path, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_BROKER_TLS_CERT="/b.pem",
                       KAFKA_BROKER_TLS_KEY="/b-key.pem", KAFKA_SSL_CA_LOCATION="/ca.pem")  # fmt: skip
    port = kafka_broker._port(s)
    properties = kafka_broker.render_properties(s, tmp_path / "kafka").splitlines()
    expected = [
        f"listeners=SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{s.kafka.controller_port}",
        "listener.security.protocol.map=SSL:SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=SSL",
        f"ssl.keystore.location={kafka_broker.keystore_path(s)}",
        "ssl.truststore.location=/ca.pem",
    ]
    assert [line for line in expected if line not in properties] == []
    # The same CA for the Python clients, the Collector's exporter and ClickHouse's Kafka engine.
    assert s.kafka.librdkafka_security() == {"security.protocol": "ssl", "ssl.ca.location": "/ca.pem"}
    assert collector.kafka_security_environment(s) == {
        "METRICS_PLATFORM_COLLECTOR_KAFKA_AUTH": "",
        "METRICS_PLATFORM_COLLECTOR_KAFKA_TLS": '{"ca_file": "/ca.pem"}',
    }
    engine = clickhouse_server.render_config(1, 2, kafka=clickhouse_server.engine_kafka_properties(s.kafka))
    assert "<security_protocol>ssl</security_protocol>" in engine and "<ssl_ca_location>/ca.pem<" in engine
