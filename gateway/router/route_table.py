"""The route table: virtual host by Host, then the first route that matches. Pure; no I/O.

Virtual hosts are chosen as Envoy does: an exact domain wins, then the longest `*.suffix`,
then the longest `prefix*`, then `*`. Matching ignores case and a `:port` in the Host.
Routes are tried in their configured order; the first match wins.

/explain (gateway/admin/explain.py) asks the same table the same questions, and two
answers more: the domain pattern that chose the virtual host (`domain_match`, the lookup
the data path runs too) and why a route did not match (`RouteEntry.mismatch`, the twin of
`matches`: the hot path keeps its bare booleans, and a test holds the twins to the same
verdicts).
"""

import random
from urllib.parse import parse_qsl

import attrs

from gateway.config.model import (
    FilterOverride,
    GatewayConfig,
    HeaderMatcher,
    HeaderMutations,
    QueryParameterMatcher,
    Route,
)
from gateway.config.model import VirtualHost as VirtualHostConfig
from gateway.config.regex import Regex, compile_optional, compile_regex
from gateway.config.validate import http_connection_managers
from gateway.protocol.grpc import is_grpc_request
from gateway.protocol.headers import HeaderMap, RequestHead


def header_matches(m: HeaderMatcher, regex: Regex | None, req: RequestHead) -> bool:
    """One header matcher against a request; `regex` is `m.regex` compiled."""
    values = req.headers.get_all(m.name)
    value = ",".join(values) if values else None
    if m.present is not None:
        result = (value is not None) == m.present
    elif value is None:
        result = False
    elif m.exact is not None:
        result = value == m.exact
    elif m.prefix is not None:
        result = value.startswith(m.prefix)
    elif m.suffix is not None:
        result = value.endswith(m.suffix)
    elif m.contains is not None:
        result = m.contains in value
    elif regex is not None:
        result = regex.fullmatch(value)
    else:  # no match kind: presence
        result = True
    return result != m.invert_match


def _header_value(req: RequestHead, name: str) -> str | None:
    values = req.headers.get_all(name)
    return ",".join(values) if values else None


def _header_mismatch(m: HeaderMatcher, regex: Regex | None, req: RequestHead) -> str | None:
    """Why one header matcher fails on a request, or None if it matches."""
    if header_matches(m, regex, req):
        return None
    value = _header_value(req, m.name)
    seen = "absent" if value is None else f"{value!r}"
    if m.present is not None:
        wanted = "present" if m.present else "absent"
    else:
        kinds = {"exact": m.exact, "prefix": m.prefix, "suffix": m.suffix}
        kinds.update(contains=m.contains, regex=m.regex)
        wanted = next((f"{k} {v!r}" for k, v in kinds.items() if v is not None), "present")
    inverted = "not " if m.invert_match else ""
    return f"header {m.name!r} must be {inverted}{wanted}: it is {seen}"


def mutate_request(headers: HeaderMap, mutations: HeaderMutations) -> None:
    """A virtual host's, route's or header_mutation filter's request header changes."""
    if mutations.request_headers_to_add or mutations.request_headers_to_remove:
        headers.apply(mutations.request_headers_to_add, mutations.request_headers_to_remove)


def mutate_response(headers: HeaderMap, mutations: HeaderMutations) -> None:
    """A virtual host's, route's or header_mutation filter's response header changes."""
    if mutations.response_headers_to_add or mutations.response_headers_to_remove:
        headers.apply(mutations.response_headers_to_add, mutations.response_headers_to_remove)


def _query_matches(m: QueryParameterMatcher, regex: Regex | None, params: dict[str, str]) -> bool:
    value = params.get(m.name)
    if m.present is not None:
        return (value is not None) == m.present
    if value is None:
        return False
    if m.exact is not None:
        return value == m.exact
    if regex is not None:
        return regex.fullmatch(value)
    return True


def _query_mismatch(
    m: QueryParameterMatcher, regex: Regex | None, params: dict[str, str]
) -> str | None:
    """Why one query parameter matcher fails, or None if it matches."""
    if _query_matches(m, regex, params):
        return None
    value = params.get(m.name)
    seen = "absent" if value is None else f"{value!r}"
    if m.present is not None:
        wanted = "present" if m.present else "absent"
    elif m.exact is not None:
        wanted = f"exact {m.exact!r}"
    elif m.regex is not None:
        wanted = f"regex {m.regex!r}"
    else:
        wanted = "present"
    return f"query parameter {m.name!r} must be {wanted}: it is {seen}"


@attrs.frozen
class RouteEntry:
    """A compiled route: its config, a name for logs ("vhost/index"), and its matchers."""

    name: str
    config: Route
    virtual_host: VirtualHostConfig
    _path_regex: Regex | None
    _header_regexes: tuple[Regex | None, ...]
    _query_regexes: tuple[Regex | None, ...]

    @classmethod
    def compile(cls, name: str, route: Route, vhost: VirtualHostConfig) -> "RouteEntry":
        match = route.match
        path_regex = None
        if match.regex is not None:
            path_regex = compile_regex(match.regex, ignore_case=not match.case_sensitive)
        headers = tuple(compile_optional(h.regex) for h in match.headers)
        query = tuple(compile_optional(q.regex) for q in match.query_parameters)
        return cls(name, route, vhost, path_regex, headers, query)

    def matches(self, req: RequestHead) -> bool:
        match = self.config.match
        if (req.method == "CONNECT" and req.upgrade is None) != match.connect_matcher:
            return False  # CONNECT meets connect_matcher routes only, and they nothing else
        path = req.path_only
        if path == "*":  # OPTIONS * asks about the server as a whole: routed as its root
            path = "/"
        if match.connect_matcher:
            ok = True
        elif match.prefix is not None:
            if match.case_sensitive:
                ok = path.startswith(match.prefix)
            else:
                ok = path.lower().startswith(match.prefix.lower())
        elif match.path is not None:
            ok = path == match.path if match.case_sensitive else path.lower() == match.path.lower()
        else:
            assert self._path_regex is not None
            ok = self._path_regex.fullmatch(path)
        if not ok:
            return False
        if match.grpc and not is_grpc_request(req):
            return False
        for m, regex in zip(match.headers, self._header_regexes, strict=True):
            if not header_matches(m, regex, req):
                return False
        if match.query_parameters:
            params = dict(parse_qsl(req.query, keep_blank_values=True))
            for q, regex in zip(match.query_parameters, self._query_regexes, strict=True):
                if not _query_matches(q, regex, params):
                    return False
        return True

    def choose_cluster(self) -> str | None:
        """The cluster a request on this route goes to: its `cluster`, or one of its
        `weighted_clusters` picked by weight (a fresh pick per call); None for redirects and
        direct responses."""
        route = self.config
        if route.weighted_clusters is None:
            return route.cluster
        weights = [w.weight for w in route.weighted_clusters]
        return random.choices(route.weighted_clusters, weights)[0].name

    def mismatch(self, req: RequestHead) -> str | None:
        """Why this route does not match `req`: the first condition that fails, in the
        order `matches` tests them; None if it matches. For /explain only: `matches` stays
        the data path's bare boolean, and this asks it for the method and path verdict (on
        a twin of the route without its other conditions), and the same header, query and
        gRPC checks for the rest."""
        match = self.config.match
        bare = attrs.evolve(match, grpc=False, headers=[], query_parameters=[])
        if not RouteEntry.compile(
            self.name, attrs.evolve(self.config, match=bare), self.virtual_host
        ).matches(req):
            if match.connect_matcher:
                return f"connect_matcher: only CONNECT requests match, not {req.method}"
            if req.method == "CONNECT" and req.upgrade is None:
                return "CONNECT requests match connect_matcher routes only"
            path, case = req.path_only, "" if match.case_sensitive else " (ignoring case)"
            if match.prefix is not None:
                return f"path {path!r} does not start with prefix {match.prefix!r}{case}"
            if match.path is not None:
                return f"path {path!r} is not {match.path!r}{case}"
            return f"path {path!r} does not match regex {match.regex!r}{case}"
        if match.grpc and not is_grpc_request(req):
            content_type = req.headers.get("content-type")
            return f"grpc: only gRPC requests match (content-type is {content_type!r})"
        for m, regex in zip(match.headers, self._header_regexes, strict=True):
            if (why := _header_mismatch(m, regex, req)) is not None:
                return why
        if match.query_parameters:
            params = dict(parse_qsl(req.query, keep_blank_values=True))
            for q, regex in zip(match.query_parameters, self._query_regexes, strict=True):
                if (why := _query_mismatch(q, regex, params)) is not None:
                    return why
        return None

    def filter_override(self, name: str) -> tuple[FilterOverride, str] | None:
        """The route's say on listener filter `name`, else its virtual host's, with which of
        them said it ("route" or "virtual_host"); None if neither overrides it."""
        if (override := self.config.http_filters.get(name)) is not None:
            return override, "route"
        if (override := self.virtual_host.http_filters.get(name)) is not None:
            return override, "virtual_host"
        return None


@attrs.frozen
class VirtualHostEntry:
    name: str
    config: VirtualHostConfig
    routes: tuple[RouteEntry, ...]


@attrs.frozen
class DomainMatch:
    """A domain pattern of a virtual host, as the table indexes it: what a lookup finds, so
    /explain can say which pattern chose the virtual host at no cost to the data path."""

    #: As configured, lower-cased ("api.example.com", "*.example.com", "api.*", "*").
    pattern: str
    #: "exact", "suffix", "prefix" or "default".
    kind: str
    virtual_host: VirtualHostEntry


class RouteTable:
    """The virtual hosts of one listener, indexed for Envoy's domain-match order."""

    def __init__(self, vhost_names: list[str], config: GatewayConfig) -> None:
        self._exact: dict[str, DomainMatch] = {}
        self._suffixes: list[tuple[str, DomainMatch]] = []
        self._prefixes: list[tuple[str, DomainMatch]] = []
        self._default: DomainMatch | None = None
        for vname in vhost_names:
            vconf = config.virtual_hosts[vname]
            routes = tuple(
                RouteEntry.compile(f"{vname}/{i}", r, vconf) for i, r in enumerate(vconf.routes)
            )
            entry = VirtualHostEntry(vname, vconf, routes)
            for domain in (d.lower() for d in vconf.domains):
                if domain == "*":
                    self._default = self._default or DomainMatch(domain, "default", entry)
                elif domain.startswith("*"):
                    self._suffixes.append((domain[1:], DomainMatch(domain, "suffix", entry)))
                elif domain.endswith("*"):
                    self._prefixes.append((domain[:-1], DomainMatch(domain, "prefix", entry)))
                else:
                    self._exact.setdefault(domain, DomainMatch(domain, "exact", entry))
        # Longest wildcard first, as Envoy does; stable sort keeps config order for ties.
        self._suffixes.sort(key=lambda p: -len(p[0]))
        self._prefixes.sort(key=lambda p: -len(p[0]))

    def entries(self) -> list[RouteEntry]:
        """Every route of every virtual host (each once)."""
        found = [*self._exact.values(), *([self._default] if self._default else [])]
        found += [m for _, m in (*self._suffixes, *self._prefixes)]
        vhosts = {id(m.virtual_host): m.virtual_host for m in found}
        return [route for vhost in vhosts.values() for route in vhost.routes]

    def domain_match(self, authority: str) -> DomainMatch | None:
        """The domain pattern (and so the virtual host) that `authority` meets, or None."""
        host = authority.lower()
        if (found := self._exact.get(host)) is not None:
            return found
        if not host.endswith("]") and ":" in host:  # strip a port, but not from "[::1]"
            host = host.rpartition(":")[0]
            if (found := self._exact.get(host)) is not None:
                return found
        for suffix, found in self._suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                return found
        for prefix, found in self._prefixes:
            if host.startswith(prefix) and len(host) > len(prefix):
                return found
        return self._default

    def virtual_host(self, authority: str) -> VirtualHostEntry | None:
        found = self.domain_match(authority)
        return found.virtual_host if found is not None else None

    def route(self, req: RequestHead) -> RouteEntry | None:
        """The first matching route of the request's virtual host, or None (404)."""
        found = self.domain_match(req.authority)
        if found is None:
            return None
        for route in found.virtual_host.routes:
            if route.matches(req):
                return route
        return None


#: Route tables of one config by virtual host list, built ahead of the listeners.
RouteTables = dict[tuple[str, ...], RouteTable]


def build_route_tables(config: GatewayConfig) -> RouteTables:
    """Every route table the connection managers of `config` use. Pure and CPU-heavy for
    big configs (a route's regexes compile here), so a reload runs it in a worker thread
    and the event loop only takes the tables."""
    tables: RouteTables = {}
    for hcm in http_connection_managers(config):
        names = tuple(hcm.virtual_hosts)
        if names not in tables:
            tables[names] = RouteTable(list(names), config)
    return tables
