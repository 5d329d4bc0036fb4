"""The benchmarks of bench/README.md, as a package, in the order a run uses it:

* services, procfs, settings, names: start a process under test with its log, wait for it,
  stop it; read its memory and CPU time from /proc; what a run measures; the row names.
* gates: the correctness checks every target passes before it is measured.
* certs: the trustme certificate the TLS and HTTP/3 benchmarks terminate with.
* measure: targets and interleaved rounds over them.
* load/: one module per load generator (wrk, h2load, the grpcio client, the idle-connection
  and TLS-handshake clients, h3load for HTTP/3); each runs one load and parses what it
  reports.
* peers/: one module per server (nginx, the grpcio echo server, the gateway, Envoy, HAProxy,
  mitmproxy): its generated config, where its binary is, how it starts.
* tools, lineup: tool versions and install hints; each section's set of servers.
* table, logs, report: text tables, what each process logged, a section's summary rows.
* sections/: http1 (with paced latency and idle memory), http2, grpc, http3.
* floors, results, cli: issue 10's floors, bench/results/latest.json, the command line.

Each module imports only those listed before it.

`python bench/run.py` (or `python -m bench`) is the side-by-side run; the other scripts here
(ab.py's A/B runs, tls.py, ws_scale.py) reuse the same modules.
"""
