"""Access logs: one line per request, in Envoy's default format, as JSON, or in a format
of Envoy command operators (access_log_format.py); a filter picks the requests.

Lines are buffered and flushed by a background task every `flush_interval` (Envoy flushes
its access log buffers on a timer too), so logging costs the data path a string format and
a buffered write, never a syscall per request. A `flush_interval` of "0s" flushes each line.
"""

import errno
import json
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import TextIO

import trio

from gateway.config.model import AccessLog as AccessLogConfig
from gateway.config.model import AccessLogFilter
from gateway.observability.access_log_format import (
    compile_format,
    compile_json,
    escape,
    format_time,
    render_text,
)
from gateway.observability.stream_info import StreamInfo


def format_envoy(info: StreamInfo) -> str:
    """Envoy's default format: start time, request line, status, flags, bytes, durations,
    x-forwarded-for, user-agent, x-request-id, authority, upstream host. What a peer sent
    is escaped, as in any text format."""
    service_time = "-" if info.upstream_service_time_ms is None else info.upstream_service_time_ms
    return (
        f'[{format_time(info.start_time)}] "{escape(info.method)} {escape(info.path)} '
        f'{info.protocol}" {info.response_code} {info.flags_text} {info.bytes_received} '
        f"{info.bytes_sent} {info.duration_ms()} {service_time} "
        f'"{escape(info.forwarded_for)}" "{escape(info.user_agent)}" '
        f'"{escape(info.request_id)}" "{escape(info.authority)}" "{info.upstream_host}"\n'
    )


def format_json(info: StreamInfo) -> str:
    return (
        json.dumps(
            {
                "start_time": format_time(info.start_time),
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


def _formatter(config: AccessLogConfig) -> Callable[[StreamInfo], str]:
    if config.text_format is not None:
        text = (
            config.text_format if config.text_format.endswith("\n") else config.text_format + "\n"
        )
        return partial(render_text, compile_format(text))
    if config.json_format is not None:
        return compile_json(config.json_format)
    return format_json if config.format == "json" else format_envoy


def accepts(log_filter: AccessLogFilter, info: StreamInfo) -> bool:
    """Whether the access log's filter lets this request's line through."""
    if log_filter.min_status_code is not None and info.response_code < log_filter.min_status_code:
        return False
    if log_filter.min_duration is not None and info.duration_ms() < log_filter.min_duration * 1000:
        return False
    return not log_filter.response_flags or any(
        f in info.response_flags for f in log_filter.response_flags
    )


def _open_log(path: str) -> TextIO:
    """Opens an access log file for appending. A FIFO nobody reads fails at once (ENXIO)
    instead of blocking the event loop in open() until a reader comes."""
    if "\0" in path:
        raise OSError(errno.EINVAL, "the path contains a NUL byte")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    os.set_blocking(fd, True)  # lines are written as before, whole
    return open(fd, "a", encoding="utf-8")


class AccessLogger:
    def __init__(self, config: AccessLogConfig) -> None:
        self._config = config
        self._format = _formatter(config)
        f = config.filter
        self._filtered = bool(f.min_status_code is not None or f.min_duration or f.response_flags)
        self._file: TextIO = sys.stdout if config.path == "-" else _open_log(config.path)
        self._flush_each = config.flush_interval <= 0

    def log(self, info: StreamInfo) -> None:
        if self._filtered and not accepts(self._config.filter, info):
            return
        self._file.write(self._format(info))
        if self._flush_each:
            self._file.flush()

    async def run_flusher(self) -> None:
        """Flushes buffered lines periodically, until cancelled. The owner closes the log
        once the last connection that could write to it is gone (`close()`): when the
        listener is cancelled, its connections' streams still log on their way out, after
        this task has been cancelled."""
        while True:
            await trio.sleep(self._config.flush_interval if not self._flush_each else 3600)
            self._file.flush()

    def close(self) -> None:
        """Flushes and closes the file (standard output stays open); again, nothing."""
        if self._file.closed:
            return
        self._file.flush()
        if self._file is not sys.stdout:
            self._file.close()
