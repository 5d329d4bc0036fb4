// The test page's script: runs the calls against the gateway named in the page's URL
// (?base=...&format=...) and writes the result into the page for --dump-dom to read.
import { runCalls } from "./grpc_web_calls.js";

const params = new URLSearchParams(location.search);
runCalls(params.get("base"), params.get("format"), "chromium").then((result) => {
  const out = document.getElementById("result");
  out.textContent = JSON.stringify(result);
  out.setAttribute("data-done", "1");
});
