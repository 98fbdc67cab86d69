"""test_lifecycle.py - the process around the API: bad configuration (exit 2
with one line on stderr, before listening), --help and --version, settings
from the environment, restart on the same database, and graceful stop on
SIGTERM/SIGINT with a stream running.
"""

import os
import shutil
import signal
import socket
import threading
import subprocess
import tempfile
import time
import unittest

import harness
from harness import (SSE, ChatdCase, Chatd, Mock, check_stream, db_conversation, db_query, loads,
                     run_chatd_to_exit, t, take_content, tokens_answer, wait_for)

FLAGS = ["--host", "--port", "--db", "--db-password", "--llm-url", "--llm-key", "--llm-model", "--llm-timeout", "--history",
         "--session-ttl", "--sweep-interval", "--cache-size", "--cache-ttl", "--redis", "--export-dir",
         "--export-ttl", "--admin-token", "--max-body", "--max-message", "--cors-origin", "--threads",
         "--log-level"]


def exit_status(proc, timeout):
    """proc's exit status, or a text saying it still runs after timeout s."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return "still running after %ss" % timeout

class ConfigTests(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="e2e-cfg-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def base(self, **override):
        """Valid settings as a flag list, with some replaced or removed (value None)."""
        settings = {"--host": "127.0.0.1", "--port": "0", "--db": "sqlite:" + os.path.join(self.tmp, "c.db"),
                    "--llm-url": "http://127.0.0.1:9/v1", "--export-dir": os.path.join(self.tmp, "exports")}
        for k, v in override.items():
            settings["--" + k.replace("_", "-")] = v
        args = []
        for k, v in settings.items():
            if v is not None:
                args += [k, v]
        return args

    def assert_refused(self, args, env=None, secret=None):
        rc, out, err = run_chatd_to_exit(args, env=env)
        text = err.decode("utf-8", "replace")
        self.assertEqual(rc, 2, "exit status for %r; stderr %r" % (args, text))
        self.assertTrue(err.endswith(b"\n"), "stderr is not one line: %r" % text)
        self.assertEqual(len(text.splitlines()), 1, "stderr must be exactly one line: %r" % text)
        self.assertTrue(text.strip(), "empty error line")
        self.assertNotIn("listening on", text)
        if secret:
            self.assertNotIn(secret, text, "a secret is printed")
        return text

    def test_bad_settings_exit_2_with_one_line(self):
        cases = {
            "port 70000": self.base(port="70000"),
            "port -1": self.base(port="-1"),
            "port abc": self.base(port="abc"),
            "port 80x": self.base(port="80x"),
            "unknown flag": self.base() + ["--no-such-flag", "1"],
            "unknown bare flag": self.base() + ["--frobnicate"],
            "positional argument": self.base() + ["stray"],
            "missing value": self.base() + ["--history"],
            "history abc": self.base(history="abc"),
            "llm timeout 0": self.base(llm_timeout="0"),
            "session ttl -5": self.base(session_ttl="-5"),
            "cache size negative": self.base(cache_size="-1"),
            "max body 0": self.base(max_body="0"),
            "llm url not a url": self.base(llm_url="not a url"),
            "db unparseable": self.base(db="nonsense"),
            "db unknown scheme": self.base(db="oracle://u:p@127.0.0.1/db"),
            "db sqlite in missing directory": self.base(db="sqlite:" + os.path.join(self.tmp, "missing", "dir", "c.db")),
            "db postgresql": self.base(db="postgresql://e2e:e2e-pg-secret@127.0.0.1:1/chatd"),
            "db mysql": self.base(db="mysql://e2e:e2e-my-secret@127.0.0.1:1/chatd"),
            "redis port 0": self.base(redis="redis://:e2e-redis-secret@127.0.0.1:0/0"),
            "redis unparseable": self.base(redis="not-a-redis-url"),
        }
        for name, args in cases.items():
            with self.subTest(case=name):
                secret = None
                for s in ("e2e-pg-secret", "e2e-my-secret", "e2e-redis-secret"):
                    if s in " ".join(args):
                        secret = s
                self.assert_refused(args, secret=secret)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "missing")))

    def test_bad_listen_address_exits_2_with_one_line(self):
        for host in ("999.1.1.1", "not an address"):
            with self.subTest(host=host):
                self.assert_refused(self.base(host=host))

    def test_port_in_use_exits_2(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        try:
            rc, out, err = run_chatd_to_exit(self.base(port=str(port)))
        finally:
            s.close()
        text = err.decode("utf-8", "replace")
        self.assertEqual(rc, 2, text)
        self.assertIn(str(port), text.strip().splitlines()[-1], "the last line names the port")
        self.assertNotIn("listening on", text)

    def test_bad_settings_from_environment(self):
        self.assert_refused(self.base(port=None), env={"CHATD_PORT": "70000"})
        self.assert_refused(self.base(port=None), env={"PORT": "99999"})
        self.assert_refused(self.base(db=None), env={"CHATD_DB": "nonsense"})
        self.assert_refused(self.base(), env={"CHATD_HISTORY": "lots"})

    def test_help(self):
        rc, out, err = run_chatd_to_exit(["--help"])
        self.assertEqual(rc, 0, err)
        text = out.decode()
        for flag in FLAGS:
            self.assertIn(flag, text, "--help does not list %s" % flag)
        for default in ("5010", "sqlite:chatd.db", "https://integrate.api.nvidia.com/v1", "deepseek-ai/deepseek-r1",
                        "86400", "3600", "10000", "1048576", "65536"):
            self.assertIn(default, text, "--help does not show the default %s" % default)

    def test_version(self):
        rc, out, err = run_chatd_to_exit(["--version"])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.decode(), r"\d+\.\d+\.\d+")
        self.assertEqual(len(out.decode().strip().splitlines()), 1)


class EnvironmentSettingsTests(ChatdCase):
    """Settings from CHATD_* variables; flags win over them."""

    cors = "https://flag.example"
    chatd_env = {"CHATD_LLM_MODEL": "env-model", "CHATD_CORS_ORIGIN": "https://env.example",
                 "CHATD_HISTORY": "1"}
    chatd_args = ("--cors-origin", "https://flag.example")

    def test_environment_and_flags(self):
        cid = self.chat("env one mock:tokens=1")["conversation_id"]
        obj = self.chat("env two mock:echo", cid)
        body = self.mock.last_request()["body"]
        self.assertEqual(body["model"], "env-model")
        self.assertEqual(body["messages"], [{"role": "assistant", "content": "w1"},
                                            {"role": "user", "content": "env two mock:echo"}])
        self.assertEqual(obj["response"], "assistant:w1|user:env two mock:echo")
        self.assertEqual(self.req("GET", "/health").header("Access-Control-Allow-Origin"), "https://flag.example")


class RestartTests(unittest.TestCase):

    def setUp(self):
        self.mock = Mock()
        self.addCleanup(self.mock.stop)
        self.tmp = tempfile.mkdtemp(prefix="e2e-restart-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.chatd = None

    def tearDown(self):
        if self.chatd is not None:
            self.chatd.cleanup()

    def start(self, *args):
        self.chatd = Chatd(self.mock.url, args, tmp=self.tmp)
        return self.chatd

    def stop(self, sig=signal.SIGTERM):
        rc = self.chatd.stop(sig)
        err = self.chatd.stderr_text()
        self.assertEqual(rc, 0, "exit status after %s; stderr tail:\n%s" % (sig.name, err[-4000:]))

    def test_restart_keeps_history(self):
        c = self.start()
        r = harness.request(c.port, "POST", "/api/chat", {"message": "remember 记住 mock:tokens=2"})
        cid = r.json()["conversation_id"]
        harness.request(c.port, "POST", "/api/chat", {"message": "and this mock:tokens=1", "conversation_id": cid})
        sse = SSE(c.port, "streamed too mock:tokens=3", cid)
        check_stream(self, sse)
        sse.close()
        wait_for(lambda: len(harness.request(c.port, "GET", "/api/conversations/" + cid).json()["history"]) == 6, t(3))
        before = harness.request(c.port, "GET", "/api/conversations/" + cid).body
        self.stop()

        c = self.start()
        self.assertEqual(harness.request(c.port, "GET", "/api/conversations/" + cid).body, before)
        r = harness.request(c.port, "POST", "/api/chat", {"message": "recall mock:echo", "conversation_id": cid})
        self.assertEqual(r.status, 200, r)
        obj = r.json()
        self.assertEqual(obj["conversation_id"], cid)
        self.assertEqual(obj["response"], "user:remember 记住 mock:tokens=2|assistant:w1 w2|"
                                          "user:and this mock:tokens=1|assistant:w1|"
                                          "user:streamed too mock:tokens=3|assistant:w1 w2 w3|user:recall mock:echo")
        health = harness.request(c.port, "GET", "/health").json()
        self.assertEqual(health["system"]["active_sessions"], "当前活动会话数量 1 条记录")
        self.stop(signal.SIGINT)

    def test_graceful_stop_with_a_running_stream(self):
        c = self.start()
        msg = "long answer mock:tokens=300 mock:delay=100"
        full = tokens_answer(300)
        sse = SSE(c.port, msg)
        self.assertEqual(sse.status, 200, sse.body)
        cid = sse.header("X-Conversation-Id")
        got = take_content(self, sse, 3)
        start = time.monotonic()
        c.proc.send_signal(signal.SIGTERM)
        # the client sees its stream end one way or another
        try:
            while True:
                ev = sse.next_event()
                if ev is None:
                    break
                if ev.name is None and not ev.is_comment:
                    got += loads(ev.data)["content"]
        except OSError:
            pass
        sse.close()
        rc = exit_status(c.proc, t(12))
        elapsed = time.monotonic() - start
        self.assertEqual(rc, 0, "exit status after SIGTERM with a running stream; stderr tail:\n%s"
                         % c.stderr_text()[-4000:])
        self.assertLess(elapsed, t(12))
        conv, rows = db_conversation(c.db_path, cid)
        self.assertIsNotNone(conv, "the interrupted exchange was not stored")
        self.assertEqual([r for r, _, _ in rows], ["user", "assistant"])
        self.assertEqual(rows[0][1], msg)
        stored = rows[1][1]
        self.assertTrue(stored, "empty answer stored")
        self.assertTrue(full.startswith(stored), "stored %r is not a prefix of the answer" % stored[:80])
        self.assertTrue(stored.startswith(got), "stored %r lacks what the client got %r" % (stored[:80], got[:80]))

        c = self.start()
        r = harness.request(c.port, "GET", "/api/conversations/" + cid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(m["role"], m["content"]) for m in r.json()["history"]], [("user", msg), ("assistant", stored)])
        self.stop()

    def test_graceful_stop_with_a_waiting_chat(self):
        c = self.start()
        msg = "long wait mock:tokens=300 mock:delay=100"
        result = {}

        def ask():
            try:
                result["resp"] = harness.request(c.port, "POST", "/api/chat", {"message": msg}, timeout=t(40))
            except Exception as e:  # a closed connection is an acceptable end
                result["error"] = e
        th = threading.Thread(target=ask)
        th.start()
        wait_for(lambda: self.mock.stats()["active"] == 1, t(5))
        start = time.monotonic()
        c.proc.send_signal(signal.SIGTERM)
        rc = exit_status(c.proc, t(12))
        self.assertEqual(rc, 0, "exit status after SIGTERM with a waiting chat; stderr tail:\n%s"
                         % c.stderr_text()[-4000:])
        self.assertLess(time.monotonic() - start, t(12))
        th.join(t(40))
        # never half an exchange
        rows = db_query(c.db_path, "SELECT conversation_id, role FROM messages")
        self.assertIn(len(rows), (0, 2), rows)
        if rows:
            self.assertEqual([r for _, r in rows], ["user", "assistant"])

    def test_sigint_and_sigterm_when_idle(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with self.subTest(signal=sig.name):
                c = self.start()
                self.assertEqual(harness.request(c.port, "GET", "/health").status, 200)
                start = time.monotonic()
                self.stop(sig)
                self.assertLess(time.monotonic() - start, t(10))


if __name__ == "__main__":
    unittest.main()
