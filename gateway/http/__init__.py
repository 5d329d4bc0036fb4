"""HTTP: the connection manager (HCM), its per-codec connections and streams, and the HTTP
filters, ending in the router (gateway/router/)."""
