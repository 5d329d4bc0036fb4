"""Narrowing and sorting task tree snapshots (gateway/observability/task_query.py), on
hand-made trees."""

import pytest

from gateway.observability.task_query import TaskQuery

TREE = {
    "name": "<init>",
    "children": [
        {
            "name": "cluster manager",
            "kind": "cluster_manager",
            "age_s": 9.0,
            "children": [
                {
                    "name": "cluster api",
                    "kind": "cluster",
                    "cluster": "api",
                    "age_s": 9.0,
                    "children": [{"name": "health check 127.0.0.1:1"}],
                }
            ],
        },
        {
            "name": "listener edge",
            "kind": "listener",
            "listener": "edge",
            "age_s": 9.0,
            "children": [
                {"name": "accept"},
                {
                    "name": "conn b",
                    "kind": "connection",
                    "listener": "edge",
                    "state": "idle",
                    "age_s": 1.0,
                },
                {
                    "name": "conn a",
                    "kind": "connection",
                    "listener": "edge",
                    "state": "active request",
                    "age_s": 7.0,
                    "children": [
                        {
                            "name": "stream 1 GET /slow",
                            "kind": "stream",
                            "listener": "edge",
                            "cluster": "api",
                            "state": "waiting for upstream response headers",
                            "age_s": 6.5,
                        }
                    ],
                },
            ],
        },
    ],
}


def names(node):
    yield node["name"]
    for child in node.get("children", ()):
        yield from names(child)


def test_cluster_keeps_matches_with_subtrees_and_the_path_to_them():
    got = TaskQuery.from_params({"cluster": "api"}).apply(TREE)
    assert list(names(got)) == [
        "<init>",
        "cluster manager",
        "cluster api",
        "health check 127.0.0.1:1",
        "listener edge",
        "conn a",
        "stream 1 GET /slow",
    ]


def test_conditions_combine_and_state_is_a_substring():
    query = TaskQuery.from_params({"state": "UPSTREAM", "older_than": "5s", "listener": "edge"})
    assert list(names(query.apply(TREE)))[-1] == "stream 1 GET /slow"
    none = TaskQuery.from_params({"state": "upstream", "older_than": "10s"}).apply(TREE)
    assert none == {"name": "<init>"}
    idle = TaskQuery.from_params({"state": "idle"}).apply(TREE)
    assert list(names(idle)) == ["<init>", "listener edge", "conn b"]


def test_sort_by_age_puts_the_oldest_first_and_plain_tasks_last():
    got = TaskQuery.from_params({"sort": "age"}).apply(TREE)
    listener = got["children"][1]
    assert [c["name"] for c in listener["children"]] == ["conn a", "conn b", "accept"]
    assert TaskQuery.from_params({}).apply(TREE) is TREE


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"older_than": "5"}, "older_than: expected a duration"),
        ({"sort": "size"}, "sort: expected 'name' or 'age', got 'size'"),
        ({"show_query": "yes"}, "show_query: expected 'true' or 'false', got 'yes'"),
    ],
)
def test_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        TaskQuery.from_params(params)


def test_a_query_passes_on_as_parameters():
    params = {
        "listener": "edge",
        "cluster": "api",
        "older_than": "2.5s",
        "state": "body",
        "sort": "age",
        "show_query": "true",
    }
    query = TaskQuery.from_params(params)
    assert TaskQuery.from_params(query.to_params()) == query


def test_query_strings_are_hidden_unless_asked_for():
    stream = {
        "name": "stream 1 GET /search?token=secret",
        "kind": "stream",
        "path": "/search?token=secret",
        "children": [{"name": "upload to 127.0.0.1:1"}],
    }
    long_path = "/" + "a" * 70 + "?token=secret"
    cut = {"name": f"stream 3 GET {long_path[:80]}", "kind": "stream", "path": long_path}
    plain = {"name": "stream 5 GET /plain", "kind": "stream", "path": "/plain"}
    tree = {"name": "<init>", "children": [stream, cut, plain]}

    hidden = TaskQuery.from_params({}).apply(tree)
    assert "secret" not in repr(hidden)
    first, second, third = hidden["children"]
    assert first["name"] == "stream 1 GET /search?[redacted]"
    assert first["path"] == "/search?[redacted]"
    assert first["children"] == stream["children"]
    assert second["name"] == f"stream 3 GET /{'a' * 70}?[redacted]"
    assert third is plain
    assert stream["path"] == "/search?token=secret"  # the snapshot itself is left alone

    for asked in ("true", "1", ""):
        assert TaskQuery.from_params({"show_query": asked}).apply(tree) is tree
