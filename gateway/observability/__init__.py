"""Observability: stats, the live task tree and its queries, StreamInfo (what is known of
one request) and the access logs that render it."""
