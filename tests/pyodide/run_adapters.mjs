// Runs edge/adapters/cloudflare/ inside real Pyodide against JS fake bindings.
//
// Usage (Node >= 22, from the pinned tools):
//   .tools/node_modules/node/bin/node tests/pyodide/run_adapters.mjs [--mode sdk|raw|sdk,raw]
//
// The fakes are plain JS classes that answer the way the Workers runtime does: JS `null` for a
// missing KV key, plain JS objects for results, a ReadableStream of Uint8Array SSE bytes for a
// streamed Workers AI run. Like workerd's own type checks, they refuse arguments a real binding
// could not read (a PyProxy of a Python dict or list, a JS Map, a tuple-ish value).
//
// Modes:
//   sdk  the production path: bindings reach the adapter through the workers-runtime-sdk
//        `_EnvWrapper` (a `WorkerEntrypoint` is constructed with the JS env, exactly as
//        workerd does), using the pinned wheel that `make tools` downloads to .tools/wheels.
//   raw  bindings handed to the adapter unwrapped, as with a Worker that has no vendored SDK.
//
// The checks themselves are Python (adapter_checks.py registers them, CHECK_FILES add more);
// failures exit 1 with each failing check's traceback, setup problems exit 2. As in workerd,
// randomness is refused while the Worker's modules are imported (`EntropyGate`). Nothing is
// downloaded: Pyodide loads from .tools/node_modules/pyodide, and the Worker's packages are the
// wheels worker.lock pins.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "..", "..");
const PYODIDE_DIR = join(ROOT, ".tools", "node_modules", "pyodide");
const SDK_WHEEL = join(ROOT, ".tools", "wheels", "workers_runtime_sdk-1.9.5-py3-none-any.whl");
const SDK_WHEEL_SHA256 = "f2b912660a3ab60d2a24920106422f9eaf4cd7a794e42b022237ad2444287fef";
const APP_DIR = "/app"; // where edge/ and shared/ land in the Pyodide FS
const PACKAGES = ["edge", "shared"];
const SKIP_DIRS = new Set(["__pycache__", "local"]); // edge/local never ships to the Worker
// Test code copied next to edge/ (never shipped): the checks' modules, in import order (the
// first holds the registry and the runner), and the negative control for randomness at import.
const CHECK_FILES = ["adapter_checks.py", "handler_checks.py", "import_checks.py", "entropy_at_import.py"];

// The Worker's own packages (fastapi, pydantic and pydantic-core's wasm wheel, httpx, ...):
// exactly the set worker.lock pins, downloaded by `make tools`, each checked by its hash.
const WORKER_WHEELS = join(ROOT, ".tools", "wheels", "worker");
const WORKER_LOCK = join(ROOT, "worker.lock");

function lockedWheels() {
  const hashes = new Map(); // normalized name -> sha256
  for (const line of readFileSync(WORKER_LOCK, "utf8").split("\n")) {
    const m = line.match(/^([A-Za-z0-9_.-]+)==\S+ --hash=sha256:([0-9a-f]{64})$/);
    if (m) hashes.set(m[1].toLowerCase().replace(/[-_.]+/g, "-"), m[2]);
  }
  if (!existsSync(WORKER_WHEELS)) fail(`${WORKER_WHEELS} is missing: run \`make tools\``);
  const wheels = readdirSync(WORKER_WHEELS).filter((n) => n.endsWith(".whl"));
  for (const name of wheels) {
    const key = name.split("-")[0].toLowerCase().replace(/[-_.]+/g, "-");
    const digest = createHash("sha256").update(readFileSync(join(WORKER_WHEELS, name))).digest("hex");
    if (hashes.get(key) !== digest) fail(`${name} is not the wheel worker.lock pins`);
    hashes.delete(key);
  }
  if (hashes.size) fail(`not downloaded: ${[...hashes.keys()].join(", ")} (run \`make tools\`)`);
  return wheels;
}

function fail(message, code = 2) {
  console.error(`run_adapters: ${message}`);
  process.exit(code);
}

function parseModes(argv) {
  let modes = ["sdk"];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = arg.startsWith("--mode=") ? arg.slice(7) : arg === "--mode" ? argv[++i] : null;
    if (value === null) fail(`unknown argument ${JSON.stringify(arg)} (use --mode sdk|raw|sdk,raw)`);
    modes = String(value).split(",").filter(Boolean);
  }
  for (const mode of modes) if (!["sdk", "raw"].includes(mode)) fail(`unknown mode ${mode}`);
  return modes;
}

function pythonFiles(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name)) out.push(...pythonFiles(join(dir, entry.name)));
    } else if (entry.isFile() && entry.name.endsWith(".py")) {
      out.push(join(dir, entry.name));
    }
  }
  return out;
}

// --- argument checks, as strict as workerd's ------------------------------------------------

let PyProxy = null; // set once Pyodide is loaded

function kind(value) {
  if (PyProxy && value instanceof PyProxy) return `a PyProxy of a Python ${value.type}`;
  if (value === null) return "null";
  if (Array.isArray(value)) return "an Array";
  if (value instanceof Map) return "a JS Map";
  if (typeof value === "object") return `a ${value.constructor?.name ?? "prototype-less"} object`;
  return `a ${typeof value}`;
}

function refuse(where, expected, value) {
  let hint = "";
  if (PyProxy && value instanceof PyProxy) {
    hint =
      " (Python dicts/lists cross into JS as PyProxy objects, which a binding cannot read:" +
      " convert with to_js(value, dict_converter=js.Object.fromEntries) or go through the SDK)";
  } else if (value instanceof Map) {
    hint = " (to_js turns dicts into Maps unless dict_converter=js.Object.fromEntries)";
  }
  throw new TypeError(`${where}: expected ${expected}, got ${kind(value)}${hint}`);
}

function plainObject(where, value, { optional = false } = {}) {
  if (optional && value === undefined) return {};
  const ok =
    value !== null &&
    typeof value === "object" &&
    !(PyProxy && value instanceof PyProxy) &&
    Object.getPrototypeOf(value) === Object.prototype;
  if (!ok) refuse(where, "a plain JS object", value);
  return value;
}

function array(where, value) {
  if (!Array.isArray(value)) refuse(where, "a JS Array", value);
  return value;
}

function string(where, value) {
  if (typeof value !== "string") refuse(where, "a string", value);
  return value;
}

function numbers(where, value, length) {
  const ok = Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
  if (!ok) refuse(where, "an Array of numbers", value);
  if (!Array.from(value).every((x) => typeof x === "number" && Number.isFinite(x))) {
    throw new TypeError(`${where}: every value must be a finite number`);
  }
  if (length !== undefined && value.length !== length) {
    throw new Error(`${where}: VECTOR_DIMENSION_MISMATCH: expected ${length} values, got ${value.length}`);
  }
  return Array.from(value);
}

// Deep copy through JSON, as the real services store and return data. Also refuses anything
// JSON cannot hold (PyProxy, Map, functions), naming where it was found.
function jsonCopy(where, value) {
  const visit = (v, path) => {
    if (v === null || ["string", "number", "boolean"].includes(typeof v)) return;
    if (Array.isArray(v)) return v.forEach((x, i) => visit(x, `${path}[${i}]`));
    plainObject(path, v);
    for (const [k, x] of Object.entries(v)) visit(x, `${path}.${k}`);
  };
  visit(value, where);
  return JSON.parse(JSON.stringify(value));
}

const byteLength = (text) => Buffer.byteLength(text, "utf8");

class Recorder {
  calls = [];
  #failures = [];
  // The next call to this binding rejects with `message` (an outage, a 429, ...).
  failNext(message) {
    this.#failures.push(String(message));
  }
  record(method, args) {
    if (this.#failures.length) throw new Error(this.#failures.shift());
    // Arguments as a binding saw them (JSON); undefined trailing options are dropped.
    const seen = args.map((a) => (a === undefined ? "<undefined>" : a));
    while (seen.length && seen[seen.length - 1] === "<undefined>") seen.pop();
    this.calls.push({ method, args: JSON.parse(JSON.stringify(seen)) });
  }
  callsJson() {
    return JSON.stringify(this.calls);
  }
}

// --- Workers KV (workerd src/workerd/api/kv.h) ------------------------------------------------

class KvNamespace extends Recorder {
  #entries = new Map(); // key -> {value, expiration, metadata}

  #live(key) {
    const entry = this.#entries.get(key);
    if (entry && entry.expiration !== undefined && entry.expiration * 1000 <= Date.now()) return null;
    return entry ?? null;
  }

  async get(key, options) {
    string("KvNamespace.get key", key);
    if (options !== undefined && typeof options !== "string") plainObject("KvNamespace.get options", options);
    this.record("get", [key, options]);
    return this.#live(key)?.value ?? null; // JS null for a missing key
  }

  async getWithMetadata(key, options) {
    string("KvNamespace.getWithMetadata key", key);
    this.record("getWithMetadata", [key, options]);
    const entry = this.#live(key);
    return { value: entry?.value ?? null, metadata: entry?.metadata ?? null, cacheStatus: null };
  }

  async put(key, value, options) {
    string("KvNamespace.put key", key);
    string("KvNamespace.put value", value); // the adapter only stores text
    const opts = plainObject("KvNamespace.put options", options, { optional: true });
    const copy = jsonCopy("KvNamespace.put options", opts);
    this.record("put", [key, value, options === undefined ? undefined : copy]);
    if (byteLength(key) > 512) throw new Error("KV PUT failed: 414 UTF-8 encoded length exceeds 512");
    let expiration;
    if (opts.expirationTtl !== undefined) {
      if (typeof opts.expirationTtl !== "number" || opts.expirationTtl < 60) {
        throw new Error(`KV PUT failed: 400 Invalid expiration_ttl of ${opts.expirationTtl}`);
      }
      expiration = Math.floor(Date.now() / 1000) + opts.expirationTtl;
    }
    if (copy.metadata !== undefined && byteLength(JSON.stringify(copy.metadata)) > 1024) {
      throw new Error("KV PUT failed: 413 metadata too large");
    }
    this.#entries.set(key, { value, expiration, metadata: copy.metadata });
  }

  async delete(key) {
    string("KvNamespace.delete key", key);
    this.record("delete", [key]);
    this.#entries.delete(key);
  }

  async list(options) {
    const opts = plainObject("KvNamespace.list options", options, { optional: true });
    this.record("list", [options === undefined ? undefined : jsonCopy("KvNamespace.list options", opts)]);
    const prefix = opts.prefix ?? "";
    const limit = opts.limit ?? 1000;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new Error(`KV LIST failed: 400 invalid limit ${limit}`);
    }
    let after = "";
    if (opts.cursor !== undefined) {
      const [tag, encoded] = string("KvNamespace.list options.cursor", opts.cursor).split(".", 2);
      if (tag !== "c1" || !encoded) throw new Error("KV LIST failed: 400 Invalid cursor");
      after = Buffer.from(encoded, "base64url").toString();
    }
    const names = [...this.#entries.keys()]
      .filter((name) => name.startsWith(prefix) && name > after && this.#live(name))
      .sort();
    const page = names.slice(0, limit);
    const keys = page.map((name) => {
      const { expiration, metadata } = this.#entries.get(name);
      const key = { name };
      if (expiration !== undefined) key.expiration = expiration;
      if (metadata !== undefined) key.metadata = metadata;
      return key;
    });
    const complete = names.length <= limit;
    const result = { keys, list_complete: complete, cacheStatus: null };
    if (!complete) result.cursor = `c1.${Buffer.from(page[page.length - 1]).toString("base64url")}`;
    return result;
  }
}

// --- Vectorize (workerd src/cloudflare/internal/vectorize.d.ts, V2 index) ----------------------

class VectorizeIndexImpl extends Recorder {
  #vectors = new Map(); // id (global to the index) -> {id, values, namespace, metadata}
  #mutations = 0;

  constructor(dimensions) {
    super();
    this.dimensions = dimensions;
  }

  async upsert(vectors) {
    array("VectorizeIndexImpl.upsert vectors", vectors);
    if (vectors.length > 1000) throw new Error("VECTOR_UPSERT_ERROR: more than 1000 vectors");
    const stored = vectors.map((v, i) => {
      const where = `VectorizeIndexImpl.upsert vectors[${i}]`;
      plainObject(where, v);
      const id = string(`${where}.id`, v.id);
      if (byteLength(id) > 64) throw new Error(`VECTOR_UPSERT_ERROR: id over 64 bytes: ${id}`);
      const values = numbers(`${where}.values`, v.values, this.dimensions);
      if (v.namespace !== undefined && byteLength(string(`${where}.namespace`, v.namespace)) > 64) {
        throw new Error("VECTOR_UPSERT_ERROR: namespace over 64 bytes");
      }
      const metadata = v.metadata === undefined ? undefined : jsonCopy(`${where}.metadata`, v.metadata);
      if (metadata && byteLength(JSON.stringify(metadata)) > 10240) {
        throw new Error("VECTOR_UPSERT_ERROR: metadata over 10 KiB");
      }
      return { id, values, namespace: v.namespace, metadata };
    });
    this.record("upsert", [stored.map((v) => ({ id: v.id, namespace: v.namespace }))]);
    for (const v of stored) this.#vectors.set(v.id, v);
    return { mutationId: `m${++this.#mutations}` };
  }

  async deleteByIds(ids) {
    array("VectorizeIndexImpl.deleteByIds ids", ids).forEach((id, i) => string(`ids[${i}]`, id));
    this.record("deleteByIds", [ids]);
    for (const id of ids) this.#vectors.delete(id);
    return { mutationId: `m${++this.#mutations}` };
  }

  async query(vector, options) {
    const values = numbers("VectorizeIndexImpl.query vector", vector, this.dimensions);
    const opts = plainObject("VectorizeIndexImpl.query options", options, { optional: true });
    const copy = jsonCopy("VectorizeIndexImpl.query options", opts);
    this.record("query", [`<${values.length} floats>`, copy]);
    const topK = opts.topK ?? 5;
    const returnMetadata = opts.returnMetadata ?? "none";
    if (!["all", "indexed", "none"].includes(returnMetadata)) {
      throw new Error(`VECTOR_QUERY_ERROR: returnMetadata must be all|indexed|none`);
    }
    const cap = opts.returnValues || returnMetadata === "all" ? 20 : 100;
    if (!Number.isInteger(topK) || topK < 1 || topK > cap) {
      throw new Error(`VECTOR_QUERY_ERROR: topK must be 1..${cap}, got ${topK}`);
    }
    const filter = copy.filter ?? {};
    const matches = [...this.#vectors.values()]
      .filter((v) => v.namespace === opts.namespace && matchesFilter(v.metadata ?? {}, filter))
      .map((v) => ({ v, score: cosine(values, v.values) }))
      .sort((a, b) => b.score - a.score)
      .slice(0, topK)
      .map(({ v, score }) => {
        const match = { id: v.id, score };
        if (opts.returnValues) match.values = v.values;
        if (returnMetadata !== "none" && v.metadata !== undefined) match.metadata = v.metadata;
        return match;
      });
    return { count: matches.length, matches };
  }
}

function matchesFilter(metadata, filter) {
  return Object.entries(filter).every(([key, condition]) => {
    if (key.startsWith("$") || key.includes('"')) throw new Error(`VECTOR_QUERY_ERROR: bad key ${key}`);
    const value = metadata[key];
    const ops = condition !== null && typeof condition === "object" ? condition : { $eq: condition };
    return Object.entries(ops).every(([op, operand]) => {
      switch (op) {
        case "$eq": return value === operand;
        case "$ne": return value !== operand;
        case "$in": return array("$in", operand).includes(value);
        case "$nin": return !array("$nin", operand).includes(value);
        default: throw new Error(`VECTOR_QUERY_ERROR: unsupported operator ${op}`);
      }
    });
  });
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

// --- Workers AI (workerd src/cloudflare/internal/ai-api.ts) ------------------------------------

const EMBEDDING_DIMENSIONS = {
  "@cf/baai/bge-small-en-v1.5": 384,
  "@cf/baai/bge-base-en-v1.5": 768,
  "@test/embed-8": 8,
};
const BROKEN_MODEL = "@test/broken";

// Deterministic, non-trivial embedding: a unit vector from the text's UTF-8 bytes.
function embedText(text, dims) {
  const v = new Array(dims).fill(0);
  const bytes = Buffer.from(text, "utf8");
  bytes.forEach((b, i) => {
    v[(b * 31 + i) % dims] += 1 + (b % 7);
  });
  const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0)) || 1;
  return v.map((x) => x / norm);
}

// Byte chunk sizes for the SSE stream: small primes, so cuts land inside `data:`, inside the
// blank line that ends a frame and inside multi-byte UTF-8 characters.
const CUTS = [1, 2, 3, 5, 7, 11, 13, 17];

function sseStream(pieces, usage) {
  let text = "";
  for (const piece of pieces) text += `data: ${JSON.stringify({ response: piece, p: "abcdefghij" })}\n\n`;
  text += `data: ${JSON.stringify({ response: "", usage })}\n\n`;
  text += "data: [DONE]\n\n";
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  let n = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      const size = CUTS[n++ % CUTS.length];
      // subarray: a view with a non-zero byteOffset into one shared buffer, as network reads give
      controller.enqueue(bytes.subarray(offset, offset + size));
      offset += size;
    },
  });
}

function replyFor(messages) {
  const last = [...messages].reverse().find((m) => m.role === "user");
  return `Echo: ${last ? last.content : ""} — ok ✓ 🎉`;
}

class Ai extends Recorder {
  async run(model, inputs, options) {
    string("Ai.run model", model);
    plainObject("Ai.run inputs", inputs);
    if (options !== undefined) plainObject("Ai.run options", options);
    this.record("run", [model, jsonCopy("Ai.run inputs", inputs), options]);
    if (model === BROKEN_MODEL) throw new Error("InferenceUpstreamError: 5007: no such model");
    if (model in EMBEDDING_DIMENSIONS) {
      const texts =
        typeof inputs.text === "string" ? [inputs.text] : array("Ai.run inputs.text", inputs.text);
      if (texts.length > 100) throw new Error("AiError: 8001: text: maxItems 100");
      const dims = EMBEDDING_DIMENSIONS[model];
      const data = texts.map((t) => embedText(string("Ai.run inputs.text[]", t), dims));
      return { shape: [texts.length, dims], data, pooling: "mean" };
    }
    const messages = array("Ai.run inputs.messages", inputs.messages).map((m, i) => {
      plainObject(`Ai.run inputs.messages[${i}]`, m);
      return { role: string("role", m.role), content: string("content", m.content) };
    });
    if (inputs.max_tokens !== undefined && !Number.isInteger(inputs.max_tokens)) {
      throw new TypeError("AiError: 5006: max_tokens must be an integer");
    }
    if (inputs.stream !== undefined && typeof inputs.stream !== "boolean") {
      throw new TypeError(`AiError: 5006: stream must be a boolean, got ${kind(inputs.stream)}`);
    }
    const reply = replyFor(messages);
    const usage = { prompt_tokens: 12, completion_tokens: 9, total_tokens: 21 };
    if (inputs.stream) {
      const chars = [...reply]; // code points, so each piece is valid text
      const pieces = [];
      for (let i = 0; i < chars.length; i += 3) pieces.push(chars.slice(i, i + 3).join(""));
      return sseStream(pieces, usage);
    }
    return { response: reply, usage, tool_calls: [] };
  }
}

// --- Durable Objects (workerd: SQLite-backed objects reached through RPC stubs) ----------------
//
// `ctx.storage.sql` is real SQLite (node:sqlite), synchronous as in workerd; the namespace
// makes one object per name with the Worker's own Python class (edge/entry.py's JobLedger,
// constructed the way workerd does: `new Class(ctx, env)`), and a stub's method calls cross
// as RPC does: only structured-clonable arguments and results (here: strings, numbers, null).

let DatabaseSync = null; // node:sqlite, loaded in main() (it warns once that it is experimental)

class SqlStorageCursor {
  #rows;
  constructor(rows) {
    this.#rows = rows;
  }
  toArray() {
    return this.#rows.slice();
  }
  one() {
    if (this.#rows.length !== 1) throw new Error(`Expected exactly one result from SQL query, got ${this.#rows.length}`);
    return this.#rows[0];
  }
}

class SqlStorage {
  #db = new DatabaseSync(":memory:");
  reset() {
    this.#db = new DatabaseSync(":memory:");
  }
  exec(query, ...bindings) {
    string("SqlStorage.exec query", query);
    if (/^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b/i.test(query)) {
      throw new Error("SqlStorage.exec: transactions are managed by the runtime (use transactionSync)");
    }
    bindings.forEach((b, i) => {
      if (!(b === null || typeof b === "string" || typeof b === "number")) {
        refuse(`SqlStorage.exec binding ${i}`, "a string, number or null", b);
      }
    });
    // Rows as plain objects, as workerd hands them back (node:sqlite's have no prototype).
    return new SqlStorageCursor(this.#db.prepare(query).all(...bindings).map((row) => ({ ...row })));
  }
}

class DurableObjectStorage extends Recorder {
  sql = new SqlStorage();
  alarm = null; // epoch ms, as setAlarm got it
  async setAlarm(when) {
    if (typeof when !== "number" || !Number.isFinite(when)) refuse("DurableObjectStorage.setAlarm", "a number (epoch ms)", when);
    this.record("setAlarm", [when]);
    this.alarm = when;
  }
  async getAlarm() {
    return this.alarm;
  }
  async deleteAlarm() {
    this.alarm = null;
  }
  // SQLite-backed objects: every table and the alarm go (from compatibility date 2026-02-24).
  async deleteAll() {
    this.record("deleteAll", []);
    this.sql.reset();
    this.alarm = null;
  }
}

class DurableObjectId {
  constructor(name) {
    this.name = name;
  }
  toString() {
    return createHash("sha256").update(this.name).digest("hex");
  }
}

class DurableObjectStub {} // what a stub's constructor.name says; its methods are the object's

function cloneable(where, value) {
  if (value === null || ["string", "number", "boolean", "undefined"].includes(typeof value)) return value;
  refuse(where, "a structured-clonable value (a PyProxy cannot cross RPC)", value);
}

class DurableObjectNamespace extends Recorder {
  #objects = new Map(); // name -> {state, instance}
  constructor(makeObject) {
    super();
    this.makeObject = makeObject; // (state) -> the object's instance
  }
  idFromName(name) {
    return new DurableObjectId(string("DurableObjectNamespace.idFromName name", name));
  }
  object(name) {
    let entry = this.#objects.get(name);
    if (!entry) {
      const state = { id: new DurableObjectId(name), storage: new DurableObjectStorage() };
      entry = { state, instance: this.makeObject(state) };
      this.#objects.set(name, entry);
    }
    return entry;
  }
  get(id) {
    if (!(id instanceof DurableObjectId)) refuse("DurableObjectNamespace.get id", "a DurableObjectId", id);
    const namespace = this;
    return new Proxy(new DurableObjectStub(), {
      get(target, method) {
        if (typeof method !== "string" || method in target || method === "then") return Reflect.get(target, method);
        return async (...args) => {
          args.forEach((a, i) => cloneable(`${method}() argument ${i}`, a));
          namespace.record(method, [id.name]);
          const result = await namespace.object(id.name).instance[method](...args);
          return cloneable(`${method}() result`, result);
        };
      },
    });
  }
  namesJson() {
    return JSON.stringify([...this.#objects.keys()]);
  }
}

let PYODIDE = null; // set in main(): the namespace builds objects from the Worker's classes

function jobsNamespace(env) {
  return new DurableObjectNamespace((state) => PYODIDE.pyimport("edge.entry").JobLedger(state, env));
}

// --- runtime modules the SDK imports (provided by workerd) -------------------------------------

function registerRuntimeModules(pyodide, env) {
  pyodide.registerJsModule("_pyodide_entrypoint_helper", {
    cloudflareWorkersModule: { env, waitUntil: () => undefined },
    cloudflareSocketsModule: {},
    patchWaitUntil: () => undefined,
    doAnImport: async (name) => {
      throw new Error(`import ${name}: not available in the Pyodide adapter test`);
    },
    patch_env_helper: () => {
      throw new Error("patch_env is not available in the Pyodide adapter test");
    },
  });
  pyodide.registerJsModule("_cloudflare_compat_flags", {
    python_workflows_implicit_dependencies: false,
    python_request_headers_preserve_commas: false,
  });
}

// Workers Rate Limiting: `limit({key})` resolves to `{success}`; `perKey` calls allowed.
class RateLimit extends Recorder {
  #counts = new Map();
  constructor(perKey) {
    super();
    this.perKey = perKey;
  }
  async limit(options) {
    plainObject("RateLimit.limit options", options);
    const key = string("RateLimit.limit key", options.key);
    this.record("limit", [jsonCopy("RateLimit.limit options", options)]);
    const count = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, count);
    return { success: count <= this.perKey };
  }
}

// --- fetch(): Prefect's REST API and webhook receivers, as the Worker reaches them ------------
//
// The edge's HTTP calls go through the runtime's fetch() (edge/adapters/cloudflare/
// fetch_transport.py). This stands in for the network: a small Prefect (deployments by
// name, create_flow_run idempotent per key, read, set_state) and a webhook receiver.

class FakeNetwork extends Recorder {
  runs = new Map(); // id -> flow run
  byKey = new Map(); // idempotency key -> id
  hooks = [];
  #down = new Set(); // hosts that cannot be reached, as fetch() fails for them
  #hookStatus = new Map(); // webhook path -> status its receiver answers (default 204)

  unreachable(host) {
    this.#down.add(host);
  }
  reachable(host) {
    this.#down.delete(host);
  }
  answerHooksAt(path, status) {
    this.#hookStatus.set(path, status);
  }
  // What happens to a job's run behind the edge's back: its worker crashes (CRASHED) or
  // fails it, or someone deletes the run.
  moveRun(jobId, type) {
    this.#runOrThrow(jobId).state = prefectState(type);
  }
  deleteRun(jobId) {
    this.runs.delete(this.#runOrThrow(jobId).id);
  }
  #runOrThrow(jobId) {
    const run = this.runOf(jobId);
    if (!run) throw new Error(`the fake Prefect has no run for job ${jobId}`);
    return run;
  }
  runOf(jobId) {
    return [...this.runs.values()].find((r) => r.parameters.job_id === jobId) ?? null;
  }
  hooksJson() {
    return JSON.stringify(this.hooks);
  }

  async fetch(input, init = {}) {
    const url = new URL(typeof input === "string" ? input : input.url);
    const method = init.method ?? "GET";
    const text = init.body === undefined ? "" : new TextDecoder().decode(init.body);
    this.record("fetch", [method, url.pathname]);
    const json = (status, body) =>
      new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    if (this.#down.has(url.host)) throw new TypeError("fetch failed");
    if (url.host === "hooks.test") {
      this.hooks.push({ path: url.pathname, headers: Object.fromEntries(new Headers(init.headers)), body: text });
      return new Response(null, { status: this.#hookStatus.get(url.pathname) ?? 204 });
    }
    if (url.host !== "prefect.test") throw new TypeError("fetch failed");
    const path = url.pathname.replace(/^\/api\//, "");
    if (method === "GET" && path.startsWith("deployments/name/")) return json(200, { id: `dep-${path.split("/").pop()}` });
    if (method === "POST" && path.endsWith("/create_flow_run")) {
      const body = JSON.parse(text);
      let id = this.byKey.get(body.idempotency_key);
      if (!id) {
        id = `run-${this.runs.size + 1}`;
        this.byKey.set(body.idempotency_key, id);
        this.runs.set(id, { id, parameters: body.parameters, deployment_id: path.split("/")[1], state: prefectState("SCHEDULED") });
      }
      return json(201, this.runs.get(id));
    }
    const run = this.runs.get(path.split("/")[1]);
    if (method === "GET" && path.startsWith("flow_runs/") && run) return json(200, run);
    if (method === "POST" && path.endsWith("/set_state") && run) {
      run.state = prefectState(JSON.parse(text).state.type);
      return json(201, { status: "ACCEPT", state: run.state });
    }
    if (method === "POST" && path === "flow_runs/filter") {
      const ids = JSON.parse(text).flow_runs?.id?.any_ ?? [];
      return json(200, ids.map((id) => this.runs.get(id)).filter(Boolean));
    }
    return json(404, { detail: `no route ${method} ${path} in the fake Prefect` });
  }
}

function prefectState(type) {
  const name = type[0] + type.slice(1).toLowerCase();
  return { type, name, id: `s-${Math.random()}`, timestamp: new Date().toISOString(), message: "" };
}

// Cloudflare Queues producer binding: `send(body, {delaySeconds})`, bodies kept as sent.
class Queue extends Recorder {
  messages = [];
  #delivered = 0;
  async send(body, options) {
    if (options !== undefined) plainObject("Queue.send options", options);
    const copy = jsonCopy("Queue.send body", body);
    this.record("send", [copy, options === undefined ? undefined : jsonCopy("Queue.send options", options)]);
    this.messages.push(copy);
  }
  messagesJson() {
    return JSON.stringify(this.messages);
  }
  // What the queue's consumer gets next: the messages sent since the last batch. Delays are
  // recorded by send(), not waited for.
  nextBatch(queueName = "edgecrew-webhooks") {
    const start = this.#delivered;
    this.#delivered = this.messages.length;
    const fresh = this.messages.slice(start).map((body, i) => new QueueMessage(`m${start + i + 1}`, body));
    return new QueueController(queueName, fresh);
  }
}

// --- what workerd hands queue() and scheduled() (workerd src/workerd/api/queue.h, scheduled.h) --
//
// The class names matter: the SDK wraps what is not a plain object in a _BindingWrapper by its
// constructor's name. A message's body is a structured clone of what was sent, as a consumer
// gets it; what the handler did with each message is kept in `settled` ("ack", "retry").

class QueueMessage {
  settled = [];
  constructor(id, body, attempts = 1) {
    this.id = id;
    this.timestamp = new Date();
    this.body = structuredClone(body);
    this.attempts = attempts;
  }
  ack() {
    this.settled.push("ack");
  }
  retry(options) {
    if (options !== undefined) plainObject("QueueMessage.retry options", options);
    this.settled.push("retry");
  }
}

class QueueController {
  settled = [];
  constructor(queue, messages) {
    this.queue = queue;
    this.messages = messages;
  }
  ackAll() {
    this.settled.push("ackAll");
  }
  retryAll(options) {
    if (options !== undefined) plainObject("QueueController.retryAll options", options);
    this.settled.push("retryAll");
  }
  settledJson() {
    return JSON.stringify({ batch: this.settled, messages: this.messages.map((m) => m.settled) });
  }
}

class ScheduledController {
  noRetryCalled = false;
  constructor(cron, scheduledTime = Date.now()) {
    this.cron = cron;
    this.scheduledTime = scheduledTime;
  }
  noRetry() {
    this.noRetryCalled = true;
  }
}

// --- randomness at import (workerd src/pyodide/internal/topLevelEntropy/lib.ts) -----------------
//
// Until the first request workerd refuses randomness. It rewrites Pyodide's calls to
// `crypto.getRandomValues(` into its own getRandomValues (src/pyodide/helpers.bzl), which throws
// unless the allowance byte that Python's `allow_bad_entropy_calls(n)` sets is above 0, and takes
// one off it per call (filling the buffer with 43s); a throw there is a fatal Pyodide error, so the
// Python side refuses os.urandom first (workerd/_cloudflare/entropy_patches.py). Node's Pyodide
// build reads randomness through `require("node:crypto").randomFillSync` instead, so the gate sits
// there with the same rule. JS code's own crypto.getRandomValues is refused outright, as workerd
// refuses it in the global scope whatever the allowance.

const GLOBAL_SCOPE_ERROR =
  "Disallowed operation called within global scope. Asynchronous I/O (ex: fetch() or connect()), " +
  "setting a timeout, and generating random values are not allowed within global scope. To fix " +
  "this error, perform this operation within a handler. " +
  "https://developers.cloudflare.com/workers/runtime-apis/handlers/"; // workerd io-context.c++

class PythonUserError extends Error {
  get name() {
    return "PythonUserError";
  }
}

class EntropyGate {
  inRequest = true; // Pyodide's own boot is not the Worker's top level: it runs before the gate
  #module = null; // Pyodide's Emscripten module, whose memory holds the allowance byte
  #flag = 0;

  #nodeCrypto = createRequire(import.meta.url)("node:crypto"); // the object Pyodide requires

  install() {
    const nodeCrypto = this.#nodeCrypto;
    const fill = nodeCrypto.randomFillSync;
    nodeCrypto.randomFillSync = (view, ...rest) => {
      if (this.inRequest) return fill.call(nodeCrypto, view, ...rest);
      this.#takeAllowance();
      return view.fill(43);
    };
    const webcrypto = globalThis.crypto;
    const getRandomValues = webcrypto.getRandomValues.bind(webcrypto);
    webcrypto.getRandomValues = (array) => {
      if (!this.inRequest) throw new Error(GLOBAL_SCOPE_ERROR);
      return getRandomValues(array);
    };
  }

  // workerd: entropyAfterRuntimeInit + entropyBeforeTopLevel.
  beforeTopLevel(pyodide) {
    this.#module = pyodide._module;
    this.#flag = pyodide.runPython(
      "from _cloudflare.entropy_patches import before_top_level\n" +
        "from _cloudflare.allow_entropy import flag_address\n" +
        "before_top_level()\n" +
        "flag_address()",
    );
    this.inRequest = false;
  }

  // workerd: entropyBeforeRequest, once, before the first handler runs.
  beforeFirstRequest(pyodide) {
    this.inRequest = true;
    pyodide.runPython("from _cloudflare.entropy_patches import before_first_request\nbefore_first_request()");
  }

  // What Pyodide's getentropy() meets now with no allowance left, as "name: message" or null.
  // Asked of the gate directly: in Pyodide that refusal is a fatal error, as it is in workerd.
  refusal() {
    try {
      this.#nodeCrypto.randomFillSync(new Uint8Array(1));
      return null;
    } catch (err) {
      return `${err.name}: ${err.message}`;
    }
  }

  #takeAllowance() {
    const heap = this.#module.HEAP8; // read each time: the view changes when memory grows
    if (heap[this.#flag] > 0) {
      heap[this.#flag]--;
      return;
    }
    throw new PythonUserError("Disallowed operation called within global scope");
  }
}

const ENTROPY = new EntropyGate();
ENTROPY.install();
const EXECUTOR_SECRET = `whsec_${Buffer.from("0123456789abcdef0123456789abcdef").toString("base64")}`;
const NETWORK = new FakeNetwork();
globalThis.fetch = (input, init) => NETWORK.fetch(input, init);

function makeEnv() {
  return {
    KV: new KvNamespace(),
    RATE_LIMITER: new RateLimit(2),
    VECTORIZE: new VectorizeIndexImpl(8),
    AI: new Ai(),
    // Vars as wrangler passes them: strings, and a number (vars may be any JSON value).
    EDGECREW_API_KEYS: "tenant_a:key-a-0123456789",
    EDGECREW_EMBED_MODEL: "@test/embed-8",
    EDGECREW_EMBED_DIMENSIONS: 8,
  };
}

// --- main ---------------------------------------------------------------------------------------

async function main() {
  const modes = parseModes(process.argv.slice(2));
  const started = performance.now();
  if (!existsSync(join(PYODIDE_DIR, "pyodide.mjs"))) {
    fail(`${PYODIDE_DIR} is missing: run \`npm ci --prefix .tools\` first`);
  }
  const wheel = readFileSync(SDK_WHEEL);
  const digest = createHash("sha256").update(wheel).digest("hex");
  if (digest !== SDK_WHEEL_SHA256) fail(`${SDK_WHEEL}: sha256 ${digest}, expected ${SDK_WHEEL_SHA256}`);

  const { loadPyodide } = await import(pathToFileURL(join(PYODIDE_DIR, "pyodide.mjs")).href);
  const output = [];
  const pyodide = await loadPyodide({
    indexURL: PYODIDE_DIR + sep,
    stdout: (line) => output.push(line),
    stderr: (line) => output.push(line),
  });
  PyProxy = pyodide.ffi.PyProxy;
  PYODIDE = pyodide;
  process.removeAllListeners("warning"); // node:sqlite's "experimental" notice, not ours
  ({ DatabaseSync } = await import("node:sqlite"));
  const loaded = performance.now();

  const copied = [];
  for (const pkg of PACKAGES) {
    for (const file of pythonFiles(join(ROOT, pkg))) {
      const target = `${APP_DIR}/${relative(ROOT, file).split(sep).join("/")}`;
      pyodide.FS.mkdirTree(target.slice(0, target.lastIndexOf("/")));
      pyodide.FS.writeFile(target, readFileSync(file));
      copied.push(target);
    }
  }
  pyodide.FS.mkdirTree("/wheels");
  for (const name of lockedWheels()) {
    pyodide.FS.writeFile(`/wheels/${name}`, readFileSync(join(WORKER_WHEELS, name)));
  }
  pyodide.FS.writeFile("/tmp/sdk.whl", wheel);
  // workerd's internal `_cloudflare` package (not on any index), as small stand-ins, so the
  // SDK's .pth patches load as they do in a Worker (tests/pyodide/workerd/).
  for (const file of pythonFiles(join(HERE, "workerd"))) {
    const target = `/workerd/${relative(join(HERE, "workerd"), file).split(sep).join("/")}`;
    pyodide.FS.mkdirTree(target.slice(0, target.lastIndexOf("/")));
    pyodide.FS.writeFile(target, readFileSync(file));
  }
  for (const name of CHECK_FILES) pyodide.FS.writeFile(`${APP_DIR}/${name}`, readFileSync(join(HERE, name)));
  // The job ledger's contract, shared with the CPython tests (plain Python, no pytest).
  pyodide.FS.mkdirTree(`${APP_DIR}/tests`);
  pyodide.FS.writeFile(`${APP_DIR}/tests/__init__.py`, "");
  pyodide.FS.writeFile(`${APP_DIR}/tests/ledger_contract.py`, readFileSync(join(ROOT, "tests", "ledger_contract.py")));
  registerRuntimeModules(pyodide, makeEnv());
  pyodide.runPython(`
import os, sys, zipfile
zipfile.ZipFile("/tmp/sdk.whl").extractall("/sdk")
for name in sorted(os.listdir("/wheels")):  # installed as pywrangler vendors them: unpacked
    zipfile.ZipFile(f"/wheels/{name}").extractall("/worker-packages")
sys.path[:0] = ["${APP_DIR}", "/workerd", "/worker-packages"]
`);

  // The Worker's top level, as workerd runs it before the first request: randomness refused
  // but for the allowances the runtime's patches hand out. The SDK's .pth file runs (as
  // workerd loads the vendored SDK), then the main module and everything it imports.
  ENTROPY.beforeTopLevel(pyodide);
  pyodide.runPython('import site\nsite.addsitedir("/sdk")');
  const modules = CHECK_FILES.filter((n) => n.endsWith("_checks.py")).map((n) => pyodide.pyimport(n.slice(0, -3)));
  const checks = modules[0];
  const importPhase = modules.find((m) => m.__name__ === "import_checks").import_phase();
  const gateAtImport = ENTROPY.refusal();
  ENTROPY.beforeFirstRequest(pyodide);
  const lines = [];
  let failed = 0;
  let passed = 0;
  for (const mode of modes) {
    const env = makeEnv();
    const helpers = {
      brokenModel: BROKEN_MODEL,
      replyTo: (text) => replyFor([{ role: "user", content: text }]),
      // Fresh bindings for the whole-app check, with room for its requests under the limit.
      appEnv: () => {
        const env = {
          ...makeEnv(),
          RATE_LIMITER: new RateLimit(1000),
          WEBHOOKS: new Queue(),
          EDGECREW_PREFECT_API_URL: "https://prefect.test/api",
          EDGECREW_EXECUTOR_SECRET: EXECUTOR_SECRET,
          EDGECREW_SECRET_KEY: "master-key-for-the-pyodide-test-0123456789",
        };
        env.JOBS = jobsNamespace(env);
        return env;
      },
      // A JOBS namespace of its own, for the job ledger's contract.
      jobsEnv: () => {
        const env = makeEnv();
        env.JOBS = jobsNamespace(env);
        return env;
      },
      network: NETWORK,
      executorSecret: EXECUTOR_SECRET,
      importPhase, // what import_checks.import_phase() saw before the first request (JSON)
      gateAtImport, // what getentropy() met then, with no allowance
      scheduledController: (cron) => new ScheduledController(cron),
    };
    const reportJson = await checks.run(mode, env, helpers);
    const report = JSON.parse(reportJson);
    for (const r of report.results) {
      if (r.ok) passed++;
      else {
        failed++;
        lines.push(`FAIL [${mode}] ${r.name}\n${r.error.trimEnd().replace(/^/gm, "    ")}`);
      }
    }
    const ok = report.results.filter((r) => r.ok).length;
    lines.push(`[${mode}] ${ok}/${report.results.length} checks passed`);
    if (report.results.length === 0) fail(`mode ${mode} ran no checks`);
  }
  for (const module of modules) module.destroy();
  const versions = pyodide.runPython(
    "import sys, pyodide; f'Pyodide {pyodide.__version__}, Python {sys.version.split()[0]}'",
  );
  const elapsed = ((performance.now() - started) / 1000).toFixed(1);
  const load = ((loaded - started) / 1000).toFixed(1);
  if (output.length) console.log(output.join("\n"));
  if (failed) {
    console.error(lines.join("\n"));
    console.error(
      `run_adapters: ${failed} check(s) failed, ${passed} passed (${versions}, ${elapsed} s)`,
    );
    process.exit(1);
  }
  console.log(
    `run_adapters: OK: ${passed} checks in modes ${modes.join("+")} over ${copied.length} modules ` +
      `(${versions}, workers-runtime-sdk 1.9.5; ${elapsed} s, Pyodide load ${load} s)`,
  );
}

main().catch((err) => fail(err?.stack ?? String(err)));
