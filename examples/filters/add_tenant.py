"""AddTenant: maps the Host's first label to a tenant id, for the upstream and the client.

    [http_filters.tenant]
    type = "python"
    module = "examples/filters/add_tenant.py:AddTenant"
    config = { header = "x-tenant", tenants = { acme = "t-001", globex = "t-002" } }

A request for acme.example.com goes upstream with `x-tenant: t-001`, and the response
carries the same header back. An unknown tenant is answered here with 404: the upstream
never sees it.
"""

from typing import Any

from gateway import HttpFilter, LocalReply, RequestHead, ResponseHead, StreamInfo


class AddTenant(HttpFilter):
    def __init__(self, config: dict[str, Any], info: StreamInfo) -> None:
        self.header: str = config.get("header", "x-tenant")
        self.tenants: dict[str, str] = config.get("tenants", {})
        self.tenant: str | None = None

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        label = request.authority.split(":")[0].split(".")[0].lower()
        self.tenant = self.tenants.get(label)
        if self.tenant is None:
            return LocalReply(404, f"unknown tenant {label!r}")
        request.headers.set(self.header, self.tenant)
        return None

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        if self.tenant is not None:
            response.headers.set(self.header, self.tenant)
