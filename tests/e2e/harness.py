"""harness.py - shared helpers for chatd's end-to-end tests.

Starts the real binaries on 127.0.0.1: mock-llm (the upstream, see
tools/MOCK.md) and chatd pointed at it with a fresh SQLite database in a
temporary directory. Provides plain HTTP helpers over http.client, a raw
socket connection for the cases http.client cannot express (huge
Content-Length without a body, Expect: 100-continue, garbage requests,
disconnecting mid-stream), a small incremental SSE reader with strict
checks of the wire format of SPEC section 2, and read-only access to the
SQLite file.

Python 3 standard library only. Binaries come from CHATD_BIN and
MOCK_LLM_BIN (set by CTest); CHATD_SANITIZE=1/ON/TRUE multiplies every
timeout by 3. Timeouts are liveness limits with wide margins, never speed
assertions.
"""

import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

CHATD_BIN = os.environ.get("CHATD_BIN") or "/work/main/build/chatd"
MOCK_BIN = os.environ.get("MOCK_LLM_BIN") or "/work/main/build/mock-llm"
SANITIZE = os.environ.get("CHATD_SANITIZE", "").strip().upper() in ("1", "ON", "TRUE", "YES", "Y")
SCALE = 3 if SANITIZE else 1


def t(seconds):
    """A timeout, scaled for sanitizer builds."""
    return seconds * SCALE


UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
HEALTH_TS_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
HEALTH_CACHE_RE = re.compile(r"^缓存 (\d+) 条记录$")
HEALTH_SESSIONS_RE = re.compile(r"^当前活动会话数量 (\d+) 条记录$")
JSON_CT = "application/json; charset=utf-8"


def demo_answer(msg):
    """The mock's answer to a user message without directives."""
    return ('Hello! I am the **chatd demo model**, running offline. You said: "%s". '
            'Set CHATD_LLM_URL and CHATD_LLM_KEY to talk to a real model.' % msg)


def tokens_answer(n):
    """The mock's answer for mock:tokens=N: 'w1 w2 ... wN'."""
    return " ".join("w%d" % i for i in range(1, n + 1))


def canonical(obj):
    """JSON text as the original service printed it: ', ' and ': ', UTF-8 unescaped."""
    return json.dumps(obj, ensure_ascii=False)


def loads(text):
    """Parses JSON keeping key order (dicts keep insertion order)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text)


# --------------------------------------------------------------------------
# processes


def _read_line(fd, timeout):
    """Reads one line from a raw fd within timeout; returns bytes (may be partial at EOF)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_") and k != "PORT"}
    if extra:
        env.update(extra)
    return env


class Mock:
    """A running mock-llm."""

    def __init__(self, *extra, delay_ms=5):
        self.tmp = tempfile.mkdtemp(prefix="e2e-mock-")
        self.stderr_path = os.path.join(self.tmp, "stderr")
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [MOCK_BIN, "--host", "127.0.0.1", "--port", "0", "--quiet",
                 "--delay-ms", str(delay_ms)] + list(extra),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        line = _read_line(self.proc.stdout.fileno(), t(15))
        m = re.search(rb"mock-llm: listening on [^ \s]*:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError("mock-llm did not start: stdout %r stderr %r"
                               % (line, open(self.stderr_path, "rb").read()[-2000:]))
        self.port = int(m.group(1))
        self.url = "http://127.0.0.1:%d/v1" % self.port
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            while self.proc.stdout.read(4096):
                pass
        except (OSError, ValueError):
            pass

    def _get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=t(10))
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, (path, resp.status, body)
            return json.loads(body)
        finally:
            conn.close()

    def stats(self):
        return self._get("/stats")

    def last_request(self):
        return self._get("/last-request")

    def direct(self, message, stream=False):
        """Asks the mock directly (bypassing chatd); returns (content, reasoning)."""
        body = json.dumps({"model": "direct", "stream": stream,
                           "messages": [{"role": "user", "content": message}]}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=t(30))
        try:
            conn.request("POST", "/v1/chat/completions", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        assert resp.status == 200, (resp.status, raw)
        if not stream:
            msg = json.loads(raw)["choices"][0]["message"]
            return msg.get("content") or "", msg.get("reasoning_content") or ""
        content, reasoning = "", ""
        for line in raw.decode("utf-8").replace("\r\n", "\n").split("\n"):
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            delta = json.loads(data)["choices"][0].get("delta", {})
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
        return content, reasoning

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(t(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdout.close()
        except OSError:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


LISTEN_RE = re.compile(rb"listening on [^ ]*:(\d+)")


class Chatd:
    """A running chatd with its own temporary directory and SQLite file.

    Pass tmp= (and the same db_path) to restart on an existing database;
    preexec_fn= runs in the child before exec (resource limits).
    """

    def __init__(self, llm_url, args=(), tmp=None, env=None, db=None, wait=True, preexec_fn=None):
        self.own_tmp = tmp is None
        self.tmp = tmp or tempfile.mkdtemp(prefix="e2e-chatd-")
        self.db_path = os.path.join(self.tmp, "chatd.db")
        n = 0
        while os.path.exists(os.path.join(self.tmp, "stderr.%d" % n)):
            n += 1
        self.stderr_path = os.path.join(self.tmp, "stderr.%d" % n)
        self.stdout_path = os.path.join(self.tmp, "stdout.%d" % n)
        cmd = [CHATD_BIN, "--host", "127.0.0.1", "--port", "0",
               "--db", db or ("sqlite:" + self.db_path),
               "--llm-url", llm_url,
               "--export-dir", os.path.join(self.tmp, "exports")] + list(args)
        self.cmd = cmd
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=clean_env(env), cwd=self.tmp, preexec_fn=preexec_fn)
        self.port = None
        if wait:
            self.wait_listening()

    def wait_listening(self):
        deadline = time.monotonic() + t(15)
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.stderr_bytes())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        rc = self.proc.poll()
        if rc is None:
            self.proc.kill()
            self.proc.wait()
        raise RuntimeError("chatd did not start (exit %r): %s\nstderr:\n%s"
                           % (rc, " ".join(self.cmd), self.stderr_text()[-4000:]))

    def stderr_bytes(self):
        with open(self.stderr_path, "rb") as f:
            return f.read()

    def stderr_text(self):
        return self.stderr_bytes().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Signals chatd and waits; returns its exit status (kills it on timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout or t(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "killed: did not exit within %ss of %s" % (timeout or t(15), sig.name)
        return self.proc.returncode

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def run_chatd_to_exit(args, env=None, timeout=None):
    """Runs chatd with args (no defaults added) until it exits; returns (rc, stdout, stderr)."""
    tmp = tempfile.mkdtemp(prefix="e2e-cfg-")
    try:
        p = subprocess.run([CHATD_BIN] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=clean_env(env), cwd=tmp, timeout=timeout or t(15))
        return p.returncode, p.stdout, p.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# HTTP


class Headers:
    """header() over self.headers, a list of (name, value)."""

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default


class Response(Headers):
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value)
        self.body = body

    def json(self):
        return loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8")

    def raw_bytes(self):
        """Everything the client saw (status line, headers, body) for leak checks."""
        head = "%d %s\r\n" % (self.status, self.reason)
        head += "".join("%s: %s\r\n" % kv for kv in self.headers)
        return head.encode("utf-8", "replace") + self.body

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


def encode_body(body):
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def request(port, method, path, body=None, headers=None, timeout=None):
    data = encode_body(body)
    hdrs = {}
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout or t(30))
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        body = resp.read()
        return Response(resp.status, resp.reason, resp.getheaders(), body)
    finally:
        conn.close()


def quote_path(s):
    return urllib.parse.quote(s, safe="")


class RawHead(Headers):
    def __init__(self, status, reason, headers, version):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.version = version


class RawConn:
    """A plain TCP connection speaking HTTP/1.1 by hand."""

    def __init__(self, port, timeout=None, rcvbuf=None):
        if rcvbuf is None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout or t(30))
        else:
            # a small receive buffer set before connect() keeps the window small,
            # so a fast server cannot run far ahead of a slow reader
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout or t(30))
            self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.eof = False

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def send(self, data):
        """Sends data; False if the server had already closed or reset."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_until(self, sep):
        while sep not in self.buf:
            if not self._fill():
                raise EOFError("connection closed; have %r" % self.buf[:200])
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        head = self.read_until(b"\r\n\r\n").decode("iso-8859-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        return RawHead(status, reason, headers, version)

    def body_pieces(self, head, method="GET"):
        """Yields the decoded body as it arrives (chunked, Content-Length or to EOF)."""
        if method == "HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
            return
        te = (head.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            while True:
                line = self.read_until(b"\r\n")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    return
                data = self.read_exact(size)
                self.read_until(b"\r\n")
                yield data
        elif head.header("Content-Length") is not None:
            left = int(head.header("Content-Length"))
            while left > 0:
                if not self.buf and not self._fill():
                    raise EOFError("body truncated, %d bytes missing" % left)
                piece, self.buf = self.buf[:left], self.buf[left:]
                left -= len(piece)
                yield piece
        else:
            while True:
                if self.buf:
                    piece, self.buf = self.buf, b""
                    yield piece
                if not self._fill():
                    return

    def read_response(self, method="GET"):
        head = self.read_head()
        body = b"".join(self.body_pieces(head, method))
        return Response(head.status, head.reason, head.headers, body)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def build_request(method, path, body=None, headers=None):
    data = encode_body(body)
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    hdrs = dict(headers or {})
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
        hdrs.setdefault("Content-Length", str(len(data)))
    for k, v in hdrs.items():
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + (data or b"")


def raw_request(port, data, timeout=None, method="GET"):
    """Sends raw bytes, returns the Response (the server may close early)."""
    c = RawConn(port, timeout)
    try:
        c.send(data)
        return c.read_response(method)
    finally:
        c.close()


# --------------------------------------------------------------------------
# SSE


class Event:
    """One SSE block (the text between blank lines)."""

    def __init__(self, text, at):
        self.text = text
        self.at = at  # time.monotonic() when it was complete
        self.all_lines = text.split("\n")
        self.lines = [l for l in self.all_lines if not l.startswith(":")]
        self.is_comment = not self.lines
        self.name = None
        data = []
        for l in self.lines:
            if l.startswith("event:"):
                self.name = l[6:].lstrip(" ")
            elif l.startswith("data:"):
                data.append(l[5:][1:] if l[5:].startswith(" ") else l[5:])
        self.data = "\n".join(data)

    def __repr__(self):
        return "<Event %r>" % self.text


class SSE:
    """A chat-stream request read incrementally over a raw socket."""

    def __init__(self, port, message=None, conversation_id=None, method="POST", body=None,
                 path="/api/chat-stream", headers=None, timeout=None, query=None):
        self.conn = RawConn(port, timeout or t(60))
        if method == "GET":
            if query is None:
                q = {}
                if message is not None:
                    q["message"] = message
                if conversation_id is not None:
                    q["conversation_id"] = conversation_id
                query = urllib.parse.urlencode(q, quote_via=urllib.parse.quote)
            req = build_request("GET", path + ("?" + query if query else ""), None, headers)
        else:
            if body is None:
                body = {"message": message}
                if conversation_id is not None:
                    body["conversation_id"] = conversation_id
            req = build_request(method, path, body, headers)
        self.t0 = time.monotonic()
        self.conn.send(req)
        self.head = self.conn.read_head()
        self.status = self.head.status
        self.events = []
        self.raw = b""
        self._pending = b""
        self.ended = False
        ct = (self.head.header("Content-Type") or "").lower()
        self.is_stream = self.status == 200 and ct.startswith("text/event-stream")
        self.body = None
        if self.is_stream:
            self._pieces = self.conn.body_pieces(self.head)
        else:
            self.body = b"".join(self.conn.body_pieces(self.head))
            self.ended = True

    def header(self, name, default=None):
        return self.head.header(name, default)

    def response(self):
        """What was read so far as a Response: the error body, or the stream's raw bytes."""
        return Response(self.status, self.head.reason, self.head.headers,
                        self.body if self.body is not None else self.raw)

    def next_event(self):
        """The next event (comments included), or None at the end of the stream."""
        if not self.is_stream:
            return None
        while b"\n\n" not in self._pending:
            if self.ended:
                return None
            try:
                piece = next(self._pieces)
            except StopIteration:
                self.ended = True
                return None
            except (EOFError, ConnectionResetError):
                self.ended = True
                return None
            self.raw += piece
            self._pending += piece
        i = self._pending.index(b"\n\n")
        block, self._pending = self._pending[:i], self._pending[i + 2:]
        ev = Event(block.decode("utf-8"), time.monotonic())
        self.events.append(ev)
        return ev

    def next_data_event(self):
        while True:
            ev = self.next_event()
            if ev is None or not ev.is_comment:
                return ev

    def read_all(self):
        while self.next_event() is not None:
            pass
        return self.events

    @property
    def trailing(self):
        return self._pending

    def close(self):
        self.conn.close()


def take_content(tc, sse, n):
    """Reads the next n events of a running stream, each a content piece; returns their text."""
    got = ""
    for _ in range(n):
        ev = sse.next_data_event()
        tc.assertIsNotNone(ev, "the stream ended early: %r" % sse.events)
        tc.assertIsNone(ev.name, repr(ev))
        got += loads(ev.data)["content"]
    return got


class StreamResult:
    def __init__(self):
        self.content = ""
        self.reasoning = ""
        self.contents = []
        self.reasonings = []
        self.kinds = []  # "content"/"reasoning" in arrival order
        self.done = None
        self.error = None
        self.comments = 0


def check_stream(tc, sse):
    """Reads sse to its end and checks every block against SPEC section 2 exactly.

    Returns a StreamResult. Comment lines (': ping') are ignored as a client must.
    """
    tc.assertEqual(sse.status, 200, "stream status; body %r" % (sse.body,))
    tc.assertTrue(sse.is_stream, "Content-Type %r" % sse.header("Content-Type"))
    sse.read_all()
    res = StreamResult()
    for ev in sse.events:
        if ev.is_comment:
            res.comments += 1
            continue
        tc.assertTrue(res.done is None and res.error is None,
                      "event after the closing event: %r" % ev)
        if ev.name is None:
            tc.assertEqual(len(ev.lines), 1, "unnamed event has one data line: %r" % ev)
            tc.assertTrue(ev.lines[0].startswith("data: "), repr(ev))
            obj = loads(ev.data)
            tc.assertIsInstance(obj, dict, repr(ev))
            tc.assertIn(list(obj.keys()), (["content"], ["reasoning"]), repr(ev))
            key = list(obj.keys())[0]
            tc.assertIsInstance(obj[key], str, repr(ev))
            tc.assertEqual(ev.lines[0], "data: " + canonical(obj), "exact piece format")
            if key == "content":
                res.contents.append(obj[key])
                res.content += obj[key]
            else:
                res.reasonings.append(obj[key])
                res.reasoning += obj[key]
            res.kinds.append(key)
        elif ev.name == "done":
            tc.assertEqual(len(ev.lines), 2, repr(ev))
            tc.assertEqual(ev.lines[0], "event: done", repr(ev))
            obj = loads(ev.data)
            tc.assertEqual(list(obj.keys()), ["conversation_id", "cached"], repr(ev))
            tc.assertEqual(ev.lines[1], "data: " + canonical(obj), "exact done format")
            tc.assertIsInstance(obj["cached"], bool)
            res.done = obj
        elif ev.name == "error":
            tc.assertEqual(len(ev.lines), 2, repr(ev))
            tc.assertEqual(ev.lines[0], "event: error", repr(ev))
            obj = loads(ev.data)
            tc.assertEqual(list(obj.keys()), ["message"], repr(ev))
            tc.assertEqual(ev.lines[1], "data: " + canonical(obj), "exact error format")
            tc.assertIsInstance(obj["message"], str)
            tc.assertTrue(obj["message"], "error message is empty")
            res.error = obj
        else:
            tc.fail("unexpected event %r" % ev)
    tc.assertEqual(sse.trailing.strip(b"\n"), b"", "bytes after the last event")
    return res


# --------------------------------------------------------------------------
# SQLite


def db_query(path, sql, args=(), raw=False):
    """Runs a query on the SQLite file, read-only while chatd runs.

    raw=True returns TEXT values as bytes (for text that is not valid UTF-8).
    """
    try:
        con = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True, timeout=10)
        try:
            if raw:
                con.text_factory = bytes
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        # a WAL database without its -shm file cannot be opened read-only;
        # this only happens once chatd has stopped
        con = sqlite3.connect(path, timeout=10)
        try:
            if raw:
                con.text_factory = bytes
            return con.execute(sql, args).fetchall()
        finally:
            con.close()


def db_connect_rw(path):
    """A writable connection to the SQLite file, for tests that write rows
    themselves while chatd runs (WAL lets both go on; writers wait up to 30 s)."""
    con = sqlite3.connect(path, timeout=30)
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def remove_db_files(path):
    """Deletes the SQLite file and its -wal, -shm and -journal under a running chatd."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def db_counts(path):
    return (db_query(path, "SELECT COUNT(*) FROM conversations")[0][0],
            db_query(path, "SELECT COUNT(*) FROM messages")[0][0])


def db_conversation(path, conv_id):
    """(created_at, last_active) or None, and the messages as (role, content, timestamp)."""
    rows = db_query(path, "SELECT created_at, last_active FROM conversations WHERE id = ?", (conv_id,))
    msgs = db_query(path, "SELECT role, content, timestamp FROM messages WHERE conversation_id = ? "
                          "ORDER BY id", (conv_id,))
    return (rows[0] if rows else None), msgs


def db_orphan_messages(path):
    """How many messages belong to no conversation."""
    return db_query(path, "SELECT COUNT(*) FROM messages WHERE conversation_id NOT IN "
                          "(SELECT id FROM conversations)")[0][0]


def wait_for(pred, timeout, interval=0.05):
    """Polls pred until it returns a truthy value or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------
# test base


class ChatdCase(unittest.TestCase):
    """One mock and one chatd shared by every test of the class."""

    chatd_args = ()
    chatd_env = None
    chatd_db = None  # a --db URL; None: a fresh SQLite file (then db_path is set)
    chatd_preexec_fn = None  # a staticmethod run in chatd's child before exec
    mock_args = ()
    mock_delay_ms = 5

    @classmethod
    def llm_url(cls):
        """The --llm-url chatd is given: the mock's, unless a class says otherwise."""
        return cls.mock.url

    @classmethod
    def setUpClass(cls):
        cls.mock = Mock(*cls.mock_args, delay_ms=cls.mock_delay_ms)
        try:
            cls.chatd = Chatd(cls.llm_url(), cls.chatd_args, env=cls.chatd_env, db=cls.chatd_db,
                              preexec_fn=cls.chatd_preexec_fn)
        except BaseException:
            cls.mock.stop()
            raise
        cls.port = cls.chatd.port
        cls.db_path = cls.chatd.db_path if cls.chatd_db is None else None

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.chatd.stop()
            err = cls.chatd.stderr_text()
        finally:
            cls.chatd.cleanup()
            cls.mock.stop()
        if rc != 0:
            raise AssertionError("chatd exited with status %r on SIGTERM (expected 0); stderr tail:\n%s"
                                 % (rc, err[-6000:]))

    # -- helpers

    def req(self, method, path, body=None, headers=None, timeout=None):
        return request(self.port, method, path, body, headers, timeout)

    def assert_cors(self, resp):
        self.assertEqual(resp.header("Access-Control-Allow-Origin"), getattr(self, "cors", "*"),
                         "Access-Control-Allow-Origin on %r" % resp)

    def assert_json(self, resp, status, expected=None):
        """Checks status, JSON content type, CORS and the exact serialisation; returns the object."""
        self.assertEqual(resp.status, status, resp)
        self.assertEqual((resp.header("Content-Type") or "").lower().replace(" ", ""),
                         JSON_CT.replace(" ", ""), resp)
        self.assert_cors(resp)
        text = resp.body.decode("utf-8")
        if text.endswith("\n"):
            text = text[:-1]
        obj = loads(text)
        self.assertEqual(text, canonical(obj), "exact JSON serialisation (', ' and ': ', UTF-8 unescaped)")
        if expected is not None:
            self.assertEqual(obj, expected)
            self.assertEqual(list(obj.keys()), list(expected.keys()), "key order")
        return obj

    def assert_error(self, resp, status):
        obj = self.assert_json(resp, status)
        self.assertEqual(list(obj.keys()), ["status", "message"], resp)
        self.assertEqual(obj["status"], "error", resp)
        self.assertIsInstance(obj["message"], str)
        self.assertTrue(obj["message"].strip(), "error message is empty")
        return obj

    def chat(self, message, conversation_id=None, path="/api/chat", expect_cached=None):
        body = {"message": message}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        resp = self.req("POST", path, body)
        obj = self.assert_json(resp, 200)
        self.assertEqual(list(obj.keys()), ["status", "response", "conversation_id", "cached"], resp)
        self.assertEqual(obj["status"], "success")
        self.assertIsInstance(obj["response"], str)
        self.assertRegex(obj["conversation_id"], UUID4_RE)
        self.assertIsInstance(obj["cached"], bool)
        if expect_cached is not None:
            self.assertEqual(obj["cached"], expect_cached, resp)
        return obj

    def stream(self, message, conversation_id=None, method="POST", **kw):
        """A complete successful stream; returns (StreamResult, sse)."""
        sse = SSE(self.port, message, conversation_id, method=method, **kw)
        try:
            res = check_stream(self, sse)
        finally:
            sse.close()
        self.assert_cors(sse.head)
        cid = sse.header("X-Conversation-Id")
        self.assertIsNotNone(cid, "X-Conversation-Id header")
        self.assertRegex(cid, UUID4_RE)
        self.assertIsNone(res.error, "stream error event %r" % (res.error,))
        self.assertIsNotNone(res.done, "no done event; events %r" % sse.events)
        self.assertEqual(res.done["conversation_id"], cid)
        return res, sse

    def history(self, conversation_id):
        resp = self.req("GET", "/api/conversations/" + quote_path(conversation_id))
        obj = self.assert_json(resp, 200)
        self.assertEqual(list(obj.keys()), ["status", "history", "created_at", "last_active"])
        self.assertEqual(obj["status"], "success")
        for m in obj["history"]:
            self.assertEqual(list(m.keys()), ["role", "content", "timestamp"], m)
            self.assertIn(m["role"], ("user", "assistant"))
            self.assertRegex(m["timestamp"], TS_RE)
        self.assertRegex(obj["created_at"], TS_RE)
        self.assertRegex(obj["last_active"], TS_RE)
        return obj

    def wait_history(self, cid, n):
        """History once it holds n messages (a stream's exchange is stored at its end)."""
        def get():
            r = self.req("GET", "/api/conversations/" + quote_path(cid))
            return r.status == 200 and len(r.json()["history"]) >= n
        wait_for(get, t(3))
        hist = self.history(cid)
        self.assertGreaterEqual(len(hist["history"]), n, "history of %s did not reach %d messages" % (cid, n))
        return hist

    def pairs(self, hist):
        return [(m["role"], m["content"]) for m in hist["history"]]

    def health(self, status=200):
        resp = self.req("GET", "/health")
        obj = self.assert_json(resp, status)
        return obj

    def health_counts(self):
        obj = self.health()
        cache = HEALTH_CACHE_RE.match(obj["system"]["cache"])
        sessions = HEALTH_SESSIONS_RE.match(obj["system"]["active_sessions"])
        self.assertTrue(cache, obj)
        self.assertTrue(sessions, obj)
        return int(cache.group(1)), int(sessions.group(1))

    def counts(self):
        return db_counts(self.db_path)
