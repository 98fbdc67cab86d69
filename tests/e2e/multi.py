"""multi.py - several chatd instances on one database and one Redis
(ARCHITECTURE.md "Scale-out"), and chatd with Redis down.

    MULTI_BACKEND=sqlite|postgresql|mysql python3 multi.py [unittest args]

Runs under tests/db/with-redis.sh (CHATD_TEST_REDIS_URL, CHATD_TEST_REDIS_CTL),
and for postgresql under with-postgres.sh (CHATD_TEST_PG_URL), for mysql
under with-mariadb.sh (CHATD_TEST_MYSQL_URL). Exits 77 (skipped) when a
server it needs is not given. With sqlite the two processes share one
SQLite file (WAL).

- TwoInstances: a conversation started on A continues on B with A's
  history, an answer cached through A is a hit through B, a DELETE on B is
  seen by A and removes the cache entries, export-all and /health agree.
- SweepEverywhere: both instances sweep the same expired conversations at
  once; the rows and the cache entries go, both stay healthy.
- RedisOutage (sqlite only): Redis stopped -> chat still answers, uncached,
  /health stays 200 and says the cache is unavailable; Redis back ->
  caching resumes by itself.
"""

import os
import subprocess
import sys
import time
import unittest
import urllib.parse

import harness
from harness import HEALTH_CACHE_RE, HEALTH_SESSIONS_RE, ChatdCase, Chatd, Mock, demo_answer, t, wait_for

BACKEND = os.environ.get("MULTI_BACKEND", "sqlite")
REDIS_URL = os.environ.get("CHATD_TEST_REDIS_URL")
REDIS_CTL = os.environ.get("CHATD_TEST_REDIS_CTL")
DB_URL = {"sqlite": None,
          "postgresql": os.environ.get("CHATD_TEST_PG_URL"),
          "mysql": os.environ.get("CHATD_TEST_MYSQL_URL")}.get(BACKEND)


def redis_cli(*args):
    """Runs redis-cli against the test Redis; returns its output stripped."""
    u = urllib.parse.urlsplit(REDIS_URL)
    env = dict(os.environ, REDISCLI_AUTH=urllib.parse.unquote(u.password or ""))
    db = (u.path or "/0").lstrip("/") or "0"
    out = subprocess.run(["redis-cli", "-h", u.hostname, "-p", str(u.port), "-n", db, "--no-raw"]
                         + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=t(10), check=True)
    return out.stdout.decode().strip()


def redis_exists(key):
    return redis_cli("EXISTS", key) == "(integer) 1"


def start_pair(case, args=()):
    """Starts the mock and instances A and B on one database and one Redis."""
    case.mock = Mock(delay_ms=1)
    case.instances = []
    try:
        env = {"CHATD_REDIS": REDIS_URL}
        a = Chatd(case.mock.url, args, env=env, db=DB_URL)
        case.instances.append(a)
        db = DB_URL or "sqlite:" + a.db_path
        b = Chatd(case.mock.url, args, env=env, db=db)
        case.instances.append(b)
    except BaseException:
        stop_all(case)
        raise
    case.A, case.B = case.instances
    case.port = case.A.port


def stop_all(case):
    bad = []
    for inst in case.instances:
        rc = inst.stop()
        if rc != 0:
            bad.append("chatd exited %r on SIGTERM; stderr tail:\n%s" % (rc, inst.stderr_text()[-4000:]))
        # B's tmp holds no database; A's is removed last
    for inst in reversed(case.instances):
        inst.cleanup()
    case.mock.stop()
    if bad:
        raise AssertionError("\n".join(bad))


class MultiCase(ChatdCase):
    """ChatdCase's helpers, aimed at one instance or the other."""

    chatd_args = ()

    @classmethod
    def setUpClass(cls):
        start_pair(cls, cls.chatd_args)

    @classmethod
    def tearDownClass(cls):
        stop_all(cls)

    def at(self, inst):
        self.port = inst.port
        return self

    def requests(self):
        return self.mock.stats()["requests"]

    def health_lines(self, inst):
        obj = self.at(inst).health()
        return obj["system"]


class TwoInstances(MultiCase):

    def test_conversation_continues_on_the_other_instance(self):
        first = self.at(self.A).chat("hello from A")
        cid = first["conversation_id"]
        self.assertEqual(first["response"], demo_answer("hello from A"))
        second = self.at(self.B).chat("and now B mock:echo", cid, expect_cached=False)
        self.assertEqual(second["conversation_id"], cid, "B knows A's conversation")
        self.assertEqual(second["response"],
                         "user:hello from A|assistant:%s|user:and now B mock:echo"
                         % demo_answer("hello from A"))
        sent = self.mock.last_request()["body"]["messages"]
        self.assertEqual([m["role"] for m in sent], ["user", "assistant", "user"])
        self.assertEqual(sent[0]["content"], "hello from A")
        # and back on A, which sees B's exchange
        hist = self.at(self.A).history(cid)
        self.assertEqual(len(hist["history"]), 4)
        self.assertEqual(hist["history"][3]["content"], second["response"])
        self.assertEqual(self.at(self.B).history(cid)["history"], hist["history"])

    def test_cache_hit_crosses_instances(self):
        q = "what is cached across instances? 你好"
        first = self.at(self.A).chat(q, expect_cached=False)
        cid = first["conversation_id"]
        self.assertTrue(redis_exists("chatd:c:" + cid), "A's answer is in Redis")
        calls = self.requests()
        hit = self.at(self.B).chat(q, cid, expect_cached=True)
        self.assertEqual(hit["response"], first["response"])
        self.assertEqual(hit["conversation_id"], cid)
        res, _ = self.at(self.B).stream(q, cid)
        self.assertTrue(res.done["cached"])
        self.assertEqual(res.content, first["response"])
        self.assertEqual(self.requests(), calls, "a hit makes no upstream call")
        # the hits were stored too, on either instance's view
        self.assertEqual(len(self.at(self.A).history(cid)["history"]), 6)
        # an answer streamed through B is a hit through A
        res, sse = self.at(self.B).stream("streamed on B", cid)
        self.assertFalse(res.done["cached"])
        calls = self.requests()
        again = self.at(self.A).chat("streamed on B", cid, expect_cached=True)
        self.assertEqual(again["response"], res.content)
        self.assertEqual(self.requests(), calls)

    def test_delete_on_one_is_seen_by_the_other(self):
        cid = self.at(self.A).chat("to be deleted")["conversation_id"]
        self.at(self.A).chat("to be deleted, twice", cid)
        self.assertTrue(redis_exists("chatd:c:" + cid))
        resp = self.at(self.B).req("DELETE", "/api/conversations/" + cid)
        self.assert_json(resp, 200, {"status": "成功", "message": "会话历史已清除"})
        self.assertFalse(redis_exists("chatd:c:" + cid), "the cache entries went with it")
        self.assert_error(self.at(self.A).req("GET", "/api/conversations/" + cid), 404)
        resp = self.at(self.A).req("DELETE", "/api/conversations/" + cid)
        self.assert_json(resp, 404, {"status": "错误", "message": "会话历史未找到"})
        # asking A again with the old id starts a new conversation, uncached
        calls = self.requests()
        again = self.at(self.A).chat("to be deleted", cid, expect_cached=False)
        self.assertNotEqual(again["conversation_id"], cid)
        self.assertEqual(self.requests(), calls + 1)

    def export_all(self, inst, fmt):
        resp = self.at(inst).req("GET", "/api/conversations/export-all?format=" + fmt, timeout=t(60))
        self.assertEqual(resp.status, 200, resp)
        return resp.body

    def test_export_all_is_the_same_from_either(self):
        for i in range(3):
            cid = self.at(self.A if i % 2 else self.B).chat("export %d" % i)["conversation_id"]
            self.at(self.B if i % 2 else self.A).chat("export %d, second" % i, cid)
        a = self.export_all(self.A, "json").split(b"\n")
        b = self.export_all(self.B, "json").split(b"\n")
        head_a, head_b = harness.loads(a[0]), harness.loads(b[0])
        self.assertEqual(head_a["total_conversations"], head_b["total_conversations"])
        self.assertGreaterEqual(head_a["total_conversations"], 3)
        self.assertEqual(a[1:], b[1:])
        self.assertEqual(self.export_all(self.A, "csv"), self.export_all(self.B, "csv"))

    def test_health_is_the_same_on_both(self):
        self.at(self.A).chat("health on A")
        self.at(self.B).chat("health on B")
        a, b = self.health_lines(self.A), self.health_lines(self.B)
        self.assertEqual(a["database"], "数据库连接正常")
        self.assertRegex(a["cache"], HEALTH_CACHE_RE)
        self.assertRegex(a["active_sessions"], HEALTH_SESSIONS_RE)
        self.assertEqual(a, b, "the counts are the database's and Redis's, not a process's")
        self.assertGreaterEqual(int(HEALTH_CACHE_RE.match(a["cache"]).group(1)), 2)
        self.assertGreaterEqual(int(HEALTH_SESSIONS_RE.match(a["active_sessions"]).group(1)), 2)


class SweepEverywhere(MultiCase):
    """Both instances expire conversations after 2 s and sweep every second."""

    chatd_args = ("--session-ttl", "2", "--sweep-interval", "1")

    def test_both_sweep_the_same_conversations(self):
        ids = []
        for i in range(6):
            inst = self.A if i % 2 else self.B
            ids.append(self.at(inst).chat("expiring %d" % i)["conversation_id"])
        for cid in ids:
            self.assertTrue(redis_exists("chatd:c:" + cid))

        def swept():
            return not any(redis_exists("chatd:c:" + cid) for cid in ids)

        self.assertTrue(wait_for(swept, t(20), 0.2), "the sweeps removed the cache entries")
        for inst in (self.A, self.B):
            lines = self.health_lines(inst)
            self.assertEqual(lines["database"], "数据库连接正常")
            self.assertEqual(lines["active_sessions"], "当前活动会话数量 0 条记录")
            for cid in ids:
                self.assert_error(self.at(inst).req("GET", "/api/conversations/" + cid), 404)
            self.assertNotIn("sweep failed", inst.stderr_text())
        if BACKEND == "sqlite":
            self.assertEqual(wait_for(lambda: harness.db_counts(self.A.db_path) == (0, 0), t(10)),
                             True, harness.db_counts(self.A.db_path))


@unittest.skipUnless(BACKEND == "sqlite", "the outage test runs once, with SQLite")
class RedisOutage(ChatdCase):

    chatd_env = {"CHATD_REDIS": REDIS_URL or ""}

    def restart_redis(self):
        subprocess.run([REDIS_CTL, "start"], check=False, timeout=t(30))

    def cache_line(self):
        return self.health()["system"]["cache"]

    def test_redis_down_then_back(self):
        self.addCleanup(self.restart_redis)
        cid = self.chat("before the outage", expect_cached=False)["conversation_id"]
        self.chat("before the outage", cid, expect_cached=True)
        self.assertRegex(self.cache_line(), HEALTH_CACHE_RE)

        subprocess.run([REDIS_CTL, "stop"], check=True, timeout=t(30))
        calls = self.mock.stats()["requests"]
        started = time.monotonic()
        for i in range(3):
            self.chat("during the outage", cid, expect_cached=False)
            res, _ = self.stream("during the outage", cid)
            self.assertFalse(res.done["cached"])
        self.assertLess(time.monotonic() - started, t(10), "Redis down must not block chat")
        self.assertEqual(self.mock.stats()["requests"], calls + 6, "every answer came upstream")
        obj = self.health(200)
        self.assertEqual(obj["status"], "服务正常")
        self.assertEqual(obj["system"]["database"], "数据库连接正常")
        self.assertRegex(obj["system"]["cache"], r"^缓存不可用: .+")
        self.assertRegex(obj["system"]["active_sessions"], HEALTH_SESSIONS_RE)
        err = self.chatd.stderr_text()
        self.assertEqual(err.count("answering uncached"), 1, "one log line per outage:\n" + err[-3000:])
        self.assertNotIn(urllib.parse.urlsplit(REDIS_URL).password, err, "the password is logged")

        subprocess.run([REDIS_CTL, "start"], check=True, timeout=t(30))
        self.assertTrue(wait_for(lambda: HEALTH_CACHE_RE.match(self.cache_line()), t(10), 0.2),
                        "/health sees Redis again")
        self.chat("after the outage", cid, expect_cached=False)
        self.chat("after the outage", cid, expect_cached=True)
        self.assertIn("answers again", self.chatd.stderr_text())


def main():
    if not REDIS_URL or not REDIS_CTL:
        print("skipped: CHATD_TEST_REDIS_URL is not set (run under tests/db/with-redis.sh)")
        return 77
    if BACKEND not in ("sqlite", "postgresql", "mysql"):
        print("MULTI_BACKEND must be sqlite, postgresql or mysql", file=sys.stderr)
        return 2
    if BACKEND != "sqlite" and not DB_URL:
        print("skipped: no %s server (run under tests/db/with-%s.sh)"
              % (BACKEND, "postgres" if BACKEND == "postgresql" else "mariadb"))
        return 77
    prog = unittest.main(module=__name__, exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
