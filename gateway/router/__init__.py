"""The router, the HCM's terminal filter: the route table (virtual hosts, routes, header
mutations), the upstream exchange through a cluster's pools, and retries. It sees the
downstream stream through a protocol of its own and imports nothing of the HCM."""
