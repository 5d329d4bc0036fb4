"""What one run measures and how long: from the command line (cli.py) or an A/B script."""

from dataclasses import dataclass


@dataclass
class Settings:
    sections: list[str]
    rounds: int
    duration: int
    warmup: int
    connections: int  # wrk -c
    threads: int  # wrk -t
    h2_clients: int  # h2load -c
    h2_streams: int  # h2load -m
    grpc_threads: int
    grpc_messages: int
    grpc_size: int
    idle_connections: int  # for the RSS-per-idle-connection measurement
    # h3load.py: worker processes, QUIC connections per process, streams per connection.
    h3_processes: int = 1
    h3_connections: int = 10
    h3_streams: int = 10
