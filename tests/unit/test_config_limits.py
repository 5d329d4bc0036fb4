"""Every number the config takes is bounded, and every file it names is read safely: a
value the gateway cannot afford is an error with its TOML path, found fast."""

import os
import subprocess
import sys
import time

import pytest

from gateway import loads_config
from gateway.config.files import MAX_PEM_BYTES, UnreadableFile, read_file
from tests.tls_helpers import Pki
from tests.unit.test_config import VALID, errors_of

#: The maglev table size that made `gateway validate` and POST /reload hang.
HUGE = 2**61 - 1


def test_maglev_table_size_is_bounded_and_checked_fast():
    text = VALID.replace('protocol = "http1"', f"lb_policy = 'maglev'\nmaglev.table_size = {HUGE}")
    start = time.perf_counter()
    assert errors_of(text) == [
        f"clusters.api.maglev.table_size: must be from 7 to 65537, got {HUGE}"
    ]
    assert time.perf_counter() - start < 1
    not_prime = VALID.replace('protocol = "http1"', "maglev.table_size = 65535")
    assert errors_of(not_prime) == ["clusters.api.maglev.table_size: must be a prime, got 65535"]


def cluster_with(line: str) -> str:
    return VALID.replace('protocol = "http1"', line)


BOUNDS = [
    (
        cluster_with("ring_hash.minimum_ring_size = 8388608"),
        "clusters.api.ring_hash.minimum_ring_size: must be from 1 to 65536, got 8388608",
    ),
    (
        cluster_with("least_request.choice_count = 1000000"),
        "clusters.api.least_request.choice_count: must be from 2 to 100, got 1000000",
    ),
    (
        cluster_with("circuit_breakers.max_requests = 5000000000"),
        "clusters.api.circuit_breakers.max_requests: must be from 1 to 4294967295, got 5000000000",
    ),
    (
        cluster_with("max_response_headers_kb = 8193"),
        "clusters.api.max_response_headers_kb: must be from 1 to 8192, got 8193",
    ),
    (
        cluster_with("health_checks = [{ type = 'tcp', interval = '0.5ms' }]"),
        "clusters.api.health_checks[0].interval: must be at least 1ms, got 0.5ms",
    ),
    (
        cluster_with("dns_refresh_rate = '0s'"),
        "clusters.api.dns_refresh_rate: must be at least 1ms, got 0ms",
    ),
    (
        cluster_with("http2.keepalive_interval = '0.1ms'"),
        'clusters.api.http2.keepalive_interval: must be at least 1ms (or "0s": never), got 0.1ms',
    ),
    (
        cluster_with("http2.max_concurrent_streams = 2147483648"),
        "clusters.api.http2.max_concurrent_streams: must be from 1 to 2147483647, got 2147483648",
    ),
    (
        cluster_with("healthy_panic_threshold = nan"),
        "clusters.api.healthy_panic_threshold: expected a finite number, got nan",
    ),
    (
        cluster_with("pool_timeout = '" + "9" * 400 + "s'"),
        "clusters.api.pool_timeout: expected a duration of at most 8760h (a year), "
        f"got '{'9' * 400}s'",
    ),
    (
        VALID.replace('timeout = "15s"', 'timeout = "9000h"'),
        "virtual_hosts.api.routes[0].timeout: expected a duration of at most 8760h "
        "(a year), got '9000h'",
    ),
    (
        VALID.replace("[admin]", "[server]\nworkers = 100000\n[admin]"),
        "server.workers: expected a number of workers (1 to 1024) or 'auto', got 100000",
    ),
    (
        VALID.replace(
            "[admin]",
            "[server]\nhistogram_buckets = [{ match = 'x', buckets = ["
            + ", ".join(str(b) for b in range(1, 1002))
            + "] }]\n[admin]",
        ),
        "server.histogram_buckets[0].buckets: must be at most 100, got 1001",
    ),
    (
        VALID.replace(
            '"x-gateway" = "1" }',
            '"x-gateway" = "1" }\n[http_filters.rate]\n'
            "type = 'local_ratelimit'\nmax_tokens = 1\nfill_interval = '1ms'",
        ),
        "http_filters.rate.fill_interval: must be at least 50ms, got 1ms",
    ),
    (
        VALID.replace(
            'direct_response = { status = 200, body = "ok" }',
            "redirect = { port_redirect = 70000 }",
        ),
        "virtual_hosts.api.routes[1].redirect.port_redirect: must be from 1 to 65535, got 70000",
    ),
    (
        VALID.replace(
            'timeout = "15s"',
            "retry_policy = { retry_on = ['5xx'], num_retries = 10000000000 }",
        ),
        "virtual_hosts.api.routes[0].retry_policy.num_retries: must be from 0 to "
        "4294967295, got 10000000000",
    ),
]


@pytest.mark.parametrize(
    ("toml", "error"), BOUNDS, ids=[error.partition(":")[0] for _, error in BOUNDS]
)
def test_numbers_are_bounded(toml, error):
    assert errors_of(toml) == [error]


def tls_listener(cert: str, key: str) -> str:
    return VALID + (
        "[listeners.tls]\naddress = '127.0.0.1:0'\n[[listeners.tls.filter_chains]]\n"
        f'tls = {{ certificates = [{{ certificate_chain = "{cert}", private_key = "{key}" }}] }}'
        "\nfilters = [{ type = 'tcp_proxy', cluster = 'api' }]\n"
    )


def test_certificate_paths_that_are_not_files_are_config_errors(tmp_path):
    pki = Pki(tmp_path)
    good = pki.issue("a.example.com")
    where = "listeners.tls.filter_chains[0].tls.certificates[0]"
    big = tmp_path / "big.pem"
    big.write_bytes(b"-" * (MAX_PEM_BYTES + 1))
    cases = {
        "/proc/self/status": "/proc/self/status: /proc/",
        "/dev/zero": "/dev/zero: /dev/zero is a kernel or device file, not a file on disk",
        str(tmp_path): f"{tmp_path}: not a regular file (a directory, FIFO, socket or device)",
        str(big): f"{big}: {MAX_PEM_BYTES + 1} bytes, more than the limit of {MAX_PEM_BYTES}",
    }
    for path, reason in cases.items():
        (error,) = errors_of(tls_listener(path, good.private_key))
        assert error.startswith(f"{where}.certificate_chain: cannot read {reason}"), error
    (error,) = errors_of(tls_listener(good.certificate_chain, str(tmp_path)))
    assert error.startswith(f"{where}.private_key: cannot read {tmp_path}: not a regular file")
    nul = tls_listener("/etc/ssl/cert\\u0000.pem", good.private_key)
    assert errors_of(nul) == [
        f"{where}.certificate_chain: cannot read '/etc/ssl/cert\\x00.pem': the path contains "
        "a NUL byte"
    ]
    upstream = VALID.replace('protocol = "http1"', f"tls = {{ trusted_ca = '{tmp_path}' }}")
    (error,) = errors_of(upstream)
    assert error == (
        f"clusters.api.tls.trusted_ca: cannot read {tmp_path}: not a regular file (a "
        "directory, FIFO, socket or device)"
    )
    loads_config(tls_listener(good.certificate_chain, good.private_key))


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(UnreadableFile, match="not a regular file"):
        read_file(str(fifo), MAX_PEM_BYTES)
    assert time.perf_counter() - start < 1


def run_validate(path: os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    # A subprocess with a timeout: without the fixes these hang for good.
    command = [sys.executable, "-m", "gateway", "validate", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=20)


def test_gateway_validate_returns_fast_on_huge_numbers_and_fifos(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(
        VALID.replace('protocol = "http1"', f"lb_policy = 'maglev'\nmaglev.table_size = {HUGE}")
    )
    result = run_validate(config)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert f"clusters.api.maglev.table_size: must be from 7 to 65537, got {HUGE}" in (result.stderr)
    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    pki = Pki(tmp_path)
    config.write_text(tls_listener(str(fifo), pki.issue("a.example.com").private_key))
    result = run_validate(config)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert (
        f"listeners.tls.filter_chains[0].tls.certificates[0].certificate_chain: cannot read "
        f"{fifo}: not a regular file" in result.stderr
    )
    result = run_validate(fifo)  # the config file itself
    assert result.returncode == 1 and f"cannot read {fifo}: not a regular file" in result.stderr
