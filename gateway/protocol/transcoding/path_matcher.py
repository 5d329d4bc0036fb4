"""Which method a REST request calls, and what its path and query string bind.

Templates go into a trie keyed by segment; a request's path is split into segments and
looked up depth first, trying at each node a literal child, then `*`, then `**` (the
precedence of grpc-httpjson-transcoding, which Envoy uses). Each node is visited at most
once per lookup, since a node's depth fixes the segment it is matched against, and `**`
only ever ends a template: a lookup costs at most the path's length plus the trie's size,
whatever a client sends. The walk keeps its own stack, so no path nests Python calls.

A path and HTTP method that two rules register are ambiguous and match neither (as Envoy
marks them). The verb (":cancel") is split off the last segment only if some template
registered it, or `match_unregistered_custom_verb` says to.
"""

import enum
import re
from collections.abc import Iterable
from typing import Generic, TypeVar
from urllib.parse import unquote

import attrs

from gateway.protocol.transcoding.http_template import MULTI, SINGLE, PathTemplate, Variable

T = TypeVar("T")

#: A field path and the text bound to it, from the path or the query string.
Binding = tuple[tuple[str, ...], str]


class UrlUnescapeSpec(enum.Enum):
    """How a variable spanning several segments is percent-decoded (Envoy's names); one
    segment is always decoded whole."""

    ALL_CHARACTERS_EXCEPT_RESERVED = "ALL_CHARACTERS_EXCEPT_RESERVED"
    ALL_CHARACTERS_EXCEPT_SLASH = "ALL_CHARACTERS_EXCEPT_SLASH"
    ALL_CHARACTERS = "ALL_CHARACTERS"


#: RFC 6570's reserved characters, which ALL_CHARACTERS_EXCEPT_RESERVED leaves escaped.
_RESERVED = frozenset(b":/?#[]@!$&'()*+,;=")
_KEPT = {
    UrlUnescapeSpec.ALL_CHARACTERS_EXCEPT_RESERVED: _RESERVED,
    UrlUnescapeSpec.ALL_CHARACTERS_EXCEPT_SLASH: frozenset(b"/"),
    UrlUnescapeSpec.ALL_CHARACTERS: frozenset(),
}
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str, kept: frozenset[int] = frozenset()) -> str:
    """Percent-decodes `text`, leaving the escapes of `kept` characters as they are."""
    if "%" not in text:
        return text
    if kept:
        # Escape the kept escapes' '%', so that decoding gives them back as they were.
        text = _ESCAPE.sub(
            lambda m: "%25" + m.group(1) if int(m.group(1), 16) in kept else m.group(0), text
        )
    return unquote(text)


@attrs.frozen
class _Rule(Generic[T]):
    value: T
    variables: tuple[Variable, ...]
    #: Query parameters that bind nothing (Envoy's ignored_query_parameters).
    ignored_query_parameters: frozenset[str]


#: Two rules for one path and method: neither is matched.
_AMBIGUOUS = _Rule[object](None, (), frozenset())


class _Node(Generic[T]):
    __slots__ = ("literals", "methods", "multi", "single")

    def __init__(self) -> None:
        self.literals: dict[str, _Node[T]] = {}
        self.single: _Node[T] | None = None
        #: Rules ending here, by HTTP method + verb.
        self.methods: dict[str, _Rule[T]] = {}
        #: Rules whose `**` starts here, by HTTP method + verb.
        self.multi: dict[str, _Rule[T]] = {}


@attrs.frozen
class Match(Generic[T]):
    value: T
    bindings: list[Binding]


class PathMatcher(Generic[T]):
    def __init__(
        self,
        url_unescape_spec: UrlUnescapeSpec = UrlUnescapeSpec.ALL_CHARACTERS_EXCEPT_RESERVED,
        query_param_unescape_plus: bool = False,
        match_unregistered_custom_verb: bool = False,
    ) -> None:
        self._root: _Node[T] = _Node()
        self._verbs: set[str] = set()
        self._kept = _KEPT[url_unescape_spec]
        self._plus = query_param_unescape_plus
        self._any_verb = match_unregistered_custom_verb

    def register(
        self,
        http_method: str,
        template: PathTemplate,
        value: T,
        ignored_query_parameters: Iterable[str] = (),
    ) -> None:
        node = self._root
        segments = template.segments
        multi = bool(segments) and segments[-1] == MULTI
        for segment in segments[:-1] if multi else segments:
            if segment == SINGLE:
                node.single = node.single or _Node()
                node = node.single
            else:
                node = node.literals.setdefault(segment, _Node())
        table = node.multi if multi else node.methods
        key = http_method + template.verb
        rule = _Rule(value, template.variables, frozenset(ignored_query_parameters))
        table[key] = _AMBIGUOUS if key in table else rule  # type: ignore[assignment]
        if template.verb:
            self._verbs.add(template.verb)

    def lookup(self, http_method: str, path: str) -> Match[T] | None:
        """The rule for `path` (with its query string) and its bindings: the path's
        variables, then the query parameters that name fields."""
        path, _, query = path.partition("?")
        verb = ""
        colon, slash = path.rfind(":"), path.rfind("/")
        if colon > slash and (self._any_verb or path[colon + 1 :] in self._verbs):
            path, verb = path[:colon], path[colon + 1 :]
        parts = path[1:].split("/") if len(path) > 1 else []
        while parts and not parts[-1]:  # "/shelves/" is "/shelves"
            parts.pop()
        rule = self._find(parts, http_method + verb)
        if rule is None or rule is _AMBIGUOUS:
            return None
        bindings = self._path_bindings(rule.variables, parts)
        if query:
            bindings += self._query_bindings(query, rule.ignored_query_parameters)
        return Match(rule.value, bindings)

    def _find(self, parts: list[str], key: str) -> _Rule[T] | None:
        # Depth-first, literal before `*` before `**`: the stack holds nodes still to try
        # (with the depth they match at) and `**` rules, which match whatever is left.
        stack: list[tuple[_Node[T], int] | _Rule[T]] = [(self._root, 0)]
        end = len(parts)
        while stack:
            item = stack.pop()
            if isinstance(item, _Rule):
                return item
            node, depth = item
            if depth == end:
                found = node.methods.get(key) or node.multi.get(key)
                if found is not None:
                    return found
                continue
            multi = node.multi.get(key)
            if multi is not None:
                stack.append(multi)
            if node.single is not None:
                stack.append((node.single, depth + 1))
            literal = node.literals.get(parts[depth])
            if literal is not None:
                stack.append((literal, depth + 1))
        return None

    def _path_bindings(self, variables: tuple[Variable, ...], parts: list[str]) -> list[Binding]:
        bindings = []
        for variable in variables:
            end = len(parts) if variable.end is None else variable.end
            segments = parts[variable.start : end]
            if len(segments) == 1 and variable.end is not None:
                bindings.append((variable.field_path, unescape(segments[0])))
            else:
                value = "/".join(unescape(s, self._kept) for s in segments)
                bindings.append((variable.field_path, value))
        return bindings

    def _query_bindings(self, query: str, ignored: frozenset[str]) -> list[Binding]:
        bindings = []
        for parameter in query.split("&"):
            name, equals, value = parameter.partition("=")
            if not name or not equals or name in ignored:
                continue
            if self._plus:
                value = value.replace("+", " ")
            bindings.append((tuple(name.split(".")), unescape(value)))
        return bindings
