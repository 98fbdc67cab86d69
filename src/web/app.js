/*
 * app.js - chatd's web page.
 *
 * Talks only to the public API of SPEC.md: POST /api/chat-stream (read with
 * fetch and a streaming body, so that Stop can abort it: the server then
 * stores the partial answer), GET/HEAD/DELETE /api/conversations/{id}, the
 * two exports and /health. The server lists no conversations (an id is the
 * only key to one), so this page remembers the ids it created in
 * localStorage, with a title (the first question) and the time of last
 * activity, and forgets those that answer 404 (expired or deleted).
 *
 * Answers are Markdown, rendered by marked with raw HTML turned into text
 * (a chat shows what the model wrote, it does not run it) and the result
 * sanitised by DOMPurify before it touches the DOM; user messages and
 * reasoning are only ever set as textContent. The page's CSP allows no
 * inline script either.
 */
(function () {
  "use strict";

  var STORE_KEY = "chatd.conversations";
  var TOKEN_KEY = "chatd.adminToken";
  var MAX_REMEMBERED = 200;
  var HEALTH_EVERY_MS = 15000;

  function $(id) { return document.getElementById(id); }

  var el = {
    sidebar: $("sidebar"), backdrop: $("backdrop"), list: $("conversations"),
    noConvs: $("no-conversations"), newChat: $("new-chat"),
    openSidebar: $("open-sidebar"), closeSidebar: $("close-sidebar"),
    title: $("title"), messages: $("messages"), empty: $("empty"),
    notice: $("notice"), noticeText: $("notice-text"), noticeClose: $("notice-close"),
    form: $("composer"), input: $("input"), send: $("send"), stop: $("stop"),
    exportJson: $("export-json"), exportCsv: $("export-csv"), del: $("delete"),
    exportAllJson: $("export-all-json"), exportAllCsv: $("export-all-csv"),
    status: $("status"), statusText: $("status-text"),
    confirmDialog: $("confirm-dialog"), confirmText: $("confirm-text"),
    tokenDialog: $("token-dialog"), tokenText: $("token-text"), tokenInput: $("token-input")
  };

  var state = {
    id: null,          /* the current conversation's id, null for a new chat */
    streaming: null,   /* {controller, turn} while an answer streams */
    loadSeq: 0         /* guards against a slow history load landing late */
  };

  /* ---------------------------------------------------------------- storage */

  function loadConvs() {
    try {
      var v = JSON.parse(localStorage.getItem(STORE_KEY) || "[]");
      return Array.isArray(v) ? v.filter(function (c) {
        return c && typeof c.id === "string" && /^[0-9a-f-]{36}$/.test(c.id);
      }) : [];
    } catch (e) {
      return [];
    }
  }

  function saveConvs(list) {
    list.sort(function (a, b) { return (b.last || 0) - (a.last || 0); });
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(list.slice(0, MAX_REMEMBERED)));
    } catch (e) { /* storage full or disabled: the page still works */ }
  }

  function findConv(id) {
    return loadConvs().filter(function (c) { return c.id === id; })[0] || null;
  }

  function rememberConv(id, title, last) {
    var list = loadConvs();
    var c = list.filter(function (x) { return x.id === id; })[0];
    if (!c) {
      c = { id: id, title: title || "Conversation", last: last || Date.now() };
      list.push(c);
    } else {
      if (!c.title && title) c.title = title;
      if (last) c.last = last;
    }
    saveConvs(list);
    renderSidebar();
  }

  function dropConv(id) {
    saveConvs(loadConvs().filter(function (c) { return c.id !== id; }));
  }

  function forgetConv(id) {
    dropConv(id);
    renderSidebar();
  }

  /* Forgets id; if it is the open conversation, a new chat takes its place
   * (which renders the sidebar too). */
  function leaveConv(id) {
    dropConv(id);
    if (state.id === id) newChat();
    else renderSidebar();
  }

  function titleOf(text) {
    var t = text.replace(/\s+/g, " ").trim();
    return t.length > 60 ? t.slice(0, 59) + "…" : t;
  }

  /* SPEC timestamps are UTC without a zone: 2025-02-10T09:30:00.123456 */
  function parseTs(s) {
    var t = Date.parse(String(s).slice(0, 23) + "Z");
    return isNaN(t) ? null : t;
  }

  function ago(t) {
    var s = Math.round((Date.now() - t) / 1000);
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return new Date(t).toLocaleDateString();
  }

  /* ---------------------------------------------------------------- sidebar */

  function renderSidebar() {
    var list = loadConvs();
    el.list.textContent = "";
    list.forEach(function (c) {
      var li = document.createElement("li");
      var b = document.createElement("button");
      b.type = "button";
      b.className = "conv" + (c.id === state.id ? " current" : "");
      b.dataset.id = c.id;
      if (c.id === state.id) b.setAttribute("aria-current", "true");
      var t = document.createElement("span");
      t.className = "conv-title";
      t.textContent = c.title || "Conversation";
      var time = document.createElement("time");
      time.className = "conv-time";
      time.dateTime = new Date(c.last || 0).toISOString();
      time.title = new Date(c.last || 0).toLocaleString();
      time.textContent = ago(c.last || 0);
      b.append(t, time);
      b.addEventListener("click", function () { openConversation(c.id); });
      li.append(b);
      el.list.append(li);
    });
    el.noConvs.hidden = list.length > 0;
  }

  /* Forgets the remembered ids that the server no longer knows (HEAD, no body). */
  function pruneExpired() {
    loadConvs().forEach(function (c) {
      fetch("/api/conversations/" + encodeURIComponent(c.id), { method: "HEAD" })
        .then(function (r) {
          if (r.status === 404) {
            if (state.id === c.id) expired(c.id);
            else forgetConv(c.id);
          }
        })
        .catch(function () { /* offline: keep it */ });
    });
  }

  function setSidebar(open) {
    el.sidebar.classList.toggle("open", open);
    el.backdrop.hidden = !open;
    el.openSidebar.setAttribute("aria-expanded", String(open));
    if (open) el.newChat.focus();
  }

  /* ---------------------------------------------------------------- notices */

  function notice(text) {
    el.noticeText.textContent = text;
    el.notice.hidden = false;
  }

  function clearNotice() {
    el.notice.hidden = true;
    el.noticeText.textContent = "";
  }

  /* ---------------------------------------------------------------- markdown */

  var md = null;

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (ch) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch];
    });
  }

  function setupMarkdown() {
    if (!window.marked || !window.DOMPurify) return;
    md = new window.marked.Marked({
      gfm: true,
      breaks: true,
      renderer: {
        /* raw HTML in an answer is shown as the text it is */
        html: function (token) { return escapeHtml(token.text); }
      }
    });
    window.DOMPurify.addHook("afterSanitizeAttributes", function (node) {
      if (node.tagName === "A" && node.getAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
  }

  function renderMarkdown(target, text) {
    if (!md) {
      target.textContent = text;
      target.classList.add("plain");
      return;
    }
    target.innerHTML = window.DOMPurify.sanitize(md.parse(text), {
      USE_PROFILES: { html: true },
      FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
      FORBID_ATTR: ["style"]
    });
    target.querySelectorAll("pre").forEach(addCopyButton);
  }

  function addCopyButton(pre) {
    var wrap = document.createElement("div");
    wrap.className = "codeblock";
    pre.parentNode.insertBefore(wrap, pre);
    wrap.append(pre);
    var b = document.createElement("button");
    b.type = "button";
    b.className = "copy";
    b.textContent = "Copy";
    b.setAttribute("aria-label", "Copy the code");
    b.addEventListener("click", function () {
      var text = pre.textContent.replace(/\n$/, "");
      var done = function () {
        b.textContent = "Copied";
        setTimeout(function () { b.textContent = "Copy"; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { b.textContent = "Copy failed"; });
      } else {
        var ta = document.createElement("textarea");
        ta.value = text;
        document.body.append(ta);
        ta.select();
        try { document.execCommand("copy"); done(); } catch (e) { b.textContent = "Copy failed"; }
        ta.remove();
      }
    });
    wrap.append(b);
  }

  /* ---------------------------------------------------------------- messages */

  function clearMessages() {
    el.messages.textContent = "";
    el.messages.append(el.empty);
    el.empty.hidden = false;
  }

  function scrollDown(force) {
    var m = el.messages;
    if (force || m.scrollHeight - m.scrollTop - m.clientHeight < 120) m.scrollTop = m.scrollHeight;
  }

  function addUser(text, ts) {
    el.empty.hidden = true;
    var div = document.createElement("div");
    div.className = "msg user";
    var body = document.createElement("div");
    body.className = "body";
    body.textContent = text;
    if (ts) div.title = new Date(ts).toLocaleString();
    div.append(body);
    el.messages.append(div);
    scrollDown(true);
    return div;
  }

  /* An assistant turn: {div, body, meta, thinking, text, reasoning}. */
  function addAssistant(ts) {
    el.empty.hidden = true;
    var div = document.createElement("div");
    div.className = "msg assistant";
    if (ts) div.title = new Date(ts).toLocaleString();
    var body = document.createElement("div");
    body.className = "body markdown";
    var meta = document.createElement("div");
    meta.className = "meta";
    div.append(body, meta);
    el.messages.append(div);
    return { div: div, body: body, meta: meta, thinking: null, text: "", reasoning: "", pending: false };
  }

  function badge(turn, cls, text) {
    var b = document.createElement("span");
    b.className = "badge " + cls;
    b.textContent = text;
    turn.meta.append(b);
    return b;
  }

  function render(turn) {
    if (turn.pending) return;
    turn.pending = true;
    requestAnimationFrame(function () {
      turn.pending = false;
      renderMarkdown(turn.body, turn.text);
      if (turn.thinking) turn.thinking.text.textContent = turn.reasoning;
      scrollDown(false);
    });
  }

  function addReasoning(turn, piece) {
    if (!turn.thinking) {
      var d = document.createElement("details");
      d.className = "thinking";
      var s = document.createElement("summary");
      s.textContent = "Thinking…";
      var t = document.createElement("div");
      t.className = "thinking-text";
      d.append(s, t);
      turn.div.insertBefore(d, turn.body);
      turn.thinking = { details: d, summary: s, text: t };
    }
    turn.reasoning += piece;
    render(turn);
  }

  function showError(turn, text, retryMessage) {
    turn.div.classList.add("failed");
    var e = document.createElement("div");
    e.className = "error";
    e.setAttribute("role", "alert");
    e.textContent = text;
    turn.div.append(e);
    if (retryMessage != null) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "retry";
      b.textContent = "Retry";
      b.addEventListener("click", function () {
        if (state.streaming) return;
        /* nothing of a failed exchange was stored: ask again from scratch */
        var prev = turn.div.previousElementSibling;
        if (prev && prev.classList.contains("user")) prev.remove();
        turn.div.remove();
        send(retryMessage);
      });
      turn.div.append(b);
      b.focus();
    }
    scrollDown(true);
  }

  /* ---------------------------------------------------------------- chat */

  function describeStatus(status, message) {
    var what = {
      400: "The request was refused",
      401: "Not authorised",
      404: "Not found",
      413: "The message is too large",
      414: "The message is too large",
      429: "Too many requests, try again shortly",
      500: "The server failed",
      502: "The model failed",
      503: "The database is unavailable",
      504: "The model did not answer in time"
    }[status] || "The server answered " + status;
    return what + " (HTTP " + status + ")" + (message ? ": " + message : "");
  }

  function unreachable(err) {
    return "Cannot reach chatd: " + (err && err.message ? err.message : err);
  }

  function errorMessageOf(res) {
    return res.text().then(function (t) {
      try {
        var o = JSON.parse(t);
        return o && typeof o.message === "string" ? o.message : t;
      } catch (e) {
        return t.slice(0, 300);
      }
    }, function () { return ""; });
  }

  function setStreaming(s) {
    state.streaming = s;
    el.send.hidden = !!s;
    el.stop.hidden = !s;
    document.body.classList.toggle("busy", !!s);
    updateActions();
  }

  function send(text) {
    if (state.streaming || !text.trim()) return;
    clearNotice();
    var sentId = state.id;
    addUser(text, Date.now());
    var turn = addAssistant(Date.now());
    turn.div.classList.add("streaming");
    var controller = new AbortController();
    setStreaming({ controller: controller, turn: turn });
    var body = { message: text };
    if (sentId) body.conversation_id = sentId;
    var outcome = null; /* "done", "error", "stopped" */
    var convId = sentId; /* this exchange's conversation, whatever is shown by the end */

    function adopt(id) {
      if (!id || id === convId) return;
      if (sentId && id !== sentId) {
        /* the server starts a new conversation for an expired id */
        forgetConv(sentId);
        notice("That conversation had expired; this message started a new one.");
      }
      convId = id;
      if (state.streaming && state.streaming.turn === turn) {
        state.id = id;
        el.title.textContent = titleOf(text);
      }
      rememberConv(id, titleOf(text), Date.now()); /* renders the sidebar, marking state.id */
    }

    fetch("/api/chat-stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
      body: JSON.stringify(body),
      signal: controller.signal
    }).then(function (res) {
      if (!res.ok) {
        return errorMessageOf(res).then(function (m) {
          outcome = "error";
          showError(turn, describeStatus(res.status, m), text);
        });
      }
      adopt(res.headers.get("X-Conversation-Id"));
      return readEvents(res.body, function (name, data) {
        var obj;
        try { obj = JSON.parse(data); } catch (e) { return; }
        if (name === "" && typeof obj.content === "string") {
          turn.text += obj.content;
          render(turn);
        } else if (name === "" && typeof obj.reasoning === "string") {
          addReasoning(turn, obj.reasoning);
        } else if (name === "done") {
          outcome = "done";
          adopt(obj.conversation_id);
          if (obj.cached) badge(turn, "cached", "cached");
        } else if (name === "error") {
          outcome = "error";
          showError(turn, "The answer failed: " + (obj.message || "unknown error"), text);
        }
      }).then(function () {
        if (!outcome) {
          outcome = "error";
          showError(turn, "The connection to chatd ended before the answer was complete.", text);
        }
      });
    }).catch(function (err) {
      if (err && err.name === "AbortError") {
        outcome = "stopped";
        badge(turn, "stopped", "stopped");
        turn.div.classList.add("stopped");
      } else if (outcome !== "error") {
        outcome = "error";
        showError(turn, unreachable(err), text);
      }
    }).then(function () {
      turn.div.classList.remove("streaming");
      renderMarkdown(turn.body, turn.text);
      if (turn.thinking) {
        turn.thinking.text.textContent = turn.reasoning;
        turn.thinking.summary.textContent = "Thinking";
      }
      if (outcome === "error" && !turn.text) turn.body.hidden = true;
      if (convId && outcome !== "error") rememberConv(convId, null, Date.now());
      if (state.streaming && state.streaming.turn === turn) setStreaming(null);
      scrollDown(false);
      checkHealth();
    });
  }

  /* Reads a text/event-stream body and calls onEvent(name, data) per event
   * (comments such as ": ping" are skipped). Resolves at the end. */
  function readEvents(stream, onEvent) {
    var reader = stream.getReader();
    var decoder = new TextDecoder("utf-8");
    var buf = "";
    function block(text) {
      var name = "", data = [];
      text.split("\n").forEach(function (line) {
        if (line === "" || line[0] === ":") return;
        var i = line.indexOf(":");
        var field = i < 0 ? line : line.slice(0, i);
        var value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") name = value;
        else if (field === "data") data.push(value);
      });
      if (data.length) onEvent(name, data.join("\n"));
    }
    function pump() {
      return reader.read().then(function (r) {
        if (r.done) {
          buf += decoder.decode();
          if (buf.trim()) block(buf);
          return;
        }
        buf += decoder.decode(r.value, { stream: true }).replace(/\r\n?/g, "\n");
        var i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          block(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
        return pump();
      });
    }
    return pump();
  }

  /* ---------------------------------------------------------------- conversations */

  function updateActions() {
    var has = !!state.id;
    el.exportJson.disabled = !has;
    el.exportCsv.disabled = !has;
    el.del.disabled = !has || !!state.streaming;
  }

  function newChat() {
    if (state.streaming) state.streaming.controller.abort();
    state.id = null;
    state.loadSeq++;
    el.title.textContent = "New chat";
    clearMessages();
    clearNotice();
    renderSidebar();
    updateActions();
    setSidebar(false);
    el.input.focus();
  }

  function expired(id) {
    leaveConv(id);
    notice("That conversation has expired or was deleted, so it was removed from the list.");
  }

  function openConversation(id) {
    if (state.streaming) state.streaming.controller.abort();
    var seq = ++state.loadSeq;
    clearNotice();
    setSidebar(false);
    fetch("/api/conversations/" + encodeURIComponent(id)).then(function (res) {
      if (seq !== state.loadSeq) return;
      if (res.status === 404) {
        expired(id);
        return;
      }
      if (!res.ok) {
        return errorMessageOf(res).then(function (m) { notice(describeStatus(res.status, m)); });
      }
      return res.json().then(function (obj) {
        if (seq !== state.loadSeq) return;
        state.id = id;
        var c = findConv(id);
        el.title.textContent = (c && c.title) || "Conversation";
        clearMessages();
        (obj.history || []).forEach(function (m) {
          var ts = parseTs(m.timestamp);
          if (m.role === "user") {
            addUser(String(m.content), ts);
          } else {
            var turn = addAssistant(ts);
            turn.text = String(m.content);
            renderMarkdown(turn.body, turn.text);
          }
        });
        var first = (obj.history || []).filter(function (m) { return m.role === "user"; })[0];
        var last = parseTs(obj.last_active);
        rememberConv(id, first ? titleOf(String(first.content)) : null, last);
        if (c && !c.title && first) el.title.textContent = titleOf(String(first.content));
        updateActions();
        scrollDown(true);
        el.input.focus();
      });
    }).catch(function (err) {
      notice(unreachable(err));
    });
  }

  /* Shows a <dialog> modally; resolves with whether it closed with "ok". */
  function modal(dialog) {
    return new Promise(function (resolve) {
      dialog.returnValue = "";
      dialog.addEventListener("close", function onClose() {
        dialog.removeEventListener("close", onClose);
        resolve(dialog.returnValue === "ok");
      });
      dialog.showModal();
    });
  }

  function confirmDialog(text) {
    el.confirmText.textContent = text;
    return modal(el.confirmDialog);
  }

  function deleteCurrent() {
    var id = state.id;
    if (!id || state.streaming) return;
    var c = findConv(id);
    confirmDialog("“" + ((c && c.title) || "This conversation") + "” and its messages are deleted on the server. This cannot be undone.")
      .then(function (ok) {
        if (!ok) return;
        return fetch("/api/conversations/" + encodeURIComponent(id), { method: "DELETE" }).then(function (res) {
          if (res.ok || res.status === 404) {
            leaveConv(id);
            notice(res.ok ? "The conversation was deleted." : "The conversation was already gone.");
          } else {
            return errorMessageOf(res).then(function (m) { notice(describeStatus(res.status, m)); });
          }
        });
      }).catch(function (err) {
        notice(unreachable(err));
      });
  }

  /* ---------------------------------------------------------------- exports */

  /* The browser's own download of url (a server path: streamed to disk, the
   * page never holds it; or a blob: URL) under name ("": the server's). */
  function nativeDownload(url, name) {
    var a = document.createElement("a");
    a.href = url;
    a.download = name || "";
    a.rel = "noopener";
    document.body.append(a);
    a.click();
    a.remove();
  }

  function exportCurrent(format) {
    var id = state.id;
    if (!id) return;
    /* a cheap check first, so that an expired id is explained, not a failed download */
    fetch("/api/conversations/" + encodeURIComponent(id), { method: "HEAD" }).then(function (res) {
      if (res.status === 404) {
        expired(id);
      } else {
        nativeDownload("/api/conversations/" + encodeURIComponent(id) + "/export?format=" + format);
      }
    }).catch(function (err) {
      notice(unreachable(err));
    });
  }

  /* Resolves with the token typed, or null when cancelled or left empty. */
  function askToken(text) {
    el.tokenText.textContent = text;
    el.tokenInput.value = "";
    var closed = modal(el.tokenDialog);
    el.tokenInput.focus();
    return closed.then(function (ok) {
      var v = el.tokenInput.value.trim();
      return ok && v ? v : null;
    });
  }

  function filenameOf(res, fallback) {
    var cd = res.headers.get("Content-Disposition") || "";
    var m = /filename="?([^";]+)"?/i.exec(cd);
    return m ? m[1] : fallback;
  }

  /* With a token the download needs a header, which a link cannot send:
   * fetch it, reading the body as it comes (the page stays responsive and
   * shows progress), then hand the file to the browser's download. */
  function tokenDownload(url, token, format) {
    notice("Exporting all conversations…");
    return fetch(url, { headers: { Authorization: "Bearer " + token } }).then(function (res) {
      if (res.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        return exportAll(format, "The server did not accept that token. Enter the admin token (CHATD_ADMIN_TOKEN).");
      }
      if (!res.ok) {
        return errorMessageOf(res).then(function (m) { notice(describeStatus(res.status, m)); });
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      var reader = res.body.getReader();
      var parts = [], bytes = 0;
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) return;
          parts.push(r.value);
          bytes += r.value.length;
          notice("Exporting all conversations… " + (bytes / 1048576).toFixed(1) + " MB");
          return pump();
        });
      }
      return pump().then(function () {
        var blob = new Blob(parts, { type: res.headers.get("Content-Type") || "application/octet-stream" });
        var href = URL.createObjectURL(blob);
        nativeDownload(href, filenameOf(res, "conversations." + (format === "csv" ? "csv" : "jsonl")));
        setTimeout(function () { URL.revokeObjectURL(href); }, 60000);
        clearNotice();
      });
    });
  }

  function exportAll(format, prompt) {
    var url = "/api/conversations/export-all?format=" + format;
    var token = sessionStorage.getItem(TOKEN_KEY);
    var p;
    if (prompt) {
      p = askToken(prompt).then(function (t) { return t ? tokenDownload(url, t, format) : null; });
    } else if (token) {
      p = tokenDownload(url, token, format);
    } else {
      /* Is a token needed? The server checks it before the parameters, so
       * a bad format answers 401 (token needed) or 400 (not needed) without
       * starting an export. */
      p = fetch("/api/conversations/export-all?format=-").then(function (res) {
        if (res.status === 401) {
          return exportAll(format, "Exporting every conversation needs the server's admin token (CHATD_ADMIN_TOKEN).");
        }
        nativeDownload(url);
      });
    }
    return p.catch(function (err) {
      notice("The export failed: " + (err && err.message ? err.message : err));
    });
  }

  /* ---------------------------------------------------------------- status */

  function checkHealth() {
    fetch("/health", { cache: "no-store" }).then(function (res) {
      return res.json().then(function (obj) {
        var sys = obj.system || {};
        var num = function (s) { var m = /(\d+)/.exec(String(s || "")); return m ? m[1] : "?"; };
        var dbOk = res.ok;
        el.status.className = dbOk ? "ok" : "bad";
        el.statusText.textContent = (dbOk ? "database ok" : "database down") +
          " · cache " + num(sys.cache) + " · sessions " + num(sys.active_sessions);
        el.status.title = [obj.status, sys.database, sys.cache, sys.active_sessions, obj.timestamp]
          .filter(Boolean).join("\n");
      });
    }).catch(function () {
      el.status.className = "bad";
      el.statusText.textContent = "chatd unreachable";
      el.status.title = "GET /health failed";
    });
  }

  /* ---------------------------------------------------------------- input */

  function autosize() {
    el.input.style.height = "auto";
    el.input.style.height = Math.min(el.input.scrollHeight, 240) + "px";
  }

  function submit() {
    var text = el.input.value;
    if (!text.trim() || state.streaming) return;
    el.input.value = "";
    autosize();
    send(text);
  }

  el.form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });
  el.input.addEventListener("keydown", function (e) {
    /* an IME composing Chinese uses Enter to pick characters: not a send */
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    } else if (e.key === "Escape" && state.streaming) {
      e.preventDefault();
      state.streaming.controller.abort();
    }
  });
  el.input.addEventListener("input", autosize);
  el.stop.addEventListener("click", function () {
    if (state.streaming) state.streaming.controller.abort();
    el.input.focus();
  });
  el.newChat.addEventListener("click", newChat);
  el.del.addEventListener("click", deleteCurrent);
  el.exportJson.addEventListener("click", function () { exportCurrent("json"); });
  el.exportCsv.addEventListener("click", function () { exportCurrent("csv"); });
  el.exportAllJson.addEventListener("click", function () { exportAll("json"); });
  el.exportAllCsv.addEventListener("click", function () { exportAll("csv"); });
  el.noticeClose.addEventListener("click", clearNotice);
  el.openSidebar.addEventListener("click", function () { setSidebar(true); });
  el.closeSidebar.addEventListener("click", function () { setSidebar(false); el.openSidebar.focus(); });
  el.backdrop.addEventListener("click", function () { setSidebar(false); });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && el.sidebar.classList.contains("open")) setSidebar(false);
  });
  [el.confirmDialog, el.tokenDialog].forEach(function (d) {
    d.querySelector("form").addEventListener("submit", function (e) {
      e.preventDefault();
      d.close("ok");
    });
    d.querySelector(".cancel").addEventListener("click", function () { d.close("cancel"); });
  });

  setupMarkdown();
  renderSidebar();
  updateActions();
  pruneExpired();
  checkHealth();
  setInterval(checkHealth, HEALTH_EVERY_MS);
  setInterval(renderSidebar, 60000);
  el.input.focus();
})();
