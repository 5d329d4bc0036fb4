"""Filter chains without sockets: the ClientHello parser, chain selection, and TLS config
errors that name their TOML path."""

import ipaddress
import ssl

import pytest

from gateway.config import loads_config
from gateway.config.model import FilterChainMatch
from gateway.errors import ConfigError
from gateway.listeners.filter_chain import Dropped, FilterChain, select
from gateway.listeners.network_filter import ConnectionInfo
from gateway.listeners.tls import format_subject
from gateway.listeners.tls_inspector import PEEK_SIZE, ClientHello, Peek, parse_client_hello
from tests.tls_helpers import Pki


def client_hello(server_name: str | None, alpn: list[str]) -> bytes:
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    if server_name is None:
        context.check_hostname = False
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_client_hello_gives_sni_and_alpn():
    data = client_hello("API.example.com", ["h2", "http/1.1"])
    assert parse_client_hello(data) == ClientHello("api.example.com", ("h2", "http/1.1"))
    for cut in (1, 5, len(data) // 2, len(data) - 1):
        assert parse_client_hello(data[:cut]) is Peek.NEED_DATA
    assert parse_client_hello(b"GET / HTTP/1.1\r\n\r\n") is Peek.NOT_TLS
    assert parse_client_hello(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") is Peek.NOT_TLS


def test_client_hello_split_across_records():
    data = client_hello("split.example.com", ["h2"])
    body = data[5:]
    half = len(body) // 2
    split = b"\x16\x03\x01" + half.to_bytes(2, "big") + body[:half]
    split += b"\x16\x03\x01" + (len(body) - half).to_bytes(2, "big") + body[half:]
    assert parse_client_hello(split) == ClientHello("split.example.com", ("h2",))


def test_a_client_hello_that_cannot_fit_in_the_peek_is_not_tls():
    # Found by tests/fuzz: NEED_DATA for bytes the listener can never peek whole meant
    # waiting until listener_filters_timeout. A record over RFC 8446's 2^14 bytes, or a
    # ClientHello cut into more records than PEEK_SIZE holds, is refused once it is known.
    assert parse_client_hello(b"\x16\x03\x01\x40\x01") is Peek.NOT_TLS
    message = b"\x01" + (16000).to_bytes(3, "big") + bytes(16000)  # a ClientHello's size
    one_byte_records = b"".join(b"\x16\x03\x01\x00\x01" + bytes([b]) for b in message)
    assert parse_client_hello(one_byte_records[: PEEK_SIZE - 1]) is Peek.NEED_DATA
    assert parse_client_hello(one_byte_records[:PEEK_SIZE]) is Peek.NOT_TLS


def hello_with(*extensions: bytes) -> bytes:
    """A real ClientHello (no server name, no ALPN) with `extensions` added at its end."""
    record = client_hello(None, [])
    body = bytearray(record[9:])
    pos = 34 + 1 + body[34]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    body += b"".join(extensions)
    body[pos : pos + 2] = (len(body) - pos - 2).to_bytes(2, "big")
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message


def sni(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(bytes([name_type]) + len(n).to_bytes(2, "big") + n for n in names)
    data = len(entries).to_bytes(2, "big") + entries
    return b"\x00\x00" + len(data).to_bytes(2, "big") + data


def test_alpn_protocol_names_are_opaque_bytes():
    # RFC 7301: a protocol name is any bytes; one that is not ASCII made the whole
    # ClientHello "not TLS" (found by fuzzing against OpenSSL, which takes it).
    data = client_hello("api.example.com", ["h2", "zz"]).replace(b"\x02zz", b"\x02\xff\xfe")
    assert parse_client_hello(data) == ClientHello("api.example.com", ("h2", "\xff\xfe"))


@pytest.mark.parametrize(
    "extensions",
    [
        [sni(b"a.example.com", b"b.example.com")],  # the last name was taken
        [sni(b"a.example.com"), sni(b"b.example.com")],  # the extension twice: the last
        [sni(b"a\x00.example.com")],
        [sni(b"a.example.com", name_type=1)],
        [sni(b"a.example.com")[:-1]],  # lengths that overrun: other extensions as a name
        [b"\x00\x10\x00\x03\x00\x01\x00"],  # an empty ALPN protocol name
    ],
)
def test_a_client_hello_tls_stacks_refuse_is_not_tls(extensions):
    # OpenSSL and BoringSSL refuse these (RFC 6066 3, RFC 8446 4.2, RFC 7301 3.1); read
    # loosely, a name the TLS stack never acts on chose the filter chain.
    assert parse_client_hello(hello_with(sni(b"ok.example.com"))) == ClientHello(
        "ok.example.com", ()
    )
    assert parse_client_hello(hello_with(*extensions)) is Peek.NOT_TLS


@pytest.mark.parametrize(
    "name",
    [
        b"evil\n[forged log line].example.com",  # OpenSSL and Python's ssl send and take it
        b"a b.example.com",
        b"a\x1b[2J.example.com",
        b"\xc3\xa9.example.com",  # raw UTF-8: an IDN goes as its A-label
        b"",
    ],
)
def test_a_server_name_that_is_not_a_host_name_is_no_server_name(name):
    # Not "not TLS": the handshake goes on as if the client had sent no SNI, so the name
    # chooses no chain or certificate (a wildcard's suffix matched it) and is never logged.
    assert parse_client_hello(hello_with(sni(name))) == ClientHello(None, ())


def test_host_names_keep_underscores_and_lose_case():
    for name in (b"outbound_.8080_._.reviews.default.svc.cluster.local", b"xn--bcher-kva.example"):
        assert parse_client_hello(hello_with(sni(name))) == ClientHello(name.decode(), ())
    assert parse_client_hello(hello_with(sni(b"API.Example.COM"))) == ClientHello(
        "api.example.com", ()
    )
    # A real client (OpenSSL through Python's ssl) sends a line break as it was given.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    obj = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="a\nb.c")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    assert b"\x00\x05a\nb.c" in (data := outgoing.read())
    assert parse_client_hello(data) == ClientHello(None, ())


def chain(name: str, **match: object) -> FilterChain:
    return FilterChain(name, FilterChainMatch(**match), None, [], [])  # type: ignore[arg-type]


def info(**kwargs: object) -> ConnectionInfo:
    defaults: dict[str, object] = {
        "peer": "10.1.2.3:5555",
        "source_ip": ipaddress.ip_address("10.1.2.3"),
        "destination_port": 443,
    }
    return ConnectionInfo(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_most_specific_chain_wins():
    chains = [
        chain("any"),
        chain("wild", server_names=["*.example.com"]),
        chain("deep-wild", server_names=["*.api.example.com"]),
        chain("exact", server_names=["api.example.com"]),
        chain("h2", server_names=["grpc.example.com"], application_protocols=["h2"]),
        chain("grpc", server_names=["grpc.example.com"]),
        chain("port", destination_port=8443),
        chain("internal", source_prefix_ranges=["10.0.0.0/8"], server_names=["in.example.com"]),
        chain(
            "internal-narrow", source_prefix_ranges=["10.1.0.0/16"], server_names=["in.example.com"]
        ),
    ]

    def pick(**kwargs: object) -> str | None:
        found = select(chains, info(**kwargs))
        return found.name if found else None

    assert pick(server_name="api.example.com") == "exact"
    assert pick(server_name="v1.api.example.com") == "deep-wild"
    assert pick(server_name="www.example.com") == "wild"
    assert pick(server_name="example.org") == "any"
    assert pick() == "any"
    assert pick(server_name="grpc.example.com", application_protocols=("h2", "http/1.1")) == "h2"
    assert pick(server_name="grpc.example.com", application_protocols=("http/1.1",)) == "grpc"
    # The port is the first criterion: a chain for the port beats every name.
    assert pick(destination_port=8443, server_name="api.example.com") == "port"
    assert pick(server_name="in.example.com") == "internal-narrow"
    assert pick(server_name="in.example.com", source_ip=ipaddress.ip_address("10.9.9.9")) == (
        "internal"
    )
    # A name-only chain set without a catch-all: other names match nothing.
    assert select(chains[3:4], info(server_name="www.example.com")) is None


def test_select_notes_each_chain_it_drops_and_where():
    """What /explain says of the chains not chosen: at which criterion each dropped out,
    and whether it did not match or another matched it more specifically."""
    chains = [
        chain("port", destination_port=8443),
        chain("wild", server_names=["*.example.com"]),
        chain("exact", server_names=["api.example.com"]),
        chain("h2", server_names=["api.example.com"], application_protocols=["h2"]),
        chain("twin", server_names=["api.example.com"], application_protocols=["h2", "h3"]),
    ]
    dropped: list[Dropped] = []
    found = select(
        chains, info(server_name="api.example.com", application_protocols=("h2",)), dropped
    )
    assert found is not None and found.name == "h2"
    assert [(d.chain.name, d.criterion, d.matched) for d in dropped] == [
        ("port", "destination_port", False),
        ("wild", "server_names", True),
        ("exact", "application_protocols", True),
        ("twin", "tie", True),
    ]
    dropped.clear()
    assert select(chains[2:3], info(server_name="www.example.com"), dropped) is None
    assert [(d.chain.name, d.criterion, d.matched) for d in dropped] == [
        ("exact", "server_names", False)
    ]


def test_subject_is_rfc4514_most_specific_first():
    cert = {"subject": ((("organizationName", "Example"),), (("commonName", "client-1"),))}
    assert format_subject(cert) == "CN=client-1,O=Example"
    assert format_subject({}) is None


def tls_config(cert: str, key: str, extra: str = "") -> str:
    return f"""
[listeners.edge]
address = "127.0.0.1:0"
[[listeners.edge.filter_chains]]
tls = {{ certificates = [{{ certificate_chain = "{cert}", private_key = "{key}" }}] {extra}}}
filters = [{{ type = "tcp_proxy", cluster = "c" }}]
[clusters.c]
endpoints = ["127.0.0.1:1"]
"""


def errors_of(toml: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads_config(toml)
    return caught.value.errors


def test_certificate_errors_name_the_key_at_fault(tmp_path):
    pki = Pki(tmp_path)
    one, other = pki.issue("a.example.com"), pki.issue("b.example.com")
    where = "listeners.edge.filter_chains[0].tls"
    missing = str(tmp_path / "missing.pem")
    assert errors_of(tls_config(missing, one.private_key)) == [
        f"{where}.certificates[0].certificate_chain: cannot read {missing}: "
        "No such file or directory"
    ]
    assert errors_of(tls_config(one.certificate_chain, other.private_key)) == [
        f"{where}.certificates[0].private_key: {other.private_key} does not match the "
        f"certificate in {one.certificate_chain}"
    ]
    assert errors_of(tls_config(one.private_key, one.private_key)) == [
        f"{where}.certificates[0].certificate_chain: no PEM certificate in {one.private_key}"
    ]
    assert errors_of(
        tls_config(one.certificate_chain, one.private_key, ", require_client_certificate = true")
    ) == [f"{where}.require_client_certificate: needs trusted_ca"]
    loads_config(tls_config(one.certificate_chain, one.private_key))  # and a good one loads


def test_chain_rules():
    toml = """
[listeners.edge]
address = "127.0.0.1:0"
virtual_hosts = ["v"]
[[listeners.edge.filter_chains]]
filter_chain_match = { server_names = ["a.*.com"] }
filters = [{ type = "tcp_proxy", cluster = "nope" }, { type = "connection_limit", max_connections = 1 }]
[[listeners.edge.filter_chains]]
filters = [{ type = "http_connection_manager", virtual_hosts = ["missing"] }]
[[listeners.edge.filter_chains]]
filters = [{ type = "tcp_proxy", cluster = "c" }]
[virtual_hosts.v]
domains = ["*"]
[clusters.c]
endpoints = ["127.0.0.1:1"]
[clusters.c.tls]
trusted_ca = "/nonexistent/ca.pem"
"""  # noqa: E501
    assert errors_of(toml) == [
        "listeners.edge: with filter_chains, HTTP settings belong in each chain's "
        "http_connection_manager filter, got virtual_hosts",
        "listeners.edge.filter_chains[0].filters[0]: tcp_proxy must be the chain's last filter",
        "listeners.edge.filter_chains[0].filters[0].cluster: no cluster named 'nope'",
        "listeners.edge.filter_chains[0].filters[1]: the last filter must be "
        "http_connection_manager or tcp_proxy, got connection_limit",
        "listeners.edge.filter_chains[0].filter_chain_match.server_names[0]: 'a.*.com' must "
        "be a name or '*.suffix'",
        "listeners.edge.filter_chains[1].filters[0].virtual_hosts[0]: no virtual host named "
        "'missing'",
        "listeners.edge.filter_chains[2].filter_chain_match: the same as filter_chains[1]'s",
        "clusters.c.tls.trusted_ca: cannot read /nonexistent/ca.pem: No such file or directory",
    ]
