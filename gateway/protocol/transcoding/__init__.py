"""gRPC-JSON transcoding, sans-IO: REST requests to gRPC calls and their answers back.

The grpc_json_transcoder filter (gateway/http/filters/grpc_json_transcoder.py) is the only
user; these modules hold what it does that is not filter plumbing, one job each:

- `http_template`: parses a google.api.http path template ("/v1/{name=shelves/*}:get").
- `path_matcher`: finds the method for a request's method and path among the templates,
  in time linear in the path, and extracts the variables of path and query string.
- `service_map`: a descriptor set (as `protoc --descriptor_set_out --include_imports`
  makes it) to protobuf's own descriptor pool, the configured services' methods and their
  HTTP rules, checked when the config loads.
- `messages`: a request (JSON body and variables) to a gRPC message, a gRPC response to
  JSON, and a gRPC status to its HTTP status and JSON body. JSON and protobuf meet only in
  protobuf's own json_format.
"""
