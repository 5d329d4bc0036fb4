"""The statsd lines and datagrams, histogram samples for the sinks, and counter increases
per source (what the supervisor adds up from its workers)."""

from gateway.observability.stats import MAX_SAMPLES_PER_FLUSH, SampledHistogram, StatsStore
from gateway.observability.stats_flush import StatsFlusher
from gateway.observability.statsd import StatsdFormat, datagrams, milliseconds


def test_datagrams_stay_within_their_size_and_a_long_line_goes_alone():
    lines = [f"envoy.a.b{i}:1|c" for i in range(100)] + ["x" * 300, "envoy.last:2|g"]
    packed = list(datagrams(lines, 200))
    assert all(len(d) <= 200 for d in packed if b"x" * 300 not in d)
    assert b"x" * 300 in packed  # alone, whole
    assert b"\n".join(packed).split(b"\n") == [line.encode() for line in lines]


def test_lines_statsd_and_dog_statsd():
    store = StatsStore()
    scope = store.scope("cluster.api:v1", "cluster", {"envoy_cluster_name": "api:v1"})
    counter, gauge = scope.counter("upstream_rq_total"), scope.gauge("upstream_cx_active")
    gauge.value = -1  # a bug must not become a relative statsd gauge
    plain, dog = StatsdFormat("envoy", tagged=False), StatsdFormat("gw", tagged=True)
    assert plain.counter(counter, 3) == "envoy.cluster.api_v1.upstream_rq_total:3|c"
    assert plain.gauge(gauge) == "envoy.cluster.api_v1.upstream_cx_active:0|g"
    assert dog.counter(counter, 3) == "gw.cluster.upstream_rq_total:3|c|#envoy.cluster_name:api_v1"
    assert milliseconds(1234567.0) == "1234567" and milliseconds(0.0004) == "0"
    assert milliseconds(2.5) == "2.5"


def test_histogram_samples_are_capped_and_sent_with_their_rate():
    store = StatsStore(keep_samples=True)
    histogram = store.scope("http.edge", "http", {}).histogram("downstream_rq_time")
    assert isinstance(histogram, SampledHistogram)
    for i in range(3 * MAX_SAMPLES_PER_FLUSH):
        histogram.record(float(i))
    samples, recorded = histogram.take_samples()
    assert (len(samples), recorded) == (MAX_SAMPLES_PER_FLUSH, 3 * MAX_SAMPLES_PER_FLUSH)
    assert max(samples) > MAX_SAMPLES_PER_FLUSH  # a choice over them all, not the first
    lines = list(StatsdFormat("envoy", tagged=False).timers(histogram, samples, recorded))
    assert all(line.endswith("|ms|@0.333333") for line in lines)
    histogram.record(7.0)
    assert histogram.take_samples() == ([7.0], 1)
    assert histogram.count == 3 * MAX_SAMPLES_PER_FLUSH + 1  # /stats still sees them all


def test_counter_increases_per_source_survive_restarts_and_silent_sources():
    flusher = StatsFlusher([])

    def rows(value: int) -> list[dict[str, object]]:
        return [{"kind": "Counter", "name": "c", "tag_name": "c", "labels": {}, "value": value}]

    assert flusher._increases([("w0 pid 1", rows(5)), ("w1 pid 2", rows(3))], None) == {"c": 8}
    # w1 did not answer: its count goes with the next flush it answers.
    assert flusher._increases([("w0 pid 1", rows(6))], None) == {"c": 1}
    assert flusher._increases([("w0 pid 1", rows(6)), ("w1 pid 2", rows(4))], None) == {"c": 1}
    # w0 restarted as pid 3: its counters start again at 0, all of it new.
    keep = {"w0 pid 3", "w1 pid 2"}
    assert flusher._increases([("w0 pid 3", rows(2)), ("w1 pid 2", rows(4))], keep) == {"c": 2}
    assert "w0 pid 1" not in flusher._last
