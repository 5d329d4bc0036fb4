"""Spellings of a denied path, sent raw (real clients normalise what they send): with the
listener's defaults none of them reaches the backend; each is denied, refused or redirected
to the one spelling the rules see."""

import pytest

from tests.config_builder import proxy_config
from tests.helpers import raw_exchange, run_gateway, start_upstream

SPELLINGS = [
    "/admin",
    "//admin",
    "///admin",
    "/./admin",
    "/.//admin",
    "/%61dmin",
    "/%61%64%6d%69%6e",
    "/x/../admin",
    "/x/./../admin",
    "/x/y/../../admin",
    "/%2e/admin",
    "/%2e%2e/admin",
    "/%2E%2E/admin",
    "/.%2e/admin",
    "/x/%2e%2e/admin",
    "/x/..%2fadmin",
    "/x/..%2Fadmin",
    "/x%2f..%2fadmin",
    "/%2fadmin",
    "/%5cadmin",
    "/x/..%5cadmin",
    "/x\\..\\admin",
    "/x/..\\admin",
    "/admin/",
    "/admin/.",
    "/admin/x/..",
    "/admin%2fx",
    "/./x/../admin?q=1",
]

RBAC = {"type": "rbac", "action": "deny", "rules": [{"path_prefixes": ["/admin"]}]}


async def send(gw, path: str) -> tuple[int, dict[str, str]]:
    out = await raw_exchange(
        gw.listener_ports["edge"],
        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"),
    )
    head = out.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), headers


async def test_no_spelling_of_a_denied_path_reaches_the_backend(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port, http_filters={"rbac": RBAC})) as gw:
        outcomes = {}
        for path in SPELLINGS:
            status, headers = await send(gw, path)
            if status == 307:  # a client following the redirect meets the rule
                assert headers["location"].startswith("/admin"), (path, headers)
                status, _ = await send(gw, headers["location"])
            outcomes[path] = status
            assert (await send(gw, "/ok"))[0] == 200  # a bystander is served throughout
        assert {p: s for p, s in outcomes.items() if s not in (400, 403)} == {}
        assert [r.path for r in up.requests if "admin" in r.path] == []
        assert gw.stats.value("http.edge.downstream_rq_redirected_with_normalized_path") > 0


async def test_the_upstream_gets_the_normalised_path(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        assert (await send(gw, "/a/./b//c/../%64?x=/../y"))[0] == 200
        assert (await send(gw, "/a%2Fb"))[0] == 307
        assert (await send(gw, "/bad%zz"))[0] == 400
    assert [r.path for r in up.requests] == ["/a/b/d?x=/../y"]
    assert gw.stats.value("http.edge.downstream_rq_failed_path_normalization") == 1


@pytest.mark.parametrize(
    ("action", "status", "seen"),
    [
        ("keep_unchanged", 200, "/a%2Fb"),
        ("unescape_and_forward", 200, "/a/b"),
        ("reject_request", 400, None),
    ],
)
async def test_escaped_slash_actions(nursery, action, status, seen):
    up = await start_upstream(nursery)
    listener = {"path_with_escaped_slashes_action": action}
    async with run_gateway(proxy_config(up.port, listener=listener)) as gw:
        assert (await send(gw, "/a%2fb"))[0] == status
    assert [r.path for r in up.requests] == ([seen] if seen else [])


async def test_normalisation_off_forwards_the_path_as_sent(nursery):
    up = await start_upstream(nursery)
    listener = {
        "normalize_path": False,
        "merge_slashes": False,
        "path_with_escaped_slashes_action": "keep_unchanged",
    }
    async with run_gateway(proxy_config(up.port, listener=listener)) as gw:
        assert (await send(gw, "/x/..//%61dmin"))[0] == 200
    assert [r.path for r in up.requests] == ["/x/..//%61dmin"]
