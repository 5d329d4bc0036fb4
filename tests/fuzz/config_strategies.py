"""Hypothesis strategies for gateway.toml documents, built from the real schema.

`documents()` walks the config model (the attrs classes under GatewayConfig, and each
HTTP filter's config class) and draws, for every table, some of its keys with values of
roughly the right kind: huge, negative and boundary numbers, NaN and infinities, strings
with NUL and other controls or non-ASCII, durations and sizes past their limits,
addresses with bad ports, regexes that backtrack or do not compile, file paths that are
devices, directories or missing. A value is sometimes of the wrong type altogether, or a
deep nest of arrays and tables. Names come from a small pool, so references between
tables (routes to clusters, listeners to virtual hosts) often resolve and the checks
after structuring are reached. The document is written as TOML text (one inline table
per top-level key), sometimes with a character flipped.

Nothing the loader might execute or open for real is drawn: the `python` filter's
`module` comes from a fixed list of names that do not import, and file paths from a list
of paths that are missing, not regular files, or small and not PEM.
"""

import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import attrs
from hypothesis import strategies as st

from gateway.config.model import (
    Address,
    ByteSize,
    Duration,
    Endpoint,
    GatewayConfig,
    HttpFilter,
    NetworkFilterConfig,
)
from gateway.http.filters import FILTER_TYPES

_CALM_NAMES = ["edge", "main", "backend", "api", "a"]
_NAMES = [*_CALM_NAMES, "é", "a.b", "", "\x00", "x" * 300]
names = st.sampled_from(_NAMES)
_INTS = [0, 1, 2, -1, 7, 100, 1024, 65535, 65536, 65537, 2**31 - 1, 2**31, 2**61 - 1]
_INTS += [2**63 - 1, 2**63, -(2**63), 10**30]
ints = st.sampled_from(_INTS) | st.integers(-3, 70000)
floats = st.sampled_from([0.0, -0.0, 0.5, 50.0, 100.0, 1e308, -1.0, math.nan, math.inf])
floats |= st.floats(allow_nan=True, allow_infinity=True)
texts = st.text(max_size=12) | st.sampled_from(["\x00", "a\x00b", "\n", "é", "x" * 3000])
_DURATIONS = ["0s", "1s", "250ms", "1.5s", "2m", "1h", "8760h", "8761h", "9" * 30 + "h"]
_DURATIONS += ["-1s", "1e3s", "", "1", "1 s", " 1s", "nan s", "0.0000001ms"]
durations = st.sampled_from(_DURATIONS)
_SIZES = ["64KiB", "1TiB", "1024TiB", "1025TiB", "1.5GiB", "0KiB", "1KB", "-1KiB", ""]
byte_sizes = st.sampled_from(_SIZES) | ints
_ADDRESSES = ["127.0.0.1:0", "127.0.0.1:8080", "[::1]:80", "0.0.0.0:9901", "host:65536"]
_ADDRESSES += [":", "a:b", "127.0.0.1", "[::1]", "localhost:-1", "x:" + "9" * 30, "\x00:1"]
addresses = st.sampled_from(_ADDRESSES)
_REGEXES = ["^/api/", "(a+)+$", "(", "a{1000}{1000}", "[", "\\", "(?P<n>x)", "(?=x)", ".*" * 50]
_PATHS = ["/nonexistent/cert.pem", "", "/tmp", "/dev/zero", "/proc/self/mem", "/etc/hostname"]
_PATHS += ["relative.pem", "a\x00b", "/dev/stdin", "-"]
_MODULES = ["no_such_module_xyz:Filter", "no/such/file.py:Filter", "", ":", "a:b:c", "x"]

#: Keys whose strings are drawn from a pool made for them (see the module docstring).
_STRING_POOLS = {
    "regex": _REGEXES,
    "match": _REGEXES,
    "certificate_chain": _PATHS,
    "private_key": _PATHS,
    "trusted_ca": _PATHS,
    "path": [*_PATHS, "/", "/x"],
    "module": _MODULES,
    "cluster": _NAMES,
    "name": _NAMES,
}


def _leaf(tp: object, key: str) -> st.SearchStrategy[Any]:
    """Values for a scalar of type `tp` (under the key `key`)."""
    if tp is bool:
        return st.booleans()
    if tp is int:
        return ints
    if tp is float:
        return floats
    if tp is str:
        pool = _STRING_POOLS.get(key)
        return st.sampled_from(pool) | texts if pool else names | texts
    if tp is Duration:
        return durations
    if tp is ByteSize:
        return byte_sizes
    if tp is Address:
        return addresses
    return any_value


#: Any TOML value, nested a little.
any_value: st.SearchStrategy[Any] = st.recursive(
    st.booleans() | ints | floats | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)


def _deep(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


#: Nests around tomli's limit of 400 levels, and past it.
deep_values = st.integers(1, 450).map(_deep)


def hostile(tp: object, key: str = "", depth: int = 0) -> st.SearchStrategy[Any]:
    """A value for a field of type `tp` that strains it: of the type but extreme, now and
    then of another type, or deeply nested."""
    right = _of_type(tp, key, depth, hostile)
    return st.one_of(right, right, right, right, right, right, right, any_value, deep_values)


_CALM: dict[object, st.SearchStrategy[Any]] = {
    bool: st.booleans(),
    int: st.integers(1, 8),
    float: st.sampled_from([1.0, 50.0]),
    Duration: st.sampled_from(["1s", "250ms"]),
    ByteSize: st.sampled_from(["64KiB", 1024]),
    Address: st.sampled_from(["127.0.0.1:0", "127.0.0.1:8080"]),
}


def calm(tp: object, key: str = "", depth: int = 0) -> st.SearchStrategy[Any]:
    """A plausible value for a field of type `tp`, from the names everything shares."""
    if tp in _CALM:
        return _CALM[tp]
    if tp is str:
        if key in ("prefix", "domains"):
            return st.sampled_from(["/", "*"])
        return st.sampled_from(_STRING_POOLS.get(key, _CALM_NAMES))
    return _of_type(tp, key, depth, calm)


Values = typing.Callable[[object, str, int], st.SearchStrategy[Any]]


def _of_type(tp: object, key: str, depth: int, values: Values) -> st.SearchStrategy[Any]:
    """Values of the shape `tp` asks for, each part drawn by `values`."""
    origin, args = get_origin(tp), get_args(tp)
    evil = values is hostile
    if depth > 6:
        return _leaf(str, key)
    if origin is Union or isinstance(tp, types.UnionType):
        return st.one_of([values(a, key, depth) for a in args if a is not type(None)])
    if origin is Literal:
        return st.sampled_from(args) | texts if evil else st.sampled_from(args)
    if origin is list:
        return st.lists(values(args[0], key, depth + 1), max_size=3)
    if origin is dict:
        keys = names | texts if evil else names
        return st.dictionaries(keys, values(args[1], key, depth + 1), max_size=3)
    if tp is Endpoint:
        return addresses | tables(Endpoint, depth + 1) if evil else _CALM[Address]
    if tp is HttpFilter:
        return http_filters(depth + 1)
    if tp == NetworkFilterConfig:
        return st.one_of([tables(c, depth + 1) for c in get_args(NetworkFilterConfig)])
    if attrs.has(tp) and tp is not Address:  # type: ignore[arg-type]
        return tables(tp, depth + 1)  # type: ignore[arg-type]
    return _leaf(tp, key) if evil else st.sampled_from(_CALM_NAMES)


#: How hostile a document is: the chance in ten that a key is drawn hostile.
_heat = st.shared(st.sampled_from([0, 1, 1, 2, 4, 10]), key="heat")


@st.composite
def tables(draw: st.DrawFn, cls: type, depth: int = 0) -> dict[str, Any]:
    """A table for the attrs class `cls`: its required keys (mostly) and some others,
    each calm or (by the document's heat) hostile, now and then a key it does not have."""
    heat = draw(_heat)
    table: dict[str, Any] = {}
    for field in attrs.fields(cls):
        required = field.default is attrs.NOTHING
        if draw(st.integers(0, 9)) >= (9 if required else 3):
            continue
        if draw(st.integers(0, 9)) < heat:
            table[field.name] = draw(hostile(field.type, field.name, depth))
        elif isinstance(field.default, int | str) and field.type in (int, str, bool):
            table[field.name] = field.default  # valid by construction, whatever the bounds
        elif required or field.type not in (int, float):
            table[field.name] = draw(calm(field.type, field.name, depth))
    if heat and draw(st.integers(0, 19)) == 0:
        table[draw(names | texts)] = draw(any_value)
    return table


@st.composite
def http_filters(draw: st.DrawFn, depth: int) -> dict[str, Any]:
    """An `[http_filters.NAME]` table: a filter type and its config class's keys."""
    name = draw(st.sampled_from(sorted(FILTER_TYPES)))
    table = draw(tables(FILTER_TYPES[name].config_class, depth))
    table["type"] = draw(st.just(name) | names) if draw(_heat) else name
    return table


def to_toml(value: object) -> str:
    """`value` as a TOML value: inline tables and arrays, escaped basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    assert isinstance(value, dict), value
    return "{" + ", ".join(f"{_quote(k)} = {to_toml(v)}" for k, v in value.items()) + "}"


def _quote(text: str) -> str:
    escaped = "".join(c if c >= " " and c not in '"\\\x7f' else f"\\u{ord(c):04x}" for c in text)
    return f'"{escaped}"'


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A gateway.toml text: top-level tables from the schema, perhaps one character off."""
    config = draw(tables(GatewayConfig))
    text = "\n".join(f"{_quote(k)} = {to_toml(v)}" for k, v in config.items()) + "\n"
    if text and draw(_heat) and draw(st.integers(0, 7)) == 0:
        at = draw(st.integers(0, len(text) - 1))
        text = (
            text[:at]
            + draw(st.sampled_from(["\x00", "[", "{", '"', "\\", "=", "\n", ""]))
            + text[at + 1 :]
        )
    return text


#: Texts that are not built from the schema: anything, and nests past tomli's limits.
raw_documents = st.one_of(
    st.text(max_size=80),
    st.integers(1, 3000).map(lambda n: "a = " + "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: "a = " + "{b = " * n + "1" + "}" * n),
    st.integers(1, 3000).map(lambda n: ".".join(["a"] * n) + " = 1"),
    st.integers(1, 3000).map(lambda n: "[" + ".".join(["t"] * n) + "]"),
)
