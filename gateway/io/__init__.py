"""I/O helpers for the data path: sockets with fewer scheduler trips (fast_io), a TLS stream
that keeps its socket in reach (tls_stream), the tunnel pumps, and small Trio helpers."""
