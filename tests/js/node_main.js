// Node has no XMLHttpRequest, which grpc-web calls through: xhr2 is the usual stand-in.
import XMLHttpRequest from "xhr2";
import { runCalls } from "./grpc_web_calls.js";

globalThis.XMLHttpRequest = XMLHttpRequest;

const [base, format] = process.argv.slice(2);
runCalls(base, format, "node").then((result) => {
  process.stdout.write(JSON.stringify(result));
});
