"""HTTP: codecs, the connection manager, filters, routing and the router."""
