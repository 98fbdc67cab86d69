"""test_export.py - SPEC sections 5 (export one conversation), 6 (export-all)
and "Export files" (GET /api/exports/NAME), against the contract in
README.md: exact headers, CSV (RFC 4180, CRLF, formula guard) and NDJSON
bodies compared field by field with the rows of the SQLite file, rows the
test writes itself (text that is not UTF-8, control characters, NUL,
conversations created on given days, expired ones), date filters, the
export files (same bytes, Content-Length, ETag, Range), their names and
expiry, the admin token, and the failures: a client that goes away, a
database that disappears and a disk that fills up mid-export.

Rows written by the test go straight into chatd's SQLite file while chatd
runs (WAL); their times are 'YYYY-MM-DDTHH:MM:SS.ffffff' UTC, which chatd
reads and prints back unchanged.
"""

import csv
import datetime
import io
import os
import re
import resource
import socket
import time
import unittest
import uuid

from harness import (TS_RE, ChatdCase, RawConn, build_request, canonical, db_connect_rw, db_query, loads,
                     quote_path, remove_db_files, t, wait_for)

CSV_CT = "text/csv; charset=utf-8"
NDJSON_CT = "application/x-ndjson"
CSV_HEADER = "Timestamp,Role,Content\r\n"
CSV_ALL_HEADER = "conversation_id,created_at,last_active,timestamp,role,content\r\n"
EXT = {"json": "jsonl", "csv": "csv"}
CT = {"json": NDJSON_CT, "csv": CSV_CT}
ONE_NAME_RE = re.compile(r"^conversation_([0-9a-f-]{36})_[0-9a-f]{16}\.(csv|jsonl)$")
ALL_NAME_RE = re.compile(r"^conversations_(\d{14})_[0-9a-f]{16}\.(csv|jsonl)$")
# every name a finished export may have (README, "Export files")
ANY_NAME_RE = re.compile(r"^(conversation_[0-9a-f-]{36}|conversations_\d{14})_[0-9a-f]{16}\.(csv|jsonl)$")


# --------------------------------------------------------------------------
# helpers


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")


def exported_text(v):
    """A stored TEXT/BLOB value as chatd exports it: bytes that are not UTF-8
    become U+FFFD (the test only stores bad sequences where one U+FFFD per bad
    byte and Python's 'replace' agree)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    return bytes(v).decode("utf-8", "replace")


def csv_guard(s):
    """The formula guard: a leading ' before = + - @ TAB CR."""
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def csv_field(s):
    s = csv_guard(s)
    if any(c in s for c in ',"\r\n'):
        return '"' + s.replace('"', '""') + '"'
    return s


def csv_row(fields):
    return ",".join(csv_field(f) for f in fields) + "\r\n"


def parse_csv(text):
    return list(csv.reader(io.StringIO(text, newline=""), strict=True))


def list_dir(path):
    """Every file under path (recursively, hidden ones too), relative to it;
    directories (say, one for partial files) are not counted."""
    out = set()
    for root, _, files in os.walk(path):
        for n in files:
            out.add(os.path.relpath(os.path.join(root, n), path))
    return out


def read_body(conn, head):
    """Reads the body of head from conn; (bytes, complete). complete is False
    when a chunked body ended without its terminating zero-size chunk."""
    pieces = []
    try:
        for p in conn.body_pieces(head):
            pieces.append(p)
    except EOFError:
        return b"".join(pieces), False
    return b"".join(pieces), True


def big_conversation(db_path, n, created, text_of):
    """Inserts one live conversation of n messages; returns its id."""
    cid = str(uuid.uuid4())
    base = created
    con = db_connect_rw(db_path)
    try:
        with con:
            con.execute("INSERT INTO conversations(id, created_at, last_active) VALUES (?, ?, ?)",
                        (cid, iso(created), iso(utcnow())))
            con.executemany(
                "INSERT INTO messages(conversation_id, role, content, timestamp) VALUES (?, ?, ?, ?)",
                ((cid, "user" if i % 2 == 0 else "assistant", text_of(i),
                  iso(base + datetime.timedelta(microseconds=i))) for i in range(n)))
    finally:
        con.close()
    return cid


class ExportMixin:
    """Helpers shared by the export test classes (used with ChatdCase)."""

    @property
    def export_dir(self):
        return os.path.join(self.chatd.tmp, "exports")

    def add_conversation(self, messages=(), created=None, last_active=None, cid=None):
        """Writes a conversation straight into the database.

        messages: contents (roles alternate user/assistant) or (role, content)
        pairs; a content that is bytes is stored as a BLOB, one wrapped as
        ("cast", bytes) is stored as CAST(bytes AS TEXT) (TEXT holding bytes
        that are not UTF-8)."""
        now = utcnow()
        created = created or now - datetime.timedelta(minutes=30)
        last_active = last_active or now
        cid = cid or str(uuid.uuid4())
        con = db_connect_rw(self.db_path)
        try:
            with con:
                con.execute("INSERT INTO conversations(id, created_at, last_active) VALUES (?, ?, ?)",
                            (cid, iso(created) if isinstance(created, datetime.datetime) else created,
                             iso(last_active) if isinstance(last_active, datetime.datetime) else last_active))
                for i, m in enumerate(messages):
                    role, content = m if isinstance(m, tuple) and m[0] != "cast" else (
                        "user" if i % 2 == 0 else "assistant", m)
                    ts = iso(created + datetime.timedelta(seconds=1, milliseconds=i)
                             if isinstance(created, datetime.datetime) else now)
                    if isinstance(content, tuple) and content[0] == "cast":
                        con.execute("INSERT INTO messages(conversation_id, role, content, timestamp)"
                                    " VALUES (?, ?, CAST(? AS TEXT), ?)", (cid, role, content[1], ts))
                    else:
                        con.execute("INSERT INTO messages(conversation_id, role, content, timestamp)"
                                    " VALUES (?, ?, ?, ?)", (cid, role, content, ts))
        finally:
            con.close()
        return cid

    def stored(self, cid):
        """((created_at, last_active), [(timestamp, role, content as exported)]) from the file."""
        conv = db_query(self.db_path, "SELECT created_at, last_active FROM conversations WHERE id = ?",
                        (cid,), raw=True)
        rows = db_query(self.db_path, "SELECT timestamp, role, content FROM messages"
                                      " WHERE conversation_id = ? ORDER BY id", (cid,), raw=True)
        conv = tuple(exported_text(v) for v in conv[0]) if conv else None
        return conv, [tuple(exported_text(v) for v in r) for r in rows]

    def live_conversations(self):
        """Every live conversation as (id, created_at, last_active), oldest first."""
        cutoff = iso(utcnow() - datetime.timedelta(seconds=86400 - 600))
        rows = db_query(self.db_path, "SELECT id, created_at, last_active FROM conversations"
                                      " WHERE last_active >= ? ORDER BY created_at, id", (cutoff,), raw=True)
        return [tuple(exported_text(v) for v in r) for r in rows]

    def export(self, cid, fmt=None, headers=None, query=None):
        q = query if query is not None else ("?format=" + fmt if fmt else "")
        return self.req("GET", "/api/conversations/%s/export%s" % (quote_path(cid), q), headers=headers,
                        timeout=t(60))

    def export_all(self, fmt=None, headers=None, query=None):
        q = query if query is not None else ("?format=" + fmt if fmt else "")
        return self.req("GET", "/api/conversations/export-all" + q, headers=headers, timeout=t(120))

    def get_file(self, name, headers=None):
        return self.req("GET", "/api/exports/" + name, headers=headers, timeout=t(60))

    def utf8(self, body):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail("export is not valid UTF-8: %s near %r" % (e, body[max(0, e.start - 40):e.end + 40]))

    def ndjson(self, body):
        """The objects of an NDJSON body, checking that it is UTF-8, that every line ends
        in LF (the last too) and that each is exactly the canonical serialisation."""
        text = self.utf8(body)
        self.assertTrue(text.endswith("\n"), "NDJSON ends with a newline: %r" % text[-80:])
        self.assertNotIn("\r", text, "NDJSON lines end in LF only")
        objs = []
        for i, line in enumerate(text[:-1].split("\n")):
            try:
                obj = loads(line)
            except ValueError as e:
                self.fail("line %d is not JSON (%s): %r" % (i + 1, e, line[:300]))
            self.assertEqual(line, canonical(obj), "line %d: exact serialisation" % (i + 1))
            objs.append(obj)
        return objs

    # -- single conversation

    def check_one_headers(self, resp, cid, fmt):
        """Status, Content-Type, Content-Disposition, CORS, X-Export-File; returns the file name."""
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.header("Content-Type"), CT[fmt], resp.headers)
        self.assertEqual(resp.header("Content-Disposition"),
                         "attachment; filename=conversation_%s.%s" % (cid, EXT[fmt]), resp.headers)
        self.assert_cors(resp)
        name = resp.header("X-Export-File")
        self.assertIsNotNone(name, "X-Export-File header missing: %r" % resp.headers)
        m = ONE_NAME_RE.match(name)
        self.assertTrue(m, "X-Export-File %r does not match conversation_{id}_{16 hex}.csv|jsonl" % name)
        self.assertEqual(m.group(1), cid, name)
        self.assertEqual(m.group(2), EXT[fmt], name)
        return name

    def check_one_ndjson(self, resp, cid):
        """Checks the NDJSON body line by line against the database; returns the lines' objects."""
        objs = self.ndjson(resp.body)
        conv, msgs = self.stored(cid)
        self.assertIsNotNone(conv)
        self.assertEqual(list(objs[0].keys()), ["conversation_id", "created_at", "last_active", "message_count"])
        self.assertEqual(objs[0], {"conversation_id": cid, "created_at": conv[0], "last_active": conv[1],
                                   "message_count": len(msgs)})
        self.assertEqual(len(objs) - 1, len(msgs), "one line per stored message")
        for i, (obj, (ts, role, content)) in enumerate(zip(objs[1:], msgs)):
            self.assertEqual(list(obj.keys()), ["timestamp", "role", "content"], obj)
            self.assertEqual(obj, {"timestamp": ts, "role": role, "content": content}, "message %d" % i)
            self.assertRegex(obj["timestamp"], TS_RE)
        return objs

    def check_one_csv(self, resp, cid):
        """Parses the CSV back and compares every field with the database, then the exact bytes."""
        self.assertTrue(resp.body.startswith(CSV_HEADER.encode()),
                        "CSV starts with the header line %r: %r" % (CSV_HEADER, resp.body[:60]))
        self.assertTrue(resp.body.endswith(b"\r\n"), "CSV ends with CRLF: %r" % resp.body[-60:])
        text = self.utf8(resp.body)
        rows = parse_csv(text)
        _, msgs = self.stored(cid)
        self.assertEqual(rows[0], ["Timestamp", "Role", "Content"])
        self.assertEqual(len(rows) - 1, len(msgs), "one row per stored message")
        for i, (row, (ts, role, content)) in enumerate(zip(rows[1:], msgs)):
            self.assertEqual(row, [ts, role, csv_guard(content)], "row %d (stored %r)" % (i + 1, content))
        expected = CSV_HEADER + "".join(csv_row([ts, role, content]) for ts, role, content in msgs)
        self.assertEqual(text, expected, "exact CSV bytes (RFC 4180 quoting only where needed, CRLF)")
        return rows

    # -- export-all

    def check_all_headers(self, resp, fmt, t0, t1):
        """Status, type, disposition (name with a UTC time between t0 and t1), CORS; returns the file name."""
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.header("Content-Type"), CT[fmt], resp.headers)
        self.assert_cors(resp)
        cd = resp.header("Content-Disposition") or ""
        m = re.fullmatch(r"attachment; filename=conversations_(\d{14})\.%s" % EXT[fmt], cd)
        self.assertTrue(m, "Content-Disposition %r" % cd)
        self.assert_close_to(m.group(1), t0, t1)
        name = resp.header("X-Export-File")
        self.assertIsNotNone(name, "X-Export-File header missing: %r" % resp.headers)
        m = ALL_NAME_RE.match(name)
        self.assertTrue(m, "X-Export-File %r does not match conversations_{YYYYmmddHHMMSS}_{16 hex}.csv|jsonl"
                        % name)
        self.assertEqual(m.group(2), EXT[fmt])
        self.assert_close_to(m.group(1), t0, t1)
        return name

    def assert_close_to(self, stamp, t0, t1):
        try:
            when = datetime.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            self.fail("not a YYYYmmddHHMMSS time: %r" % stamp)
        self.assertGreaterEqual(when, int(t0) - 2, "file name time %s is before the request (UTC?)" % stamp)
        self.assertLessEqual(when, t1 + 2, "file name time %s is after the response (UTC?)" % stamp)

    def expected_all(self, ids=None):
        """The live conversations (optionally only ids), oldest first, with their messages."""
        out = []
        for cid, created, last in self.live_conversations():
            if ids is not None and cid not in ids:
                continue
            _, msgs = self.stored(cid)
            out.append((cid, created, last, msgs))
        return out

    def check_all_ndjson(self, resp, expected, t0, t1):
        objs = self.ndjson(resp.body)
        head = objs[0]
        self.assertEqual(list(head.keys()), ["export_time", "total_conversations"], head)
        self.assertRegex(head["export_time"], TS_RE)
        when = datetime.datetime.strptime(head["export_time"], "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        self.assertGreaterEqual(when, t0 - 2, "export_time is UTC and now")
        self.assertLessEqual(when, t1 + 2, "export_time is UTC and now")
        self.assertEqual(head["total_conversations"], len(objs) - 1, "total_conversations = conversation lines")
        got_ids = [o.get("id") for o in objs[1:]]
        self.assertEqual(len(got_ids), len(set(got_ids)), "a conversation appears twice")
        created = [o.get("created_at") for o in objs[1:]]
        self.assertEqual(created, sorted(created), "oldest first by created_at")
        expected = self.in_server_order(expected, got_ids)
        for obj, (cid, c_at, l_at, msgs) in zip(objs[1:], expected):
            self.assertEqual(list(obj.keys()), ["id", "created_at", "last_active", "message_count", "messages"])
            self.assertEqual([obj["id"], obj["created_at"], obj["last_active"], obj["message_count"]],
                             [cid, c_at, l_at, len(msgs)])
            self.assertEqual(len(obj["messages"]), len(msgs), cid)
            for m, (ts, role, content) in zip(obj["messages"], msgs):
                self.assertEqual(list(m.keys()), ["timestamp", "role", "content"])
                self.assertEqual(m, {"timestamp": ts, "role": role, "content": content}, cid)
        return objs

    def in_server_order(self, expected, got_ids):
        """expected (oldest first) reordered as the server listed got_ids; fails unless got_ids
        are exactly expected's ids, oldest first (the order among equal created_at is free)."""
        self.assertEqual(len(got_ids), len(set(got_ids)), "a conversation appears twice")
        self.assertEqual(sorted(got_ids), sorted(e[0] for e in expected),
                         "exactly the live conversations (missing %r, extra %r)"
                         % (sorted({e[0] for e in expected} - set(got_ids))[:5],
                            sorted(set(got_ids) - {e[0] for e in expected})[:5]))
        by_id = {e[0]: e for e in expected}
        out = [by_id[i] for i in got_ids]
        self.assertEqual([e[1] for e in out], [e[1] for e in expected], "oldest first by created_at")
        return out

    def check_all_csv(self, resp, expected):
        self.assertTrue(resp.body.startswith(CSV_ALL_HEADER.encode()),
                        "CSV starts with the header line: %r" % resp.body[:80])
        self.assertTrue(resp.body.endswith(b"\r\n"), "CSV ends with CRLF: %r" % resp.body[-60:])
        text = self.utf8(resp.body)
        rows = parse_csv(text)
        self.assertEqual(rows[0], CSV_ALL_HEADER[:-2].split(","))
        # the order of the conversations as they come, each in one block of rows
        order = []
        for row in rows[1:]:
            if not order or order[-1] != row[0]:
                self.assertNotIn(row[0], order, "the rows of a conversation are not together")
                order.append(row[0])
        expected = self.in_server_order([e for e in expected if e[3]], order)
        want = [[cid, c_at, l_at, ts, role, csv_guard(content)]
                for cid, c_at, l_at, msgs in expected for ts, role, content in msgs]
        self.assertEqual(len(rows) - 1, len(want), "one row per message of the live conversations")
        self.assertEqual(rows[1:], want, "rows: conversations oldest first, messages in order")
        exact = CSV_ALL_HEADER + "".join(csv_row([cid, c_at, l_at, ts, role, content])
                                         for cid, c_at, l_at, msgs in expected for ts, role, content in msgs)
        self.assertEqual(text, exact, "exact CSV bytes")
        return rows

    def check_file_same(self, name, body, headers=None):
        """GET /api/exports/NAME gives exactly body, with Content-Length and an ETag; returns the response."""
        r = self.get_file(name, headers)
        self.assertEqual(r.status, 200, "export file %s: %r" % (name, r))
        self.assert_cors(r)
        self.assertEqual(r.header("Content-Length"), str(len(body)), r.headers)
        self.assertEqual(len(r.body), len(body))
        self.assertTrue(r.body == body, "export file %s differs from the streamed response" % name)
        self.assertTrue(r.header("ETag"), "ETag missing: %r" % r.headers)
        return r

    def assert_no_leftovers(self, keep=(), timeout=None):
        """Waits until the export directory holds nothing but the entries in keep."""
        keep = set(keep)
        ok = wait_for(lambda: list_dir(self.export_dir) - keep == set(), timeout or t(5), 0.05)
        self.assertTrue(ok, "export directory still holds %r" % sorted(list_dir(self.export_dir) - keep))


# --------------------------------------------------------------------------
# the main class: one chatd, conversations written by chat and by the test

TRICKY = [
    "plain text",
    "a,b,c",
    'say "hi"',
    "line1\nline2",
    "line1\r\nline2",
    "cr\ronly",
    "中文内容，含全角逗号。",
    "emoji 😀👍🏽 𝄞",
    "=SUM(A1:A2)",
    "+1 plus",
    "-2 minus",
    "@cmd",
    "\tTAB first",
    "\rCR first",
    "",
    '=1,"x"\r\n',
    "\nLF first (no guard)",
    " =space first (no guard)",
    "'already quoted",
    '"',
    "trailing comma,",
    "mid=equals+plus-minus@at",
    "-",
    "\r\n",
]


class ExportTests(ExportMixin, ChatdCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tracked = {}  # id -> what the database held when the test wrote or chatted it

    def track(self, cid):
        self.tracked[cid] = self.stored(cid)
        return cid

    # -- single conversation, JSON

    def test_single_json_default_and_explicit(self):
        cid = self.chat("export me, \"please\" mock:tokens=3")["conversation_id"]
        self.chat("second 第二 mock:tokens=2", cid)
        self.track(cid)
        t0 = time.time()
        default = self.export(cid)
        explicit = self.export(cid, "json")
        n1 = self.check_one_headers(default, cid, "json")
        n2 = self.check_one_headers(explicit, cid, "json")
        objs = self.check_one_ndjson(explicit, cid)
        self.assertEqual(default.body, explicit.body, "format=json is the default")
        self.assertEqual(objs[0]["message_count"], 4)
        self.assertEqual([(o["role"], o["content"]) for o in objs[1:]], [
            ("user", 'export me, "please" mock:tokens=3'), ("assistant", "w1 w2 w3"),
            ("user", "second 第二 mock:tokens=2"), ("assistant", "w1 w2")])
        self.assertNotEqual(n1, n2, "two exports get two files")
        self.check_file_same(n1, default.body)
        self.check_file_same(n2, explicit.body)
        # the same export with a trailing slash
        r = self.req("GET", "/api/conversations/%s/export/?format=json" % cid)
        self.check_one_headers(r, cid, "json")
        self.assertEqual(r.body, explicit.body)
        self.assertLess(time.time() - t0, t(30))

    def test_single_csv_from_chat(self):
        cid = self.chat("=cmd|' /C calc'!A0, \"quoted\" mock:tokens=2")["conversation_id"]
        self.track(cid)
        r = self.export(cid, "csv")
        name = self.check_one_headers(r, cid, "csv")
        rows = self.check_one_csv(r, cid)
        self.assertEqual([row[1:] for row in rows[1:]], [
            ["user", "'=cmd|' /C calc'!A0, \"quoted\" mock:tokens=2"], ["assistant", "w1 w2"]])
        self.check_file_same(name, r.body)

    def test_single_csv_tricky_content(self):
        cid = self.track(self.add_conversation(TRICKY))
        r = self.export(cid, "csv")
        name = self.check_one_headers(r, cid, "csv")
        rows = self.check_one_csv(r, cid)
        self.assertEqual([row[2] for row in rows[1:]], [csv_guard(c) for c in TRICKY])
        # spot checks of the raw bytes
        body = r.body.decode("utf-8")
        for raw in ('"a,b,c"', '"say ""hi"""', '"line1\nline2"', '"line1\r\nline2"', '"cr\ronly"',
                    ",'=SUM(A1:A2)\r\n", ",'+1 plus\r\n", ",'-2 minus\r\n", ",'@cmd\r\n", ",'\tTAB first\r\n",
                    ",\"'\rCR first\"\r\n", ",\"'=1,\"\"x\"\"\r\n\"\r\n", ",\"\nLF first (no guard)\"\r\n",
                    ", =space first (no guard)\r\n", ",'already quoted\r\n", ',""""\r\n', ",'-\r\n",
                    ",\"'\r\n\"\r\n", ",emoji 😀👍🏽 𝄞\r\n", ",中文内容，含全角逗号。\r\n"):
            self.assertIn(raw, body)
        self.assertIn(",user,\r\n", body, "an empty content is an empty field")
        self.check_file_same(name, r.body)
        # the same conversation as NDJSON
        r = self.export(cid, "json")
        self.check_one_headers(r, cid, "json")
        objs = self.check_one_ndjson(r, cid)
        self.assertEqual([o["content"] for o in objs[1:]], TRICKY)

    def test_single_not_utf8_and_control_characters(self):
        controls = "ctl " + "".join(chr(c) for c in range(0, 32)) + "\x7f \u0085 \u2028 \u2029 \ufeff end"
        contents = [
            b"bad \xff byte",                        # BLOB
            ("cast", b"cast \xfe\xff text"),         # TEXT that is not UTF-8
            ("cast", b"\x80lone continuation"),
            b"overlong \xc0\xaf slash",
            b"surrogate \xed\xa0\x80 half",
            b"too big \xf4\x90\x80\x80 cp",
            ("cast", "ok 中文 then bad ".encode() + b"\xe4\xbd\xa0\xff" + " 好".encode()),
            "nul\x00inside",
            controls,
            "quote \" backslash \\ slash /",
            b"\xff",
        ]
        expected = ["bad \ufffd byte", "cast \ufffd\ufffd text", "\ufffdlone continuation",
                    "overlong \ufffd\ufffd slash", "surrogate \ufffd\ufffd\ufffd half",
                    "too big \ufffd\ufffd\ufffd\ufffd cp", "ok 中文 then bad 你\ufffd 好", "nul\x00inside",
                    controls, "quote \" backslash \\ slash /", "\ufffd"]
        cid = self.track(self.add_conversation(contents))
        r = self.export(cid, "json")
        name = self.check_one_headers(r, cid, "json")
        objs = self.check_one_ndjson(r, cid)
        self.assertEqual([o["content"] for o in objs[1:]], expected)
        self.assertIn(b"nul\\u0000inside", r.body)
        self.assertIn(b"\\u001f", r.body)
        self.check_file_same(name, r.body)
        # the CSV is valid UTF-8 too, with the same replacements
        r = self.export(cid, "csv")
        self.check_one_headers(r, cid, "csv")
        rows = self.check_one_csv(r, cid)
        self.assertEqual([row[2] for row in rows[1:]], [csv_guard(e) for e in expected])

    def test_single_csv_field_beginning_with_nul_gets_no_guard(self):
        # the guard is for = + - @ TAB CR only; NUL, LF and the empty field get none
        contents = ["\x00", "\x00=x", "\x00\x00,", "\n=x", ""]
        cid = self.track(self.add_conversation(contents))
        r = self.export(cid, "csv")
        self.check_one_headers(r, cid, "csv")
        rows = self.check_one_csv(r, cid)
        self.assertEqual([row[2] for row in rows[1:]], contents)
        r = self.export(cid, "json")
        objs = self.check_one_ndjson(r, cid)
        self.assertEqual([o["content"] for o in objs[1:]], contents)

    def test_single_truncated_utf8_sequence(self):
        # where one U+FFFD per bad byte and Python's replacement differ: only
        # check that the line is valid JSON and keeps the good text around it
        cid = self.track(self.add_conversation([b"abc\xe4\xbd", ("cast", b"\xe4\xbdxyz")]))
        r = self.export(cid, "json")
        self.check_one_headers(r, cid, "json")
        lines = self.utf8(r.body).split("\n")
        self.assertRegex(loads(lines[1])["content"], "^abc\ufffd+$")
        self.assertRegex(loads(lines[2])["content"], "^\ufffd+xyz$")

    def test_single_zero_messages(self):
        cid = self.track(self.add_conversation([]))
        r = self.export(cid, "json")
        self.check_one_headers(r, cid, "json")
        objs = self.check_one_ndjson(r, cid)
        self.assertEqual(len(objs), 1)
        self.assertEqual(objs[0]["message_count"], 0)
        r = self.export(cid, "csv")
        self.check_one_headers(r, cid, "csv")
        self.assertEqual(r.body, CSV_HEADER.encode())

    def test_single_bad_format_is_400(self):
        cid = self.track(self.add_conversation(["x", "y"]))
        for fmt in ("xml", "jsonl", "ndjson", "csv2", "xlsx"):
            with self.subTest(format=fmt):
                r = self.export(cid, fmt)
                self.assert_error(r, 400)
                self.assertIsNone(r.header("X-Export-File"))

    def test_single_unknown_expired_and_malformed_ids_are_404(self):
        old = utcnow() - datetime.timedelta(days=2)
        expired = self.track(self.add_conversation(["old", "older"], created=old - datetime.timedelta(hours=1),
                                                   last_active=old))
        for cid in (str(uuid.uuid4()), expired, "nope", "1 OR 1=1", "a" * 300, "你好", "../../etc/passwd",
                    expired[:-1], expired + "0"):
            for fmt in (None, "json", "csv"):
                with self.subTest(id=cid[:40], format=fmt):
                    r = self.export(cid, fmt)
                    self.assert_error(r, 404)
                    self.assertIsNone(r.header("X-Export-File"))

    def test_wrong_methods(self):
        cid = self.track(self.add_conversation(["m"]))
        self.assert_error(self.req("POST", "/api/conversations/%s/export" % cid, {}), 405)
        self.assert_error(self.req("POST", "/api/conversations/export-all", {}), 405)
        name = self.check_one_headers(self.export(cid, "csv"), cid, "csv")
        self.assert_error(self.req("POST", "/api/exports/" + name, {}), 405)
        self.assert_error(self.req("DELETE", "/api/exports/" + name), 405)
        self.assertEqual(self.get_file(name).status, 200)

    # -- export-all

    def test_export_all_json_and_csv(self):
        now = utcnow()
        ids = [self.track(self.add_conversation(["all %d, \"q\"" % i, "=answer %d" % i],
                                                created=now - datetime.timedelta(hours=5 - i)))
               for i in range(3)]
        empty = self.track(self.add_conversation([], created=now - datetime.timedelta(hours=2, minutes=30)))
        expired = self.track(self.add_conversation(["gone"], created=now - datetime.timedelta(days=3),
                                                   last_active=now - datetime.timedelta(days=2)))
        cid = self.chat("all via chat mock:tokens=2")["conversation_id"]
        self.track(cid)
        expected = self.expected_all()
        exp_ids = [e[0] for e in expected]
        for i in ids + [empty, cid]:
            self.assertIn(i, exp_ids)
        self.assertNotIn(expired, exp_ids)

        t0 = time.time()
        rj = self.export_all()
        rj2 = self.export_all("json")
        t1 = time.time()
        name = self.check_all_headers(rj, "json", t0, t1)
        name2 = self.check_all_headers(rj2, "json", t0, t1)
        objs = self.check_all_ndjson(rj, expected, t0, t1)
        self.check_all_ndjson(rj2, expected, t0, t1)
        self.assertEqual(objs[0]["total_conversations"], len(expected))
        by_id = {o["id"]: o for o in objs[1:]}
        self.assertEqual(by_id[empty]["messages"], [])
        self.assertEqual(by_id[empty]["message_count"], 0)
        self.assertEqual([m["content"] for m in by_id[ids[1]]["messages"]], ['all 1, "q"', "=answer 1"])
        self.assertNotEqual(name, name2)
        self.check_file_same(name, rj.body)
        self.check_file_same(name2, rj2.body)

        t0 = time.time()
        rc = self.export_all("csv")
        t1 = time.time()
        name = self.check_all_headers(rc, "csv", t0, t1)
        rows = self.check_all_csv(rc, expected)
        self.assertNotIn(empty, [r[0] for r in rows[1:]], "a conversation without messages has no rows")
        self.assertNotIn(expired, [r[0] for r in rows[1:]])
        self.assertIn("'=answer 2", [r[5] for r in rows[1:]])
        self.check_file_same(name, rc.body)

        r = self.req("GET", "/api/conversations/export-all/?format=csv")
        self.assertEqual(r.status, 200, "trailing slash")
        self.assertEqual(r.body, rc.body)

    def test_single_batch_boundaries(self):
        # messages are read 100 at a time by key: 99, 100, 101, 200 and 201 messages
        for n in (99, 100, 101, 200, 201):
            with self.subTest(messages=n):
                cid = self.track(self.add_conversation(["m%d" % i for i in range(n)]))
                r = self.export(cid, "json")
                self.check_one_headers(r, cid, "json")
                objs = self.check_one_ndjson(r, cid)
                self.assertEqual([o["content"] for o in objs[1:]], ["m%d" % i for i in range(n)])
                r = self.export(cid, "csv")
                self.check_one_headers(r, cid, "csv")
                self.check_one_csv(r, cid)

    def test_export_all_batch_boundaries_and_equal_created_at(self):
        # conversations are read 50 at a time by (created_at, id): 50 and 51 on a day,
        # and 120 that share one created_at (a key on created_at alone would lose some)
        def day(d, n, same=False):
            base = datetime.datetime.strptime(d, "%Y-%m-%d")
            return {self.track(self.add_conversation(
                ["%s #%d" % (d, i)] * (i % 3),
                created=base + datetime.timedelta(hours=1, microseconds=0 if same else i)))
                for i in range(n)}

        sets = {"2019-07-01": day("2019-07-01", 50), "2019-07-02": day("2019-07-02", 51),
                "2019-07-03": day("2019-07-03", 120, same=True)}
        for d, ids in sets.items():
            for q in ("start_date=%s&end_date=%s" % (d, d),):
                with self.subTest(day=d):
                    expected = [e for e in self.expected_all() if e[0] in ids]
                    self.assertEqual(len(expected), len(ids))
                    t0 = time.time()
                    rj = self.export_all(query="?" + q)
                    t1 = time.time()
                    self.check_all_headers(rj, "json", t0, t1)
                    objs = self.check_all_ndjson(rj, expected, t0, t1)
                    self.assertEqual(objs[0]["total_conversations"], len(ids))
                    rc = self.export_all(query="?format=csv&" + q)
                    self.check_all_headers(rc, "csv", t0, time.time())
                    self.check_all_csv(rc, expected)
        # all three days at once: 221 conversations
        every = set().union(*sets.values())
        expected = [e for e in self.expected_all() if e[0] in every]
        t0 = time.time()
        rj = self.export_all(query="?start_date=2019-07-01&end_date=2019-07-03")
        t1 = time.time()
        self.check_all_ndjson(rj, expected, t0, t1)

    def test_export_all_date_filters(self):
        def at(s):
            return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f")

        days = {
            "a": "2021-03-01T00:00:00.000000",
            "b": "2021-03-01T23:59:59.999999",
            "c": "2021-03-02T00:00:00.000000",
            "d": "2021-03-03T12:00:00.000000",
            "e": "2021-03-04T23:59:59.999999",
            "f": "2021-03-05T00:00:00.000000",
            "g": "2021-03-05T00:00:00.000001",
            "leap": "2024-02-29T10:00:00.000000",
        }
        ids = {k: self.track(self.add_conversation(["day " + k, "answer " + k], created=at(v)))
               for k, v in days.items()}
        gone = self.track(self.add_conversation(["expired in range"], created=at("2021-03-03T00:00:00.000000"),
                                                last_active=utcnow() - datetime.timedelta(days=2)))
        # (query, first day, last day, the conversations of this test it must hold)
        cases = [
            ("start_date=2021-03-02&end_date=2021-03-04", "2021-03-02", "2021-03-04", "cde"),
            ("start_date=2021-03-01&end_date=2021-03-01", "2021-03-01", "2021-03-01", "ab"),
            ("start_date=2021-03-05&end_date=2021-03-05", "2021-03-05", "2021-03-05", "fg"),
            ("start_date=2021-03-03&end_date=2021-03-03", "2021-03-03", "2021-03-03", "d"),
            ("end_date=2021-03-01", "0000", "2021-03-01", "ab"),
            ("start_date=2021-03-05&end_date=2021-12-31", "2021-03-05", "2021-12-31", "fg"),
            ("start_date=2024-02-29&end_date=2024-02-29", "2024-02-29", "2024-02-29", ["leap"]),
            ("start_date=2021-03-06&end_date=2024-02-28", "2021-03-06", "2024-02-28", ""),
            ("start_date=2020-01-01&end_date=2020-12-31", "2020-01-01", "2020-12-31", ""),
            # README: an empty date means no bound
            ("start_date=&end_date=2021-03-01", "0000", "2021-03-01", "ab"),
            ("start_date=2021-03-04&end_date=", "2021-03-04", "9999", "efg"),
            ("start_date=2021-03-04", "2021-03-04", "9999", "efg"),
        ]
        for q, first, last, keys in cases:
            with self.subTest(query=q):
                expected = [e for e in self.expected_all() if first <= e[1][:10] <= last]
                mine = [e[0] for e in expected if e[0] in ids.values()]
                self.assertEqual(mine, [ids[k] for k in keys] + ([ids["leap"]] if last == "9999" else []))
                t0 = time.time()
                rj = self.export_all(query="?format=json&" + q)
                t1 = time.time()
                self.check_all_headers(rj, "json", t0, t1)
                objs = self.check_all_ndjson(rj, expected, t0, t1)
                self.assertEqual(objs[0]["total_conversations"], len(expected))
                self.assertNotIn(gone, [o["id"] for o in objs[1:]])
                rc = self.export_all(query="?" + q + "&format=csv")
                self.check_all_headers(rc, "csv", t0, time.time())
                self.check_all_csv(rc, expected)

    def test_export_all_bad_parameters_are_400(self):
        for q in ("format=xml", "format=jsonl", "format=xml&start_date=2026-01-01"):
            with self.subTest(query=q):
                self.assert_error(self.export_all(query="?" + q), 400)
        bad = []
        for d in ("2026-13-01", "2026-02-30", "2025-02-29", "2026-00-10", "2026-01-00", "2026-01-32",
                  "20260101", "garbage", "2026-1-01", "2026-01-1", "26-01-01", "2026/01/01",
                  "2026-01-01T00:00:00", "2026-01-01x", " 2026-01-01", "-2026-01-01", "2026-01-01%00"):
            bad.append("start_date=" + d.replace(" ", "%20"))
            bad.append("end_date=" + d.replace(" ", "%20"))
        bad += ["start_date=2026-02-02&end_date=2026-02-01", "start_date=2026-01-01&end_date=2025-12-31"]
        for q in bad:
            for fmt in ("", "&format=csv"):
                with self.subTest(query=q + fmt):
                    r = self.export_all(query="?" + q + fmt)
                    self.assert_error(r, 400)
                    self.assertIsNone(r.header("X-Export-File"))
        # the edges that are fine
        for q in ("start_date=2026-02-01&end_date=2026-02-01", "start_date=2024-02-29", "end_date=9999-12-31",
                  "start_date=0001-01-01"):
            with self.subTest(query=q):
                self.assertEqual(self.export_all(query="?" + q).status, 200)

    # -- export files

    def test_export_file_etag_and_ranges(self):
        cid = self.track(self.add_conversation(TRICKY[:10]))
        r = self.export(cid, "csv")
        name = self.check_one_headers(r, cid, "csv")
        body = r.body
        size = len(body)
        self.assertGreater(size, 40)
        f = self.check_file_same(name, body)
        etag = f.header("ETag")
        # conditional GET
        r304 = self.get_file(name, {"If-None-Match": etag})
        self.assertEqual(r304.status, 304, r304)
        self.assertEqual(r304.body, b"")
        self.assert_cors(r304)
        self.assertEqual(self.get_file(name, {"If-None-Match": '"not-this-one"'}).status, 200)

        def ranged(spec, status, content_range, data):
            with self.subTest(range=spec):
                rr = self.get_file(name, {"Range": spec})
                self.assertEqual(rr.status, status, rr)
                self.assert_cors(rr)
                self.assertEqual(rr.header("Content-Range"), content_range, rr.headers)
                if data is not None:
                    self.assertEqual(rr.header("Content-Length"), str(len(data)), rr.headers)
                    self.assertEqual(rr.body, data)
                return rr

        ranged("bytes=0-9", 206, "bytes 0-9/%d" % size, body[:10])
        ranged("bytes=10-", 206, "bytes 10-%d/%d" % (size - 1, size), body[10:])
        ranged("bytes=-5", 206, "bytes %d-%d/%d" % (size - 5, size - 1, size), body[-5:])
        ranged("bytes=3-3", 206, "bytes 3-3/%d" % size, body[3:4])
        ranged("bytes=%d-" % (size - 1), 206, "bytes %d-%d/%d" % (size - 1, size - 1, size), body[-1:])
        ranged("bytes=5-%d" % (size + 1000), 206, "bytes 5-%d/%d" % (size - 1, size), body[5:])
        ranged("bytes=-%d" % (size + 1000), 206, "bytes 0-%d/%d" % (size - 1, size), body)
        ranged("bytes=%d-" % size, 416, "bytes */%d" % size, None)
        ranged("bytes=%d-%d" % (size + 5, size + 10), 416, "bytes */%d" % size, None)
        for spec in ("bytes=abc", "bytes=9-3", "bytes=", "bytes=-", "pages=0-9", "bytes=0x1-2"):
            with self.subTest(range=spec):
                rr = self.get_file(name, {"Range": spec})
                self.assertEqual(rr.status, 416, rr)
                self.assertEqual(rr.header("Content-Range"), "bytes */%d" % size, rr.headers)
        for spec in ("bytes=0-1,5-6", "bytes=0-0,-1"):
            with self.subTest(range=spec):
                rr = self.get_file(name, {"Range": spec})
                self.assertEqual(rr.status, 200, rr)
                self.assertIsNone(rr.header("Content-Range"))
                self.assertEqual(rr.header("Content-Length"), str(size))
                self.assertEqual(rr.body, body)
        # If-None-Match may list several tags (RFC 9110 13.1.2); one of them matching is a 304
        rr = self.get_file(name, {"If-None-Match": '"x", ' + etag})
        self.assertEqual(rr.status, 304, "If-None-Match: \"x\", %s -> %r" % (etag, rr))

    def test_export_file_names_outside_the_pattern_are_404(self):
        cid = self.track(self.add_conversation(["name test"]))
        r = self.export(cid, "json")
        name = self.check_one_headers(r, cid, "json")
        self.assertEqual(self.get_file(name).status, 200)
        stem, ext = name.rsplit(".", 1)
        names = [
            "../x", "..%2fchatd.db", "%2e%2e%2fchatd.db", "%2e%2e/chatd.db", "..%2F..%2Fetc%2Fpasswd",
            "chatd.db", "stderr.0", "x.csv", "x.jsonl", ".", "..", "%2e%2e",
            "conversation_%s_0123456789abcdef.csv" % uuid.uuid4(),
            "conversation_%s_0123456789abcdef.jsonl" % cid,
            "conversations_20260101000000_0123456789abcdef.csv",
            name + ".part", "." + name, name + ".tmp", name + "%00", name + "%00.part", stem + ".csv",
            stem + "." + ext.upper(), stem[:-1] + "." + ext, "exports%2f" + name, "..%2fexports%2f" + name,
            quote_path(os.path.join(self.export_dir, name)),
        ]
        for n in names:
            with self.subTest(name=n):
                rr = self.get_file(n)
                self.assert_error(rr, 404)
                self.assertNotIn(b"SQLite format 3", rr.body)
        # a trailing slash is tolerated, as on every path
        self.assertEqual(self.get_file(name + "/").status, 200)
        self.assert_error(self.req("GET", "/api/exports/"), 404)
        self.assert_error(self.req("GET", "/api/exports"), 404)
        self.assertEqual(self.get_file(name).status, 200)

    # -- last: the server and the data

    def test_zz_server_up_and_data_intact(self):
        self.assert_json(self.req("GET", "/health"), 200)
        self.assertGreater(len(self.tracked), 10)
        for cid, before in self.tracked.items():
            self.assertEqual(self.stored(cid), before, "conversation %s changed (exports must not write)" % cid)
        # nothing but finished exports in the directory
        left = list_dir(self.export_dir)
        self.assertTrue(left)
        for n in left:
            self.assertRegex(n, ANY_NAME_RE, "a file that is not a finished export")
        self.assertIsNone(self.chatd.proc.poll())


# --------------------------------------------------------------------------


class ExportFileExpiryTests(ExportMixin, ChatdCase):
    """--export-ttl 2 --sweep-interval 1: export files go after 2 s."""

    chatd_args = ("--export-ttl", "2", "--sweep-interval", "1")

    def test_export_file_expires(self):
        cid = self.add_conversation(["expiring export", "soon gone"])
        r1 = self.export(cid, "json")
        n1 = self.check_one_headers(r1, cid, "json")
        t0 = time.time()
        r2 = self.export_all("csv")
        n2 = self.check_all_headers(r2, "csv", t0, time.time())
        done = time.monotonic()
        self.check_file_same(n1, r1.body)
        self.check_file_same(n2, r2.body)
        self.assertEqual(list_dir(self.export_dir), {n1, n2})
        time.sleep(max(0.0, 0.8 - (time.monotonic() - done)))
        if time.monotonic() - done < 1.5:
            self.assertEqual(self.get_file(n1).status, 200, "gone before its TTL")
        gone = wait_for(lambda: self.get_file(n1).status == 404 and self.get_file(n2).status == 404,
                        2 + 1 + t(4), 0.1)
        self.assertTrue(gone, "export files still served %.1f s after the export (TTL 2 s)"
                        % (time.monotonic() - done))
        self.assertGreaterEqual(time.monotonic() - done, 1.0)
        self.assert_error(self.get_file(n1), 404)
        self.assert_error(self.get_file(n2, {"Range": "bytes=0-1"}), 404)
        self.assertTrue(wait_for(lambda: not list_dir(self.export_dir), t(3)),
                        "expired files still in the directory: %r" % list_dir(self.export_dir))
        # the conversation itself is untouched, and a new export works
        r3 = self.export(cid, "json")
        n3 = self.check_one_headers(r3, cid, "json")
        self.assertEqual(r3.body, r1.body)
        self.check_file_same(n3, r3.body)


class AdminTokenTests(ExportMixin, ChatdCase):
    """--admin-token s3cret: export-all and its files need the token."""

    chatd_args = ("--admin-token", "s3cret")
    TOKEN = "s3cret"
    WRONG = "wr0ngT0ken"

    def test_export_all_needs_the_token(self):
        cid = self.add_conversation(["admin", "only"])
        for hdrs in (None, {"Authorization": "Bearer " + self.WRONG}, {"Authorization": "Bearer"},
                     {"Authorization": "Bearer "}, {"Authorization": self.TOKEN},
                     {"Authorization": "Basic " + self.TOKEN}, {"Authorization": "Bearer " + self.TOKEN + "x"},
                     {"Authorization": "Bearer " + self.TOKEN[:-1]}, {"X-Admin-Token": self.TOKEN}):
            for fmt in ("json", "csv"):
                with self.subTest(headers=hdrs, format=fmt):
                    r = self.export_all(fmt, hdrs)
                    self.assert_error(r, 401)
                    self.assertIsNone(r.header("X-Export-File"))
                    self.assertNotIn(cid.encode(), r.body)
        good = {"Authorization": "Bearer " + self.TOKEN}
        for fmt in ("json", "csv"):
            t0 = time.time()
            r = self.export_all(fmt, good)
            name = self.check_all_headers(r, fmt, t0, time.time())
            expected = self.expected_all()
            if fmt == "json":
                self.check_all_ndjson(r, expected, t0, time.time())
            else:
                self.check_all_csv(r, expected)
            # the file of an export-all needs the token as well
            self.assert_error(self.get_file(name), 401)
            self.assert_error(self.get_file(name, {"Authorization": "Bearer " + self.WRONG}), 401)
            self.assert_error(self.get_file(name, {"Range": "bytes=0-3"}), 401)
            self.check_file_same(name, r.body, good)
            rr = self.get_file(name, dict(good, Range="bytes=0-3"))
            self.assertEqual((rr.status, rr.body), (206, r.body[:4]))

    def test_single_export_needs_no_token(self):
        cid = self.add_conversation(["public", "export"])
        for fmt in ("json", "csv"):
            r = self.export(cid, fmt)
            name = self.check_one_headers(r, cid, fmt)
            self.check_file_same(name, r.body)
            self.check_file_same(name, r.body, {"Authorization": "Bearer " + self.WRONG})

    def test_zz_token_never_logged(self):
        self.export_all("json", {"Authorization": "Bearer " + self.TOKEN})
        self.export_all("json", {"Authorization": "Bearer " + self.WRONG})
        time.sleep(0.2)
        err = self.chatd.stderr_bytes()
        self.assertNotIn(self.TOKEN.encode(), err, "the admin token is in chatd's stderr")
        self.assertNotIn(self.WRONG.encode(), err, "a presented token is in chatd's stderr")


# --------------------------------------------------------------------------
# failures mid-export


def filler(i):
    return "message %06d " % i + "x" * 80 + " 中文,\"q\""


class AbortExportTests(ExportMixin, ChatdCase):
    """A client that goes away mid-export: the export stops, nothing is left behind."""

    N = 200000

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.big = big_conversation(cls.db_path, cls.N, utcnow() - datetime.timedelta(hours=1), filler)

    def abort_after(self, fmt, nbytes):
        before = list_dir(self.export_dir) if os.path.isdir(self.export_dir) else set()
        conn = RawConn(self.port, t(30), rcvbuf=16384)
        try:
            conn.send(build_request("GET", "/api/conversations/%s/export?format=%s" % (self.big, fmt)))
            head = conn.read_head()
            self.assertEqual(head.status, 200)
            name = head.header("X-Export-File")
            self.assertRegex(name or "", ONE_NAME_RE)
            got = 0
            for piece in conn.body_pieces(head):
                got += len(piece)
                if got >= nbytes:
                    break
            self.assertGreaterEqual(got, nbytes)
            # mid-export: the final name is not served yet, nor is any partial file
            self.assert_error(self.get_file(name), 404)
            for n in list_dir(self.export_dir) - before:
                with self.subTest(partial=n):
                    self.assert_error(self.get_file(quote_path(n)), 404)
        finally:
            conn.close()
        self.assert_no_leftovers(before)
        self.assert_error(self.get_file(name), 404)
        self.assert_json(self.req("GET", "/health"), 200)
        return name

    def test_abort_json(self):
        self.abort_after("json", 100000)

    def test_abort_csv_right_after_headers(self):
        self.abort_after("csv", 1)

    def test_many_aborts_then_a_full_export(self):
        for i in range(5):
            self.abort_after("json" if i % 2 else "csv", 1000 * (i + 1))
        # the whole conversation still exports, completely
        conn = RawConn(self.port, t(120))
        try:
            conn.send(build_request("GET", "/api/conversations/%s/export?format=json" % self.big))
            head = conn.read_head()
            self.assertEqual(head.status, 200)
            body, complete = read_body(conn, head)
        finally:
            conn.close()
        self.assertTrue(complete, "a complete export ends with the zero-size chunk")
        lines = body.decode("utf-8").split("\n")
        self.assertEqual(lines[-1], "")
        self.assertEqual(len(lines) - 2, self.N)
        self.assertEqual(loads(lines[0])["message_count"], self.N)
        for i in (0, 1, self.N // 2, self.N - 1):
            self.assertEqual(loads(lines[i + 1])["content"], filler(i))
        name = head.header("X-Export-File")
        rr = self.get_file(name, {"Range": "bytes=-100"})
        self.assertEqual(rr.status, 206)
        self.assertEqual(rr.header("Content-Range"), "bytes %d-%d/%d" % (len(body) - 100, len(body) - 1, len(body)))
        self.assertEqual(rr.body, body[-100:])


class DatabaseGoneMidExportTests(ExportMixin, ChatdCase):
    """The SQLite file deleted while a large export streams: the response is cut
    off without the final chunk, and no export file is left."""

    N = 120000

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.big = big_conversation(cls.db_path, cls.N, utcnow() - datetime.timedelta(hours=1), filler)

    def path(self):
        return "/api/conversations/%s/export?format=json" % self.big

    def check_first_line(self, line):
        self.assertEqual(loads(line)["message_count"], self.N)

    def test_database_deleted_mid_export(self):
        full_size_min = self.N * 100
        conn = RawConn(self.port, t(30), rcvbuf=16384)
        try:
            conn.send(build_request("GET", self.path()))
            head = conn.read_head()
            self.assertEqual(head.status, 200)
            self.assertIn("chunked", (head.header("Transfer-Encoding") or "").lower(), head.headers)
            name = head.header("X-Export-File")
            self.assertRegex(name or "", ANY_NAME_RE)
            got = []
            pieces = conn.body_pieces(head)
            for piece in pieces:
                got.append(piece)
                if sum(map(len, got)) >= 200000:
                    break
            remove_db_files(self.db_path)
            time.sleep(0.1)
            complete = True
            try:
                for piece in pieces:
                    got.append(piece)
            except EOFError:
                complete = False
            except socket.timeout:
                self.fail("the export stalled after the database went away (no data, no close within %ss)"
                          % t(30))
        finally:
            conn.close()
        body = b"".join(got)
        self.assertFalse(complete, "the response ended with the terminating zero-size chunk after %d bytes "
                                   "although the database was gone" % len(body))
        self.assertLess(len(body), full_size_min, "the whole export was sent")
        self.check_first_line(body.split(b"\n", 1)[0])
        self.assert_no_leftovers()
        self.assert_error(self.get_file(name), 404)
        self.assertIsNone(self.chatd.proc.poll(), "chatd died")
        r = self.req("GET", "/health")
        self.assertEqual(r.status, 503, r)


class DatabaseGoneMidExportAllTests(DatabaseGoneMidExportTests):
    """The same for export-all: 4,000 conversations x 30 messages."""

    CONVS = 4000
    N = CONVS * 30

    @classmethod
    def setUpClass(cls):
        super(DatabaseGoneMidExportTests, cls).setUpClass()  # not the big conversation
        base = utcnow() - datetime.timedelta(days=1)
        now = iso(utcnow())
        con = db_connect_rw(cls.db_path)
        try:
            with con:
                ids = [str(uuid.uuid4()) for _ in range(cls.CONVS)]
                con.executemany("INSERT INTO conversations(id, created_at, last_active) VALUES (?, ?, ?)",
                                [(cid, iso(base + datetime.timedelta(seconds=i)), now)
                                 for i, cid in enumerate(ids)])
                con.executemany("INSERT INTO messages(conversation_id, role, content, timestamp)"
                                " VALUES (?, ?, ?, ?)",
                                ((cid, "user", filler(j), now) for cid in ids for j in range(30)))
        finally:
            con.close()

    def path(self):
        return "/api/conversations/export-all?format=csv"

    def check_first_line(self, line):
        self.assertEqual(line, CSV_ALL_HEADER[:-1].encode())


def _limit_file_size():
    # a full disk, simulated: files chatd writes cannot grow past 2 MB. SIGXFSZ
    # is left at its default (subprocess restores it): chatd itself must not
    # die of it, and its write() then fails with EFBIG as with ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024, 2 * 1024 * 1024))


class DiskFullTests(ExportMixin, ChatdCase):
    """RLIMIT_FSIZE 2 MB: an export whose file would pass it fails as a whole."""

    chatd_preexec_fn = staticmethod(_limit_file_size)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # 500 messages of 1000 control characters: 0.5 MB in the database,
        # 3 MB as NDJSON (each becomes \\u0001), 0.5 MB as CSV
        cls.big = big_conversation(cls.db_path, 500, utcnow() - datetime.timedelta(hours=1),
                                   lambda i: "%d:" % i + "\x01" * 1000)
        con = db_connect_rw(cls.db_path)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()

    def test_export_larger_than_the_disk_fails_cleanly(self):
        self.assertLess(os.path.getsize(self.db_path), 1024 * 1024, "the database must stay under the limit")
        conn = RawConn(self.port, t(30))
        try:
            conn.send(build_request("GET", "/api/conversations/%s/export?format=json" % self.big))
            head = conn.read_head()
            self.assertEqual(head.status, 200)
            name = head.header("X-Export-File")
            try:
                body, complete = read_body(conn, head)
            except socket.timeout:
                self.fail("the export stalled when its file could not be written")
        finally:
            conn.close()
        self.assertFalse(complete, "the export ended cleanly (%d bytes) although its file could not be written"
                         % len(body))
        self.assertLess(len(body), 500 * 6000)
        self.assert_no_leftovers()
        self.assert_error(self.get_file(name), 404)
        self.assertIsNone(self.chatd.proc.poll(), "chatd died")
        self.assert_json(self.req("GET", "/health"), 200)
        # smaller exports work: the same conversation as CSV (0.5 MB), a small one as JSON
        r = self.export(self.big, "csv")
        n = self.check_one_headers(r, self.big, "csv")
        self.check_one_csv(r, self.big)
        self.check_file_same(n, r.body)
        small = self.add_conversation(["small", "export"])
        r = self.export(small, "json")
        n2 = self.check_one_headers(r, small, "json")
        self.check_one_ndjson(r, small)
        self.check_file_same(n2, r.body)
        self.assertEqual(list_dir(self.export_dir), {n, n2})
        self.assertEqual(self.chat("still chatting mock:tokens=1")["response"], "w1")


# --------------------------------------------------------------------------


class LargeExportAllTests(ExportMixin, ChatdCase):
    """export-all of 2,000 conversations x 30 messages, both formats, complete."""

    CONVS = 2000
    MSGS = 30

    @staticmethod
    def content(i, j):
        if j % 7 == 3:
            return '-conv %d, msg %d: "quoted", 中文\r\nnext line' % (i, j)
        return "conv %d msg %d " % (i, j) + "y" * (j * 3)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        base = datetime.datetime(2025, 6, 1, 0, 0, 0)
        now = iso(utcnow())
        cls.ids = []
        con = db_connect_rw(cls.db_path)
        try:
            with con:
                convs, msgs = [], []
                for i in range(cls.CONVS):
                    cid = str(uuid.uuid4())
                    cls.ids.append(cid)
                    created = base + datetime.timedelta(minutes=i)
                    convs.append((cid, iso(created), now))
                    for j in range(cls.MSGS):
                        msgs.append((cid, "user" if j % 2 == 0 else "assistant", cls.content(i, j),
                                     iso(created + datetime.timedelta(seconds=j))))
                # inserted in a shuffled order, so that rowid order is not created_at order
                order = list(range(cls.CONVS))
                order = order[1::2] + order[0::2]
                con.executemany("INSERT INTO conversations(id, created_at, last_active) VALUES (?, ?, ?)",
                                [convs[k] for k in order])
                con.executemany("INSERT INTO messages(conversation_id, role, content, timestamp)"
                                " VALUES (?, ?, ?, ?)", msgs)
        finally:
            con.close()

    def test_export_all_large_json(self):
        t0 = time.time()
        r = self.export_all("json")
        t1 = time.time()
        name = self.check_all_headers(r, "json", t0, t1)
        objs = self.ndjson(r.body)
        head = objs[0]
        self.assertEqual(list(head.keys()), ["export_time", "total_conversations"])
        self.assertEqual(head["total_conversations"], self.CONVS)
        self.assertEqual(len(objs), self.CONVS + 1)
        for i, obj in enumerate(objs[1:]):
            self.assertEqual(obj["id"], self.ids[i], "conversation %d: oldest first" % i)
            self.assertEqual(obj["message_count"], self.MSGS)
            self.assertEqual([m["content"] for m in obj["messages"]],
                             [self.content(i, j) for j in range(self.MSGS)])
        self.check_file_same(name, r.body)

    def test_export_all_large_csv(self):
        t0 = time.time()
        r = self.export_all("csv")
        name = self.check_all_headers(r, "csv", t0, time.time())
        rows = parse_csv(self.utf8(r.body))
        self.assertEqual(rows[0], CSV_ALL_HEADER[:-2].split(","))
        self.assertEqual(len(rows) - 1, self.CONVS * self.MSGS)
        k = 1
        for i in range(self.CONVS):
            for j in range(self.MSGS):
                row = rows[k]
                k += 1
                if row[0] != self.ids[i] or row[4] != ("user" if j % 2 == 0 else "assistant") \
                        or row[5] != csv_guard(self.content(i, j)):
                    self.fail("row %d: %r, expected conversation %d message %d" % (k - 1, row, i, j))
        self.check_file_same(name, r.body)


if __name__ == "__main__":
    unittest.main()
