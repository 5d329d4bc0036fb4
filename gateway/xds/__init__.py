"""xDS: Envoy v3 resources as a source of the gateway's config."""
