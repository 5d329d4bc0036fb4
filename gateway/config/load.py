"""Loading gateway.toml: TOML -> cattrs -> frozen model, then cross-reference checks.

Every problem is reported at once, each as `toml.path: what is wrong`, and none of them as a
traceback. Structuring is strict: unknown keys, strings where lists belong, and numbers where
strings belong are all errors, because a typo in a proxy config should never be silently
ignored. The second pass (`gateway.config.validate`) checks what types cannot: that names
refer to tables that exist, that a route has exactly one action.
"""

import difflib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
import tomli
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from gateway.config.files import MAX_CONFIG_BYTES, UnreadableFile, read_file
from gateway.config.model import (
    MAX_BYTE_SIZE,
    MAX_DURATION,
    NETWORK_FILTER_TYPES,
    AccessLog,
    Address,
    ByteSize,
    Duration,
    Endpoint,
    GatewayConfig,
    HttpFilter,
    NetworkFilterConfig,
)
from gateway.config.validate import validate
from gateway.errors import ConfigError
from gateway.http.filters import FILTER_TYPES

T = TypeVar("T")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_ATTRS_VALIDATOR_MESSAGE = re.compile(r"^'(\w+)' (must .*)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTE_SIZE = re.compile(r"^(\d+(?:\.\d+)?)(KiB|MiB|GiB|TiB)$")
_UNIT_BYTES = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_duration(value: object) -> Duration:
    """'250ms', '1.5s', '2m', '1h' -> seconds, up to MAX_DURATION."""
    if isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if seconds <= MAX_DURATION:
            return Duration(seconds)
        raise ValueError(f"expected a duration of at most 8760h (a year), got {value!r}")
    raise ValueError(f"expected a duration such as '250ms', '1.5s' or '2m', got {value!r}")


def parse_byte_size(value: object) -> ByteSize:
    """An integer of bytes, or '64KiB', '512MiB', '1.5GiB' -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return ByteSize(value)
    if isinstance(value, str) and (m := _BYTE_SIZE.match(value.strip())):
        size = float(m.group(1)) * _UNIT_BYTES[m.group(2)]
        if size <= MAX_BYTE_SIZE:
            return ByteSize(int(size))
        raise ValueError(f"expected a size of at most 1024TiB, got {value!r}")
    raise ValueError(f"expected bytes, as an integer or a size such as '512MiB', got {value!r}")


def parse_address(value: object) -> Address:
    """'host:port' or '[v6]:port' -> Address."""
    if not isinstance(value, str):
        raise ValueError(f"expected an address string 'host:port', got {value!r}")
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"expected 'host:port' (or '[::1]:port') with a port 0-65535, got {value!r}"
        )
    return Address(host, int(port))


def _strict(kind: type) -> Callable[[object, type], Any]:
    def structure(value: object, _: type) -> object:
        # bool is an int subclass; a TOML true must not pass for a number.
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise ValueError(f"expected {kind.__name__}, got {value!r}")

    return structure


def _structure_float(value: object, _: type) -> float:
    # TOML has inf and nan; no setting means either, and nan passes every comparison check.
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"expected a finite number, got {value!r}")


#: More worker processes than any machine has CPUs for (`[server] workers`).
MAX_WORKERS = 1024


def _structure_workers(value: object, _: type) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
        return value
    raise ValueError(f"expected a number of workers (1 to {MAX_WORKERS}) or 'auto', got {value!r}")


# Named, not lambdas: inside a lambda passed to cattrs' overloaded register function, mypy
# types get_origin(<Any>) by its first overload (ParamSpec) and calls the `is` impossible.
def _is_list(t: object) -> bool:
    return get_origin(t) is list


def _is_literal(t: object) -> bool:
    return get_origin(t) is Literal


def _is_dict(t: object) -> bool:
    return get_origin(t) is dict


def _tables_only(inner: Callable[[Any, type], Any]) -> Callable[[object, type], Any]:
    """`inner`, behind a check that the value is a table: cattrs would otherwise report a
    string or a list where a table belongs with Python's own words ("'str' object has no
    attribute 'keys'")."""

    def structure(value: object, t: type) -> object:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        return inner(value, t)

    return structure


def make_converter() -> cattrs.Converter:
    """The config's converter: strict types, units, tables checked as tables, unknown keys
    refused. Other TOML files (`gateway test` scenarios) add their own hooks to one."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    # First, so that the hooks for classes given in other forms (Address, Endpoint, the
    # filters) override it.
    converter.register_structure_hook_factory(
        attrs.has, lambda cls: _tables_only(converter.gen_structure_attrs_fromdict(cls))
    )
    converter.register_structure_hook_factory(
        _is_dict, lambda t: _tables_only(mapping_structure_factory(t, converter))
    )
    converter.register_structure_hook(Duration, lambda v, _: parse_duration(v))
    converter.register_structure_hook(ByteSize, lambda v, _: parse_byte_size(v))
    converter.register_structure_hook(Address, lambda v, _: parse_address(v))
    for kind in (str, int, bool):
        converter.register_structure_hook(kind, _strict(kind))
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(int | Literal["auto"], _structure_workers)
    structure_endpoint_table = converter.gen_structure_attrs_fromdict(Endpoint)

    def structure_endpoint(value: object, t: type) -> Endpoint:
        # The common case stays short: "host:port" is an endpoint of weight 1.
        if isinstance(value, str):
            return Endpoint(parse_address(value))
        if not isinstance(value, dict):
            raise ValueError(f"expected 'host:port' or a table with address, got {value!r}")
        return structure_endpoint_table(value, t)

    converter.register_structure_hook(Endpoint, structure_endpoint)

    def list_hook_factory(list_type: type) -> Callable[[object, type], Any]:
        inner = list_structure_factory(list_type, converter)

        def structure(value: object, t: type) -> object:
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {value!r}")
            return inner(value, t)

        return structure

    converter.register_structure_hook_factory(_is_list, list_hook_factory)
    structure_access_logs = list_hook_factory(list[AccessLog])

    def structure_access_log(value: object, t: type) -> object:
        # `[listeners.X.access_log]` (one table) came first; `[[...]]` (a list) adds more.
        if isinstance(value, dict):
            return [converter.structure(value, AccessLog)]
        if not isinstance(value, list):
            raise ValueError(f"expected a table or a list of tables, got {value!r}")
        return structure_access_logs(value, t)

    converter.register_structure_hook_func(lambda t: t == list[AccessLog], structure_access_log)

    def literal_hook_factory(literal_type: type) -> Callable[[object, type], Any]:
        allowed = get_args(literal_type)

        def structure(value: object, _: type) -> object:
            if value in allowed and type(value) in {type(a) for a in allowed}:
                return value
            choices = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"expected one of {choices}, got {value!r}")

        return structure

    converter.register_structure_hook_factory(_is_literal, literal_hook_factory)

    def structure_filter(value: object, _: type) -> HttpFilter:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        rest = dict(value)
        type_name = rest.pop("type", None)
        filter_type = FILTER_TYPES.get(type_name) if isinstance(type_name, str) else None
        if filter_type is None:
            known = ", ".join(sorted(FILTER_TYPES))
            raise ValueError(f"'type' must name a filter type ({known}), got {type_name!r}")
        return HttpFilter(type_name, converter.structure(rest, filter_type.config_class))

    converter.register_structure_hook(HttpFilter, structure_filter)

    def structure_network_filter(value: object, _: type) -> NetworkFilterConfig:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        type_name = value.get("type")
        # A table or array as `type` cannot be looked up: it is no filter's name either.
        filter_class = NETWORK_FILTER_TYPES.get(type_name) if isinstance(type_name, str) else None
        if filter_class is None:
            known = ", ".join(NETWORK_FILTER_TYPES)
            raise ValueError(f"'type' must name a network filter ({known}), got {type_name!r}")
        return converter.structure(value, filter_class)

    converter.register_structure_hook_func(
        lambda t: t == NetworkFilterConfig, structure_network_filter
    )
    return converter


_converter = make_converter()


def _format_path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            quoted = f'"{part}"'
            out += f".{quoted}" if out else quoted
    return out or "(top level)"


def _step(note: str) -> str | int | None:
    if isinstance(note, cattrs.AttributeValidationNote):
        return note.name
    if isinstance(note, cattrs.IterableValidationNote):
        return note.index
    return None


def _collect(exc: BaseException, path: list[str | int], out: list[str]) -> None:
    """Walks cattrs' exception tree, turning notes into TOML paths."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            steps = [s for n in getattr(sub, "__notes__", []) if (s := _step(n)) is not None]
            _collect(sub, path + steps, out)
        return
    where = _format_path(path)
    if isinstance(exc, ForbiddenExtraKeysError):
        fields = [a.name for a in attrs.fields(exc.cl)]
        for key in sorted(exc.extra_fields):
            hint = difflib.get_close_matches(key, fields, n=1)
            suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
            out.append(f"{where}: unknown key '{key}'{suffix}")
    elif isinstance(exc, KeyError):
        out.append(f"{where}: required key is missing")
    elif m := _ATTRS_VALIDATOR_MESSAGE.match(str(exc)):
        # attrs validators run in __init__, after cattrs has let go of the field's path.
        out.append(f"{_format_path([*path, m.group(1)])}: {m.group(2)}")
    else:
        out.append(f"{where}: {exc}")


def structure_toml(
    data: dict[str, Any], cls: type[T], converter: cattrs.Converter = _converter
) -> T:
    """Parsed TOML as `cls` (an attrs class), by the config's rules: strict types, units
    (Duration, ByteSize, Address), unknown keys refused; ConfigError naming each problem's
    TOML path. The scenario files of `gateway test` load through it too."""
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        errors: list[str] = []
        _collect(exc, [], errors)
        raise ConfigError(errors) from None
    except (ValueError, TypeError) as exc:  # an attrs validator on the top-level class
        raise ConfigError([f"(top level): {exc}"]) from None


def structure_config(data: dict[str, Any]) -> GatewayConfig:
    """Builds and validates a GatewayConfig from parsed TOML; raises ConfigError."""
    config = structure_toml(data, GatewayConfig)
    check_config(config)
    return config


def check_config(config: GatewayConfig) -> None:
    """The checks types cannot make (references, overrides); ConfigError."""
    if errors := validate(config) + _check_filters(config) + _check_filter_overrides(config):
        raise ConfigError(errors)


def _filter_errors(
    type_name: str, filter_config: object, where: str, config: GatewayConfig
) -> list[str]:
    """What a filter type's own `check` finds in its config, under the TOML path `where`."""
    check = FILTER_TYPES[type_name].check
    found = check(filter_config, config) if check is not None else []
    return [f"{where}.{key}: {message}" if key else f"{where}: {message}" for key, message in found]


def _check_filters(config: GatewayConfig) -> list[str]:
    return [
        error
        for name, f in config.http_filters.items()
        for error in _filter_errors(f.type, f.config, f"http_filters.{name}", config)
    ]


def _check_filter_overrides(config: GatewayConfig) -> list[str]:
    """Per-route/vhost filter overrides name a configured filter and fit its config."""
    errors: list[str] = []
    places = [(f"virtual_hosts.{n}", v.http_filters) for n, v in config.virtual_hosts.items()]
    places += [
        (f"virtual_hosts.{n}.routes[{i}]", r.http_filters)
        for n, v in config.virtual_hosts.items()
        for i, r in enumerate(v.routes)
    ]
    for where, overrides in places:
        for name, override in overrides.items():
            path = f"{where}.http_filters.{name}"
            if name not in config.http_filters:
                errors.append(f"{path}: no http filter named '{name}'")
            elif override.disabled == (override.config is not None):
                errors.append(f"{path}: set either disabled = true or a config table")
            elif override.config is not None:
                try:
                    type_name = config.http_filters[name].type
                    structured = structure_filter_config(type_name, override.config)
                    errors += _filter_errors(type_name, structured, f"{path}.config", config)
                    remote = getattr(structured, "remote_jwks", None)
                    cluster = getattr(remote or structured, "cluster", None)
                    if isinstance(cluster, str) and cluster not in config.clusters:
                        errors.append(f"{path}.config.cluster: no cluster named '{cluster}'")
                except (ClassValidationError, IterableValidationError) as exc:
                    found: list[str] = []
                    _collect(exc, [], found)
                    top = "(top level)"
                    errors += [
                        f"{path}.config{m[len(top) :]}"
                        if m.startswith(top)
                        else f"{path}.config.{m}"
                        for m in found
                    ]
                except (ValueError, TypeError) as exc:
                    errors.append(f"{path}.config: {exc}")
    return errors


def structure_filter_config(type_name: str, data: dict[str, Any]) -> object:
    """A filter type's config from a raw table (used for per-route overrides)."""
    return _converter.structure(data, FILTER_TYPES[type_name].config_class)


def loads_config(text: str, source: str = "<string>") -> GatewayConfig:
    """Parses TOML text into a GatewayConfig; raises ConfigError listing every problem."""
    return structure_config(parse_toml(text, source))


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """TOML text as data; ConfigError naming `source` if it is not TOML."""
    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: TOML syntax error: {exc}"]) from None
    except RecursionError as exc:
        # tomli's answer to nesting past its limits (400 levels of arrays and inline
        # tables, 1000 parts in a key), which is not a TOMLDecodeError.
        raise ConfigError([f"{source}: TOML nested too deeply: {exc}"]) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Reads and parses a gateway.toml file; raises ConfigError."""
    return structure_config(load_toml(path))


def load_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's data, read as safely as the config is; ConfigError."""
    try:
        text = read_file(str(path), MAX_CONFIG_BYTES).decode("utf-8")
    except UnreadableFile as exc:
        raise ConfigError([str(exc)]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc}"]) from None
    return parse_toml(text, source=str(path))


def unstructure_config(config: GatewayConfig) -> dict[str, Any]:
    """The effective config as plain data, for /config_dump."""
    data: dict[str, Any] = _dump_converter.unstructure(config)
    return data


_dump_converter = cattrs.Converter()
_dump_converter.register_unstructure_hook(Address, str)
_dump_converter.register_unstructure_hook(
    Endpoint,
    lambda e: str(e.address) if e.weight == 1 else {"address": str(e.address), "weight": e.weight},
)
_dump_converter.register_unstructure_hook(
    HttpFilter,
    lambda f: {"type": f.type, **_dump_converter.unstructure(f.config)},
)
