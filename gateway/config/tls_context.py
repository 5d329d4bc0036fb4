"""SSLContexts built from config, for both sides: listeners terminate TLS with server
contexts, clusters originate it with client contexts.

Safe defaults, not knobs: TLS 1.2 or newer, forward-secret AEAD ciphers only for TLS 1.2
(TLS 1.3's suites are all of that kind), no compression, no renegotiation. A file that is
missing, not a regular file of a sane size (`gateway.config.files`), malformed, or does
not belong with its pair is a `ConfigError` naming the TOML path of the key at fault, so
`gateway validate` reports it like any other mistake.
"""

import ssl
from typing import Literal

from gateway.config.files import MAX_PEM_BYTES, UnreadableFile, check_file
from gateway.config.model import DownstreamTlsContext, TlsCertificate, UpstreamTlsContext
from gateway.errors import ConfigError

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
#: TLS 1.2 suites with forward secrecy and AEAD (Mozilla's "intermediate" set).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _base_context(purpose: int, min_version: Literal["TLSv1.2", "TLSv1.3"]) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = _VERSIONS[min_version]
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _readable(path: str, where: str) -> None:
    try:
        check_file(path, MAX_PEM_BYTES)
    except UnreadableFile as exc:
        raise ConfigError([f"{where}: {exc}"]) from None


def _has_certificates(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        return False
    return True


def load_certificate(context: ssl.SSLContext, cert: TlsCertificate, where: str) -> None:
    """Loads a certificate chain and its key into `context`; raises ConfigError naming
    `where.certificate_chain` or `where.private_key`, whichever is at fault."""
    _readable(cert.certificate_chain, f"{where}.certificate_chain")
    _readable(cert.private_key, f"{where}.private_key")
    try:
        context.load_cert_chain(cert.certificate_chain, cert.private_key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            message = (
                f"{where}.private_key: {cert.private_key} does not match the certificate "
                f"in {cert.certificate_chain}"
            )
        elif not _has_certificates(cert.certificate_chain):
            message = f"{where}.certificate_chain: no PEM certificate in {cert.certificate_chain}"
        else:
            message = f"{where}.private_key: no usable PEM private key in {cert.private_key}"
        raise ConfigError([message]) from None


def _load_ca(context: ssl.SSLContext, path: str, where: str) -> None:
    _readable(path, where)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigError([f"{where}: no PEM certificate in {path}"]) from None


def server_context(tls: DownstreamTlsContext, index: int, where: str) -> ssl.SSLContext:
    """The server context for `tls.certificates[index]` (`where` is the `tls` table)."""
    context = _base_context(ssl.PROTOCOL_TLS_SERVER, tls.min_protocol_version)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    load_certificate(context, tls.certificates[index], f"{where}.certificates[{index}]")
    if tls.alpn_protocols:
        context.set_alpn_protocols(tls.alpn_protocols)
    if tls.trusted_ca is not None:
        _load_ca(context, tls.trusted_ca, f"{where}.trusted_ca")
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        )
    return context


def client_context(tls: UpstreamTlsContext, alpn: list[str], where: str) -> ssl.SSLContext:
    """The client context of a cluster (`where` is its `tls` table)."""
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT, tls.min_protocol_version)
    if not tls.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.trusted_ca is not None:
        _load_ca(context, tls.trusted_ca, f"{where}.trusted_ca")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.certificate is not None:
        load_certificate(context, tls.certificate, f"{where}.certificate")
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def check_downstream(tls: DownstreamTlsContext, where: str) -> list[str]:
    """Every problem with a listener's TLS files, for `gateway validate`."""
    errors = []
    for index in range(len(tls.certificates)):
        try:
            server_context(tls, index, where)
        except ConfigError as exc:
            errors += [e for e in exc.errors if e not in errors]
    return errors


def check_certificate(cert: TlsCertificate, where: str) -> list[str]:
    """Every problem with one certificate and key pair (a QUIC listener's, which QUIC's own
    TLS loads), for `gateway validate`."""
    try:
        load_certificate(_base_context(ssl.PROTOCOL_TLS_SERVER, "TLSv1.3"), cert, where)
    except ConfigError as exc:
        return exc.errors
    return []


def check_upstream(tls: UpstreamTlsContext, where: str) -> list[str]:
    try:
        client_context(tls, [], where)
    except ConfigError as exc:
        return exc.errors
    return []
