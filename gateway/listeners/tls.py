"""Downstream TLS termination for one filter chain.

Each certificate gets its own server context, built at listener start (a reload builds
new ones; connections already established keep the context they were accepted with). The
certificate is chosen before the handshake from the SNI the TLS inspector read out of the
ClientHello: an exact DNS name of a certificate wins, then a wildcard one, then the first
certificate, as Envoy does. The handshake runs under the chain's `handshake_timeout`; a
failure or timeout is counted and closes only that connection.
"""

import ssl

import attrs
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.config.files import MAX_PEM_BYTES, read_file
from gateway.config.model import DownstreamTlsContext
from gateway.config.tls_context import server_context
from gateway.io.byte_stream import ByteStream
from gateway.io.tls_stream import TlsStream
from gateway.listeners.network_filter import TlsInfo
from gateway.observability.stats import Counter, Scope, create_stats, describe

#: RFC 4514 short names for the subject attributes certificates commonly carry.
_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "emailAddress": "emailAddress",
}


@attrs.define
class SslStats:
    """Envoy's listener `ssl.*` stats."""

    handshake: Counter
    connection_error: Counter
    fail_verify_no_cert: Counter
    fail_verify_error: Counter
    no_certificate: Counter


describe(
    "listener.ssl",
    {
        "handshake": "TLS handshakes completed with clients.",
        "connection_error": "TLS handshakes with clients that failed.",
        "fail_verify_no_cert": "Clients that sent no certificate where one is required.",
        "fail_verify_error": "Client certificates that did not verify.",
        "no_certificate": "TLS connections without a client certificate.",
    },
)


class HandshakeFailed(Exception):
    """The TLS handshake failed; already counted."""


class HandshakeTimeout(HandshakeFailed):
    """The TLS handshake took longer than handshake_timeout; already counted."""


def _certificate_names(path: str) -> list[str]:
    """The DNS names a PEM certificate (the chain's first) is for: SANs, else its CN."""
    cert = x509.load_pem_x509_certificate(read_file(path, MAX_PEM_BYTES))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    else:
        names = san.value.get_values_for_type(x509.DNSName)
    return [n.lower() for n in names]


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def format_subject(cert: dict[str, object] | None) -> str | None:
    """A peer certificate's subject as RFC 4514 text, most specific part first."""
    if not cert or not isinstance(subject := cert.get("subject"), tuple):
        return None
    parts = [f"{_SHORT_NAMES.get(k, k)}={v}" for rdn in reversed(subject) for k, v in rdn]
    return ",".join(parts)


class TlsTerminator:
    def __init__(self, config: DownstreamTlsContext, where: str, scope: Scope) -> None:
        self.config = config
        self._certificates = [
            (server_context(config, i, where), _certificate_names(c.certificate_chain))
            for i, c in enumerate(config.certificates)
        ]
        self.stats = create_stats(SslStats, scope)

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context of the certificate for this SNI: exact name, wildcard, first."""
        return self._certificates[self.certificate_for(server_name)][0]

    def certificate_for(self, server_name: str | None) -> int:
        """The index in `certificates` of the one this SNI gets: exact name, wildcard,
        first."""
        if server_name:
            for wildcard in (False, True):
                for index, (_, names) in enumerate(self._certificates):
                    for pattern in names:
                        if pattern.startswith("*.") == wildcard and _name_matches(
                            pattern, server_name
                        ):
                            return index
        return 0

    def certificate_names(self, index: int) -> list[str]:
        """The DNS names of certificate `index` (its SANs, else its CN)."""
        return self._certificates[index][1]

    async def handshake(
        self, stream: ByteStream, server_name: str | None
    ) -> tuple[TlsStream, TlsInfo]:
        """The TLS session over `stream`; raises HandshakeFailed (counted) on failure or
        after handshake_timeout. The caller closes the socket either way."""
        tls = trio.SSLStream(
            stream, self.context_for(server_name), server_side=True, https_compatible=True
        )
        with trio.move_on_after(self.config.handshake_timeout):
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._count_failure(exc.__cause__)
                raise HandshakeFailed(str(exc.__cause__ or exc)) from exc
            peer = tls.getpeercert()
            info = TlsInfo(
                version=tls.version() or "-",
                cipher=(tls.cipher() or ("-",))[0],
                alpn=tls.selected_alpn_protocol(),
                peer_subject=format_subject(peer),
            )
            self.stats.handshake.inc()
            if self.config.trusted_ca is not None and not peer:
                self.stats.no_certificate.inc()
            return TlsStream(tls), info
        self.stats.connection_error.inc()
        raise HandshakeTimeout("TLS handshake timed out")

    def _count_failure(self, cause: BaseException | None) -> None:
        self.stats.connection_error.inc()
        reason = getattr(cause, "reason", None)
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            self.stats.fail_verify_no_cert.inc()
        elif reason in ("CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA"):
            self.stats.fail_verify_error.inc()
