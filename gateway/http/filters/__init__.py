"""Built-in HTTP filters, by their `type` name in `[http_filters.NAME]`.

Each module holds three parts, as Envoy's extensions do: a frozen attrs config class, the
filter class, and a factory that turns the config into a per-stream filter factory.
"""

import importlib
from collections import defaultdict

from gateway.http.filter import HttpFilterType
from gateway.observability.stats import describe

_MODULES = (
    "buffer",
    "compressor",
    "cors",
    "ext_authz",
    "fault",
    "grpc_json_transcoder",
    "grpc_stats",
    "grpc_web",
    "header_mutation",
    "health_check",
    "jwt_authn",
    "local_ratelimit",
    "python",
    "ratelimit",
    "rbac",
)

FILTER_TYPES: dict[str, HttpFilterType] = {
    module.FILTER_TYPE.name: module.FILTER_TYPE
    for module in (importlib.import_module(f"{__name__}.{name}") for name in _MODULES)
}


def _describe_filter_stats() -> None:
    """Filters of every type count in the one `http_filter` family per counter name (a
    label tells the filter), so a family's HELP says what it counts for each type."""
    meanings: dict[str, list[str]] = defaultdict(list)
    for filter_type in FILTER_TYPES.values():
        for stat, text in filter_type.stats.items():
            meanings[stat].append(f"{filter_type.name}: {text}")
    describe("http_filter", {stat: "; ".join(texts) + "." for stat, texts in meanings.items()})


_describe_filter_stats()
