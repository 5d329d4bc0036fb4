"""Envoy v3 resources mapped onto the model, and refused with the field named."""

import pytest

from gateway.config import model
from gateway.xds import translate


def cluster(body: dict) -> model.Cluster:
    return translate.cluster(translate.parse(translate.CLUSTER, {"name": "api", **body}))[1]


def test_cluster_with_health_outlier_breakers_and_lb():
    c = cluster(
        {
            "type": "STRICT_DNS",
            "connect_timeout": "0.25s",
            "lb_policy": "LEAST_REQUEST",
            "load_assignment": {
                "cluster_name": "api",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "api.internal",
                                            "port_value": 80,
                                        }
                                    }
                                },
                                "load_balancing_weight": 3,
                            }
                        ]
                    }
                ],
            },
            "circuit_breakers": {"thresholds": [{"max_requests": 50, "max_retries": 2}]},
            "outlier_detection": {"consecutive_5xx": 3, "base_ejection_time": "10s"},
            "health_checks": [
                {
                    "timeout": "1s",
                    "interval": "2s",
                    "unhealthy_threshold": 2,
                    "healthy_threshold": 1,
                    "http_health_check": {
                        "path": "/healthz",
                        "expected_statuses": [{"start": 200, "end": 205}],
                    },
                }
            ],
            "common_lb_config": {"healthy_panic_threshold": {"value": 25}},
        }
    )
    assert c.type == "strict_dns" and c.lb_policy == "least_request"
    assert c.connect_timeout == 0.25
    assert c.endpoints == [model.Endpoint(model.Address("api.internal", 80), 3)]
    assert c.circuit_breakers == model.CircuitBreakers(max_requests=50, max_retries=2)
    assert c.outlier_detection is not None and c.outlier_detection.consecutive_5xx == 3
    assert c.outlier_detection.base_ejection_time == 10
    check = c.health_checks[0]
    assert (check.type, check.path, check.expected_statuses) == (
        "http",
        "/healthz",
        [200, 201, 202, 203, 204],
    )
    assert c.healthy_panic_threshold == 25


def test_routes_with_retry_and_hash_policies():
    vhosts = translate.route_configuration(
        translate.parse(
            translate.ROUTE_CONFIGURATION,
            {
                "name": "rc",
                "virtual_hosts": [
                    {
                        "name": "api",
                        "domains": ["api.example.com"],
                        "routes": [
                            {
                                "match": {
                                    "prefix": "/v1/",
                                    "headers": [{"name": "x-canary", "present_match": True}],
                                },
                                "route": {
                                    "cluster": "api",
                                    "prefix_rewrite": "/",
                                    "retry_policy": {"retry_on": "5xx,reset", "num_retries": 3},
                                    "hash_policy": [{"header": {"header_name": "x-user"}}],
                                },
                            }
                        ],
                    }
                ],
            },
        )
    )
    name, vhost = vhosts[0]
    assert name == "rc/api"
    route = vhost.routes[0]
    assert route.match.prefix == "/v1/" and route.match.headers[0].present is True
    assert route.prefix_rewrite == "/"
    assert route.retry_policy == model.RetryPolicy(retry_on=["5xx", "reset"], num_retries=3)
    assert route.hash_policy == [model.HashPolicy(header="x-user")]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"type": "STATIC", "transport_socket": {"name": "x"}}, "Cluster 'api'.transport_socket"),
        ({"type": "ORIGINAL_DST"}, "Cluster 'api'.type: ORIGINAL_DST"),
        (
            {"type": "STATIC", "outlier_detection": {"success_rate_minimum_hosts": 3}},
            "Cluster 'api'.outlier_detection.success_rate_minimum_hosts",
        ),
    ],
)
def test_unsupported_fields_are_named(body, named):
    with pytest.raises(translate.Unsupported, match=named.replace(".", r"\.")):
        cluster(body)
