// Calls the test.Echo service through the gateway with grpc-web, the gRPC-Web client
// library of the grpc project (the one that names Envoy as its proxy), in node or in a
// browser. Messages are raw bytes, as tests/grpc_echo.py serves them: the library takes
// any serializer, so no generated protobuf code is needed.
import { GrpcWebClientBase, MethodDescriptor, MethodType } from "grpc-web";

class Bytes {
  constructor(data) {
    this.data = data;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function method(path, type) {
  return new MethodDescriptor(
    path,
    type,
    Bytes,
    Bytes,
    (request) => request.data,
    (bytes) => new Bytes(bytes),
  );
}

const UNARY = method("/test.Echo/Unary", MethodType.UNARY);
const STREAM = method("/test.Echo/ServerStream", MethodType.SERVER_STREAMING);
const DOWN = method("/down.Service/Call", MethodType.UNARY);
const PLAIN_503 = method("/status/503", MethodType.UNARY);

function unary(client, base, descriptor, text) {
  // rpcCall, not thenableCall: its status event (which comes before the callback)
  // carries the trailing metadata.
  return new Promise((resolve) => {
    const result = {};
    const call = client.rpcCall(
      base + descriptor.getName(),
      new Bytes(encoder.encode(text)),
      {},
      descriptor,
      (err, response) => {
        if (err) {
          result.error = { code: err.code, message: err.message };
        } else {
          result.message = decoder.decode(response.data);
        }
        resolve(result);
      },
    );
    call.on("status", (status) => {
      result.status = { code: status.code, details: status.details, metadata: status.metadata };
    });
  });
}

function serverStream(client, base, count) {
  return new Promise((resolve) => {
    const result = { messages: [] };
    const call = client.serverStreaming(
      base + STREAM.getName(),
      new Bytes(encoder.encode(String(count))),
      {},
      STREAM,
    );
    call.on("data", (response) => result.messages.push(decoder.decode(response.data)));
    call.on("status", (status) => {
      result.status = { code: status.code, details: status.details };
    });
    call.on("error", (err) => {
      result.error = { code: err.code, message: err.message };
      resolve(result);
    });
    call.on("end", () => resolve(result));
  });
}

/** Every call, in the library's `format` ("text" or "binary"), against the gateway at `base`. */
export async function runCalls(base, format, label) {
  const client = new GrpcWebClientBase({ format });
  return {
    format,
    unary: await unary(client, base, UNARY, `hello from ${label}`),
    failing: await unary(client, base, UNARY, "fail"),
    down: await unary(client, base, DOWN, "x"),
    plain503: await unary(client, base, PLAIN_503, "x"),
    stream: await serverStream(client, base, 50),
  };
}
