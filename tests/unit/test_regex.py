"""Operator regexes: RE2 semantics, linear time, and config errors that name the TOML path."""

import time

import pytest

from gateway import loads_config
from gateway.config.regex import MAX_PROGRAM_SIZE, RegexError, compile_regex
from tests.unit.test_config import VALID, errors_of


def test_fullmatch_search_and_case():
    route = compile_regex("/users/[0-9]+/avatar")
    assert route.fullmatch("/users/42/avatar")
    assert not route.fullmatch("/users/42/avatar/x")
    assert not route.fullmatch("/Users/42/avatar")
    assert compile_regex("/users/[0-9]+", ignore_case=True).fullmatch("/USERS/7")
    assert compile_regex("rq_total$").search("cluster.api.upstream_rq_total")
    assert not compile_regex("^rq_total").search("cluster.api.upstream_rq_total")
    # Header values are latin-1 text: every character stays one character.
    assert compile_regex("caf.").fullmatch("caf\xe9")
    assert not compile_regex("x").search("\udcff")  # a lone surrogate from a URL


def test_catastrophic_pattern_runs_in_linear_time():
    regex = compile_regex("/api/(a+)+/x")
    start = time.perf_counter()
    assert not regex.fullmatch("/api/" + "a" * 100_000 + "/y")
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"/users/(\d+)/\1", r"invalid escape sequence: \1"),
        ("/a(?=b)", "invalid perl operator: (?="),
        ("/a(?<!b)", "invalid perl operator: (?<!"),
        ("/users/(", "missing ): /users/("),
    ],
)
def test_what_re2_cannot_compile_is_refused(pattern, reason):
    with pytest.raises(RegexError) as info:
        compile_regex(pattern)
    assert str(info.value) == (
        f"'{pattern}': {reason} (RE2 syntax: no backreferences or lookaround)"
    )


def test_program_size_is_bounded():
    assert compile_regex("[a-z]{1,30}").program_size <= MAX_PROGRAM_SIZE
    with pytest.raises(RegexError, match=r"program size 203 is over the limit of 100"):
        compile_regex("[a-z]{1,100}")


def route(match: str) -> str:
    return VALID + f'[[virtual_hosts.api.routes]]\nmatch = {match}\ncluster = "api"\n'


def test_validate_names_the_toml_path_of_a_backreference():
    (error,) = errors_of(route(r"{ regex = '/users/(\d+)/\1' }"))
    assert error == (
        r"virtual_hosts.api.routes[2].match.regex: must be a valid RE2 regex: '/users/(\d+)/\1':"
        r" invalid escape sequence: \1 (RE2 syntax: no backreferences or lookaround)"
    )


def test_validate_refuses_an_oversized_program():
    (error,) = errors_of(route("{ regex = '/id/[0-9a-f]{64}' }"))
    assert error.startswith(
        "virtual_hosts.api.routes[2].match.regex: must be a valid RE2 regex: '/id/[0-9a-f]{64}':"
        " its RE2 program size"
    )
    assert "over the limit of 100 (Envoy's re2.max_program_size.error_level)" in error


def test_case_insensitive_path_regex_is_sized_as_compiled():
    # Case folding turns [a-z] into [A-Za-z]: the route table compiles the folded program.
    pattern = "/[a-z]{1,14}"
    assert compile_regex(pattern).program_size <= MAX_PROGRAM_SIZE
    with pytest.raises(RegexError, match="program size 102"):
        compile_regex(pattern, ignore_case=True)
    loads_config(route(f"{{ regex = '{pattern}' }}"))
    (error,) = errors_of(route(f"{{ regex = '{pattern}', case_sensitive = false }}"))
    assert "program size 102" in error


@pytest.mark.parametrize(
    ("match", "path"),
    [
        (
            "{ prefix = '/', headers = [{ name = 'x', regex = '(?=a)' }] }",
            "match.headers[0].regex",
        ),
        (
            "{ prefix = '/', query_parameters = [{ name = 'q', regex = '(a)\\1' }] }",
            "match.query_parameters[0].regex",
        ),
    ],
)
def test_matcher_regexes_are_checked(match, path):
    (error,) = errors_of(route(match))
    assert error.startswith(f"virtual_hosts.api.routes[2].{path}: must be a valid RE2 regex:")


def test_filter_and_server_regexes_are_checked():
    text = VALID + (
        "[http_filters.guard]\ntype = 'rbac'\naction = 'deny'\n"
        "[[http_filters.guard.rules]]\nheaders = [{ name = 'x-role', regex = '(g)\\1' }]\n"
        "[http_filters.cors]\ntype = 'cors'\nallow_origin_regex = ['https://(?!evil).*']\n"
        "[[server.histogram_buckets]]\nmatch = '(?<=x)y'\nbuckets = [1.0]\n"
    )
    errors = errors_of(text)
    assert len(errors) == 3, errors
    assert errors[0].startswith("server.histogram_buckets[0].match: must be a valid RE2 regex:")
    assert errors[1].startswith(
        "http_filters.guard.rules[0].headers[0].regex: must be a valid RE2 regex:"
    )
    assert errors[2].startswith("http_filters.cors.allow_origin_regex: must be a valid RE2 regex:")


def test_per_route_filter_override_regexes_are_checked():
    text = VALID.replace(
        'match = { path = "/healthz" }',
        'match = { path = "/healthz" }\n'
        "http_filters.cors.config = { allow_origin_regex = ['(a)\\1'] }",
    ) + ("[http_filters.cors]\ntype = 'cors'\n")
    (error,) = errors_of(text)
    assert error.startswith(
        "virtual_hosts.api.routes[1].http_filters.cors.config.allow_origin_regex: "
        "must be a valid RE2 regex:"
    )
