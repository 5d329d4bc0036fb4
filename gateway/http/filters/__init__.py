"""Built-in HTTP filters, by their `type` name in `[http_filters.NAME]`.

Each module holds three parts, as Envoy's extensions do: a frozen attrs config class, the
filter class, and a factory that turns the config into a per-stream filter factory.
"""

from gateway.http.filter import HttpFilterType
from gateway.http.filters import header_mutation, python

FILTER_TYPES: dict[str, HttpFilterType] = {
    t.name: t for t in (header_mutation.FILTER_TYPE, python.FILTER_TYPE)
}
