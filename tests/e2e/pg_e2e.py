"""pg_e2e.py - chatd on PostgreSQL through its API, and its reconnecting.

Needs a throwaway server: run under tests/db/with-postgres.sh, which sets
CHATD_TEST_PG_URL and CHATD_TEST_PG_CTL (CTest registers it so, as
e2e.postgresql). Without them every test is skipped. The file name does
not match test_*.py on purpose: the e2e glob would run it without a
server.

Covers: chat, history, delete, both exports (CSV and NDJSON) and /health
against PostgreSQL; the schema chatd created (looked at with psql); a
server stopped under a running chatd (requests answer 503 quickly,
/health 503 with the reason), then started again (chatd serves again with
no restart, the old conversation intact); the password from
CHATD_DB_PASSWORD; that no password ever reaches chatd's output.
"""

import json
import os
import shutil
import subprocess
import time
import unittest
import urllib.parse

from harness import SSE, TS_RE, Chatd, ChatdCase, Mock, demo_answer, request, run_chatd_to_exit, t, wait_for

PG_URL = os.environ.get("CHATD_TEST_PG_URL")
PG_CTL = os.environ.get("CHATD_TEST_PG_CTL")
NEED = "needs CHATD_TEST_PG_URL (run under tests/db/with-postgres.sh)"


def password():
    return urllib.parse.urlsplit(PG_URL).password or ""


def psql(sql):
    """Rows of a query, as lists of text, through the psql client."""
    exe = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    out = subprocess.run([exe, PG_URL, "-X", "-A", "-t", "-F", "\t", "-c", sql],
                         capture_output=True, timeout=t(30))
    if out.returncode != 0:
        raise AssertionError("psql: %s" % out.stderr.decode("utf-8", "replace"))
    out = out.stdout
    return [line.split("\t") for line in out.decode("utf-8").splitlines() if line]


@unittest.skipUnless(PG_URL and PG_CTL, NEED)
class PostgresApi(ChatdCase):
    chatd_db = PG_URL
    mock_delay_ms = 1

    def tearDown(self):
        self.assertNotIn(password(), self.chatd.stderr_text(), "the password was logged")

    def test_chat_get_export_delete(self):
        first = self.chat("你好 PostgreSQL")
        cid = first["conversation_id"]
        self.assertEqual(first["response"], demo_answer("你好 PostgreSQL"))
        second = self.chat("second, with \"quotes\", commas", cid)
        self.assertEqual(second["conversation_id"], cid)

        got = self.assert_json(self.req("GET", "/api/conversations/" + cid), 200)
        self.assertEqual([m["role"] for m in got["history"]], ["user", "assistant"] * 2)
        self.assertEqual(got["history"][0]["content"], "你好 PostgreSQL")
        self.assertEqual(got["history"][3]["content"], demo_answer("second, with \"quotes\", commas"))
        for m in got["history"]:
            self.assertRegex(m["timestamp"], TS_RE)
        self.assertRegex(got["created_at"], TS_RE)
        self.assertEqual(got["last_active"], got["history"][3]["timestamp"])
        self.assertEqual(got["created_at"], got["history"][0]["timestamp"])
        # an upper-case id is the same conversation (the API lowercases it)
        self.assertEqual(self.req("GET", "/api/conversations/" + cid.upper()).status, 200)

        # What chatd wrote, as PostgreSQL sees it.
        rows = psql("SELECT role, content, to_char(\"timestamp\", 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
                    " FROM messages WHERE conversation_id = '%s' ORDER BY id" % cid)
        self.assertEqual([r[0] for r in rows], ["user", "assistant"] * 2)
        self.assertEqual(rows[0][1], "你好 PostgreSQL")
        self.assertEqual([r[2] for r in rows], [m["timestamp"] for m in got["history"]])
        types = dict((r[0] + "." + r[1], r[2]) for r in psql(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_name IN ('conversations', 'messages')"))
        self.assertEqual(types["messages.content"], "text")
        self.assertEqual(types["messages.id"], "bigint")
        self.assertEqual(types["conversations.last_active"], "timestamp without time zone")

        resp = self.req("GET", "/api/conversations/%s/export?format=csv" % cid)
        self.assertEqual(resp.status, 200)
        text = resp.body.decode("utf-8")
        self.assertTrue(text.startswith("Timestamp,Role,Content\r\n"), text[:80])
        self.assertEqual(text.count("\r\n"), 5)
        self.assertIn('"second, with ""quotes"", commas"', text)

        resp = self.req("GET", "/api/conversations/%s/export?format=json" % cid)
        self.assertEqual(resp.status, 200)
        lines = [json.loads(x) for x in resp.body.decode("utf-8").splitlines()]
        self.assertEqual(lines[0]["conversation_id"], cid)
        self.assertEqual(lines[0]["message_count"], 4)
        self.assertEqual([x["content"] for x in lines[1:]],
                         [m["content"] for m in got["history"]])

        resp = self.req("GET", "/api/conversations/export-all?format=json")
        self.assertEqual(resp.status, 200)
        lines = [json.loads(x) for x in resp.body.decode("utf-8").splitlines()]
        ids = [x["id"] for x in lines[1:]]
        self.assertIn(cid, ids)
        self.assertEqual(lines[0]["total_conversations"], len(ids))
        resp = self.req("GET", "/api/conversations/export-all?format=csv")
        self.assertEqual(resp.status, 200)
        self.assertIn(cid, resp.body.decode("utf-8"))

        health = self.assert_json(self.req("GET", "/health"), 200)
        self.assertEqual(health["system"]["database"], "数据库连接正常")

        self.assertEqual(self.req("DELETE", "/api/conversations/" + cid).status, 200)
        self.assertEqual(self.req("GET", "/api/conversations/" + cid).status, 404)
        self.assertEqual(self.req("DELETE", "/api/conversations/" + cid).status, 404)
        self.assertEqual(psql("SELECT count(*) FROM messages WHERE conversation_id = '%s'" % cid),
                         [["0"]])

    def test_stream_is_stored(self):
        s = SSE(self.port, message="stream me")
        s.read_all()
        cid = s.header("X-Conversation-Id")
        s.close()
        got = wait_for(lambda: self.req("GET", "/api/conversations/%s" % cid).status == 200, t(10))
        self.assertTrue(got)
        body = self.assert_json(self.req("GET", "/api/conversations/" + cid), 200)
        self.assertEqual(body["history"][0]["content"], "stream me")
        self.assertEqual(body["history"][1]["content"], demo_answer("stream me"))

    def test_server_restart(self):
        """The database goes away under chatd and comes back: 503 meanwhile, then service
        resumes without restarting chatd."""
        cid = self.chat("before the outage")["conversation_id"]
        subprocess.run([PG_CTL, "stop"], check=True, capture_output=True, timeout=t(60))
        try:
            start = time.monotonic()
            resp = self.req("GET", "/health")
            self.assertEqual(resp.status, 503, resp)
            health = json.loads(resp.body)
            self.assertEqual(health["status"], "服务异常")
            self.assertTrue(health["system"]["database"].startswith("数据库连接失败: "), health)
            self.assertNotIn(password(), resp.body.decode("utf-8"))
            self.assertEqual(self.req("GET", "/api/conversations/" + cid).status, 503)
            resp = self.req("POST", "/api/chat", {"message": "during", "conversation_id": cid})
            self.assertEqual(resp.status, 503, resp)
            self.assertEqual(self.req("DELETE", "/api/conversations/" + cid).status, 503)
            # Failing is quick: connection refused, no retry loop.
            self.assertLess(time.monotonic() - start, t(10))
            # And chatd does not spin while it is down.
            self.assertEqual(self.req("GET", "/health").status, 503)
        finally:
            subprocess.run([PG_CTL, "start"], check=True, capture_output=True, timeout=t(60))
        # Every worker thread has a dead connection: each request resets its own.
        for _ in range(8):
            resp = self.req("GET", "/health")
            self.assertEqual(resp.status, 200, resp)
        got = self.assert_json(self.req("GET", "/api/conversations/" + cid), 200)
        self.assertEqual(len(got["history"]), 2)
        self.assertEqual(self.chat("after the outage", cid)["conversation_id"], cid)
        got = self.assert_json(self.req("GET", "/api/conversations/" + cid), 200)
        self.assertEqual(len(got["history"]), 4)
        err = self.chatd.stderr_text()
        self.assertIn("reconnected to postgresql", err)
        self.assertNotIn(password(), err)


@unittest.skipUnless(PG_URL and PG_CTL, NEED)
class PostgresPassword(unittest.TestCase):
    def setUp(self):
        self.mock = Mock(delay_ms=1)

    def tearDown(self):
        self.mock.stop()

    def url_without_password(self):
        u = urllib.parse.urlsplit(PG_URL)
        return u._replace(netloc="%s@%s:%d" % (u.username, u.hostname, u.port)).geturl()

    def test_password_from_environment(self):
        c = Chatd(self.mock.url, db=self.url_without_password(),
                  env={"CHATD_DB_PASSWORD": password()})
        try:
            resp = request(c.port, "GET", "/health")
            self.assertEqual(resp.status, 200, resp)
            self.assertNotIn(password(), c.stderr_text())
        finally:
            self.assertEqual(c.stop(), 0)
            c.cleanup()

    def test_wrong_password_is_a_clear_start_failure(self):
        wrong = "not-the-" + password()
        rc, out, err = run_chatd_to_exit(["--llm-url", self.mock.url, "--port", "0"],
                                         env={"CHATD_DB": self.url_without_password(),
                                              "CHATD_DB_PASSWORD": wrong})
        text = (out + err).decode("utf-8", "replace")
        self.assertEqual(rc, 2, text)
        self.assertIn("password authentication failed", text)
        self.assertNotIn(wrong, text)


if __name__ == "__main__":
    unittest.main()
