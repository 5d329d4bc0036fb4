"""The protocol layer both sides share: heads and headers, the stream events, the HTTP/1.1
codec, HTTP/2 (h2 over a socket, its flood guard), gRPC framing and path normalisation.
It imports neither the connection manager (http/) nor the upstream side (clusters/)."""
