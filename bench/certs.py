"""The certificate the TLS and QUIC benchmarks terminate with: a trustme CA, made at run time,
and a leaf for localhost and 127.0.0.1."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class CertFiles:
    cert: Path  # the leaf's chain, PEM
    key: Path  # its private key, PEM
    ca: Path  # the CA that signed it, for clients that verify


def make_cert(tmp: Path) -> CertFiles:
    """Writes cert.pem, key.pem and ca.pem into `tmp`."""
    # Imported here: only the sections that terminate TLS need trustme (cli.py checks it).
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    files = CertFiles(tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem")
    files.cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files
