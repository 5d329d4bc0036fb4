"""Built-in HTTP filters, by their `type` name in `[http_filters.NAME]`.

Each module holds three parts, as Envoy's extensions do: a frozen attrs config class, the
filter class, and a factory that turns the config into a per-stream filter factory.
"""

import importlib

from gateway.http.filter import HttpFilterType

_MODULES = (
    "buffer",
    "compressor",
    "cors",
    "ext_authz",
    "fault",
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
