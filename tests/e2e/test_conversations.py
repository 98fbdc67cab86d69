"""test_conversations.py - SPEC sections 3 (GET a conversation), 4 (DELETE it),
7 (/health) and Expiry: exact bodies, ordering, timestamps as stored in the
database, which operations move last_active, the health counters, a
database that disappears, and conversations that expire and are swept.
"""

import time
import unittest
import uuid

from harness import (HEALTH_TS_RE, SSE, ChatdCase, check_stream, db_conversation, db_counts, db_orphan_messages,
                     db_query, quote_path, remove_db_files, t, tokens_answer, wait_for)

NOT_FOUND = {"status": "error", "message": "Conversation not found"}
DELETED = {"status": "成功", "message": "会话历史已清除"}
DELETE_NOT_FOUND = {"status": "错误", "message": "会话历史未找到"}


class ConversationTests(ChatdCase):

    def path(self, cid):
        return "/api/conversations/" + quote_path(cid)

    def test_get_history_exact_shape_and_order(self):
        cid = self.chat("one mock:tokens=1")["conversation_id"]
        self.chat("two 二 mock:tokens=2", cid)
        res, _ = self.stream("three mock:tokens=3", cid)
        obj = self.wait_history(cid, 6)  # checks the keys, the status and every timestamp's form
        self.assertEqual([(m["role"], m["content"]) for m in obj["history"]], [
            ("user", "one mock:tokens=1"), ("assistant", "w1"),
            ("user", "two 二 mock:tokens=2"), ("assistant", "w1 w2"),
            ("user", "three mock:tokens=3"), ("assistant", "w1 w2 w3")])
        stamps = [m["timestamp"] for m in obj["history"]]
        self.assertEqual(stamps, sorted(stamps))
        self.assertLessEqual(obj["created_at"], stamps[0])
        self.assertLessEqual(obj["created_at"], obj["last_active"])
        self.assertGreaterEqual(obj["last_active"], stamps[-2])
        # exactly the stored values
        conv, rows = db_conversation(self.db_path, cid)
        self.assertEqual((obj["created_at"], obj["last_active"]), conv)
        self.assertEqual([(m["role"], m["content"], m["timestamp"]) for m in obj["history"]], rows)

    def test_timestamps_are_utc(self):
        before = time.time()
        cid = self.chat("when mock:tokens=1")["conversation_id"]
        after = time.time()
        import datetime
        created = self.history(cid)["created_at"]
        ts = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        self.assertGreaterEqual(ts, before - 5)
        self.assertLessEqual(ts, after + 5)

    def test_reading_does_not_move_last_active(self):
        cid = self.chat("read me mock:tokens=1")["conversation_id"]
        first = self.req("GET", self.path(cid)).body
        conv, _ = db_conversation(self.db_path, cid)
        time.sleep(0.05)
        for _ in range(3):
            self.assertEqual(self.req("GET", self.path(cid)).body, first)
        self.req("GET", self.path(cid) + "/export?format=json")
        self.req("GET", self.path(cid) + "/export?format=csv")
        self.assertEqual(self.req("GET", self.path(cid)).body, first)
        self.assertEqual(db_conversation(self.db_path, cid)[0], conv)

    def test_chat_moves_last_active(self):
        cid = self.chat("move me mock:tokens=1")["conversation_id"]
        h1 = self.history(cid)
        time.sleep(0.05)
        self.chat("move me again mock:tokens=1", cid)
        h2 = self.history(cid)
        self.assertGreater(h2["last_active"], h1["last_active"])
        self.assertEqual(h2["created_at"], h1["created_at"])
        time.sleep(0.05)
        self.stream("move me by stream mock:tokens=1", cid)
        h3 = self.wait_history(cid, 6)
        self.assertGreater(h3["last_active"], h2["last_active"])
        self.assertEqual(h3["created_at"], h1["created_at"])

    def test_failed_chat_does_not_move_last_active(self):
        cid = self.chat("stay mock:tokens=1")["conversation_id"]
        before = self.req("GET", self.path(cid)).body
        time.sleep(0.05)
        self.assertEqual(self.req("POST", "/api/chat", {"message": "x mock:status=500", "conversation_id": cid}).status, 502)
        self.assertEqual(self.req("POST", "/api/chat", {"message": "", "conversation_id": cid}).status, 400)
        self.assertEqual(self.req("GET", self.path(cid)).body, before)

    def test_get_unknown_is_exact_404(self):
        for cid in ("nope", str(uuid.uuid4()), "你好", "a" * 500, "1 OR 1=1"):
            with self.subTest(id=cid[:30]):
                self.assert_json(self.req("GET", self.path(cid)), 404, NOT_FOUND)
                self.assert_json(self.req("GET", self.path(cid) + "/"), 404, NOT_FOUND)

    def test_delete_exact_bodies_and_effect(self):
        cid = self.chat("delete me mock:tokens=2")["conversation_id"]
        self.chat("delete me too mock:tokens=1", cid)
        other = self.chat("keep me mock:tokens=1")["conversation_id"]
        other_body = self.req("GET", self.path(other)).body
        counts = self.counts()
        self.assert_json(self.req("DELETE", self.path(cid)), 200, DELETED)
        self.assert_json(self.req("GET", self.path(cid)), 404, NOT_FOUND)
        self.assert_json(self.req("DELETE", self.path(cid)), 404, DELETE_NOT_FOUND)
        self.assertEqual(db_conversation(self.db_path, cid), (None, []))
        self.assertEqual(db_query(self.db_path, "SELECT COUNT(*) FROM messages WHERE conversation_id = ?",
                                  (cid,))[0][0], 0)
        self.assertEqual(self.counts(), (counts[0] - 1, counts[1] - 4))
        # the other conversation is untouched
        self.assertEqual(self.req("GET", self.path(other)).body, other_body)
        # the id is gone for good: chatting with it starts a new conversation, not a cache hit
        obj = self.chat("delete me mock:tokens=2", cid, expect_cached=False)
        self.assertNotEqual(obj["conversation_id"], cid)
        self.assert_json(self.req("GET", self.path(cid)), 404, NOT_FOUND)

    def test_delete_unknown_is_exact_404(self):
        for cid in ("nope", str(uuid.uuid4()), "删除", "' OR 1=1 --"):
            with self.subTest(id=cid):
                self.assert_json(self.req("DELETE", self.path(cid)), 404, DELETE_NOT_FOUND)

    def test_delete_with_trailing_slash(self):
        cid = self.chat("gone soon mock:tokens=1")["conversation_id"]
        self.assert_json(self.req("DELETE", self.path(cid) + "/"), 200, DELETED)
        self.assert_json(self.req("DELETE", self.path(cid) + "/"), 404, DELETE_NOT_FOUND)
        self.assert_json(self.req("GET", "/health"), 200)


class HealthTests(ChatdCase):
    """A fresh instance, so the counters start at zero."""

    def test_health(self):
        resp = self.req("GET", "/health")
        obj = self.assert_json(resp, 200)
        self.assertEqual(list(obj.keys()), ["status", "timestamp", "system"])
        self.assertEqual(list(obj["system"].keys()), ["database", "cache", "active_sessions"])
        self.assertEqual(obj["status"], "服务正常")
        self.assertRegex(obj["timestamp"], HEALTH_TS_RE)
        self.assertEqual(obj["system"], {"database": "数据库连接正常", "cache": "缓存 0 条记录",
                                         "active_sessions": "当前活动会话数量 0 条记录"})
        body = resp.body.decode()
        body = body[:-1] if body.endswith("\n") else body
        self.assertEqual(body, '{"status": "服务正常", "timestamp": "%s", "system": '
                         '{"database": "数据库连接正常", "cache": "缓存 0 条记录", '
                         '"active_sessions": "当前活动会话数量 0 条记录"}}' % obj["timestamp"])

        a = self.chat("health a mock:tokens=1")["conversation_id"]
        self.chat("health b mock:tokens=1", a)
        b = self.chat("health c mock:tokens=1")["conversation_id"]
        res, _ = self.stream("health d mock:tokens=1")
        c = res.done["conversation_id"]
        wait_for(lambda: self.health_counts() == (4, 3), t(3))
        self.assertEqual(self.health_counts(), (4, 3))
        self.chat("health a mock:tokens=1", a, expect_cached=True)  # a hit adds no entry
        self.assertEqual(self.health_counts(), (4, 3))
        self.assert_json(self.req("DELETE", "/api/conversations/" + a), 200, DELETED)
        self.assertEqual(self.health_counts(), (2, 2))
        self.assert_json(self.req("DELETE", "/api/conversations/" + b), 200, DELETED)
        self.assert_json(self.req("DELETE", "/api/conversations/" + c), 200, DELETED)
        self.assertEqual(self.health_counts(), (0, 0))
        # a failure adds nothing
        self.req("POST", "/api/chat", {"message": "health mock:status=500"})
        self.assertEqual(self.health_counts(), (0, 0))

    def test_health_wrong_method_and_slash(self):
        self.assert_error(self.req("POST", "/health"), 405)
        self.assert_json(self.req("GET", "/health/"), 200)


class HealthDatabaseGoneTests(ChatdCase):
    """The SQLite file deleted under a running chatd: /health reports 503."""

    def test_health_503_when_database_file_is_deleted(self):
        self.chat("doomed mock:tokens=1")  # the database holds a conversation
        self.assert_json(self.req("GET", "/health"), 200)
        remove_db_files(self.db_path)
        resp = self.req("GET", "/health")
        obj = self.assert_json(resp, 503)
        self.assertEqual(obj.get("status"), "服务异常", obj)
        db = (obj.get("system") or {}).get("database", "")
        self.assertTrue(db.startswith("数据库连接失败: "), obj)
        self.assertTrue(db[len("数据库连接失败: "):].strip(), "no reason given: %r" % obj)


class ExpiryTests(ChatdCase):
    """--session-ttl 4 --sweep-interval 1: every step below keeps at least
    2 s away from an expiry it does not mean to cross, so a loaded machine
    (or a sanitizer build) does not turn timing into failures."""

    chatd_args = ("--session-ttl", "4", "--sweep-interval", "1")

    def path(self, cid):
        return "/api/conversations/" + quote_path(cid)

    def test_idle_conversation_expires_and_is_swept(self):
        m = "expire me mock:tokens=2"
        cid = self.chat(m)["conversation_id"]
        self.chat("expire me too mock:tokens=1", cid)
        last_chat = time.monotonic()
        _, sessions0 = self.health_counts()
        self.assert_json(self.req("GET", self.path(cid)), 200)
        # reading does not keep it alive
        while time.monotonic() - last_chat < 5.2:
            self.req("GET", self.path(cid))
            time.sleep(0.4)
        self.assert_json(self.req("GET", self.path(cid)), 404, NOT_FOUND)
        self.assertEqual(self.req("GET", self.path(cid) + "/export").status, 404)
        self.assertEqual(self.req("GET", self.path(cid) + "/export?format=csv").status, 404)
        # every conversation of this instance has been idle longer than the TTL by now
        self.assertGreaterEqual(sessions0, 1)
        self.assertEqual(self.health_counts()[1], 0)
        # a chat with the expired id starts a new conversation, and the old answer is not served from cache
        obj = self.chat(m, cid, expect_cached=False)
        self.assertNotEqual(obj["conversation_id"], cid)
        self.assertEqual(obj["response"], "w1 w2")
        res, _ = self.stream(m, cid)
        self.assertNotEqual(res.done["conversation_id"], cid)
        self.assertEqual(res.done["cached"], False)
        self.assert_json(self.req("DELETE", self.path(cid)), 404, DELETE_NOT_FOUND)
        # the sweep removes the rows
        gone = wait_for(lambda: db_conversation(self.db_path, cid) == (None, []), t(5))
        self.assertTrue(gone, "expired conversation still in the database: %r"
                        % (db_conversation(self.db_path, cid),))
        # ... and the cache entries of every expired conversation; what is left are
        # the two new conversations' answers
        self.assertTrue(wait_for(lambda: self.health_counts() == (2, 2), t(5)),
                        "health after the sweep: %r" % (self.health_counts(),))
        self.assertEqual(db_counts(self.db_path), (2, 4))

    def test_activity_keeps_a_conversation_alive(self):
        cid = self.chat("alive 0 mock:tokens=1")["conversation_id"]
        for i in range(1, 5):
            time.sleep(1.0)
            obj = self.chat("alive %d mock:tokens=1" % i, cid)
            self.assertEqual(obj["conversation_id"], cid, "expired although active 1 s ago")
        hist = self.history(cid)
        self.assertEqual(len(hist["history"]), 10)
        self.assertEqual(len(db_conversation(self.db_path, cid)[1]), 10)

    def test_stream_activity_keeps_alive_too(self):
        res, _ = self.stream("alive stream 0 mock:tokens=1")
        cid = res.done["conversation_id"]
        for i in range(1, 4):
            time.sleep(1.0)
            res, _ = self.stream("alive stream %d mock:tokens=1" % i, cid, method="GET")
            self.assertEqual(res.done["conversation_id"], cid)


    def test_zz_expiry_during_a_stream_leaves_no_orphans(self):
        cid = self.chat("expires mid stream mock:tokens=1")["conversation_id"]
        time.sleep(3.5)
        sse = SSE(self.port, "long one mock:tokens=30 mock:delay=100", cid)
        try:
            res = check_stream(self, sse)
        finally:
            sse.close()
        self.assertTrue(res.done or res.error)
        time.sleep(0.3)
        self.assertEqual(db_orphan_messages(self.db_path), 0, "messages stored for a swept conversation")
        r = self.req("GET", self.path(cid))
        if r.status == 200:
            roles = [m["role"] for m in r.json()["history"]]
            self.assertEqual(roles, ["user", "assistant"] * (len(roles) // 2))
            self.assertEqual(r.json()["history"][-1]["content"], tokens_answer(30))

if __name__ == "__main__":
    unittest.main()
