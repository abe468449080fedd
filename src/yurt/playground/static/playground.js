/* yurt's playground: forms from an app's OpenAPI document, runs through the queue.
 * Plain DOM, no framework, no build step; docs/playground.md says what it does. */
"use strict";

(function () {
  const KEY_NAME = "yurt-key";
  const FILE_KINDS = ["image", "file", "audio", "video"];
  const FILE_TITLES = { File: "file", Image: "image", Audio: "audio", Video: "video" };
  const ACCEPT = { image: "image/*", audio: "audio/*", video: "video/*", file: "" };
  let counter = 0;

  // -- small helpers --------------------------------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children || []) if (child) node.append(child);
    return node;
  }

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_NAME) || "";
    } catch (e) {
      return "";
    }
  }

  function withKey(headers) {
    const out = Object.assign({}, headers || {});
    const key = storedKey();
    if (key) out.Authorization = "Key " + key;
    return out;
  }

  async function readJson(resp) {
    const text = await resp.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      return { detail: text || resp.status + " " + resp.statusText };
    }
  }

  // Server-sent events from a fetch body: calls onEvent with each event's data.
  async function readEvents(resp, onEvent) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""));
        if (data.length && onEvent(data.join("\n")) === false) {
          await reader.cancel();
          return;
        }
      }
    }
  }

  // -- schemas ----------------------------------------------------------------------------------

  function makeResolver(doc) {
    const schemas = (doc.components && doc.components.schemas) || {};
    return function resolve(schema) {
      let s = schema || {};
      for (let depth = 0; depth < 16; depth++) {
        if (s.$ref) {
          const { $ref, ...rest } = s;
          s = Object.assign({}, schemas[$ref.split("/").pop()] || {}, rest);
        } else if (Array.isArray(s.allOf) && s.allOf.length === 1) {
          const { allOf, ...rest } = s;
          s = Object.assign({}, allOf[0], rest);
        } else {
          const options = s.anyOf || s.oneOf;
          if (!Array.isArray(options)) return s;
          const real = options.filter((o) => o.type !== "null");
          if (real.length !== 1) return s;
          const { anyOf, oneOf, ...rest } = s;
          s = Object.assign({}, real[0], rest, { nullable: true });
        }
      }
      return s;
    };
  }

  function fileKind(raw, s) {
    for (const x of [raw, s]) {
      const hint = x && x.ui && x.ui.field;
      if (FILE_KINDS.includes(hint)) return hint;
    }
    if (FILE_TITLES[s.title] && s.properties && s.properties.url) return FILE_TITLES[s.title];
    return null;
  }

  function enumOf(s) {
    if (Array.isArray(s.enum)) return s.enum;
    const options = s.anyOf || s.oneOf;
    if (Array.isArray(options) && options.length && options.every((o) => "const" in o)) {
      return options.map((o) => o.const);
    }
    return null;
  }

  // What control a field gets: file, enum, boolean, integer, number, string or json.
  function describeField(name, raw, resolve, required) {
    const s = resolve(raw);
    const kind =
      fileKind(raw, s) ? "file" :
      enumOf(s) ? "enum" :
      ["boolean", "integer", "number", "string"].includes(s.type) ? s.type : "json";
    const initial = "default" in s ? s.default : Array.isArray(s.examples) ? s.examples[0] : undefined;
    return { name, schema: s, kind, media: fileKind(raw, s), options: enumOf(s), required, initial };
  }

  function fieldsOf(operation, resolve) {
    const content = (operation.requestBody && operation.requestBody.content) || {};
    const body = content["application/json"] && content["application/json"].schema;
    if (!body) return [];
    const s = resolve(body);
    const props = s.properties || {};
    const order = s["x-fal-order-properties"] || Object.keys(props);
    const required = new Set(s.required || []);
    return order.filter((n) => n in props).map((n) => describeField(n, props[n], resolve, required.has(n)));
  }

  function isStreaming(path, operation) {
    const ok = (operation.responses && operation.responses["200"]) || {};
    if (ok.content && ok.content["text/event-stream"]) return true;
    return path.split("/").pop() === "stream";
  }

  // -- one endpoint ---------------------------------------------------------------------------

  class Endpoint {
    constructor(app, path, operation, resolve) {
      this.app = app;
      this.path = path;
      this.operation = operation;
      this.fields = fieldsOf(operation, resolve);
      this.streaming = isStreaming(path, operation);
      this.controls = {};
      this.fileUrls = {};
      this.uploads = {};
      this.active = null;
      this.id = "ep" + ++counter;
      this.node = this.render();
      this.prefill();
    }

    q(role) {
      return this.node.querySelector('[data-role="' + role + '"]');
    }

    render() {
      const title = (this.operation.summary || "") + (this.streaming ? " (streams)" : "");
      const form = el("form", { "data-role": "input-form", novalidate: true });
      for (const f of this.fields) form.append(this.renderField(f));
      const jsonId = this.id + "-json";
      form.append(
        el("div", { class: "field json" }, [
          el("label", { for: jsonId, text: "Input as JSON" }),
          el("textarea", { id: jsonId, "data-role": "json-input", rows: 6, spellcheck: "false" }),
          el("p", { class: "field-error", "data-error-for": "", role: "alert" }),
        ]),
        el("div", { class: "actions" }, [
          el("button", { type: "submit", "data-action": "run", text: "Run" }),
          el("button", { type: "button", "data-action": "cancel", disabled: true, text: "Cancel" }),
        ]),
      );
      const status = el("dl", { class: "state" }, [
        el("dt", { text: "Status" }), el("dd", {}, [el("span", { "data-role": "status", role: "status" })]),
        el("dt", { text: "Queue position" }), el("dd", {}, [el("span", { "data-role": "position" })]),
        el("dt", { text: "Request" }), el("dd", {}, [el("code", { "data-role": "request-id" })]),
        el("dt", { text: "Took" }), el("dd", {}, [el("span", { "data-role": "elapsed" }), " s"]),
      ]);
      const output = el("div", { class: "output" }, [
        status,
        el("div", { "data-role": "error", role: "alert" }),
        el("h3", { text: "Result" }),
        el("div", { "data-role": "result" }),
        this.streaming ? el("h3", { text: "Events" }) : null,
        this.streaming ? el("ol", { "data-role": "events", role: "log" }) : null,
        el("h3", { text: "Logs" }),
        el("ol", { "data-role": "logs", class: "logs", role: "log" }),
      ]);
      const snippets = el("div", { class: "snippets" }, [el("h3", { text: "Code" })]);
      for (const [kind, label] of [
        ["curl", "curl"], ["python-yurt", "Python (yurt)"], ["python-fal", "Python (fal-client)"],
        ["js-fal", "JavaScript (@fal-ai/client)"],
      ]) {
        snippets.append(el("details", {}, [el("summary", { text: label }), el("pre", { "data-snippet": kind })]));
      }
      const heading = el("h2", { id: this.id + "-title" }, [el("code", { text: "POST " + this.path }), " " + title]);
      const section = el("section", { "data-endpoint": this.path, "aria-labelledby": this.id + "-title" }, [
        heading, el("div", { class: "columns" }, [form, output]), snippets,
      ]);
      form.addEventListener("input", (e) => this.onInput(e));
      form.addEventListener("change", (e) => this.onInput(e));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        this.run();
      });
      section.querySelector('[data-action="cancel"]').addEventListener("click", () => this.cancel());
      return section;
    }

    renderField(f) {
      const id = this.id + "-" + f.name;
      const s = f.schema;
      let control;
      if (f.kind === "file") {
        control = el("input", { type: "file", accept: ACCEPT[f.media] || null });
      } else if (f.kind === "enum") {
        control = el("select", {});
        if (!f.required && f.initial === undefined) control.append(el("option", { value: "", text: "(none)" }));
        f.options.forEach((v, i) => control.append(el("option", { value: String(i), text: String(v) })));
      } else if (f.kind === "boolean") {
        control = el("input", { type: "checkbox" });
      } else if (f.kind === "integer" || f.kind === "number") {
        const min = "minimum" in s ? s.minimum : s.exclusiveMinimum;
        const max = "maximum" in s ? s.maximum : s.exclusiveMaximum;
        control = el("input", { type: "number", min: min, max: max, step: f.kind === "integer" ? 1 : "any" });
      } else if (f.kind === "string") {
        const long = (s.maxLength || 0) > 200 || /prompt|text/.test(f.name);
        control = long ? el("textarea", { rows: 2 }) : el("input", { type: "text" });
      } else {
        control = el("textarea", { rows: 3, spellcheck: "false", class: "json" });
      }
      control.id = id;
      control.name = f.name;
      if (f.required) control.setAttribute("aria-required", "true");
      const hint = [s.description, f.kind === "json" ? "(JSON)" : "", bounds(s)].filter(Boolean).join(" ");
      if (hint) control.setAttribute("aria-describedby", id + "-hint");
      this.controls[f.name] = control;
      const label = el("label", { for: id }, [f.name + (f.required ? " *" : "")]);
      const parts = [label, control];
      if (f.kind === "file") parts.push(el("output", { "data-role": "file-url", for: id }));
      if (hint) parts.push(el("small", { id: id + "-hint", text: hint }));
      parts.push(el("p", { class: "field-error", "data-error-for": f.name, role: "alert" }));
      return el("div", { class: "field " + f.kind }, parts);
    }

    prefill() {
      const values = {};
      for (const f of this.fields) if (f.initial !== undefined) values[f.name] = f.initial;
      this.fill(values);
      this.sync();
    }

    // Form controls from values (the JSON view edited, or the first fill).
    fill(values) {
      for (const f of this.fields) {
        const c = this.controls[f.name];
        const v = values[f.name];
        if (f.kind === "file") {
          const url = typeof v === "string" ? v : v && typeof v.url === "string" ? v.url : "";
          this.fileUrls[f.name] = url;
          c.parentNode.querySelector('[data-role="file-url"]').textContent = url;
        } else if (f.kind === "enum") {
          const i = f.options.findIndex((o) => o === v);
          c.value = i >= 0 ? String(i) : f.required || f.initial !== undefined ? "0" : "";
        } else if (f.kind === "boolean") {
          c.checked = v === true;
        } else if (f.kind === "json") {
          c.value = v === undefined ? "" : JSON.stringify(v, null, 1);
        } else {
          c.value = v === undefined || v === null ? "" : String(v);
        }
      }
    }

    // The input the form says; field errors for what cannot be read.
    collect() {
      const out = {};
      for (const f of this.fields) {
        const c = this.controls[f.name];
        this.fieldError(f.name, "");
        if (f.kind === "file") {
          if (this.fileUrls[f.name]) out[f.name] = this.fileUrls[f.name];
        } else if (f.kind === "enum") {
          if (c.value !== "") out[f.name] = f.options[Number(c.value)];
        } else if (f.kind === "boolean") {
          out[f.name] = c.checked;
        } else if (f.kind === "integer" || f.kind === "number") {
          if (c.value.trim() !== "") out[f.name] = Number(c.value);
        } else if (f.kind === "json") {
          if (c.value.trim() === "") continue;
          try {
            out[f.name] = JSON.parse(c.value);
          } catch (e) {
            this.fieldError(f.name, "not valid JSON: " + e.message);
          }
        } else if (c.value !== "" || f.required) {
          out[f.name] = c.value;
        }
      }
      return out;
    }

    onInput(event) {
      const target = event.target;
      if (target.getAttribute("data-role") === "json-input") {
        if (event.type !== "input") return;
        try {
          const value = JSON.parse(target.value);
          this.fieldError("", "");
          this.fill(value && typeof value === "object" ? value : {});
          this.snippets(value);
        } catch (e) {
          this.fieldError("", "not valid JSON: " + e.message);
        }
        return;
      }
      if (target.type === "file") {
        if (event.type === "change") this.upload(target.name, target.files[0]);
        return;
      }
      this.sync();
    }

    // The JSON view and the snippets from the form.
    sync() {
      const value = this.collect();
      this.q("json-input").value = JSON.stringify(value, null, 2);
      this.fieldError("", "");
      this.snippets(value);
    }

    fieldError(name, message) {
      const node = this.node.querySelector('[data-error-for="' + CSS.escape(name) + '"]');
      if (node) node.textContent = message;
    }

    // A chosen file goes to the file store at once; the run waits for it.
    upload(name, file) {
      this.fileUrls[name] = "";
      // Only the latest choice counts: an earlier upload finishing last must not overwrite it.
      this.uploadSeq = this.uploadSeq || {};
      const seq = (this.uploadSeq[name] || 0) + 1;
      this.uploadSeq[name] = seq;
      const shown = this.controls[name].parentNode.querySelector('[data-role="file-url"]');
      if (!file) {
        shown.textContent = "";
        this.sync();
        return;
      }
      shown.textContent = "uploading " + file.name + "…";
      const headers = withKey({ "Content-Type": file.type || "application/octet-stream" });
      if (/^[\x20-\x7e]+$/.test(file.name)) headers["X-Fal-File-Name"] = file.name;
      const done = fetch("/files/upload", { method: "POST", headers, body: file })
        .then(async (resp) => {
          const body = await readJson(resp);
          if (this.uploadSeq[name] !== seq) return;
          if (!resp.ok) throw new Error((body.error_type || resp.status) + ": " + messageOf(body.detail));
          this.fileUrls[name] = body.url;
          shown.textContent = body.url;
          this.sync();
        })
        .catch((e) => {
          if (this.uploadSeq[name] !== seq) return;
          shown.textContent = "";
          this.fieldError(name, "upload failed: " + e.message);
        })
        .finally(() => {
          if (this.uploads[name] === done) delete this.uploads[name];
        });
      this.uploads[name] = done;
    }

    // -- a run --------------------------------------------------------------------------------

    reset() {
      for (const role of ["status", "position", "request-id", "elapsed", "error", "result", "logs", "events"]) {
        const node = this.q(role);
        if (node) node.textContent = "";
      }
      for (const node of this.node.querySelectorAll("[data-error-for]")) node.textContent = "";
    }

    setStatus(status, position) {
      this.q("status").textContent = status;
      this.q("position").textContent = status === "IN_QUEUE" && position !== undefined ? String(position) : "";
    }

    busy(on) {
      this.node.querySelector('[data-action="run"]').disabled = on;
      this.node.querySelector('[data-action="cancel"]').disabled = !on;
    }

    async run() {
      // Checked and set before waiting for uploads, so a second click meanwhile sends nothing.
      if (this.active || this.waiting) return;
      this.waiting = true;
      try {
        await Promise.all(Object.values(this.uploads));
      } finally {
        this.waiting = false;
      }
      const json = this.q("json-input").value;
      let input;
      try {
        input = json.trim() ? JSON.parse(json) : {};
      } catch (e) {
        this.fieldError("", "not valid JSON: " + e.message);
        return;
      }
      this.reset();
      const run = { started: performance.now(), abort: new AbortController(), cancelled: false, id: null };
      this.active = run;
      this.busy(true);
      try {
        if (this.streaming) await this.runStream(run, input);
        else await this.runQueued(run, input);
      } catch (e) {
        if (run.cancelled || e.name === "AbortError") this.finish(run, "CANCELLED");
        else this.fail(run, { error_type: "playground_error", detail: String(e.message || e) });
      }
    }

    finish(run, status) {
      if (this.active !== run) return;
      this.setStatus(status);
      this.q("elapsed").textContent = ((performance.now() - run.started) / 1000).toFixed(2);
      this.active = null;
      this.busy(false);
    }

    fail(run, body, status) {
      showError(this, body, status);
      const cancelled = run.cancelled || body.error_type === "client_cancelled" || status === 499;
      this.finish(run, cancelled ? "CANCELLED" : "FAILED");
    }

    async runQueued(run, input) {
      const suffix = this.path === "/" ? "" : this.path;
      const resp = await fetch("/queue/" + this.app + suffix, {
        method: "POST",
        headers: withKey({ "Content-Type": "application/json" }),
        body: JSON.stringify(input),
        signal: run.abort.signal,
      });
      const sub = await readJson(resp);
      if (!resp.ok) return this.fail(run, sub, resp.status);
      run.id = sub.request_id;
      this.q("request-id").textContent = run.id;
      this.setStatus("IN_QUEUE", sub.queue_position);
      const base = "/queue/" + this.app + "/requests/" + run.id;
      const last = await this.follow(run, base);
      const result = await fetch(base, { headers: withKey(), signal: run.abort.signal });
      const body = await readJson(result);
      if (!result.ok || (last && last.error_type)) {
        return this.fail(run, Object.assign({ error_type: last && last.error_type, detail: last && last.error }, body), result.status);
      }
      this.showResult(body);
      this.finish(run, "COMPLETED");
    }

    // The status stream, then polling should the stream end early; the last status.
    async follow(run, base) {
      let last = null;
      const apply = (st) => {
        last = st;
        if (st.status !== "COMPLETED") this.setStatus(st.status, st.queue_position);
        this.showLogs(st.logs);
        return st.status !== "COMPLETED";
      };
      try {
        const resp = await fetch(base + "/status/stream?logs=1", { headers: withKey(), signal: run.abort.signal });
        if (resp.ok && resp.body) await readEvents(resp, (data) => apply(JSON.parse(data)));
      } catch (e) {
        if (e.name === "AbortError") throw e;
      }
      while (!last || last.status !== "COMPLETED") {
        const resp = await fetch(base + "/status?logs=1", { headers: withKey(), signal: run.abort.signal });
        const st = await readJson(resp);
        if (!resp.ok) throw new Error(messageOf(st.detail));
        if (apply(st)) await new Promise((r) => setTimeout(r, 500));
      }
      return last;
    }

    showLogs(logs) {
      const list = this.q("logs");
      for (const entry of (logs || []).slice(list.children.length)) {
        const text = typeof entry === "string" ? entry : entry.message;
        list.append(el("li", { "data-level": entry.level || null, text: text }));
      }
    }

    async runStream(run, input) {
      this.setStatus("IN_PROGRESS");
      const resp = await fetch("/" + this.app + this.path, {
        method: "POST",
        headers: withKey({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(input),
        signal: run.abort.signal,
      });
      run.id = resp.headers.get("x-yurt-request-id");
      this.q("request-id").textContent = run.id || "";
      if (!resp.ok) return this.fail(run, await readJson(resp), resp.status);
      const events = this.q("events");
      let lastEvent = null;
      await readEvents(resp, (data) => {
        let value = data;
        try {
          value = JSON.parse(data);
        } catch (e) { /* a text event is shown as it came */ }
        lastEvent = value;
        events.append(el("li", { "data-role": "event", text: typeof value === "string" ? value : JSON.stringify(value) }));
      });
      if (lastEvent !== null) this.showResult(lastEvent);
      this.finish(run, "COMPLETED");
    }

    async cancel() {
      const run = this.active;
      if (!run) return;
      run.cancelled = true;
      if (this.streaming || !run.id) {
        run.abort.abort();
        return;
      }
      try {
        const resp = await fetch("/queue/" + this.app + "/requests/" + run.id + "/cancel", {
          method: "PUT",
          headers: withKey(),
        });
        if (!resp.ok) showError(this, await readJson(resp), resp.status);
      } catch (e) {
        showError(this, { error_type: "playground_error", detail: "cancel not sent: " + String(e.message || e) }, 0);
      }
    }

    showResult(value) {
      const box = this.q("result");
      box.textContent = "";
      for (const file of mediaIn(value, 0)) box.append(renderMedia(file));
      box.append(el("pre", { "data-role": "result-json", text: JSON.stringify(value, null, 2) }));
    }

    snippets(input) {
      const code = snippetsFor(location.origin, this.app, this.path, input, this.streaming);
      for (const [kind, text] of Object.entries(code)) {
        this.node.querySelector('[data-snippet="' + kind + '"]').textContent = text;
      }
    }
  }

  function bounds(s) {
    const lo = "minimum" in s ? s.minimum : s.exclusiveMinimum;
    const hi = "maximum" in s ? s.maximum : s.exclusiveMaximum;
    if (lo === undefined && hi === undefined) return "";
    return "[" + (lo === undefined ? "" : lo) + " … " + (hi === undefined ? "" : hi) + "]";
  }

  function messageOf(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => (d && d.msg ? d.msg : JSON.stringify(d))).join("; ");
    return JSON.stringify(detail);
  }

  // A failure's error_type and detail; a 422's messages next to their fields.
  function showError(ep, body, status) {
    const type = body.error_type || (status === 422 ? "validation_error" : "error");
    const box = ep.q("error");
    box.textContent = "";
    box.append(
      el("strong", { "data-role": "error-type", text: type }),
      el("span", { "data-role": "error-detail", text: " " + messageOf(body.detail) + (status ? " (HTTP " + status + ")" : "") }),
    );
    if (!Array.isArray(body.detail)) return;
    const names = ep.fields.map((f) => f.name);
    const messages = {};
    for (const d of body.detail) {
      const loc = (d && d.loc) || [];
      const field = loc.find((part) => names.includes(part));
      if (field !== undefined) (messages[field] = messages[field] || []).push(d.msg);
    }
    for (const [field, list] of Object.entries(messages)) ep.fieldError(field, list.join("; "));
  }

  // -- results ------------------------------------------------------------------------------

  function mediaIn(value, depth) {
    if (!value || typeof value !== "object" || depth > 6) return [];
    if (typeof value.url === "string" && ("content_type" in value || "file_name" in value)) return [value];
    const found = [];
    for (const v of Array.isArray(value) ? value : Object.values(value)) found.push(...mediaIn(v, depth + 1));
    return found;
  }

  function mediaKind(file) {
    const type = file.content_type || "";
    for (const kind of ["image", "audio", "video"]) if (type.startsWith(kind + "/")) return kind;
    if (!type && /\.(png|jpe?g|gif|webp)$/i.test(file.url)) return "image";
    return "file";
  }

  // Only addresses a browser fetches as data: an app's output naming a javascript: URL must
  // not become a link that runs in the router's origin, where the key is kept.
  function safeUrl(url) {
    try {
      const parsed = new URL(url, location.href);
      if (["http:", "https:", "blob:"].includes(parsed.protocol)) return parsed.href;
      if (parsed.protocol === "data:" && /^data:(image|audio|video)\//i.test(url)) return url;
    } catch (e) {
      // not a URL at all
    }
    return null;
  }

  function renderMedia(file) {
    const url = safeUrl(file.url);
    const name = file.file_name || file.url.split("/").pop();
    if (url === null) return el("p", { class: "field-error", text: "not shown: " + name + " has an address of an unsafe scheme" });
    file = Object.assign({}, file, { url });
    const kind = mediaKind(file);
    let node;
    if (kind === "image") node = el("img", { "data-role": "media", src: file.url, alt: "result image " + name });
    else if (kind === "file") node = el("a", { "data-role": "media", href: file.url, download: name, text: "Download " + name });
    else node = el(kind, { "data-role": "media", controls: true, src: file.url });
    return el("figure", {}, [node, el("figcaption", {}, [el("a", { href: file.url, text: name })])]);
  }

  // -- snippets -----------------------------------------------------------------------------

  function pyLiteral(value, indent) {
    const pad = "    ".repeat(indent + 1);
    const end = "    ".repeat(indent);
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (typeof value === "string") return JSON.stringify(value);
    if (typeof value === "number") return String(value);
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return "[\n" + value.map((v) => pad + pyLiteral(v, indent + 1) + ",\n").join("") + end + "]";
    }
    const keys = Object.keys(value);
    if (!keys.length) return "{}";
    return "{\n" + keys.map((k) => pad + JSON.stringify(k) + ": " + pyLiteral(value[k], indent + 1) + ",\n").join("") + end + "}";
  }

  function snippetsFor(base, app, path, input, streaming) {
    const target = app + (path === "/" ? "" : path);
    const json = JSON.stringify(input);
    const pretty = JSON.stringify(input, null, 2);
    const py = pyLiteral(input, 0);
    const host = base.replace(/^https?:\/\//, "");
    const shellJson = "'" + json.replace(/'/g, "'\\''") + "'";
    const pyCall = streaming
      ? "for event in fal_client.stream(\"" + app + "\", arguments=arguments, path=\"" + path + "\"):\n    print(event)"
      : "result = fal_client.subscribe(\"" + target + "\", arguments=arguments, with_logs=True)\nprint(result)";
    return {
      curl:
        "curl " + (streaming ? "-N " : "") + "-X POST " + base + "/" + app + path.replace(/^\/$/, "") + " \\\n" +
        "  -H \"Authorization: Key $YURT_KEY\" \\\n" +
        "  -H 'Content-Type: application/json' \\\n" +
        "  -d " + shellJson,
      "python-yurt":
        "import os\n\nimport yurt\n\narguments = " + py + "\n\n" +
        "with yurt.Client(\"" + base + "\", key=os.environ.get(\"YURT_KEY\")) as client:\n" +
        (streaming
          ? "    print(client.run(\"" + target + "\", arguments))  # the whole event stream, as text\n"
          : "    result = client.subscribe(\"" + target + "\", arguments, with_logs=True)\n    print(result)\n"),
      "python-fal":
        "# fal-client speaks https only and reads its hosts as it is imported:\n" +
        "#   export FAL_RUN_HOST=" + host + " FAL_QUEUE_RUN_HOST=" + host + "/queue\n" +
        "#   export FAL_KEY=$YURT_KEY  # fal-client wants one even for a public app: any id:secret\n" +
        "import fal_client\n\narguments = " + py + "\n\n" + pyCall + "\n",
      "js-fal":
        "import { fal } from \"@fal-ai/client\";\n\n" +
        "fal.config({\n  credentials: process.env.YURT_KEY,\n" +
        "  // fal's hosts, sent to this router instead\n" +
        "  requestMiddleware: async (request) => ({\n    ...request,\n" +
        "    url: request.url\n      .replace(\"https://queue.fal.run\", \"" + base + "/queue\")\n" +
        "      .replace(\"https://fal.run\", \"" + base + "\"),\n  }),\n});\n\n" +
        (streaming
          ? "// fal.stream calls the app's /stream endpoint\nconst stream = await fal.stream(\"" + app + "\", { input: " + pretty.replace(/\n/g, "\n  ") + " });\n" +
            "for await (const event of stream) console.log(event);\n"
          : "const result = await fal.subscribe(\"" + target + "\", {\n  input: " + pretty.replace(/\n/g, "\n  ") +
            ",\n  logs: true,\n});\nconsole.log(result.data);\n"),
    };
  }

  // -- the page -----------------------------------------------------------------------------

  function pageStatus(text) {
    const node = document.querySelector('[data-role="page-status"]');
    if (node) node.textContent = text;
  }

  function draw(app, doc) {
    const resolve = makeResolver(doc);
    const box = document.querySelector('[data-role="endpoints"]');
    box.textContent = "";
    const paths = doc["x-fal-order-paths"] || Object.keys(doc.paths || {});
    for (const path of paths) {
      const op = doc.paths[path] && doc.paths[path].post;
      if (!op || doc.paths[path]["x-fal-protocol"]) continue;
      box.append(new Endpoint(app, path, op, resolve).node);
    }
    pageStatus(box.children.length ? "" : "This app has no endpoint the playground can call.");
  }

  async function load(app) {
    const embedded = document.getElementById("yurt-openapi");
    if (embedded) return draw(app, JSON.parse(embedded.textContent));
    if (!storedKey()) return pageStatus("This app wants an API key: enter one above to see its endpoints.");
    pageStatus("Loading…");
    const resp = await fetch("/" + app + "/openapi.json", { headers: withKey() });
    const body = await readJson(resp);
    if (!resp.ok) return pageStatus((body.error_type || resp.status) + ": " + messageOf(body.detail));
    draw(app, body);
  }

  function keyForm(app) {
    const form = document.querySelector('[data-role="key-form"]');
    if (!form) return;
    const status = form.querySelector('[data-role="key-status"]');
    if (storedKey()) status.textContent = "A key is kept for this tab.";
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const input = form.querySelector('[data-role="key"]');
      const key = input.value.trim();
      try {
        if (key) sessionStorage.setItem(KEY_NAME, key);
        else sessionStorage.removeItem(KEY_NAME);
      } catch (err) {
        status.textContent = "This browser keeps no session storage: " + err.message;
        return;
      }
      input.value = "";
      status.textContent = key ? "A key is kept for this tab." : "No key.";
      load(app);
    });
  }

  function start() {
    const app = document.body.getAttribute("data-app");
    if (document.body.getAttribute("data-page") !== "app" || !app) return;
    keyForm(app);
    load(app).catch((e) => pageStatus("The page could not load the app: " + e.message));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
