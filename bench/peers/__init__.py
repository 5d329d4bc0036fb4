"""One module per server: its generated config, where its binary is, how it starts."""
