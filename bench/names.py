"""The row names the tables compare."""

#: The row every ratio is taken against (at one worker).
REFERENCE = "envoy"
#: Rows measured with two workers, and the reference each is compared with.
TWO_WORKERS = {"gateway-w2": "envoy-c2", "envoy-c2": "envoy-c2"}
#: The upstream itself, no proxy in between: the upper bound.
DIRECT = "upstream-direct"
#: Name suffix of a proxy that talks h2c to nginx (the issue's "h2c both sides" figure).
H2_UP = "-h2up"
