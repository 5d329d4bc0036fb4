"""HTTP/2 clients that make the gateway work without asking for anything: floods of control
frames, resets the gateway is made to send, oversized header blocks, a huge HPACK table,
more streams than allowed. Each is stopped (GOAWAY ENHANCE_YOUR_CALM, counted) or bounded,
and a bystander client on the same worker keeps being served."""

import statistics

import h2.errors
import h2.events
import h2.settings
import httpx
import hyperframe.frame
import pytest
import trio

from tests.config_builder import proxy_config, route
from tests.helpers import RawH2Client, run_gateway, start_upstream, url


async def canary_latencies(gw, n: int = 20, pause: float = 0.02) -> list[float]:
    """A bystander's request latencies, one request at a time."""
    latencies = []
    async with httpx.AsyncClient() as client:
        for _ in range(n):
            start = trio.current_time()
            r = await client.get(url(gw, "/canary"))
            assert r.status_code == 200
            latencies.append(trio.current_time() - start)
            await trio.sleep(pause)
    return latencies


async def goaway(client: RawH2Client, timeout: float = 5.0) -> hyperframe.frame.GoAwayFrame:
    """Reads raw frames (what the flood sent bypassed the client's h2, so its h2 cannot
    follow the connection) from the start of the connection until the GOAWAY."""
    buffer = b""
    with trio.fail_after(timeout):
        while True:
            data = await client.stream.receive_some(1 << 20)
            assert data, "closed without GOAWAY"
            buffer += data
            while len(buffer) >= 9:
                frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) < 9 + length:
                    break
                if isinstance(frame, hyperframe.frame.GoAwayFrame):
                    frame.parse_body(memoryview(buffer[9 : 9 + length]))
                    return frame
                buffer = buffer[9 + length :]


@pytest.fixture
async def gw(nursery, request):
    up = await start_upstream(nursery)
    http2 = getattr(request, "param", None)  # the listener's http2 keys, if any
    listener = {"http2": http2} if http2 else None
    async with run_gateway(proxy_config(up.port, listener=listener)) as gw:
        gw.upstream = up
        yield gw


def ping(i: int) -> bytes:
    return hyperframe.frame.PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize()


FLOODS = {
    "ping": (b"".join(ping(i) for i in range(2000)), "http2.outbound_control_flood"),
    "settings": (
        hyperframe.frame.SettingsFrame(0).serialize() * 2000,
        "http2.outbound_control_flood",
    ),
    "priority": (
        b"".join(
            hyperframe.frame.PriorityFrame(2 * i + 1, depends_on=0, stream_weight=1).serialize()
            for i in range(500)
        ),
        "http2.inbound_priority_frames_flood",
    ),
    "window_update": (
        hyperframe.frame.WindowUpdateFrame(0, window_increment=1).serialize() * 500,
        "http2.inbound_window_update_frames_flood",
    ),
}


@pytest.mark.parametrize("kind", list(FLOODS))
async def test_control_frame_floods_are_stopped(gw, kind):
    frames, stat = FLOODS[kind]
    client = await RawH2Client.connect(gw.listener_ports["edge"])
    async with client.stream:
        await client.stream.send_all(frames)
        event = await goaway(client)
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert gw.stats.value(f"http.edge.{stat}") == 1
    assert max(await canary_latencies(gw, n=5)) < 1.0


async def test_empty_data_frames_are_stopped(gw):
    client = await RawH2Client.connect(gw.listener_ports["edge"])
    async with client.stream:
        stream_id = client.request("/hang-before-body", end_stream=False)
        await client.flush()
        empty = hyperframe.frame.DataFrame(stream_id, data=b"").serialize()
        await client.stream.send_all(empty * 3)
        event = await goaway(client)
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert gw.stats.value("http.edge.http2.inbound_empty_frames_flood") == 1


async def test_ping_floods_from_several_clients_leave_a_bystander_served(gw):
    """Four clients flood PINGs in batches under the outbound limit and read every ACK: the
    most they get is their share of the loop, which a bystander shares fairly."""
    batch = b"".join(ping(i) for i in range(500))
    acks = [0]

    async def flooder() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            client = RawH2Client(stream)
            client.conn.initiate_connection()
            await client.flush()
            with trio.move_on_after(2):
                while True:
                    await stream.send_all(batch)
                    got = 0
                    while got < len(batch):  # each ACK is as long as its PING
                        data = await stream.receive_some(1 << 20)
                        if not data:
                            return
                        got += len(data)
                    acks[0] += got // 17

    baseline = statistics.median(await canary_latencies(gw, n=10))
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(flooder)
        await trio.sleep(0.2)
        during = await canary_latencies(gw, n=20, pause=0.05)
    assert acks[0] > 1000, "the flood did not run"
    assert statistics.median(during) < max(0.25, 20 * baseline), (baseline, during)


async def test_reset_streams_the_gateway_sends_count_as_rapid_resets(gw):
    """MadeYouReset: HEADERS, then a stream WINDOW_UPDATE that overflows the stream's window,
    so the gateway itself resets the stream. Those resets count like the client's own."""
    client = await RawH2Client.connect(gw.listener_ports["edge"])
    overflow = 2**31 - 1
    sent = 0
    found: list[hyperframe.frame.GoAwayFrame] = []

    async def read_goaway() -> None:
        found.append(await goaway(client))

    async with client.stream, trio.open_nursery() as nursery:
        nursery.start_soon(read_goaway)
        with trio.move_on_after(5):
            try:
                while not found:  # until the GOAWAY arrives: the attack's streams so far
                    stream_id = client.request("/slow?delay=1")
                    frame = hyperframe.frame.WindowUpdateFrame(stream_id, window_increment=overflow)
                    await client.stream.send_all(client.conn.data_to_send() + frame.serialize())
                    sent += 1
                    await trio.lowlevel.checkpoint()
            except (trio.BrokenResourceError, h2.exceptions.ProtocolError):
                pass
    (event,) = found
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert sent <= 400, f"{sent} resets before the connection was closed"
    assert gw.stats.value("http.edge.downstream_cx_rapid_reset") == 1
    # A stream reset mid-connect leaves its connect to the pool: few upstream connections.
    assert gw.stats.value("cluster.backend.upstream_cx_total") <= sent // 3, sent
    assert max(await canary_latencies(gw, n=5)) < 1.0


@pytest.mark.parametrize(
    "gw",
    [{"max_stream_resets_per_second": 100000, "premature_reset_total_stream_count": 40}],
    indirect=True,
)
async def test_premature_resets_close_the_connection(gw):
    """Resets below the per-second limit still end the connection once half of its streams
    were reset before they lived a second (Envoy's premature reset accounting)."""
    client = await RawH2Client.connect(gw.listener_ports["edge"])
    async with client.stream:
        sent = 0
        try:
            for _ in range(30):
                stream_id = client.request("/slow?delay=1")
                client.conn.reset_stream(stream_id)
                await client.flush()
                sent += 1
                await trio.sleep(0.01)
        except trio.BrokenResourceError:
            pass
        event = await goaway(client)
    assert 20 <= sent <= 30
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert gw.stats.value("http.edge.downstream_rq_too_many_premature_resets") == 1


async def test_huge_hpack_table_from_the_client_is_capped(gw):
    client = await RawH2Client.connect(gw.listener_ports["edge"])
    async with client.stream:
        client.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 2**31 - 1})
        await client.flush()
        for i in range(50):  # every response carries new values for the table
            stream_id = client.request(f"/echo?n={i}")
            await client.flush()
            await client.read_until(
                lambda e, s=stream_id: isinstance(e, h2.events.StreamEnded) and e.stream_id == s
            )
        table = client.conn.decoder.header_table
        assert table.maxsize <= 4096
        assert sum(32 + len(n) + len(v) for n, v in table.dynamic_entries) <= 4096


@pytest.mark.parametrize("gw", [{"max_concurrent_streams": 10}], indirect=True)
async def test_streams_past_the_limit_before_settings_are_refused_one_by_one(gw):
    client = await RawH2Client.connect(gw.listener_ports["edge"])
    async with client.stream:
        ids = [client.request("/slow?delay=0.3") for _ in range(12)]
        await client.flush()  # all at once, before the gateway's SETTINGS were read
        events = await client.read_until(
            lambda e: sum(isinstance(x, h2.events.StreamEnded) for x in client.events) >= 10
        )
    resets = {e.stream_id: e.error_code for e in events if isinstance(e, h2.events.StreamReset)}
    ended = {e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)}
    assert resets == {i: h2.errors.ErrorCodes.REFUSED_STREAM for i in ids[10:]}
    assert ended == set(ids[:10])
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    assert gw.stats.value("http.edge.http2.streams_refused") == 2


@pytest.mark.parametrize("gw", [{"max_header_list_size": 8192}], indirect=True)
async def test_continuation_frames_are_bounded_by_the_header_list_size(gw):
    client = await RawH2Client.connect(gw.listener_ports["edge"])
    async with client.stream:
        headers = hyperframe.frame.HeadersFrame(1, data=b"\x82\x86\x84")  # GET http /
        continuation = hyperframe.frame.ContinuationFrame(1, data=b"\x00" * 4000)
        await client.stream.send_all(headers.serialize() + continuation.serialize() * 3)
        event = await goaway(client)
    assert event.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert gw.stats.value("http.edge.http2.header_overflow") == 1
    assert max(await canary_latencies(gw, n=5)) < 1.0


async def test_response_headers_do_not_wait_for_a_closed_stream_window():
    """HEADERS are not flow controlled: a client that grants no window still gets the
    response head at once (the body waits, as it must). A direct response has its body at
    hand, so its head would otherwise wait to leave with it."""
    routes = [route(direct_response={"status": 200, "body": "a body that needs a window"})]
    async with run_gateway(proxy_config(routes=routes)) as gw:
        client = await RawH2Client.connect(gw.listener_ports["edge"])
        async with client.stream:
            client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            await client.flush()
            await client.read_until(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
            stream_id = client.request("/")
            await client.flush()
            events = await client.read_until(
                lambda e: isinstance(e, h2.events.ResponseReceived), timeout=2
            )
    assert not any(
        isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id for e in events
    )
