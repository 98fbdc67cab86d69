/*
 * harness.js - starts what the browser tests drive: tools/mock-llm (the
 * upstream, see tools/MOCK.md), the real chatd pointed at it with a fresh
 * SQLite database in a temporary directory, and Debian's Chromium headless
 * through playwright-core. The same conventions as tests/e2e/harness.py:
 * binaries from CHATD_BIN and MOCK_LLM_BIN (set by CTest), CHATD_SANITIZE
 * multiplies every timeout by 3, both programs listen on port 0 and say
 * where. Screenshots go to BROWSER_OUT (default: a temporary directory).
 */
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

const ROOT = path.resolve(__dirname, "..", "..");
const CHATD_BIN = process.env.CHATD_BIN || path.join(ROOT, "build", "chatd");
const MOCK_BIN = process.env.MOCK_LLM_BIN || path.join(ROOT, "build", "mock-llm");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SANITIZE = /^(1|on|true|yes|y)$/i.test(process.env.CHATD_SANITIZE || "");
const SCALE = SANITIZE ? 3 : 1;
const OUT = process.env.BROWSER_OUT || fs.mkdtempSync(path.join(os.tmpdir(), "browser-out-"));

/** A timeout in ms, scaled for sanitizer builds. */
function t(ms) {
  return ms * SCALE;
}

/* Resolves with the first match of re in the text a stream accumulates. */
function waitForLine(proc, stream, re, what, timeout) {
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => done(new Error(what + " did not start within " + timeout + " ms: " + text.slice(-2000))), timeout);
    function onData(chunk) {
      text += chunk.toString("utf8");
      const m = re.exec(text);
      if (m) done(null, m);
    }
    function onExit(code) {
      done(new Error(what + " exited with " + code + " before listening: " + text.slice(-4000)));
    }
    function done(err, m) {
      clearTimeout(timer);
      stream.off("data", onData);
      proc.off("exit", onExit);
      if (err) reject(err);
      else resolve(m);
    }
    stream.on("data", onData);
    proc.on("exit", onExit);
  });
}

function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("CHATD_") && k !== "PORT") env[k] = v;
  }
  return Object.assign(env, extra || {});
}

async function startMock(delayMs) {
  const proc = spawn(MOCK_BIN, ["--host", "127.0.0.1", "--port", "0", "--quiet", "--delay-ms", String(delayMs)],
    { stdio: ["ignore", "pipe", "inherit"] });
  const m = await waitForLine(proc, proc.stdout, /mock-llm: listening on [^\s]*:(\d+)/, "mock-llm", t(15000));
  proc.stdout.resume();
  return { proc, url: "http://127.0.0.1:" + m[1] + "/v1" };
}

async function startChatd(llmUrl, args) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "browser-chatd-"));
  const proc = spawn(CHATD_BIN, ["--host", "127.0.0.1", "--port", "0",
    "--db", "sqlite:" + path.join(tmp, "chatd.db"), "--llm-url", llmUrl,
    "--export-dir", path.join(tmp, "exports")].concat(args || []),
  { cwd: tmp, env: cleanEnv(), stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (c) => { stderr += c.toString("utf8"); });
  const m = await waitForLine(proc, proc.stderr, /listening on [^\s]*:(\d+)/, "chatd", t(15000));
  const exited = new Promise((resolve) => proc.on("exit", (code, sig) => resolve(sig ? "signal " + sig : code)));
  return {
    proc,
    tmp,
    port: Number(m[1]),
    dbPath: path.join(tmp, "chatd.db"),
    base: "http://127.0.0.1:" + m[1],
    stderr: () => stderr,
    /** SIGTERM, then the exit status (0 expected; a sanitizer report is not 0). */
    async stop() {
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), t(15000));
      const rc = await exited;
      clearTimeout(timer);
      fs.rmSync(tmp, { recursive: true, force: true });
      return rc;
    }
  };
}

async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--lang=en-US"]
  });
}

/**
 * Writes conversations straight into chatd's SQLite file (WAL lets chatd
 * run on), as another tool or an older version could have: convs is
 * [{id, minutesAgo, messages: [[role, content], ...]}]. Python's sqlite3,
 * as the e2e tests use, since Node 20 has no SQLite of its own.
 */
function seed(dbPath, convs) {
  const py = [
    "import json, sys, sqlite3, datetime",
    "convs = json.load(sys.stdin)",
    "con = sqlite3.connect(sys.argv[1], timeout=30)",
    "now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)",
    "for c in convs:",
    "    t0 = now - datetime.timedelta(minutes=c['minutesAgo'])",
    "    ts = [(t0 + datetime.timedelta(seconds=5 * i)).isoformat(timespec='microseconds') for i in range(len(c['messages']) + 1)]",
    "    con.execute('INSERT INTO conversations (id, created_at, last_active) VALUES (?, ?, ?)', (c['id'], ts[0], ts[-1]))",
    "    for i, (role, content) in enumerate(c['messages']):",
    "        con.execute('INSERT INTO messages (conversation_id, role, content, timestamp) VALUES (?, ?, ?, ?)', (c['id'], role, content, ts[i + 1]))",
    "con.commit()"
  ].join("\n");
  const r = require("node:child_process").spawnSync("python3", ["-c", py, dbPath], { input: JSON.stringify(convs) });
  if (r.status !== 0) throw new Error("seeding the database failed: " + r.stderr);
}

/** Polls fn until it returns a truthy value; returns it, or throws after timeout. */
async function waitFor(fn, timeout, what) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + (what || "a condition"));
    await new Promise((r) => setTimeout(r, 25));
  }
}

module.exports = { ROOT, OUT, SANITIZE, t, startMock, startChatd, launchBrowser, waitFor, seed };
