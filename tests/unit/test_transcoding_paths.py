"""google.api.http path templates and the matcher the JSON transcoder looks methods up in:
the grammar, Envoy's precedence (literal, then `*`, then `**`), verbs, unescaping, query
parameters, and lookups that stay linear whatever the path."""

import time

import pytest

from gateway.protocol.transcoding.http_template import MULTI, SINGLE, Variable, parse_template
from gateway.protocol.transcoding.path_matcher import PathMatcher, UrlUnescapeSpec, unescape


def test_templates_parse_into_segments_variables_and_verb() -> None:
    t = parse_template("/v1/{name=shelves/*/books/*}:get")
    assert t.segments == ("v1", "shelves", SINGLE, "books", SINGLE)
    assert t.variables == (Variable(("name",), 1, 5),)
    assert t.verb == "get"
    t = parse_template("/v1/{book.name}/files/{path=**}")
    assert t.segments == ("v1", SINGLE, "files", MULTI)
    assert t.variables == (Variable(("book", "name"), 1, 2), Variable(("path",), 3, None))
    assert parse_template("/").segments == ()


@pytest.mark.parametrize(
    "text",
    [
        "v1/shelves",  # no leading slash
        "/v1/**/tail",  # ** before the end
        "/v1/{a={b}}",  # nested variable
        "/v1/{a}/{a}",  # the same field twice
        "/v1/{a",  # unclosed
        "/v1//x",  # empty segment
        "/v1/{1a}",  # not a field name
        "/v1:",  # empty verb
    ],
)
def test_bad_templates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid path template"):
        parse_template(text)


def matcher(*rules: tuple[str, str], **options: object) -> PathMatcher[str]:
    m = PathMatcher[str](**options)  # type: ignore[arg-type]
    for method, template in rules:
        m.register(method, parse_template(template), f"{method} {template}")
    return m


def test_literal_beats_single_beats_double_wildcard() -> None:
    m = matcher(
        ("GET", "/v1/shelves/{shelf}"),
        ("GET", "/v1/shelves/special"),
        ("GET", "/v1/{rest=**}"),
        ("POST", "/v1/shelves/{shelf}"),
    )

    def value(method: str, path: str) -> str | None:
        found = m.lookup(method, path)
        return found.value if found else None

    assert value("GET", "/v1/shelves/special") == "GET /v1/shelves/special"
    assert value("GET", "/v1/shelves/3") == "GET /v1/shelves/{shelf}"
    assert value("GET", "/v1/shelves/3/books") == "GET /v1/{rest=**}"
    assert value("GET", "/v1") == "GET /v1/{rest=**}"  # ** takes zero segments too
    assert value("POST", "/v1/shelves/3") == "POST /v1/shelves/{shelf}"
    assert value("DELETE", "/v1/shelves/3") is None
    assert value("GET", "/v2/shelves") is None


def test_a_literal_branch_that_fails_deeper_falls_back_to_the_wildcard() -> None:
    m = matcher(("GET", "/a/b/c"), ("GET", "/a/{x}/d"))
    found = m.lookup("GET", "/a/b/d")
    assert found is not None and found.bindings == [(("x",), "b")]


def test_a_path_two_rules_register_matches_neither() -> None:
    m = matcher(("GET", "/v1/{a}"), ("GET", "/v1/{b}"))
    assert m.lookup("GET", "/v1/x") is None


def test_verbs_are_split_off_only_when_registered() -> None:
    m = matcher(("POST", "/v1/{name=books/*}:cancel"), ("POST", "/v1/{name=books/*}"))
    cancel = m.lookup("POST", "/v1/books/1:cancel")
    assert cancel is not None and cancel.value.endswith(":cancel")
    assert cancel.bindings == [(("name",), "books/1")]
    other = m.lookup("POST", "/v1/books/1:other")  # not a verb: part of the segment
    assert other is not None and other.bindings == [(("name",), "books/1:other")]
    strict = matcher(("POST", "/v1/{name=books/*}"), match_unregistered_custom_verb=True)
    assert strict.lookup("POST", "/v1/books/1:other") is None


def test_variables_are_unescaped_as_envoy_does() -> None:
    m = matcher(("GET", "/v1/{one}/{many=**}"))
    found = m.lookup("GET", "/v1/a%2Fb%20c/x%2Fy/%3Az%21")
    assert found is not None
    # One segment: decoded whole. Several: reserved characters stay escaped.
    assert found.bindings == [(("one",), "a/b c"), (("many",), "x%2Fy/%3Az%21")]
    whole = matcher(("GET", "/v1/{many=**}"), url_unescape_spec=UrlUnescapeSpec.ALL_CHARACTERS)
    found = whole.lookup("GET", "/v1/x%2Fy/%3Az")
    assert found is not None and found.bindings == [(("many",), "x/y/:z")]
    assert unescape("%41%2f%zz", frozenset(b"/")) == "A%2f%zz"


def test_query_parameters_bind_fields_unless_ignored() -> None:
    m = PathMatcher[str](query_param_unescape_plus=True)
    m.register("GET", parse_template("/v1/s"), "s", ignored_query_parameters=["api_key"])
    found = m.lookup("GET", "/v1/s?a.b=1&tags=x+y&tags=%7Cz&api_key=k&flag&=v&empty=")
    assert found is not None
    assert found.bindings == [
        (("a", "b"), "1"),
        (("tags",), "x y"),
        (("tags",), "|z"),
        (("empty",), ""),
    ]


def test_a_hostile_path_costs_no_more_than_its_length_and_the_templates() -> None:
    """A trie with a literal and a wildcard branch at every level, and a path of 200,000
    segments: the walk visits each trie node at most once and never looks past the trie's
    depth, so the lookups stay well under a second."""
    m = PathMatcher[str]()
    for depth in range(1, 30):
        m.register("GET", parse_template("/" + "/".join(["*"] * depth) + "/end"), f"w{depth}")
        m.register("GET", parse_template("/" + "/".join(["a"] * depth) + "/miss"), f"l{depth}")
    hostile = "/" + "/".join(["a"] * 200_000)
    started = time.perf_counter()
    for _ in range(10):
        assert m.lookup("GET", hostile) is None
        assert m.lookup("GET", "/" + "/".join(["a"] * 29) + "/nope") is None
    assert time.perf_counter() - started < 1.0
    found = m.lookup("GET", "/" + "/".join(["a"] * 29) + "/end")
    assert found is not None and found.value == "w29"
