"""mysql_takeover.py - chatd taking over the original service's MySQL database.

Run by CTest inside tests/db/with-mariadb.sh, which provides a throwaway
MariaDB server (CHATD_TEST_MYSQL_URL, _SOCKET, _CTL); without it the
script exits 77 (skipped). Not named test_*.py: that glob runs without a
database.

TakeoverTest creates the Flask service's schema exactly as SQLAlchemy did
on MySQL 5.7 (DATETIME without fraction, content TEXT, NULL last_active
allowed), fills it the way that service did (naive UTC times, Chinese
text, NULL last_active), starts two chatd instances on it at once (both
add the indexes; both sweep every second) and checks every endpoint:
history, chat continuing an old conversation (the old rows reach the
upstream), exports one/all in CSV and JSON, delete, the sweep of old
expired conversations, /health counts, the TEXT limit. At the end the
mariadb client checks that no old row chatd was not asked to change was
rewritten, and that the only schema change is the two documented indexes.

ReconnectTest stops the server under a running chatd (/health and chat
answer 503), starts it again on the same port and data directory, and
checks that chatd serves again by itself.
"""

import csv
import datetime
import io
import json
import os
import re
import subprocess
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Chatd, ChatdCase, Mock, TS_RE, demo_answer, request, t,  # noqa: E402
                     wait_for)

URL = os.environ.get("CHATD_TEST_MYSQL_URL")
SOCKET = os.environ.get("CHATD_TEST_MYSQL_SOCKET")
CTL = os.environ.get("CHATD_TEST_MYSQL_CTL")
TTL = 30 * 86400
ADDED_INDEXES = {"idx_messages_conversation_id", "idx_conversations_last_active"}

OLD_SCHEMA = """
DROP TABLE IF EXISTS messages;
DROP TABLE IF EXISTS conversations;
CREATE TABLE conversations (
  id VARCHAR(36) NOT NULL,
  last_active DATETIME NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  INDEX ix_conversations_created_at (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE messages (
  id INT NOT NULL AUTO_INCREMENT,
  conversation_id VARCHAR(36) NOT NULL,
  role VARCHAR(20) NOT NULL,
  content TEXT NOT NULL,
  timestamp DATETIME NULL,
  PRIMARY KEY (id),
  INDEX idx_conv_time (conversation_id, timestamp),
  FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
"""


def db_name():
    return urllib.parse.unquote(urllib.parse.urlsplit(URL).path.lstrip("/"))


def password():
    return urllib.parse.unquote(urllib.parse.urlsplit(URL).password or "")


def url_without_password():
    u = urllib.parse.urlsplit(URL)
    return "mysql://%s@%s:%d/%s" % (u.username, u.hostname, u.port, db_name())


def sql(query):
    """Runs SQL as root through the socket; returns rows of str fields (tab-separated output)."""
    p = subprocess.run(["mariadb", "--no-defaults", "-uroot", "--socket=" + SOCKET, "--batch",
                        "--raw", "--skip-column-names", "--default-character-set=utf8mb4",
                        db_name()],
                       input=query.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=t(60))
    if p.returncode != 0:
        raise RuntimeError("mariadb failed: %s\n%s" % (p.stderr.decode("utf-8", "replace"), query))
    return [line.split("\t") for line in p.stdout.decode("utf-8").splitlines()]


def lit(s):
    """A SQL literal for any text, byte-exact (hex, so nothing needs escaping)."""
    if s is None:
        return "NULL"
    if isinstance(s, datetime.datetime):
        return "'%s'" % s.strftime("%Y-%m-%d %H:%M:%S")
    return "CONVERT(X'%s' USING utf8mb4)" % s.encode("utf-8").hex()


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000000")


def dump_conversation(cid):
    """The stored rows of one conversation, byte-exact (contents as hex)."""
    conv = sql("SELECT id, IFNULL(last_active, 'NULL'), created_at FROM conversations"
               " WHERE id = '%s'" % cid)
    msgs = sql("SELECT id, conversation_id, role, HEX(content), IFNULL(timestamp, 'NULL')"
               " FROM messages WHERE conversation_id = '%s' ORDER BY id" % cid)
    return conv, msgs


def schema():
    """Columns and indexes of both tables, as the server describes them."""
    cols = sql("SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, IFNULL(COLUMN_DEFAULT, ''),"
               " CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS"
               " WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION")
    idx = sql("SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME FROM"
              " information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()"
              " ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX")
    fks = sql("SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME, DELETE_RULE FROM"
              " information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()")
    return cols, idx, fks


def mk_id(n):
    return "%08x-0000-4000-8000-%012x" % (0x01d00000 + n, n)


class Conv:
    def __init__(self, cid, created, last_active, messages):
        self.id = cid
        self.created = created
        self.last_active = last_active  # None: NULL, as the old service could leave it
        self.messages = messages  # [(role, content, timestamp or None)]


def old_rows(now):
    day, hour, minute = datetime.timedelta(days=1), datetime.timedelta(hours=1), \
        datetime.timedelta(minutes=1)
    texts = ["你好，请介绍一下你自己。", "我是一个AI助手，很高兴为您服务！",
             "Quotes \"double\" and 'single', commas, and\nnew lines\r\nin one message",
             "表情 🙂🚀 and 4-byte characters 𠜎", "第五条消息", "第六条：长一点的回答。" * 20,
             "tab\tseparated\tvalues", "最后一个问题？", "好的，明白了。", "第十条，最新的一条。"]
    a_created = now - 2 * day
    convs = {
        # live, 10 messages (more than CHATD_HISTORY = 9)
        "A": Conv(mk_id(1), a_created, now - hour,
                  [("user" if i % 2 == 0 else "assistant", texts[i], a_created + i * minute)
                   for i in range(10)]),
        # last_active NULL, created long ago, newest message 2 h ago: live by its messages
        "B": Conv(mk_id(2), now - 40 * day, None,
                  [("user", "旧的会话：问题", now - 40 * day),
                   ("assistant", "旧的会话：回答", now - 2 * hour)]),
        # last_active NULL, no messages: its created_at counts
        "C": Conv(mk_id(3), now - day, None, []),
        # expired by last_active: swept
        "D": Conv(mk_id(4), now - 45 * day, now - 40 * day,
                  [("user", "过期的问题", now - 45 * day), ("assistant", "过期的回答", now - 40 * day)]),
        # last_active NULL and every message old: expired, swept
        "F": Conv(mk_id(6), now - 40 * day, None,
                  [("user", "很久以前", now - 36 * day), ("assistant", "也很久", now - 35 * day)]),
        # live, deleted through the API
        "G": Conv(mk_id(7), now - 3 * hour, now - 3 * hour,
                  [("user", "删除我", now - 3 * hour), ("assistant", "好的", now - 3 * hour)]),
        # a message whose timestamp is NULL: reads as the conversation's created_at
        "H": Conv(mk_id(8), now - 5 * hour, now - 4 * hour,
                  [("user", "没有时间戳", None), ("assistant", "有时间戳", now - 4 * hour)]),
    }
    return convs


def insert_sql(convs):
    out = []
    for c in convs.values():
        out.append("INSERT INTO conversations (id, last_active, created_at) VALUES ('%s', %s, %s);"
                   % (c.id, lit(c.last_active), lit(c.created)))
    for c in convs.values():
        for role, content, ts in c.messages:
            out.append("INSERT INTO messages (conversation_id, role, content, timestamp)"
                       " VALUES ('%s', '%s', %s, %s);" % (c.id, role, lit(content), lit(ts)))
    return "\n".join(out)


def requires_mariadb():
    if not (URL and SOCKET and CTL):
        print("skipped: run inside tests/db/with-mariadb.sh (CHATD_TEST_MYSQL_URL is not set)")
        sys.exit(77)


class TakeoverTest(ChatdCase):
    chatd_args = ("--session-ttl", str(TTL), "--sweep-interval", "1")

    @classmethod
    def setUpClass(cls):
        requires_mariadb()
        sql(OLD_SCHEMA)
        cls.now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)
        cls.convs = old_rows(cls.now)
        sql(insert_sql(cls.convs))
        cls.schema_before = schema()
        cls.before = {k: dump_conversation(c.id) for k, c in cls.convs.items()}
        cls.mock = Mock(delay_ms=1)
        cls.others = []
        try:
            # Two instances start at once on the old schema (both add the
            # indexes), the password from CHATD_DB_PASSWORD, not the URL.
            env = {"CHATD_DB_PASSWORD": password()}
            db = url_without_password()
            cls.chatd = Chatd(cls.mock.url, cls.chatd_args, env=env, db=db, wait=False)
            cls.others.append(Chatd(cls.mock.url, cls.chatd_args, env=env, db=db, wait=False))
            cls.chatd.wait_listening()
            for o in cls.others:
                o.wait_listening()
        except BaseException:
            for o in cls.others:
                o.cleanup()
            cls.mock.stop()
            raise
        cls.port = cls.chatd.port

    @classmethod
    def tearDownClass(cls):
        try:
            for o in cls.others:
                rc = o.stop()
                err = o.stderr_text()
                o.cleanup()
                if rc != 0:
                    raise AssertionError("second chatd exited %r:\n%s" % (rc, err[-4000:]))
        finally:
            super().tearDownClass()

    def expected_history(self, c):
        out = []
        for role, content, ts in c.messages:
            out.append({"role": role, "content": content, "timestamp": iso(ts or c.created)})
        return out

    def last_active(self, c):
        if c.last_active is not None:
            return c.last_active
        times = [ts for _, _, ts in c.messages if ts is not None]
        return max(times) if times else c.created

    # -- 1: reading

    def test_1_history_of_old_conversations(self):
        for key in "ABCH":
            c = self.convs[key]
            h = self.history(c.id)
            self.assertEqual(h["history"], self.expected_history(c), key)
            self.assertEqual(h["created_at"], iso(c.created), key)
            self.assertEqual(h["last_active"], iso(self.last_active(c)), key)
        # NULL last_active: the newest message (B), else created_at (C)
        self.assertEqual(self.history(self.convs["B"].id)["last_active"],
                         iso(self.now - datetime.timedelta(hours=2)))
        self.assertEqual(self.history(self.convs["C"].id)["last_active"],
                         iso(self.convs["C"].created))
        # an upper-case id names the same conversation (the API lowercases)
        self.history(self.convs["A"].id.upper())

    def test_2_sweep_deletes_old_expired_conversations(self):
        def gone():
            return all(not sql("SELECT 1 FROM conversations WHERE id = '%s'" % self.convs[k].id)
                       for k in "DF")
        self.assertTrue(wait_for(gone, t(30)), "the sweep did not delete D and F")
        for k in "DF":
            self.assertEqual(sql("SELECT COUNT(*) FROM messages WHERE conversation_id = '%s'"
                                 % self.convs[k].id), [["0"]])
            r = self.req("GET", "/api/conversations/" + self.convs[k].id)
            self.assertEqual(r.status, 404)
        # everything else is still there
        for k in "ABCGH":
            self.assertTrue(sql("SELECT 1 FROM conversations WHERE id = '%s'" % self.convs[k].id))

    def test_3_exports_hold_the_old_rows(self):
        for key in "ABH":
            c = self.convs[key]
            exp = self.expected_history(c)
            r = self.req("GET", "/api/conversations/%s/export?format=json" % c.id)
            self.assertEqual(r.status, 200, r)
            lines = r.body.decode("utf-8").splitlines()
            head = json.loads(lines[0])
            self.assertEqual(head, {"conversation_id": c.id, "created_at": iso(c.created),
                                    "last_active": iso(self.last_active(c)),
                                    "message_count": len(c.messages)})
            got = [json.loads(line) for line in lines[1:]]
            self.assertEqual(got, [{"timestamp": m["timestamp"], "role": m["role"],
                                    "content": m["content"]} for m in exp])
            r = self.req("GET", "/api/conversations/%s/export?format=csv" % c.id)
            self.assertEqual(r.status, 200, r)
            rows = list(csv.reader(io.StringIO(r.body.decode("utf-8"), newline="")))
            self.assertEqual(rows[0], ["Timestamp", "Role", "Content"])
            self.assertEqual(rows[1:], [[m["timestamp"], m["role"], m["content"]] for m in exp])
            # byte-exact: each stored content's UTF-8 bytes are in the CSV file
            for m in exp:
                if '"' not in m["content"]:
                    self.assertIn(m["content"].encode("utf-8"), r.body)

    def test_4_export_all(self):
        live = [self.convs[k] for k in "ABCGH"]
        self.assertTrue(wait_for(lambda: not sql(
            "SELECT 1 FROM conversations WHERE id IN ('%s', '%s')"
            % (self.convs["D"].id, self.convs["F"].id)), t(30)))
        r = self.req("GET", "/api/conversations/export-all?format=json", timeout=t(60))
        self.assertEqual(r.status, 200, r)
        lines = r.body.decode("utf-8").splitlines()
        head = json.loads(lines[0])
        got = {o["id"]: o for o in map(json.loads, lines[1:])}
        # G may already be deleted by test_5 when tests run out of order; not here
        self.assertEqual(head["total_conversations"], len(got))
        for c in live:
            if c.id not in got:
                continue
            o = got[c.id]
            self.assertEqual(o["created_at"], iso(c.created))
            self.assertEqual(o["last_active"], iso(self.last_active(c)))
            self.assertEqual(o["message_count"], len(c.messages))
            self.assertEqual(o["messages"], [{"timestamp": m["timestamp"], "role": m["role"],
                                              "content": m["content"]}
                                             for m in self.expected_history(c)])
        self.assertEqual(set(got), {c.id for c in live})
        r = self.req("GET", "/api/conversations/export-all?format=csv", timeout=t(60))
        self.assertEqual(r.status, 200, r)
        rows = list(csv.reader(io.StringIO(r.body.decode("utf-8"), newline="")))
        self.assertEqual(rows[0], ["conversation_id", "created_at", "last_active", "timestamp",
                                   "role", "content"])
        want = []
        for c in sorted(live, key=lambda c: (c.created, c.id)):
            for m in self.expected_history(c):
                want.append([c.id, iso(c.created), iso(self.last_active(c)), m["timestamp"],
                             m["role"], m["content"]])
        self.assertEqual(sorted(rows[1:]), sorted(want))

    def test_5_health_counts_are_the_databases(self):
        self.assertTrue(wait_for(lambda: not sql(
            "SELECT 1 FROM conversations WHERE id IN ('%s', '%s')"
            % (self.convs["D"].id, self.convs["F"].id)), t(30)))
        _, sessions = self.health_counts()
        self.assertEqual(sessions, 5)  # A B C G H
        # the other instance sees the same database
        r = request(self.others[0].port, "GET", "/health")
        self.assertEqual(r.status, 200)
        self.assertIn("当前活动会话数量 5 条记录", r.body.decode("utf-8"))

    # -- 2: writing

    def test_6_chat_continues_an_old_conversation(self):
        a = self.convs["A"]
        obj = self.chat("继续我们的对话", a.id)
        self.assertEqual(obj["conversation_id"], a.id)
        self.assertEqual(obj["response"], demo_answer("继续我们的对话"))
        sent = self.mock.last_request()["body"]["messages"]
        want = [{"role": r, "content": c} for r, c, _ in a.messages[-9:]]
        want.append({"role": "user", "content": "继续我们的对话"})
        self.assertEqual(sent, want)
        h = self.history(a.id)
        self.assertEqual(h["history"][:10], self.expected_history(a))
        self.assertEqual([(m["role"], m["content"]) for m in h["history"][10:]],
                         [("user", "继续我们的对话"), ("assistant", demo_answer("继续我们的对话"))])
        self.assertEqual(h["created_at"], iso(a.created))
        for m in h["history"][10:]:
            self.assertRegex(m["timestamp"], TS_RE)
        # second precision: the new times are whole seconds, near now
        self.assertTrue(h["last_active"].endswith(".000000"), h["last_active"])
        # the old rows of A are untouched; only last_active moved
        conv, msgs = dump_conversation(a.id)
        bconv, bmsgs = self.before["A"]
        self.assertEqual(msgs[:10], bmsgs)
        self.assertEqual(len(msgs), 12)
        self.assertEqual(conv[0][2], bconv[0][2])  # created_at
        self.assertNotEqual(conv[0][1], bconv[0][1])  # last_active moved

    def test_7_text_column_limit_refuses_without_truncating(self):
        a = self.convs["A"]
        n_before = len(dump_conversation(a.id)[1])
        r = self.req("POST", "/api/chat", {"message": "x" * 65536, "conversation_id": a.id})
        self.assertEqual(r.status, 413, r)
        self.assertEqual(len(dump_conversation(a.id)[1]), n_before)
        self.assertIn("does not fit messages.content", self.chatd.stderr_text())

    def test_8_delete_an_old_conversation(self):
        g = self.convs["G"]
        r = self.req("DELETE", "/api/conversations/" + g.id)
        self.assert_json(r, 200, {"status": "成功", "message": "会话历史已清除"})
        self.assertEqual(dump_conversation(g.id), ([], []))
        r = self.req("DELETE", "/api/conversations/" + g.id)
        self.assertEqual(r.status, 404)

    # -- 3: what chatd left alone

    def test_9_nothing_else_changed(self):
        for key in "BCH":
            self.assertEqual(dump_conversation(self.convs[key].id), self.before[key], key)
        cols, idx, fks = schema()
        bcols, bidx, bfks = self.schema_before
        self.assertEqual(cols, bcols, "column definitions changed")
        self.assertEqual(fks, bfks, "foreign keys changed")
        added = [r for r in idx if r not in bidx]
        self.assertEqual({r[1] for r in added}, ADDED_INDEXES)
        self.assertEqual([r for r in bidx if r not in idx], [], "an index was dropped")
        self.assertIn(["messages", "idx_messages_conversation_id", "1", "conversation_id"], added)
        self.assertIn(["messages", "idx_messages_conversation_id", "2", "id"], added)
        self.assertIn(["conversations", "idx_conversations_last_active", "1", "last_active"],
                      added)
        for ch in [self.chatd] + self.others:
            self.assertNotIn(password(), ch.stderr_text())
            with open(ch.stdout_path, encoding="utf-8", errors="replace") as f:
                self.assertNotIn(password(), f.read())


class ReconnectTest(ChatdCase):
    chatd_args = ("--session-ttl", str(TTL))
    chatd_db = URL
    mock_delay_ms = 1

    @classmethod
    def setUpClass(cls):
        requires_mariadb()
        super().setUpClass()

    def tearDown(self):
        subprocess.run([CTL, "start"], timeout=t(120))  # idempotent when it already runs

    def test_restart(self):
        first = self.chat("重启之前")
        cid = first["conversation_id"]
        self.health()
        subprocess.run([CTL, "stop"], check=True, timeout=t(60))
        try:
            obj = self.health(503)
            self.assertEqual(obj["status"], "服务异常")
            self.assertTrue(obj["system"]["database"].startswith("数据库连接失败: "), obj)
            self.assertNotIn(password(), json.dumps(obj, ensure_ascii=False))
            r = self.req("POST", "/api/chat", {"message": "停机期间", "conversation_id": cid})
            self.assert_error(r, 503)
            r = self.req("GET", "/api/conversations/" + cid)
            self.assert_error(r, 503)
            r = self.req("GET", "/api/conversations/" + cid + "/export?format=json")
            self.assertEqual(r.status, 503, r)
        finally:
            subprocess.run([CTL, "start"], check=True, timeout=t(120))
        # back by itself: no retry by the client needed after the first success
        self.assertTrue(wait_for(lambda: self.req("GET", "/health").status == 200, t(30)))
        again = self.chat("重启之后", cid)
        self.assertEqual(again["conversation_id"], cid)
        h = self.history(cid)
        self.assertEqual([m["content"] for m in h["history"] if m["role"] == "user"],
                         ["重启之前", "重启之后"])
        # every worker thread's connection recovers, not only the one /health used
        for _ in range(20):
            self.history(cid)
        self.assertNotIn(password(), self.chatd.stderr_text())


if __name__ == "__main__":
    requires_mariadb()
    unittest.main(verbosity=2)
