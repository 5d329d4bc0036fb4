"""Regular expressions from outside the gateway, run by RE2 in time linear in the input.

Theory of operation. Python's `re` backtracks: a route `regex = '/api/(a+)+/x'` against a
36-byte path took 11.8 s, doubling with each character, and a worker is one event loop,
so one request froze every other. Every pattern an operator, a control plane or an admin
caller supplies (route path, header and query matchers, rbac, cors, histogram bucket
matches, admin filters) goes through `compile_regex`, which uses RE2 (Google's engine,
Envoy's `envoy.regex_engines.google_re2`): no backtracking, so no backreferences and no
lookaround; such a pattern is a config error. The gateway's own fixed patterns stay with
`re`: they are ours, written and reviewed with the code.

RE2 bounds the matching time by the input's length times the program's size, so the
program size is bounded too, as Envoy does with its runtime key
`re2.max_program_size.error_level` (default 100). Envoy sets it only through runtime, not
in its configuration, and the gateway has no runtime layer, so the bound is Envoy's
default and not a config key; a larger pattern is better split (several routes) or
simplified.

Matching calls the binding's RE2 object directly: `re2`'s Python wrapper maps byte
offsets back to characters and builds match objects, which made a route match cost ~6 µs
against ~1 µs here (and ~0.3 µs for `re`); the gateway only ever asks "does it match?".
"""

import functools
from typing import Any, Final, final

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

#: Envoy's default `re2.max_program_size.error_level`.
MAX_PROGRAM_SIZE: Final = 100

_FULL = re2._Anchor.ANCHOR_BOTH
_UNANCHORED = re2._Anchor.UNANCHORED
_NO_MATCH = (-1, -1)


class RegexError(ValueError):
    """A pattern RE2 cannot compile, or whose program is over MAX_PROGRAM_SIZE."""


def _utf8(text: str) -> bytes:
    # surrogatepass: text from a URL may hold lone surrogates; RE2 rejects them in a
    # pattern and never matches them in text, where the encoder would have raised.
    return text.encode("utf-8", "surrogatepass")


@final
class Regex:
    """A compiled pattern: `fullmatch` (matchers) or `search` (filters) on text."""

    __slots__ = ("_re2", "pattern", "program_size")

    def __init__(self, pattern: str, compiled: Any, program_size: int) -> None:
        self.pattern = pattern
        self._re2 = compiled
        self.program_size = program_size

    def fullmatch(self, text: str) -> bool:
        encoded = _utf8(text)
        return bool(self._re2.Match(_FULL, encoded, 0, len(encoded))[0] != _NO_MATCH)

    def search(self, text: str) -> bool:
        encoded = _utf8(text)
        return bool(self._re2.Match(_UNANCHORED, encoded, 0, len(encoded))[0] != _NO_MATCH)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


def compile_regex(pattern: str, *, ignore_case: bool = False) -> Regex:
    """`pattern` compiled by RE2; raises RegexError saying what is wrong with it."""
    return _compile(pattern, ignore_case)


# A reload validates its config in a worker thread, which compiles every pattern; the route
# tables built on the event loop at the swap then find them here instead of compiling
# them again (most of a big route table's build). Compiled patterns are immutable and
# small (~2.6 KB): the cache holds at most ~43 MB, whatever admin callers send. (Positional
# arguments only: lru_cache keys f(x) and f(x, flag=False) apart.)
@functools.lru_cache(maxsize=16384)
def _compile(pattern: str, ignore_case: bool) -> Regex:
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller, not printed
    options.never_capture = True  # groups are never read: matching stays on the DFA
    options.case_sensitive = not ignore_case
    compiled = re2._re2.RE2(_utf8(pattern), options)
    if not compiled.ok():
        reason = compiled.error().decode("utf-8", "replace")
        raise RegexError(f"'{pattern}': {reason} (RE2 syntax: no backreferences or lookaround)")
    size = compiled.ProgramSize()
    if size > MAX_PROGRAM_SIZE:
        raise RegexError(
            f"'{pattern}': its RE2 program size {size} is over the limit of "
            f"{MAX_PROGRAM_SIZE} (Envoy's re2.max_program_size.error_level); simplify it or "
            "split it across several matchers"
        )
    return Regex(pattern, compiled, size)


def compile_optional(pattern: str | None) -> Regex | None:
    """An optional matcher's pattern compiled (`compile_regex`), or None."""
    return compile_regex(pattern) if pattern is not None else None


def check_regex(pattern: str, *, ignore_case: bool = False) -> str | None:
    """What is wrong with `pattern`, or None: for config checks that collect errors."""
    try:
        compile_regex(pattern, ignore_case=ignore_case)
    except RegexError as exc:
        return str(exc)
    return None
