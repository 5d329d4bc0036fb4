"""What the HTTP/2 codec costs per proxied request, without sockets: the gateway's four
codec steps of an h2c-both-sides request, timed apart, on warm connections.

    python bench/h2_codec_cost.py [--requests N] [--in-flight M]

A client codec stands in for h2load and a server codec for the upstream; only the
gateway's own codecs are timed: downstream receive (the request HEADERS), upstream send
(the request as the router forwards it, with the edge headers the gateway adds), upstream
receive (response HEADERS and DATA), downstream send (response HEADERS and DATA).
"""

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config.model import Http2ProtocolOptions
from gateway.protocol.codec_h2 import H2Codec
from gateway.protocol.events import RequestHeaders, ResponseHeaders
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

STEPS = ("downstream receive", "upstream send", "upstream receive", "downstream send")
BODY = b"hello world\n"


def _pair(options: Http2ProtocolOptions) -> tuple[H2Codec, H2Codec]:
    client = H2Codec(client_side=True, options=options, scheme="http")
    server = H2Codec(client_side=False, options=options, scheme="http")
    client.initiate()
    server.initiate()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def _h2load_request() -> RequestHead:
    headers = HeaderMap([("user-agent", "h2load nghttp2/1.52.0")])
    return RequestHead("GET", "/", "127.0.0.1:10000", "http", headers, "2")


def _forwarded(head: RequestHead) -> RequestHead:
    """The request as the router sends it upstream: the gateway's edge headers added."""
    headers = HeaderMap(head.headers)
    headers.set("x-forwarded-for", "127.0.0.1")
    headers.set("x-forwarded-proto", "http")
    headers.set("x-request-id", f"{random.getrandbits(128):032x}")
    headers.set(
        "traceparent", f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-00"
    )
    headers.set("x-envoy-expected-rq-timeout-ms", "15000")
    return RequestHead(head.method, head.path, head.authority, head.scheme, headers, "2")


def _nginx_response() -> ResponseHead:
    return ResponseHead(
        200,
        HeaderMap(
            [
                ("server", "nginx/1.22.1"),
                ("date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())),
                ("content-type", "text/plain"),
                ("content-length", str(len(BODY))),
            ]
        ),
    )


def measure(requests: int, in_flight: int) -> dict[str, float]:
    """Microseconds per request for each gateway step."""
    options = Http2ProtocolOptions()
    h2load, downstream = _pair(options)
    upstream_client, nginx = _pair(options)
    spent = dict.fromkeys(STEPS, 0.0)
    # CPU time of this thread, not wall time: the machine is shared, and a preempted step
    # would count the other process's time.
    clock = time.thread_time
    done = 0
    while done < requests:
        batch = min(in_flight, requests - done)
        streams = []
        for _ in range(batch):
            sid = h2load.next_stream_id()
            h2load.send_request_head(sid, _h2load_request(), end_stream=True)
            streams.append(sid)
        wire = h2load.data_to_send()
        t = clock()
        events = downstream.receive_data(wire)
        spent["downstream receive"] += clock() - t
        heads = [e for e in events if isinstance(e, RequestHeaders)]
        assert len(heads) == batch
        forwarded = [_forwarded(e.head) for e in heads]
        t = clock()
        up_ids = []
        for head in forwarded:
            sid = upstream_client.next_stream_id()
            upstream_client.send_request_head(sid, head, end_stream=True)
            up_ids.append(sid)
        wire = upstream_client.data_to_send()
        spent["upstream send"] += clock() - t
        for e in nginx.receive_data(wire):
            if isinstance(e, RequestHeaders):
                nginx.send_response_head(e.stream_id, _nginx_response(), end_stream=False)
                nginx.send_data(e.stream_id, memoryview(BODY), end_stream=True)
        wire = nginx.data_to_send()
        t = clock()
        events = upstream_client.receive_data(wire)
        spent["upstream receive"] += clock() - t
        responses = [e for e in events if isinstance(e, ResponseHeaders)]
        assert len(responses) == batch
        t = clock()
        for sid, response in zip(streams, responses, strict=True):
            downstream.send_response_head(sid, response.head, end_stream=False)
            downstream.send_data(sid, memoryview(BODY), end_stream=True)
        wire = downstream.data_to_send()
        spent["downstream send"] += clock() - t
        h2load.receive_data(wire)
        for sid in up_ids:  # the router credits what it forwarded
            upstream_client.acknowledge(sid, len(BODY))
        nginx.receive_data(upstream_client.data_to_send())
        done += batch
    return {step: seconds * 1e6 / requests for step, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [measure(args.requests, args.in_flight) for _ in range(args.rounds)]
    print(f"us per request (median of {args.rounds} rounds of {args.requests}):")
    total = 0.0
    for step in STEPS:
        value = sorted(r[step] for r in rounds)[len(rounds) // 2]
        total += value
        print(f"  {step:20s} {value:7.1f}")
    print(f"  {'total':20s} {total:7.1f}")


if __name__ == "__main__":
    main()
