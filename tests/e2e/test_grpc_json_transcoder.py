"""REST to gRPC through the gateway: curl and httpx -> gateway (grpc_json_transcoder) ->
grpcio server built from tests/protos/bookstore.proto, whose google.api.http rules cover
every verb, custom verbs and methods, path templates, query parameters, field and "*"
bodies, response_body and server streaming; errors as HTTP statuses and JSON; what the
filter does not transcode passing through untouched to a plain HTTP upstream."""

import base64
import functools
import json
import subprocess

import grpc
import httpx
import pytest
import trio

from tests.config_builder import ConfigBuilder, route
from tests.grpc_bookstore import Bookstore, compile_bookstore, start_bookstore
from tests.helpers import run_gateway, start_upstream, url


@pytest.fixture(scope="session")
def bookstore(tmp_path_factory: pytest.TempPathFactory) -> Bookstore:
    return compile_bookstore(tmp_path_factory.mktemp("bookstore"))


@pytest.fixture(scope="module")
def grpc_server(bookstore):
    server, port, servicer = start_bookstore(bookstore)
    yield port, servicer
    server.stop(grace=None)


def transcoder_config(
    bookstore: Bookstore, grpc_port: int, web_port: int, **filter_keys: object
) -> ConfigBuilder:
    """Listener `edge` transcodes for bookstore.v1.Bookstore; gRPC requests (the transcoded
    ones among them: the route is matched again on the gRPC path) go to the grpcio
    server, anything else to the HTTP upstream `web`."""
    config = ConfigBuilder(admin=False)
    config.server(drain_timeout="2s")
    config.listener("edge", virtual_hosts=["main"], http_filters=["rest"])
    config.http_filter(
        "rest",
        "grpc_json_transcoder",
        proto_descriptor=str(bookstore.descriptor_set),
        services=["bookstore.v1.Bookstore"],
        **filter_keys,
    )
    config.virtual_host(
        "main",
        route(match={"prefix": "/bookstore.v1.Bookstore/", "grpc": True}, cluster="bookstore"),
        route("/", cluster="web"),
    )
    config.cluster("bookstore", grpc_port, protocol="http2")
    config.cluster("web", web_port)
    return config


@pytest.fixture
async def gateway(bookstore, grpc_server, nursery):
    """A gateway with the default options, its HTTP upstream, and the gRPC servicer."""
    port, servicer = grpc_server
    web = await start_upstream(nursery, "web")
    async with run_gateway(transcoder_config(bookstore, port, web.port)) as gw:
        yield gw, servicer, web


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """curl's status, headers (last of each name) and body."""
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", *args], capture_output=True, timeout=10, check=True
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


async def run_curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    return await trio.to_thread.run_sync(functools.partial(curl, *args))


# -- verbs, templates, bodies ----------------------------------------------------------------


async def test_get_without_a_body_becomes_a_grpc_call(gateway):
    gw, servicer, web = gateway
    async with httpx.AsyncClient() as client:
        response = await client.get(url(gw, "/v1/shelves"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["grpc-status"] == "0"
    assert response.json() == {
        "shelves": [{"id": "1", "theme": "Fiction"}, {"id": "2", "theme": "Poetry"}]
    }
    assert response.headers["content-length"] == str(len(response.content))
    seen = servicer.metadata[-1]
    assert seen["x-envoy-original-path"] == "/v1/shelves"
    assert seen["x-envoy-original-method"] == "GET"
    assert not web.requests


async def test_post_with_a_field_body_and_a_query_parameter(gateway):
    gw, _, _ = gateway
    status, headers, body = await run_curl(
        "-X", "POST", "-H", "content-type: application/json",
        "--data", '{"theme": "History", "tags": ["old"]}',
        url(gw, "/v1/shelves?request_id=r-1"),
    )  # fmt: skip
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"id": "100", "theme": "History", "tags": ["old", "request:r-1"]}


async def test_path_variables_fill_fields_and_delete_answers_an_empty_object(gateway):
    gw, servicer, _ = gateway
    async with httpx.AsyncClient() as client:
        got = await client.get(url(gw, "/v1/shelves/7"))
        deleted = await client.delete(url(gw, "/v1/shelves/8"))
        trailing_slash = await client.get(url(gw, "/v1/shelves/9/"))
    assert got.json() == {"id": "7", "theme": "Theme 7"}
    assert (deleted.status_code, deleted.json()) == (200, {})
    assert servicer.deleted[-1] == 8
    assert trailing_slash.json()["id"] == "9"


async def test_patch_binds_a_nested_field_from_a_multi_segment_template(gateway):
    gw, _, _ = gateway
    status, _, body = await run_curl(
        "-X", "PATCH", "--data", '{"title": "Dune", "author": {"name": "Herbert"}}',
        url(gw, "/v1/shelves/1/books/2?validateOnly=true"),
    )  # fmt: skip
    assert status == 200, body
    assert json.loads(body) == {
        "name": "shelves/1/books/2",
        "title": "Dune",
        "author": {"name": "Herbert"},
        "tags": ["validate_only:True"],
    }


async def test_put_with_body_star_and_a_custom_verb_from_additional_bindings(gateway):
    gw, _, _ = gateway
    book = {"title": "Emma", "format": "PAPERBACK", "pageCount": 474}
    async with httpx.AsyncClient() as client:
        put = await client.put(url(gw, "/v1/shelves/3/books/4"), json=book)
        replaced = await client.post(url(gw, "/v1/shelves/3/books/5:replace"), json=book)
    assert put.json() == {"name": "shelves/3/books/4", **book}
    assert replaced.json() == {"name": "shelves/3/books/5", **book}


async def test_double_wildcard_binds_the_rest_of_the_path(gateway):
    gw, _, _ = gateway
    async with httpx.AsyncClient() as client:
        deep = await client.get(url(gw, "/v1/files/a/b%20c/d%3Ae"))
        none = await client.get(url(gw, "/v1/files"))
    # Several segments keep reserved characters escaped (Envoy's default url_unescape_spec).
    assert deep.json() == {"path": "a/b c/d%3Ae"}
    assert none.json() == {}


async def test_custom_method_and_query_parameters_of_every_kind(gateway):
    gw, _, _ = gateway
    query = (
        "query=rust%20books&tags=a&tags=b&author.name=Jo&author.born=1970&format=HARDCOVER"
        "&exact=true&limit=9007199254740993&score=0.5&minPages=300&years=1999&years=2001"
        f"&token={base64.urlsafe_b64encode(b'tok').decode()}"
    )
    status, _, body = await run_curl("-X", "SEARCH", url(gw, f"/v1/search?{query}"))
    assert status == 200, body
    assert json.loads(body) == {
        "query": "rust books",
        "tags": ["a", "b"],
        "author": {"name": "Jo", "born": 1970},
        "format": "HARDCOVER",
        "exact": True,
        "limit": "9007199254740993",
        "score": 0.5,
        "minPages": 300,
        "token": base64.b64encode(b"tok").decode(),
        "years": [1999, 2001],
    }


async def test_response_body_names_the_field_that_is_the_body(gateway):
    gw, _, _ = gateway
    async with httpx.AsyncClient() as client:
        response = await client.get(url(gw, "/v1/shelves/5/title"))
    assert response.json() == "Theme 5"


async def test_unary_over_http2(gateway):
    gw, _, _ = gateway
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        response = await client.get(url(gw, "/v1/shelves/11"))
    assert response.http_version == "HTTP/2"
    assert response.json() == {"id": "11", "theme": "Theme 11"}


# -- server streaming ------------------------------------------------------------------------


async def test_server_streaming_is_a_json_array(gateway):
    gw, _, _ = gateway
    async with httpx.AsyncClient() as client:
        response = await client.get(url(gw, "/v1/shelves/2/books?count=3"))
        empty = await client.get(url(gw, "/v1/shelves/2/books?count=0"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [
        {"name": "shelves/2/books/0"},
        {"name": "shelves/2/books/1", "pageCount": 1},
        {"name": "shelves/2/books/2", "pageCount": 2},
    ]
    assert (empty.status_code, empty.content) == (200, b"[]")


async def test_server_streaming_newline_delimited_arrives_message_by_message(
    bookstore, grpc_server, nursery
):
    port, _ = grpc_server
    web = await start_upstream(nursery, "web")
    config = transcoder_config(
        bookstore, port, web.port, print_options={"stream_newline_delimited": True}
    )
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        lines = []
        arrived = []
        path = "/v1/shelves/4/books?count=4&failAfter=slow"
        async with client.stream("GET", url(gw, path)) as response:
            async for line in response.aiter_lines():
                lines.append(json.loads(line))
                arrived.append(trio.current_time())
    assert [line["name"] for line in lines] == [f"shelves/4/books/{i}" for i in range(4)]
    # The server sends one every 50 ms: they came as sent, not all at the end.
    assert arrived[-1] - arrived[0] > 0.1


async def test_a_stream_that_fails_midway_ends_with_its_status_in_trailers(gateway):
    gw, _, _ = gateway
    status, headers, body = await run_curl(
        "--http2-prior-knowledge", url(gw, "/v1/shelves/1/books?count=5&failAfter=2:ABORTED")
    )
    # The head (200) left with the first message; the array closes, the status follows in
    # the trailers (which curl prints after the body).
    assert (status, headers["content-type"]) == (200, "application/json")
    assert "content-length" not in headers
    body, _, trailers = body.partition(b"grpc-status:")
    assert json.loads(body) == [
        {"name": "shelves/1/books/0"},
        {"name": "shelves/1/books/1", "pageCount": 1},
    ]
    assert trailers == b" 10\r\ngrpc-message: failed after 2\r\n"


# -- errors ----------------------------------------------------------------------------------


async def test_grpc_errors_take_envoys_http_status_with_grpc_status_headers(gateway):
    gw, _, _ = gateway
    async with httpx.AsyncClient() as client:
        missing = await client.get(url(gw, "/v1/shelves/404"))
        statuses = {}
        for code in (3, 5, 7, 8, 12, 14, 16):
            answer = await client.post(url(gw, "/v1/fail"), json={"code": code, "message": "no"})
            statuses[code] = (answer.status_code, answer.headers["grpc-status"], answer.content)
    assert missing.status_code == 404
    assert missing.headers["grpc-status"] == "5"
    assert missing.headers["grpc-message"] == "shelf 404 not found"
    assert statuses == {
        3: (400, "3", b""),
        5: (404, "5", b""),
        7: (403, "7", b""),
        8: (429, "8", b""),
        12: (501, "12", b""),
        14: (503, "14", b""),
        16: (401, "16", b""),
    }


async def test_convert_grpc_status_answers_a_json_status_with_its_details(
    bookstore, grpc_server, nursery
):
    port, _ = grpc_server
    web = await start_upstream(nursery, "web")
    config = transcoder_config(bookstore, port, web.port, convert_grpc_status=True)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        missing = await client.get(url(gw, "/v1/shelves/404"))
        detailed = await client.post(
            url(gw, "/v1/fail"),
            json={"code": 9, "message": "shelf is full", "withDetails": True},
        )
        fine = await client.get(url(gw, "/v1/shelves/3"))
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {"code": 5, "message": "shelf 404 not found"}
    assert detailed.status_code == 400
    assert detailed.json() == {
        "code": 9,
        "message": "shelf is full",
        "details": [{"@type": "type.googleapis.com/bookstore.v1.Shelf", "id": "7", "theme": "why"}],
    }
    assert fine.json() == {"id": "3", "theme": "Theme 3"}


async def test_bad_json_and_bad_values_are_400_and_never_reach_the_service(gateway):
    gw, servicer, _ = gateway
    calls = len(servicer.metadata)
    async with httpx.AsyncClient() as client:
        not_json = await client.post(url(gw, "/v1/shelves"), content=b'{"theme": ')
        unknown_field = await client.post(url(gw, "/v1/shelves"), json={"colour": "red"})
        bad_number = await client.get(url(gw, "/v1/shelves/seven"))
        bad_bool = await client.request("SEARCH", url(gw, "/v1/search?exact=yes"))
        too_deep = await client.post(url(gw, "/v1/fail"), content=b"[" * 100_000)
    for response in (not_json, unknown_field, bad_number, bad_bool, too_deep):
        assert response.status_code == 400, response.text
    assert "not JSON" in not_json.text
    assert "colour" in unknown_field.text
    assert len(servicer.metadata) == calls


async def test_a_body_over_the_bound_is_413_and_a_call_in_flight_is_unharmed(
    bookstore, grpc_server, nursery
):
    port, _ = grpc_server
    web = await start_upstream(nursery, "web")
    config = transcoder_config(bookstore, port, web.port, max_request_body_size=1024)
    big = {"theme": "x" * 2000}
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        bystander: list[httpx.Response] = []

        async def stream_slowly() -> None:
            path = "/v1/shelves/6/books?count=6&failAfter=slow"
            bystander.append(await client.get(url(gw, path)))

        async def chunked():  # no content-length: refused once past the bound
            yield json.dumps(big).encode()

        async with trio.open_nursery() as clients:
            clients.start_soon(stream_slowly)
            await trio.sleep(0.05)
            declared = await client.post(url(gw, "/v1/shelves"), json=big)
            streamed = await client.post(url(gw, "/v1/shelves"), content=chunked())
            fits = await client.post(url(gw, "/v1/shelves"), json={"theme": "small"})
        assert declared.status_code == 413
        assert streamed.status_code == 413
        assert "buffer size exceeds the configured limit" in streamed.text
        assert fits.status_code == 200
        assert len(bystander[0].json()) == 6
        assert gw.stats.value("http.edge.rest.transcoder_request_buffer_exceeded") == 2


# -- what is not transcoded ------------------------------------------------------------------


async def test_unknown_paths_and_unknown_query_parameters_pass_through_untouched(gateway):
    gw, _, web = gateway
    async with httpx.AsyncClient() as client:
        other = await client.post(url(gw, "/v2/other?x=1"), content=b"plain")
        unknown_query = await client.get(url(gw, "/v1/shelves/1?colour=red"))
        wrong_method = await client.post(url(gw, "/v1/shelves/1"))
    assert other.json()["server"] == "web"
    assert [(r.method, r.path, r.body) for r in web.requests] == [
        ("POST", "/v2/other?x=1", b"plain"),
        ("GET", "/v1/shelves/1?colour=red", b""),
        ("POST", "/v1/shelves/1", b""),
    ]
    assert "application/grpc" not in web.requests[0].headers.get("content-type", "")
    assert unknown_query.json()["path"] == "/v1/shelves/1?colour=red"
    assert wrong_method.status_code == 200


async def test_options_refuse_what_would_pass_through(bookstore, grpc_server, nursery):
    port, _ = grpc_server
    web = await start_upstream(nursery, "web")
    config = transcoder_config(
        bookstore,
        port,
        web.port,
        ignored_query_parameters=["api_key"],
        request_validation_options={
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
        },
    )
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        unknown_method = await client.get(url(gw, "/v2/other"))
        unknown_query = await client.get(url(gw, "/v1/shelves/1?colour=red"))
        ignored = await client.get(url(gw, "/v1/shelves/1?api_key=k"))
    assert unknown_method.status_code == 404
    assert unknown_query.status_code == 400
    assert ignored.json() == {"id": "1", "theme": "Theme 1"}
    assert not web.requests


async def test_grpc_clients_pass_through_and_auto_mapping_posts_json_to_the_grpc_path(
    bookstore, grpc_server, nursery
):
    port, _ = grpc_server
    web = await start_upstream(nursery, "web")
    config = transcoder_config(bookstore, port, web.port, auto_mapping=True)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        posted = await client.post(
            url(gw, "/bookstore.v1.Bookstore/Unmapped"), json={"theme": "auto"}
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}")
        stub = bookstore.pb2_grpc.BookstoreStub(channel)
        shelf = await trio.to_thread.run_sync(
            functools.partial(stub.GetShelf, bookstore.pb2.GetShelfRequest(shelf=12), timeout=5)
        )
        channel.close()
    assert posted.json() == {"theme": "auto"}
    assert (shelf.id, shelf.theme) == (12, "Theme 12")
