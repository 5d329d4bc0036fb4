"""Request path normalisation, before filters and routing see the path (Envoy's HCM options
`normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`). No I/O.

Every party on a request's way reads its path: the gateway's route matchers and rbac, then
the upstream's router. If they read `/x/../admin`, `//admin`, `/%61dmin` or `/x%2F..%2Fadmin`
differently, a rule the gateway enforces on `/admin` is bypassed. Normalising here means the
gateway matches the path the upstream will act on, because it is the path the upstream gets.

- `normalize_path` (RFC 3986 6.2.2): percent-encoded unreserved characters are decoded
  (`%61` -> `a`, `%2e` -> `.`), other escapes get upper-case hex, backslashes become slashes
  (as browsers and some servers read them), and dot segments are removed (5.2.4). A `%` that
  does not start an escape is an error (400).
- `merge_slashes`: runs of `/` become one.
- `path_with_escaped_slashes_action`: what `%2F` and `%5C` (an escaped `/` or `\\`) get,
  which some upstreams decode before routing and some do not: kept, refused (400),
  unescaped and forwarded, or unescaped and redirected (307) so that every party sees the
  same path.

The query string is left as it is.
"""

import re
from typing import Literal

import attrs

EscapedSlashesAction = Literal[
    "keep_unchanged", "reject_request", "unescape_and_redirect", "unescape_and_forward"
]

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_ESCAPED_SLASH = re.compile(r"%(?:2[Ff]|5[Cc])")
_SLASHES = re.compile(r"/{2,}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class InvalidPath(ValueError):
    """The path cannot be normalised (a stray `%`, an escaped slash refused)."""


@attrs.frozen
class NormalizedPath:
    path: str
    #: The client should ask again at `path` (unescape_and_redirect found escaped slashes).
    redirect: bool = False


def normalize(
    path: str,
    *,
    normalize_path: bool,
    merge_slashes: bool,
    escaped_slashes: EscapedSlashesAction,
) -> NormalizedPath:
    """The path the gateway routes on and forwards; raises InvalidPath (400)."""
    base, mark, query = path.partition("?")
    if (
        "%" not in base
        and "/." not in base
        and "\\" not in base
        and not (merge_slashes and "//" in base)
    ):
        return NormalizedPath(path)  # the common case: nothing to do
    redirect = False
    if escaped_slashes != "keep_unchanged" and _ESCAPED_SLASH.search(base):
        if escaped_slashes == "reject_request":
            raise InvalidPath("escaped slash in path")
        base = _ESCAPED_SLASH.sub(lambda m: "/" if m[0][2] == "F" or m[0][2] == "f" else "\\", base)
        redirect = escaped_slashes == "unescape_and_redirect"
    if normalize_path:
        base = _remove_dot_segments(_decode_unreserved(base).replace("\\", "/"))
    if merge_slashes:
        base = _SLASHES.sub("/", base)
    return NormalizedPath(base + mark + query, redirect)


def _decode_unreserved(path: str) -> str:
    if "%" not in path:
        return path
    if path.count("%") != len(_ESCAPE.findall(path)):
        raise InvalidPath("malformed percent-encoding in path")

    def decode(m: re.Match[str]) -> str:
        char = chr(int(m[1], 16))
        return char if char in _UNRESERVED else f"%{m[1].upper()}"

    return _ESCAPE.sub(decode, path)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 for an absolute path: `.` segments go, `..` removes its parent (never
    above the root)."""
    if "/." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments[1:], 1):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)
