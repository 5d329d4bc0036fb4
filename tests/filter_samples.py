"""Misbehaving Python filters for the tests: one that raises, one that hangs."""

from typing import Any

import trio

from gateway import HttpFilter, LocalReply, RequestHead, StreamInfo

CANCELLED = trio.Event()


class Boom(HttpFilter):
    def __init__(self, config: dict[str, Any], info: StreamInfo) -> None:
        self.path = config["path"]

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        if request.path.startswith(self.path):
            raise RuntimeError("the filter's own bug")
        return None


class Hang(HttpFilter):
    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        if request.path.startswith("/hang-in-filter"):
            try:
                await trio.sleep_forever()
            finally:
                CANCELLED.set()
        return None
