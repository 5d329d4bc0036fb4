"""ApiKeyAuth: checks `x-api-key` with an (async) lookup, and counts request bytes.

    [http_filters.auth]
    type = "python"
    module = "examples/filters/api_key.py:ApiKeyAuth"
    config = { keys = { "k-123" = "billing-service" }, lookup_delay = "0.01" }

Requests without a known key get 401 and never reach the upstream. Known ones go upstream
with `x-api-client` naming the caller. The lookup is an `await` (here a sleep standing in
for a call to a key service): it runs in the stream's task, so a client that leaves cancels
it, and the route timeout bounds it. The body hook shows streaming: it sees each chunk once,
passes it on unchanged, and reports the total in a response trailer-like header for small
uploads (when the response head leaves after the body was read).
"""

from typing import Any

import trio

from gateway import HttpFilter, LocalReply, RequestHead, ResponseHead, StreamInfo


class ApiKeyAuth(HttpFilter):
    def __init__(self, config: dict[str, Any], info: StreamInfo) -> None:
        self.keys: dict[str, str] = config.get("keys", {})
        self.delay = float(config.get("lookup_delay", "0"))
        self.info = info
        self.body_bytes = 0

    async def _lookup(self, key: str) -> str | None:
        await trio.sleep(self.delay)  # an outside key service would be awaited here
        return self.keys.get(key)

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        key = request.headers.get("x-api-key")
        client = await self._lookup(key) if key else None
        if client is None:
            return LocalReply(401, "missing or unknown API key", {"www-authenticate": "ApiKey"})
        request.headers.remove("x-api-key")  # the upstream trusts x-api-client instead
        request.headers.set("x-api-client", client)
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        self.body_bytes += len(data)
        return data

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        response.headers.set("x-request-body-bytes", str(self.body_bytes))
