"""`python`: an HTTP filter written by the user as a plain async class.

```toml
[http_filters.tenant]
type = "python"
module = "my_filters:AddTenant"        # an importable module, or "path/to/file.py:AddTenant"
config = { header = "x-tenant" }       # handed to the class as a dict
```

The class subclasses `gateway.HttpFilter` and is instantiated once per stream as
`Class(config, info)`. Its hooks run in the stream's task, so whatever I/O they await is
cancelled with the stream when the client leaves, and the route timeout bounds them. A hook
that raises costs its request only: 500 (gRPC: INTERNAL), logged with the filter's name and
counted in `http.LISTENER.NAME.errors`.
"""

import functools
import importlib
import importlib.util
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

from gateway.errors import GatewayError
from gateway.http.filter import (
    HOOKS,
    FilterContext,
    HttpFilter,
    HttpFilterFactory,
    HttpFilterType,
    overrides,
)
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import LocalReply, RequestHead

log = logging.getLogger("gateway.filters")


class FilterFailed(GatewayError):
    status = 500
    response_flag = "-"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.body = f"http filter {name} failed"


def load_filter_class(spec: str) -> type[HttpFilter]:
    """'package.module:Class' or 'path/to/file.py:Class' -> the class; ValueError if not."""
    target, sep, class_name = spec.rpartition(":")
    if not sep or not target or not class_name:
        raise ValueError(f"expected 'module:Class' or 'file.py:Class', got {spec!r}")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            module_name = f"gateway_user_filter_{abs(hash(str(path)))}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as exc:  # the user's module: any error it raises is a config error
        raise ValueError(f"cannot import {target!r}: {exc!r}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, HttpFilter)):
        raise ValueError(f"{target!r} has no HttpFilter subclass named {class_name!r}")
    return cls


def _check_module(instance: object, attribute: object, value: str) -> None:
    try:
        load_filter_class(value)
    except ValueError as exc:
        raise ValueError(f"'module' must name an HttpFilter class: {exc}") from None


@attrs.frozen
class PythonFilterConfig:
    module: str = attrs.field(validator=_check_module)
    config: dict[str, Any] = attrs.Factory(dict)


Hook = Callable[..., Awaitable[Any]]


def _guard(method: Hook, name: str, errors: Counter) -> Hook:
    @functools.wraps(method)
    async def hook(self: HttpFilter, *args: Any) -> Any:
        try:
            return await method(self, *args)
        except GatewayError:
            raise  # the filter chose its answer (e.g. a timeout upstream of it)
        except Exception as exc:
            errors.inc()
            log.exception("http filter %s failed", name)
            raise FilterFailed(name) from exc

    return hook


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, PythonFilterConfig)
    user_class = load_filter_class(config.module)
    errors = context.scope.counter("errors")
    # A subclass that wraps only the hooks the user wrote, so the chain still skips the
    # others (a header-only filter costs nothing per body chunk). Typed by what it makes: the
    # constructor is the user's, taking (config, info) or nothing.
    guarded: Callable[..., HttpFilter] = type(
        user_class.__name__,
        (user_class,),
        {
            hook: _guard(getattr(user_class, hook), context.name, errors)
            for hook in HOOKS
            if overrides(user_class, hook)
        },
    )
    user_config = dict(config.config)
    takes_args = user_class.__init__ is not object.__init__

    def factory(info: StreamInfo) -> HttpFilter:
        try:
            return guarded(user_config, info) if takes_args else guarded()
        except Exception:
            errors.inc()
            log.exception("http filter %s failed to start", context.name)
            return _Failed(context.name)

    return factory


class _Failed(HttpFilter):
    """Stands in for a filter whose constructor raised: its stream gets the 500."""

    def __init__(self, name: str) -> None:
        self._name = name

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        raise FilterFailed(self._name)


FILTER_TYPE = HttpFilterType(
    "python",
    PythonFilterConfig,
    create_factory,
    stats={
        "errors": "requests a Python filter failed with 500",
    },
)
