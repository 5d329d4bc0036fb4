"""I/O helpers for the data path: the byte-stream interface every connection is reached
through (byte_stream: plain TCP; tls_stream: TLS), sockets with fewer scheduler trips
(fast_io), the tunnel pumps, and small Trio helpers."""
