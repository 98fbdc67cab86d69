/*
 * page.test.js - the web page in a real browser: Debian's Chromium headless
 * driven by playwright-core against the real chatd and tools/mock-llm. The
 * mock is steered by directives in the message text (tools/MOCK.md).
 *
 * The tests run in order and share one chatd, one mock and one browser
 * page, the way a person would use it: each leaves conversations behind
 * that later ones (refresh, delete, downloads) build on. A screenshot of
 * each main state goes to BROWSER_OUT; screenshot.png there is the one the
 * README shows (docs/screenshot.png).
 *
 *   node --test tests/browser/      (CTest: browser.page, with the binaries set)
 */
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { OUT, t, startMock, startChatd, launchBrowser, waitFor, seed } = require("./harness");

const TOKEN = "browser-test-token";
let mock, chatd, browser, context, page;
const pageErrors = [];

/* Every page of the tests reports its script errors and CSP violations. */
function watch(p) {
  p.on("pageerror", (e) => pageErrors.push(String(e)));
  p.on("console", (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) pageErrors.push("CSP: " + m.text());
  });
}

function shot(name) {
  return page.screenshot({ path: path.join(OUT, name + ".png") });
}

function tokens(n) {
  return Array.from({ length: n }, (_, i) => "w" + (i + 1)).join(" ");
}

async function api(method, p) {
  const res = await fetch(chatd.base + p, { method });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

async function remembered() {
  return page.evaluate(() => JSON.parse(localStorage.getItem("chatd.conversations") || "[]"));
}

async function currentId(title) {
  const list = await remembered();
  const c = list.find((x) => x.title === title || (title.endsWith("…") && x.title.startsWith(title.slice(0, -1))));
  assert.ok(c, "conversation '" + title + "' is remembered in localStorage: " + JSON.stringify(list));
  return c.id;
}

/* Types text and presses Enter, as a person does. */
async function send(text) {
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}

function lastAssistant() {
  return page.locator(".msg.assistant").last();
}

async function idle() {
  await page.waitForFunction(() => !document.body.classList.contains("busy"), null, { timeout: t(20000) });
}

async function newChat() {
  await page.click("#new-chat");
  assert.equal(await page.textContent("#title"), "New chat");
  assert.equal(await page.locator(".msg").count(), 0);
}

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  mock = await startMock(20);
  chatd = await startChatd(mock.url, ["--admin-token", TOKEN]);
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US" });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: chatd.base });
  page = await context.newPage();
  page.setDefaultTimeout(t(10000));
  watch(page);
  await page.goto(chatd.base + "/");
});

after(async () => {
  if (browser) await browser.close();
  let rc = 0;
  if (chatd) rc = await chatd.stop();
  if (mock) mock.proc.kill("SIGTERM");
  assert.equal(rc, 0, "chatd's exit status on SIGTERM; stderr tail:\n" + (chatd ? chatd.stderr().slice(-6000) : ""));
});

test("the page and its files are served with types, ETags, 304 and Cache-Control", async () => {
  const res = await api("GET", "/");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(res.headers.get("cache-control"), "no-cache");
  assert.match(res.headers.get("content-security-policy"), /script-src 'self'/);
  const etag = res.headers.get("etag");
  assert.match(etag, /^"[0-9a-f]{16}"$/);
  const again = await fetch(chatd.base + "/", { headers: { "If-None-Match": etag } });
  assert.equal(again.status, 304);
  assert.equal(await again.text(), "");
  const other = await fetch(chatd.base + "/", { headers: { "If-None-Match": '"nope", W/"x",,' } });
  assert.equal(other.status, 200);
  const head = await api("HEAD", "/");
  assert.equal(head.status, 200);
  assert.equal(head.text, "");
  assert.equal(head.headers.get("content-length"), String(Buffer.byteLength(res.text)));

  const assets = [...res.text.matchAll(/\/assets\/([a-z]+)\.([0-9a-f]{16})\.([a-z]+)/g)];
  const types = { js: "text/javascript; charset=utf-8", css: "text/css; charset=utf-8", svg: "image/svg+xml" };
  assert.deepEqual(assets.map((m) => m[1] + "." + m[3]).sort(),
    ["app.js", "favicon.svg", "marked.js", "purify.js", "style.css"]);
  for (const [p, name, hash, ext] of assets) {
    const a = await api("GET", p);
    assert.equal(a.status, 200, p);
    assert.equal(a.headers.get("content-type"), types[ext], p);
    assert.equal(a.headers.get("cache-control"), "public, max-age=31536000, immutable", p);
    assert.equal(a.headers.get("etag"), '"' + hash + '"', p);
    const plain = await api("GET", "/assets/" + name + "." + ext);
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get("cache-control"), "no-cache");
    assert.equal(plain.text, a.text);
    const cond = await fetch(chatd.base + p, { headers: { "If-None-Match": '"x", ' + a.headers.get("etag") } });
    assert.equal(cond.status, 304, p);
  }
  for (const p of ["/nope", "/assets/nope.js", "/index.html", "/assets/"]) {
    const r = await api("GET", p);
    assert.equal(r.status, 404, p);
    assert.equal(r.json().status, "error", p);
  }
  assert.equal((await api("POST", "/")).status, 405);
});

test("a message streams its answer in pieces; the status shows /health", async () => {
  await page.waitForSelector("#status.ok");
  assert.match(await page.textContent("#status-text"), /^database ok · cache \d+ · sessions \d+$/);
  const msg = "mock:tokens=14 mock:delay=120";
  await send(msg);
  const seen = new Set();
  let shotTaken = false;
  await waitFor(async () => {
    const txt = (await lastAssistant().locator(".body").innerText()).replace(/▍/g, "").trim();
    if (txt) seen.add(txt);
    if (!shotTaken && seen.size >= 3) {
      shotTaken = true;
      await shot("01-streaming");
    }
    return txt === tokens(14) && !(await page.evaluate(() => document.body.classList.contains("busy")));
  }, t(15000), "the whole answer");
  const partial = [...seen].filter((s) => s !== tokens(14));
  assert.ok(partial.length >= 3, "saw the answer grow in pieces: " + JSON.stringify([...seen]));
  for (const p of partial) assert.ok(tokens(14).startsWith(p), "piece " + JSON.stringify(p) + " is a prefix");
  assert.equal(await page.locator(".msg.user .body").last().innerText(), msg);
  assert.equal(await page.textContent("#title"), msg);
  assert.equal(await lastAssistant().locator(".badge.cached").count(), 0);
  await page.waitForFunction(() => !document.querySelector("#stop:not([hidden])"));
  assert.equal(await page.isVisible("#send"), true);
  assert.equal((await remembered()).length, 1);
  await shot("02-answer");
});

test("the same message again is answered from the cache, with a badge", async () => {
  await send("mock:tokens=14 mock:delay=120");
  await idle();
  await lastAssistant().locator(".badge.cached").waitFor();
  assert.equal(await lastAssistant().locator(".body").innerText(), tokens(14));
  assert.equal(await page.locator(".msg.assistant").count(), 2);
  assert.equal((await remembered()).length, 1, "still one conversation");
  await shot("03-cached");
});

test("Stop aborts the stream; the partial answer is shown as stopped and stored", async () => {
  await newChat();
  const msg = "mock:tokens=400 mock:delay=40";
  await send(msg);
  await waitFor(async () => /w6\b/.test(await lastAssistant().locator(".body").innerText()), t(10000), "a few tokens");
  assert.equal(await page.isVisible("#stop"), true);
  await page.click("#stop");
  await lastAssistant().locator(".badge.stopped").waitFor();
  await idle();
  const shown = (await lastAssistant().locator(".body").innerText()).trim();
  assert.ok(shown.startsWith("w1 w2 w3 w4 w5 w6"), shown);
  assert.ok(shown.length < tokens(400).length, "the answer was cut short");
  const id = await currentId(msg);
  const stored = await waitFor(async () => {
    const r = await api("GET", "/api/conversations/" + id);
    return r.status === 200 && r.json().history.length === 2 ? r.json().history : null;
  }, t(10000), "the partial answer to be stored");
  assert.equal(stored[0].content, msg);
  assert.ok(stored[1].content.startsWith(shown), "stored " + JSON.stringify(stored[1].content.slice(0, 80)));
  assert.ok(stored[1].content.length < tokens(400).length);
  await shot("04-stopped");
});

test("reasoning arrives in a collapsed thinking block", async () => {
  await newChat();
  await send("mock:reasoning=5 mock:tokens=3");
  await idle();
  const thinking = lastAssistant().locator("details.thinking");
  await thinking.waitFor();
  assert.equal(await thinking.getAttribute("open"), null, "collapsed");
  assert.equal(await thinking.locator(".thinking-text").isVisible(), false);
  await thinking.locator("summary").click();
  assert.equal(await thinking.locator(".thinking-text").innerText(), "r1 r2 r3 r4 r5");
  assert.equal(await lastAssistant().locator(".body").innerText(), "w1 w2 w3");
  await shot("05-reasoning");
});

test("answers are Markdown: bold, lists, tables, code blocks with a copy button; Chinese displays", async () => {
  await newChat();
  await send("你好，世界");
  await idle();
  const demo = lastAssistant().locator(".body");
  assert.equal(await demo.locator("strong").innerText(), "chatd demo model");
  assert.match(await demo.innerText(), /You said: "你好，世界"/);
  assert.equal(await page.locator(".msg.user .body").last().innerText(), "你好，世界");

  await newChat();
  const md = "mock:echo 用 Markdown 回答\n\n## 标题 Title\n\n- 第一项 first\n- second\n\n1. one\n2. two\n\n" +
    "| 名字 | value |\n|---|---:|\n| 苹果 | 3 |\n| pear | 5 |\n\n```c\nint main(void) { return 0; }\n```\n\nsee [docs](https://example.com)";
  await send(md);
  await idle();
  const body = lastAssistant().locator(".body");
  assert.equal(await body.locator("h2").innerText(), "标题 Title");
  assert.deepEqual(await body.locator("ul > li").allInnerTexts(), ["第一项 first", "second"]);
  assert.deepEqual(await body.locator("ol > li").allInnerTexts(), ["one", "two"]);
  assert.deepEqual(await body.locator("table th").allInnerTexts(), ["名字", "value"]);
  assert.deepEqual(await body.locator("table td").allInnerTexts(), ["苹果", "3", "pear", "5"]);
  assert.equal((await body.locator("pre code").innerText()).trimEnd(), "int main(void) { return 0; }");
  assert.equal(await body.locator("a").getAttribute("rel"), "noopener noreferrer");
  const copy = body.locator(".codeblock button.copy");
  await copy.click();
  await waitFor(async () => (await copy.innerText()) === "Copied", t(5000), "the copy button to confirm");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), "int main(void) { return 0; }");
  await shot("06-markdown");
});

test("HTML and script in answers, live or stored, render as text and never run", async () => {
  await newChat();
  const evil = "mock:echo xss test\n<script>window.__xss = 'script'</script>\n\n" +
    "<img src=x onerror=\"window.__xss = 'img'\">\n\n" +
    "inline <img src=y onerror=\"window.__xss = 'inline'\"> and <b onclick=\"window.__xss='b'\">b</b> " +
    "[click](javascript:window.__xss='link')";
  const check = async (texts) => {
    const body = lastAssistant().locator(".body");
    const text = await body.innerText();
    for (const want of texts) assert.ok(text.includes(want), JSON.stringify(want) + " shown as text in " + text);
    assert.equal(await page.locator("#messages script, #messages img, #messages [onerror], #messages [onclick]").count(), 0);
    const hrefs = await body.locator("a").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
    assert.ok(hrefs.every((h) => !h || !/^\s*javascript:/i.test(h)), JSON.stringify(hrefs));
    if (hrefs.length) await body.locator("a").first().click().catch(() => {});
    await page.waitForTimeout(200);
    assert.equal(await page.evaluate(() => window.__xss), undefined, "no script ran");
  };
  const shown = ["<script>window.__xss = 'script'</script>", "<img src=x onerror=\"window.__xss = 'img'\">",
    "<img src=y onerror=\"window.__xss = 'inline'\">", "<b onclick=\"window.__xss='b'\">b</b>"];
  await send(evil);
  await idle();
  await check(shown);
  assert.equal(await page.locator(".msg.user .body").last().innerText(), evil);
  const id = await currentId("mock:echo xss test…");
  const stored = (await api("GET", "/api/conversations/" + id)).json().history;
  assert.ok(stored[1].content.includes("<img src=x onerror="), "the answer is stored as the model wrote it");

  await page.reload();
  await page.click(`#conversations button[data-id="${id}"]`);
  await lastAssistant().waitFor();
  await check(shown);
  await shot("07-xss-as-text");

  /* written into the database by another tool, never through chatd */
  const seeded = "5eed0000-0000-4000-8000-00000000c0de";
  seed(chatd.dbPath, [{ id: seeded, minutesAgo: 1, messages: [["user", "stored <b>question</b>"],
    ["assistant", "<script>window.__xss = 'stored'</script>\n\n<img src=x onerror=\"window.__xss = 'stored-img'\">\n\n" +
      "<svg onload=\"window.__xss = 'svg'\"></svg> <iframe src=\"javascript:parent.__xss='iframe'\"></iframe>"]] }]);
  await page.evaluate((id) => {
    const list = JSON.parse(localStorage.getItem("chatd.conversations"));
    list.push({ id: id, title: "stored xss", last: Date.now() });
    localStorage.setItem("chatd.conversations", JSON.stringify(list));
  }, seeded);
  await page.reload();
  await page.click(`#conversations button[data-id="${seeded}"]`);
  await waitFor(async () => (await page.locator(".msg").count()) === 2, t(5000), "the stored history");
  await check(["<script>window.__xss = 'stored'</script>", "<img src=x onerror=\"window.__xss = 'stored-img'\">",
    "<svg onload=", "<iframe src="]);
  assert.equal(await page.locator("#messages svg, #messages iframe").count(), 0);
  assert.equal(await page.locator(".msg.user .body").innerText(), "stored <b>question</b>");
  await page.click("#delete");
  await page.click("#confirm-ok");
  await waitFor(async () => (await page.locator(`#conversations button[data-id="${seeded}"]`).count()) === 0, t(5000), "cleanup");
});

test("the sidebar survives a refresh, opens history and forgets expired ids", async () => {
  const before = await remembered();
  assert.ok(before.length >= 5, JSON.stringify(before));
  await page.evaluate(() => {
    const list = JSON.parse(localStorage.getItem("chatd.conversations"));
    list.push({ id: "00000000-0000-4000-8000-000000000000", title: "expired one", last: Date.now() - 5000 });
    localStorage.setItem("chatd.conversations", JSON.stringify(list));
  });
  await page.reload();
  await waitFor(async () => (await page.locator("#conversations .conv").count()) === before.length, t(5000),
    "the expired id to be dropped");
  assert.equal(await page.locator("#conversations .conv", { hasText: "expired one" }).count(), 0);
  const titles = await page.locator("#conversations .conv-title").allInnerTexts();
  assert.deepEqual(titles.sort(), before.map((c) => c.title).sort());
  const first = before.find((c) => c.title === "mock:tokens=14 mock:delay=120");
  assert.ok(first);
  await page.click(`#conversations button[data-id="${first.id}"]`);
  await waitFor(async () => (await page.locator(".msg").count()) === 4, t(5000), "the history");
  assert.deepEqual(await page.locator(".msg .body").allInnerTexts(),
    ["mock:tokens=14 mock:delay=120", tokens(14), "mock:tokens=14 mock:delay=120", tokens(14)]);
  assert.equal(await page.textContent("#title"), "mock:tokens=14 mock:delay=120");
  assert.equal(await page.getAttribute(`#conversations button[data-id="${first.id}"]`, "aria-current"), "true");
  assert.match(await page.locator(`#conversations button[data-id="${first.id}"] time`).innerText(), /ago|just now/);
  await shot("08-history-after-refresh");
});

test("CSV and JSON downloads of the conversation, and of all (with the admin token)", async () => {
  await newChat();
  const msg = "你好, world \"quoted\" mock:tokens=3";
  await send(msg);
  await idle();
  const id = await currentId(msg);

  const download = async (selector) => {
    const [d] = await Promise.all([page.waitForEvent("download", { timeout: t(10000) }), page.click(selector)]);
    const file = await d.path();
    return { name: d.suggestedFilename(), text: fs.readFileSync(file, "utf8") };
  };
  const csv = await download("#export-csv");
  assert.equal(csv.name, "conversation_" + id + ".csv");
  const rows = csv.text.split("\r\n");
  assert.equal(rows[0], "Timestamp,Role,Content");
  assert.match(rows[1], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6},user,"你好, world ""quoted"" mock:tokens=3"$/);
  assert.match(rows[2], /^\d{4}-\d\d-\d\dT[\d:.]+,assistant,w1 w2 w3$/);
  assert.deepEqual(rows.slice(3), [""]);

  const json = await download("#export-json");
  assert.equal(json.name, "conversation_" + id + ".jsonl");
  const lines = json.text.trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(Object.keys(lines[0]), ["conversation_id", "created_at", "last_active", "message_count"]);
  assert.equal(lines[0].conversation_id, id);
  assert.equal(lines[0].message_count, 2);
  assert.deepEqual(lines.slice(1).map((m) => [m.role, m.content]), [["user", msg], ["assistant", "w1 w2 w3"]]);
  assert.deepEqual(Object.keys(lines[1]), ["timestamp", "role", "content"]);

  /* export-all: the server wants the token; a wrong one is asked again */
  await page.click("#export-all-json");
  await page.locator("#token-dialog").waitFor();
  await shot("09-admin-token");
  await page.fill("#token-input", "wrong");
  await page.press("#token-input", "Enter");
  await waitFor(async () => /did not accept/.test(await page.textContent("#token-text")) &&
    (await page.locator("#token-dialog[open]").count()) === 1, t(5000), "the token to be asked again");
  await page.fill("#token-input", TOKEN);
  const [d] = await Promise.all([page.waitForEvent("download", { timeout: t(10000) }), page.press("#token-input", "Enter")]);
  assert.match(d.suggestedFilename(), /^conversations_\d{14}\.jsonl$/);
  const all = fs.readFileSync(await d.path(), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(Object.keys(all[0]), ["export_time", "total_conversations"]);
  assert.equal(all[0].total_conversations, all.length - 1);
  const mine = all.find((c) => c.id === id);
  assert.ok(mine, "this conversation is in export-all");
  assert.deepEqual(mine.messages.map((m) => m.content), [msg, "w1 w2 w3"]);

  /* the token is kept for the session: CSV needs no second prompt */
  const [d2] = await Promise.all([page.waitForEvent("download", { timeout: t(10000) }), page.click("#export-all-csv")]);
  const allCsv = fs.readFileSync(await d2.path(), "utf8").split("\r\n");
  assert.equal(allCsv[0], "conversation_id,created_at,last_active,timestamp,role,content");
  assert.ok(allCsv.some((r) => r.startsWith(id + ",") && r.endsWith(",assistant,w1 w2 w3")));
});

test("delete asks for confirmation, then removes the conversation", async () => {
  const list = await remembered();
  const victim = list.find((c) => c.title === "mock:reasoning=5 mock:tokens=3");
  assert.ok(victim);
  await page.click(`#conversations button[data-id="${victim.id}"]`);
  await waitFor(async () => (await page.locator(".msg").count()) === 2, t(5000), "the history");
  await page.click("#delete");
  await page.locator("#confirm-dialog[open]").waitFor();
  await shot("10-confirm-delete");
  await page.click("#confirm-dialog button.cancel");
  assert.equal(await page.locator("#confirm-dialog[open]").count(), 0);
  assert.equal((await api("GET", "/api/conversations/" + victim.id)).status, 200, "cancel keeps it");
  await page.click("#delete");
  await page.click("#confirm-ok");
  await waitFor(async () => (await page.locator(`#conversations button[data-id="${victim.id}"]`).count()) === 0,
    t(5000), "the entry to go");
  assert.equal((await api("GET", "/api/conversations/" + victim.id)).status, 404);
  assert.equal(await page.textContent("#title"), "New chat");
  assert.equal((await remembered()).length, list.length - 1);
});

test("errors: an upstream failure, an error event mid-stream, and Retry", async () => {
  await newChat();
  await send("mock:status=500");
  await idle();
  const err = lastAssistant().locator(".error");
  await err.waitFor();
  assert.match(await err.innerText(), /HTTP 502/);
  assert.match(await err.innerText(), /mock failure 500/);
  await shot("11-error");
  const before = (await fetch(mock.url.replace(/\/v1$/, "/stats")).then((r) => r.json())).requests;
  await lastAssistant().locator("button.retry").click();
  await idle();
  await lastAssistant().locator(".error").waitFor();
  const afterStats = (await fetch(mock.url.replace(/\/v1$/, "/stats")).then((r) => r.json())).requests;
  assert.equal(afterStats, before + 1, "Retry asked again");
  assert.equal(await page.locator(".msg.user").count(), 1, "the failed exchange is replaced, not repeated");
  assert.equal(await page.locator(".msg .error").count(), 1);

  await newChat();
  await send("mock:error-event mock:tokens=5");
  await idle();
  await lastAssistant().locator(".error").waitFor();
  assert.match(await lastAssistant().locator(".error").innerText(), /^The answer failed: .+/);
  assert.equal(await lastAssistant().locator(".body").innerText(), "w1", "the piece before the error stays");
  assert.equal(await lastAssistant().locator("button.retry").count(), 1);
});

test("phone width and keyboard only", async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 800 }, locale: "zh-CN", hasTouch: true });
  const p = await phone.newPage();
  p.setDefaultTimeout(t(10000));
  watch(p);
  await p.goto(chatd.base + "/");
  assert.equal(await p.isVisible("#sidebar"), false, "the list is a closed drawer");
  assert.equal(await p.evaluate(() => document.activeElement.id), "input", "the message box has focus");
  await p.keyboard.type("第一行 line one");
  await p.keyboard.press("Shift+Enter");
  await p.keyboard.type("第二行 mock:tokens=2");
  assert.equal(await p.inputValue("#input"), "第一行 line one\n第二行 mock:tokens=2");
  assert.equal(await p.locator(".msg").count(), 0, "Shift+Enter did not send");
  await p.keyboard.press("Enter");
  await p.waitForFunction(() => !document.body.classList.contains("busy") && document.querySelector(".msg.assistant"));
  assert.equal(await p.locator(".msg.user .body").innerText(), "第一行 line one\n第二行 mock:tokens=2");
  assert.equal(await p.locator(".msg.assistant .body").innerText(), "w1 w2");
  assert.ok(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), "no sideways scrolling");
  await p.screenshot({ path: path.join(OUT, "12-phone.png") });

  /* the drawer, by keyboard: Shift+Tab back from the box reaches the header's buttons */
  await p.focus("#open-sidebar");
  await p.keyboard.press("Enter");
  await p.waitForFunction(() => getComputedStyle(document.getElementById("sidebar")).visibility === "visible");
  assert.equal(await p.evaluate(() => document.activeElement.id), "new-chat");
  assert.equal(await p.locator("#conversations .conv").count(), 1);
  await p.waitForTimeout(250);
  await p.screenshot({ path: path.join(OUT, "13-phone-drawer.png") });
  await p.keyboard.press("Escape");
  await p.waitForFunction(() => !document.getElementById("sidebar").classList.contains("open"));
  await phone.close();
});

test("the README's screenshot: a conversation in Chinese and English with Markdown", async () => {
  const ids = ["5eed0000-0000-4000-8000-000000000001", "5eed0000-0000-4000-8000-000000000002",
    "5eed0000-0000-4000-8000-000000000003"];
  const answer = "**chatd** 是一个用 C 写的对话服务器：它把每段对话存进数据库，" +
    "逐字流式返回模型的回答，并缓存重复的问题。\n\n" +
    "It speaks the same JSON/SSE API as the Flask service it replaces:\n\n" +
    "- `POST /api/chat-stream` streams the answer token by token\n" +
    "- `GET /api/conversations/{id}` returns the history\n" +
    "- `GET /api/conversations/{id}/export?format=csv` downloads it\n\n" +
    "```sh\ncurl -N localhost:5010/api/chat-stream \\\n  -H 'Content-Type: application/json' \\\n  -d '{\"message\": \"你好\"}'\n```\n\n" +
    "| 后端 Backend | 适用 Use |\n|---|---|\n| SQLite | 单机 one machine |\n| PostgreSQL | 多实例 many instances |";
  seed(chatd.dbPath, [
    { id: ids[0], minutesAgo: 2, messages: [["user", "用一句话介绍 chatd，再给一个 curl 例子"], ["assistant", answer]] },
    { id: ids[1], minutesAgo: 45, messages: [["user", "Explain Server-Sent Events in two lines"], ["assistant", "One HTTP response that never ends."]] },
    { id: ids[2], minutesAgo: 190, messages: [["user", "写一首关于秋天的短诗"], ["assistant", "秋风起，落叶黄。"]] }]);
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "zh-CN" });
  const p = await ctx.newPage();
  p.setDefaultTimeout(t(10000));
  watch(p);
  await p.goto(chatd.base + "/");
  await p.evaluate((list) => localStorage.setItem("chatd.conversations", JSON.stringify(list)), [
    { id: ids[0], title: "用一句话介绍 chatd，再给一个 curl 例子", last: Date.now() - 120000 },
    { id: ids[1], title: "Explain Server-Sent Events in two lines", last: Date.now() - 45 * 60000 },
    { id: ids[2], title: "写一首关于秋天的短诗", last: Date.now() - 190 * 60000 }]);
  await p.reload();
  await p.click(`#conversations button[data-id="${ids[0]}"]`);
  await p.locator(".msg.assistant table").waitFor();
  await p.fill("#input", "谢谢！Can it run several instances?");
  await p.waitForSelector("#status.ok");
  await p.evaluate(() => { document.getElementById("messages").scrollTop = 0; });
  await p.screenshot({ path: path.join(OUT, "screenshot.png") });
  assert.equal(await p.locator(".msg.assistant strong").first().innerText(), "chatd");
  assert.equal(await p.locator(".msg.assistant pre code").count(), 1);
  await ctx.close();
});

test("no script errors and no CSP violations in the page", async () => {
  assert.deepEqual(pageErrors, []);
});
