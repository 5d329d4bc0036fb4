"""Access logs: one line per request, in Envoy's default format or as JSON.

Lines are buffered and flushed by a background task every `flush_interval` (Envoy flushes
its access log buffers on a timer too), so logging costs the data path a string format and
a buffered write, never a syscall per request. A `flush_interval` of "0s" flushes each line.
"""

import json
import sys
import time
from typing import TextIO

import trio

from gateway.config.model import AccessLog as AccessLogConfig
from gateway.http.stream_info import StreamInfo


def _iso(ts: float) -> str:
    ms = int(ts * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{ms:03d}Z"


def format_envoy(info: StreamInfo) -> str:
    """Envoy's default format: start time, request line, status, flags, bytes, durations,
    x-forwarded-for, user-agent, x-request-id, authority, upstream host."""
    service_time = "-" if info.upstream_service_time_ms is None else info.upstream_service_time_ms
    return (
        f'[{_iso(info.start_time)}] "{info.method} {info.path} {info.protocol}" '
        f"{info.response_code} {info.flags_text} {info.bytes_received} {info.bytes_sent} "
        f"{info.duration_ms()} {service_time} "
        f'"{info.forwarded_for}" "{info.user_agent}" "{info.request_id}" '
        f'"{info.authority}" "{info.upstream_host}"\n'
    )


def format_json(info: StreamInfo) -> str:
    return (
        json.dumps(
            {
                "start_time": _iso(info.start_time),
                "method": info.method,
                "path": info.path,
                "protocol": info.protocol,
                "response_code": info.response_code,
                "response_flags": info.flags_text,
                "bytes_received": info.bytes_received,
                "bytes_sent": info.bytes_sent,
                "duration": info.duration_ms(),
                "upstream_service_time": info.upstream_service_time_ms,
                "x_forwarded_for": info.forwarded_for,
                "user_agent": info.user_agent,
                "request_id": info.request_id,
                "authority": info.authority,
                "upstream_host": info.upstream_host,
                "upstream_cluster": info.cluster_name,
                "route_name": info.route_name,
                "downstream_remote_address": info.downstream_remote,
            },
            separators=(",", ":"),
        )
        + "\n"
    )


class AccessLogger:
    def __init__(self, config: AccessLogConfig) -> None:
        self._config = config
        self._format = format_json if config.format == "json" else format_envoy
        self._file: TextIO = (
            sys.stdout if config.path == "-" else open(config.path, "a", encoding="utf-8")  # noqa: SIM115
        )
        self._flush_each = config.flush_interval <= 0

    def log(self, info: StreamInfo) -> None:
        self._file.write(self._format(info))
        if self._flush_each:
            self._file.flush()

    async def run_flusher(self) -> None:
        """Flushes buffered lines periodically, until cancelled; then flushes and closes."""
        try:
            while True:
                await trio.sleep(self._config.flush_interval if not self._flush_each else 3600)
                self._file.flush()
        finally:
            self._file.flush()
            if self._file is not sys.stdout:
                self._file.close()
