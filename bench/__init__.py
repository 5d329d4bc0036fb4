"""The benchmarks of bench/README.md, as a package, in the order a run uses it:

* services, procfs: start a process under test with its log, wait for it, stop it; read
  its memory and CPU time from /proc.
* gates: the correctness checks every target passes before it is measured.
* load/: one module per load generator (wrk, h2load, the grpcio client, the idle-connection
  and TLS-handshake clients); each runs one load and parses what it reports.
* peers/: one module per server (nginx, the grpcio echo server, the gateway, Envoy, HAProxy,
  mitmproxy): its generated config and how it starts; lineup starts a section's set.
* measure: interleaved rounds over a section's targets; report, logs: its tables and the
  summary of what each process logged.
* sections/: http1 (with paced latency and idle memory), http2, grpc.
* floors, results, cli: issue 10's floors, bench/results/latest.json, the command line.

`python bench/run.py` (or `python -m bench`) is the side-by-side run; the other scripts here
(ab.py's A/B runs, tls.py, ws_scale.py) reuse the same modules.
"""
