"""One module per section of the report (and the http1 section's two gateway-only
measurements): its targets, its load, its summary rows and its table."""
