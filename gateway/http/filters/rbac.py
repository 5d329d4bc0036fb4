"""`rbac`: allow or deny requests by who sends them and what they ask for.

```toml
[http_filters.internal_only]
type = "rbac"
action = "allow"              # "allow": only matching requests pass; "deny": they are refused
[[http_filters.internal_only.rules]]
source_cidrs = ["127.0.0.0/8", "10.0.0.0/8"]
[[http_filters.internal_only.rules]]
methods = ["GET"]
path_prefixes = ["/public/"]
headers = [{ name = "x-role", exact = "admin" }]
```

A rule matches when every condition it sets matches (source CIDR, method, path prefix,
headers); the policy matches when any rule does. Refused requests get 403 (gRPC:
PERMISSION_DENIED) and count in `denied`; the rest count in `allowed`.
"""

import ipaddress
from typing import Literal

import attrs

from gateway.config.model import HeaderMatcher
from gateway.config.regex import Regex, compile_optional
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import LocalReply, RequestHead
from gateway.router.route_table import header_matches

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _check_cidrs(instance: object, attribute: object, value: list[str]) -> None:
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ValueError(f"'source_cidrs' must hold CIDRs: {exc}") from None


def _check_matchers(instance: object, attribute: object, value: list[HeaderMatcher]) -> None:
    for matcher in value:
        kinds = [
            k
            for k in ("exact", "prefix", "suffix", "contains", "regex", "present")
            if getattr(matcher, k) is not None
        ]
        if len(kinds) > 1:
            raise ValueError(f"'headers' must set one match kind each, got {kinds}")


@attrs.frozen
class RbacRule:
    source_cidrs: list[str] = attrs.field(factory=list, validator=_check_cidrs)
    methods: list[str] = attrs.Factory(list)
    path_prefixes: list[str] = attrs.Factory(list)
    headers: list[HeaderMatcher] = attrs.field(factory=list, validator=_check_matchers)


@attrs.frozen
class RbacConfig:
    action: Literal["allow", "deny"]
    rules: list[RbacRule] = attrs.Factory(list)


@attrs.frozen
class _CompiledRule:
    rule: RbacRule
    networks: tuple[Network, ...]
    #: The header matchers' regexes, compiled once.
    header_regexes: tuple[Regex | None, ...]

    def matches(self, request: RequestHead, peer_ip: str) -> bool:
        rule = self.rule
        if self.networks:
            try:
                address = ipaddress.ip_address(peer_ip)
            except ValueError:
                return False
            if not any(address in n for n in self.networks):
                return False
        if rule.methods and request.method not in rule.methods:
            return False
        if rule.path_prefixes and not any(request.path.startswith(p) for p in rule.path_prefixes):
            return False
        return all(
            header_matches(m, regex, request)
            for m, regex in zip(rule.headers, self.header_regexes, strict=True)
        )


class RbacFilter(HttpFilter):
    def __init__(
        self,
        config: RbacConfig,
        rules: tuple[_CompiledRule, ...],
        counters: tuple[Counter, Counter],
        info: StreamInfo,
    ) -> None:
        self._config = config
        self._rules = rules
        self._allowed, self._denied = counters
        self._info = info

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        peer_ip = self._info.downstream_ip
        matched = any(rule.matches(request, peer_ip) for rule in self._rules)
        if matched == (self._config.action == "allow"):
            self._allowed.inc()
            return None
        self._denied.inc()
        return LocalReply(403, "RBAC: access denied")


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, RbacConfig)
    rules = tuple(
        _CompiledRule(
            r,
            tuple(ipaddress.ip_network(c, strict=False) for c in r.source_cidrs),
            tuple(compile_optional(m.regex) for m in r.headers),
        )
        for r in config.rules
    )
    counters = (context.scope.counter("allowed"), context.scope.counter("denied"))

    def factory(info: StreamInfo) -> HttpFilter:
        return RbacFilter(config, rules, counters, info)

    return factory


FILTER_TYPE = HttpFilterType(
    "rbac",
    RbacConfig,
    create_factory,
    stats={
        "allowed": "requests the policy let through",
        "denied": "requests refused with 403",
    },
)
