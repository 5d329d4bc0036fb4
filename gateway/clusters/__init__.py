"""Clusters: upstream hosts, load balancing and connection pools."""
