"""One module per load generator: how it is run, and what its report says."""
