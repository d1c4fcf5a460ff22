"""``GET /docs``: a small page to try the model in a browser.

Self-contained: its script and style are inline, and its Content-Security-Policy
lets it load nothing from any other host (edge hosts are often offline). It
holds nothing of the model: it reads ``/openapi.json`` (asking for an API key
first when the server answers 401, and sending it with every request after) and
builds from it a JSON editor prefilled with the predictor's ``input_example``,
a file field when ``predict`` reads uploads (``request``: sent as a form field
named ``file``; ``data``/``payload``: sent as the body), and for an ONNX model
one field per input of ``/v2/models/{name}/infer``. Answers are shown as
formatted JSON, text or an image (PNG/JPEG).
"""

CONTENT_TYPE = b"text/html; charset=utf-8"
HEADERS = (b"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
           b"style-src 'unsafe-inline'; img-src blob: data:; connect-src 'self'; base-uri 'none'; "
           b"form-action 'none'; frame-ancestors 'none'\r\n"
           b"X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n")

PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Try the model</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 1.5rem;color:#222}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
textarea,pre{font:13px/1.4 ui-monospace,monospace;width:100%;box-sizing:border-box}
textarea{min-height:9rem;padding:.5rem;border:1px solid #bbb;border-radius:4px}
pre{background:#f6f6f6;padding:.6rem;border-radius:4px;overflow:auto;max-height:30rem;white-space:pre-wrap}
button{font:inherit;padding:.35rem 1.1rem;margin:.5rem .5rem .5rem 0;cursor:pointer}
label{display:block;font-weight:600;margin:.6rem 0 .2rem}.note{color:#666}.error{color:#b00020}
img{max-width:100%;border:1px solid #ddd}section{border-top:1px solid #eee}
</style></head><body>
<h1 id="title">Try the model</h1><p id="description" class="note"></p>
<section id="key-box" hidden><label for="key">API key</label>
<input id="key" type="password" autocomplete="off" size="40"> <button id="key-use">Use this key</button>
<p id="key-note" class="note"></p></section>
<p id="load-error" class="error" hidden></p>
<section id="predict" hidden><h2>POST /</h2><p id="reads" class="note"></p>
<label for="editor">Request body (JSON)</label><textarea id="editor" spellcheck="false"></textarea>
<div id="file-box" hidden><label for="file">File</label><input id="file" type="file">
<span id="file-note" class="note"></span></div>
<button id="send">Send</button>
<details><summary>Schemas</summary><pre id="schemas"></pre></details>
<p id="status" data-state="idle"></p><pre id="answer" hidden></pre>
<img id="answer-image" alt="the answer" hidden></section>
<section id="v2" hidden><h2 id="v2-title"></h2><div id="v2-inputs"></div>
<button id="v2-send">Run the model</button>
<p id="v2-status" data-state="idle"></p><pre id="v2-answer" hidden></pre></section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const base = new URL(".", location.href);   // the server's root, behind a path prefix too
let key = sessionStorage.getItem("lite_serving_key") || "";
let uploads = null;    // "form" (request.files), "raw" (the body) or null
let model = null;

function withKey(headers) {
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

function showKey(note) {
  $("key-box").hidden = false;
  $("key-note").textContent = note;
}

function failed(message) {
  $("load-error").textContent = message;
  $("load-error").hidden = false;
}

async function load() {
  let r;
  try {
    r = await fetch(new URL("openapi.json", base), {headers: withKey({})});
  } catch (e) {
    return failed("The server cannot be reached: " + e);
  }
  if (r.status === 401) {
    return showKey(key ? "That key was refused: enter a valid one." : "This server needs an API key.");
  }
  if (!r.ok) return failed("GET /openapi.json answered " + r.status + ": " + await r.text());
  const spec = await r.json();
  $("load-error").hidden = true;
  if (spec.security) showKey(key ? "Requests carry this key." : "");
  render(spec);
}

function render(spec) {
  $("title").textContent = "Try " + spec.info.title;
  $("description").textContent = spec.info.description || "";
  const post = spec.paths["/"].post;
  const body = post.requestBody ? post.requestBody.content : {};
  const json = body["application/json"] || {};
  $("editor").value = json.example === undefined ? "{}" : JSON.stringify(json.example, null, 2);
  $("reads").textContent = post.description || "";
  const answer = post.responses["200"].content["application/json"] || {};
  $("schemas").textContent = JSON.stringify({input: json.schema || {}, output: answer.schema || {}}, null, 2);
  uploads = body["multipart/form-data"] ? "form" : body["application/octet-stream"] ? "raw" : null;
  $("file-box").hidden = !uploads;
  $("file-note").textContent = uploads === "form" ? "sent as the form field \\"file\\" instead of the JSON"
                                                  : "sent as the request body instead of the JSON";
  $("predict").hidden = false;
  model = (spec["x-lite-serving"] || {}).model || null;
  if (model) renderModel();
}

async function show(r, began, status, pre, img) {
  const type = r.headers.get("Content-Type") || "";
  const blob = await r.blob();
  status.textContent = r.status + " " + (r.statusText || "") + " \\u00b7 " + (type || "no body") +
                       " \\u00b7 " + Math.round(performance.now() - began) + " ms";
  pre.hidden = false;
  if (img) img.hidden = true;
  if (img && /^image\\/(png|jpeg)/.test(type)) {
    img.src = URL.createObjectURL(blob);
    img.hidden = false;
    pre.hidden = true;
  } else if (/json/.test(type)) {
    const text = await blob.text();
    try { pre.textContent = JSON.stringify(JSON.parse(text), null, 2); }
    catch (e) { pre.textContent = text; }
  } else if (/^text\\//.test(type)) {
    pre.textContent = await blob.text();
  } else {
    pre.textContent = blob.size + " bytes of " + (type || "unknown type");
  }
  status.dataset.state = "done";
  status.className = r.ok ? "" : "error";
}

async function send() {
  const status = $("status");
  const init = {method: "POST", headers: withKey({"Accept": "application/json, */*;q=0.5"})};
  const file = uploads ? $("file").files[0] : null;
  if (file && uploads === "form") {
    init.body = new FormData();
    init.body.append("file", file, file.name);
  } else if (file) {
    init.body = file;
    init.headers["Content-Type"] = file.type || "application/octet-stream";
  } else {
    try { JSON.parse($("editor").value); }
    catch (e) { status.textContent = "The body is not valid JSON: " + e.message; status.className = "error"; return; }
    init.body = $("editor").value;
    init.headers["Content-Type"] = "application/json";
  }
  status.dataset.state = "sending";
  status.className = "";
  status.textContent = "Sending\\u2026";
  const began = performance.now();
  try {
    await show(await fetch(base, init), began, status, $("answer"), $("answer-image"));
  } catch (e) {
    status.textContent = "The request failed: " + e;
    status.className = "error";
    status.dataset.state = "done";
  }
}

function zeros(shape, zero) {
  let value = zero;
  for (let i = shape.length - 1; i >= 0; i--) value = Array(shape[i] > 0 ? shape[i] : 1).fill(value);
  return value;
}

function renderModel() {
  $("v2-title").textContent = "POST /v2/models/" + model.name + "/infer";
  const box = $("v2-inputs");
  box.textContent = "";
  for (const t of model.inputs) {
    const label = document.createElement("label");
    label.htmlFor = "v2-input-" + t.name;
    label.textContent = t.name + " \\u00b7 " + t.datatype + " \\u00b7 shape [" + t.shape.join(", ") + "]";
    const field = document.createElement("textarea");
    field.id = "v2-input-" + t.name;
    field.spellcheck = false;
    const size = t.shape.reduce((n, d) => n * (d > 0 ? d : 1), 1);
    const zero = t.datatype === "BOOL" ? false : t.datatype === "BYTES" ? "" : 0;
    field.value = size <= 4096 ? JSON.stringify(zeros(t.shape, zero)) : "[]";
    box.append(label, field);
  }
  $("v2").hidden = false;
}

function shapeOf(value) {
  const shape = [];
  while (Array.isArray(value)) { shape.push(value.length); value = value[0]; }
  return shape;
}

async function infer() {
  const status = $("v2-status");
  let inputs;
  try {
    inputs = model.inputs.map((t) => {
      const value = JSON.parse($("v2-input-" + t.name).value);
      const data = Array.isArray(value) ? value.flat(Infinity) : [value];
      return {name: t.name, datatype: t.datatype, shape: shapeOf(value), data: data};
    });
  } catch (e) {
    status.textContent = "An input is not valid JSON: " + e.message;
    status.className = "error";
    return;
  }
  status.dataset.state = "sending";
  status.textContent = "Running\\u2026";
  const began = performance.now();
  const url = new URL("v2/models/" + encodeURIComponent(model.name) + "/infer", base);
  try {
    const r = await fetch(url, {method: "POST", body: JSON.stringify({inputs: inputs}),
                                headers: withKey({"Content-Type": "application/json"})});
    await show(r, began, status, $("v2-answer"), null);
  } catch (e) {
    status.textContent = "The request failed: " + e;
    status.dataset.state = "done";
  }
}

$("send").addEventListener("click", send);
$("v2-send").addEventListener("click", infer);
$("key-use").addEventListener("click", () => {
  key = $("key").value.trim();
  sessionStorage.setItem("lite_serving_key", key);
  load();
});
$("key").value = key;
load();
</script></body></html>
"""
