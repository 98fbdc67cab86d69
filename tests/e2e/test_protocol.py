"""test_protocol.py - HTTP-level conventions of SPEC.md ("Conventions for every
endpoint"): JSON errors, 404/405/413, CORS and preflight, trailing slashes,
keep-alive, the access log, and every kind of bad input, after which the
server must still be up with its earlier data intact.
"""

import re
import time
import unittest
import uuid

from harness import (ChatdCase, RawConn, SSE, UUID4_RE, build_request, db_conversation, demo_answer,
                     quote_path, raw_request, t, tokens_answer, wait_for)

MAX_BODY = 65536
MAX_MESSAGE = 1000

ENDPOINT_METHODS = {
    "/api/chat": ["GET", "PUT", "DELETE", "PATCH"],
    "/api/chat-stream": ["PUT", "DELETE", "PATCH"],
    "/api/conversations/%s" % uuid.uuid4(): ["POST", "PUT", "PATCH"],
    "/health": ["POST", "PUT", "DELETE", "PATCH"],
}


def padded_body(total, message="pad mock:tokens=1"):
    """A valid chat body of exactly `total` bytes (an extra field pads it)."""
    head = '{"message": "%s", "pad": "' % message
    tail = '"}'
    n = total - len(head) - len(tail)
    assert n >= 0
    return (head + "x" * n + tail).encode()


class ProtocolTests(ChatdCase):
    chatd_args = ("--max-body", str(MAX_BODY), "--max-message", str(MAX_MESSAGE))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # a conversation that every bad request below must leave alone
        import harness
        r1 = harness.request(cls.port, "POST", "/api/chat", {"message": "baseline one mock:tokens=2"})
        cid = r1.json()["conversation_id"]
        harness.request(cls.port, "POST", "/api/chat",
                        {"message": "baseline two mock:tokens=3", "conversation_id": cid})
        cls.baseline_id = cid
        cls.baseline_body = harness.request(cls.port, "GET", "/api/conversations/" + cid).body
        cls.baseline_db = db_conversation(cls.db_path, cid)

    def assert_baseline_intact(self):
        resp = self.req("GET", "/api/conversations/" + self.baseline_id)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, self.baseline_body)
        self.assertEqual(db_conversation(self.db_path, self.baseline_id), self.baseline_db)
        hist = resp.json()["history"]
        self.assertEqual([(m["role"], m["content"]) for m in hist],
                         [("user", "baseline one mock:tokens=2"), ("assistant", "w1 w2"),
                          ("user", "baseline two mock:tokens=3"), ("assistant", "w1 w2 w3")])

    # -- 404 / 405 / OPTIONS / CORS

    def test_unknown_paths_are_json_404(self):
        for path in ("/nope", "/api", "/api/nope", "/api/chatx", "/api/chat/extra",
                     "/api/conversations/a/b/c", "/health/x", "/api/conversations/x/nothing"):
            for method in ("GET", "POST"):
                with self.subTest(method=method, path=path):
                    body = {"message": "hi"} if method == "POST" else None
                    self.assert_error(self.req(method, path, body), 404)

    def test_wrong_method_is_json_405(self):
        for path, methods in ENDPOINT_METHODS.items():
            for method in methods:
                with self.subTest(method=method, path=path):
                    self.assert_error(self.req(method, path), 405)

    def test_wrong_method_with_body_stores_nothing(self):
        before = self.counts()
        for method in ("PUT", "PATCH"):
            self.assert_error(self.req(method, "/api/chat", {"message": "x mock:tokens=1"}), 405)
        self.assertEqual(self.counts(), before)

    def test_options_preflight_on_any_path(self):
        for path in ("/api/chat", "/api/chat-stream", "/api/conversations/abc", "/health",
                     "/api/conversations/abc/export", "/nope", "/api/chat/"):
            with self.subTest(path=path):
                resp = self.req("OPTIONS", path, headers={
                    "Origin": "https://client.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type"})
                self.assertEqual(resp.status, 204, resp)
                self.assertEqual(resp.body, b"")
                self.assert_cors(resp)
                methods = {m.strip().upper() for m in
                           (resp.header("Access-Control-Allow-Methods") or "").split(",")}
                self.assertTrue({"GET", "POST", "DELETE", "OPTIONS"} <= methods,
                                "Access-Control-Allow-Methods %r" % methods)
                hdrs = {h.strip().lower() for h in
                        (resp.header("Access-Control-Allow-Headers") or "").split(",")}
                self.assertIn("content-type", hdrs, "Access-Control-Allow-Headers")
                # the admin token of export-all and /metrics is a Bearer header
                self.assertIn("authorization", hdrs, "Access-Control-Allow-Headers")

    def test_cors_header_on_every_kind_of_response(self):
        cases = [
            self.req("GET", "/health"),
            self.req("GET", "/nope"),
            self.req("GET", "/api/chat"),
            self.req("POST", "/api/chat", b"not json"),
            self.req("POST", "/api/chat", padded_body(MAX_BODY + 1)),
            self.req("POST", "/api/chat", {"message": "m" * (MAX_MESSAGE + 1)}),
            self.req("GET", "/api/conversations/nope"),
            self.req("DELETE", "/api/conversations/nope"),
            self.req("POST", "/api/chat", {"message": "cors mock:tokens=1"}),
            self.req("POST", "/api/chat", {"message": "cors mock:status=500"}),
        ]
        for resp in cases:
            with self.subTest(resp=resp):
                self.assert_cors(resp)
        res, sse = self.stream("cors stream mock:tokens=2")
        self.assert_cors(sse.head)
        self.assertEqual(res.content, "w1 w2")

    # -- trailing slash, keep-alive, query strings

    def test_trailing_slash_is_tolerated(self):
        obj = self.chat("slash mock:tokens=2", path="/api/chat/")
        self.assertEqual(obj["response"], "w1 w2")
        cid = obj["conversation_id"]
        sse = SSE(self.port, "slash stream mock:tokens=1", cid, path="/api/chat-stream/")
        self.assertEqual(sse.status, 200, sse.body)
        sse.read_all()
        sse.close()
        self.assertIn('data: {"content": "w1"}', [e.text for e in sse.events])
        resp = self.req("GET", "/api/conversations/%s/" % cid)
        hist = self.assert_json(resp, 200)
        self.assertEqual(len(hist["history"]), 4)
        self.assert_json(self.req("GET", "/health/"), 200)
        self.assert_json(self.req("DELETE", "/api/conversations/%s/" % cid), 200,
                         {"status": "成功", "message": "会话历史已清除"})
        self.assert_json(self.req("GET", "/api/conversations/%s" % cid), 404,
                         {"status": "error", "message": "Conversation not found"})

    def test_keep_alive_serves_several_requests_on_one_connection(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=t(30))
        try:
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            sock = conn.sock
            self.assertIsNotNone(sock, "connection closed after /health")
            conn.request("POST", "/api/chat", body=b'{"message": "ka mock:tokens=1"}',
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            self.assertEqual(r.status, 200, body)
            self.assertIs(conn.sock, sock, "connection was not kept alive")
            conn.request("GET", "/api/conversations/" + self.baseline_id)
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            self.assertIs(conn.sock, sock, "connection was not kept alive")
            # answers to requests without a body need not cost the connection either
            for method, path, status in (("GET", "/nope", 404), ("GET", "/api/chat", 405),
                                         ("GET", "/api/conversations/nope", 404), ("OPTIONS", "/api/chat", 204),
                                         ("GET", "/health", 200)):
                conn.request(method, path)
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, status)
                self.assertIs(conn.sock, sock, "connection closed after %s %s (%d)" % (method, path, status))
        finally:
            conn.close()

    def test_query_string_does_not_change_routing(self):
        obj = self.chat("query mock:tokens=1", path="/api/chat?foo=bar")
        self.assertEqual(obj["response"], "w1")
        self.assert_json(self.req("GET", "/health?x=1"), 200)

    # -- bad input

    def bad_bodies(self):
        """(name, raw body) pairs that must all be 400."""
        return [
            ("empty body", b""),
            ("plain text", b"hello"),
            ("truncated object", b'{"message": "hi"'),
            ("single quotes", b"{'message': 'hi'}"),
            ("trailing garbage", b'{"message": "hi mock:tokens=1"} junk'),
            ("two objects", b'{"message": "a"}{"message": "b"}'),
            ("array", b'[{"message": "hi"}]'),
            ("string", b'"hi"'),
            ("number", b"42"),
            ("null", b"null"),
            ("true", b"true"),
            ("empty object", b"{}"),
            ("only conversation_id", b'{"conversation_id": "abc"}'),
            ("message number", b'{"message": 42}'),
            ("message null", b'{"message": null}'),
            ("message array", b'{"message": ["hi"]}'),
            ("message object", b'{"message": {"text": "hi"}}'),
            ("message bool", b'{"message": true}'),
            ("message empty", b'{"message": ""}'),
            ("message key case", b'{"Message": "hi"}'),
            ("conversation_id number", b'{"message": "hi", "conversation_id": 123}'),
            ("conversation_id array", b'{"message": "hi", "conversation_id": ["a"]}'),
            ("conversation_id object", b'{"message": "hi", "conversation_id": {}}'),
            ("conversation_id bool", b'{"message": "hi", "conversation_id": true}'),
            ("invalid utf-8 in message", b'{"message": "\xff\xfe hi"}'),
            ("invalid utf-8 truncated sequence", b'{"message": "abc\xe4\xbd"}'),
            ("overlong utf-8", b'{"message": "\xc0\xaf"}'),
            ("utf-8 surrogate", b'{"message": "\xed\xa0\x80"}'),
            ("invalid utf-8 outside strings", b'{"message": "hi"}\xff'),
            ("invalid utf-8 in a key", b'{"mess\xffage": "hi", "message": "hi"}'),
            ("lone surrogate escape", b'{"message": "\\ud800 hi"}'),
        ]

    def test_bad_bodies_are_400_and_store_nothing(self):
        before = self.counts()
        stats = self.mock.stats()["requests"]
        for path in ("/api/chat", "/api/chat-stream"):
            for name, body in self.bad_bodies():
                with self.subTest(path=path, case=name):
                    resp = self.req("POST", path, body)
                    self.assert_error(resp, 400)
        self.assertEqual(self.counts(), before, "bad input changed the database")
        self.assertEqual(self.mock.stats()["requests"], stats, "bad input reached the upstream")
        self.assert_json(self.req("GET", "/health"), 200)
        self.assert_baseline_intact()

    def test_bad_get_stream_queries_are_400(self):
        before = self.counts()
        for query in ("", "conversation_id=abc", "message=", "message=&conversation_id=abc",
                      "message=%FF%FEhi", "message=abc%E4%BD"):
            with self.subTest(query=query):
                resp = self.req("GET", "/api/chat-stream" + ("?" + query if query else ""))
                self.assert_error(resp, 400)
        self.assertEqual(self.counts(), before)
        self.assert_baseline_intact()

    def test_null_and_empty_conversation_id_mean_new(self):
        for cid in (None, ""):
            with self.subTest(conversation_id=cid):
                resp = self.req("POST", "/api/chat", {"message": "nullid mock:tokens=1", "conversation_id": cid})
                obj = self.assert_json(resp, 200)
                self.assertRegex(obj["conversation_id"], UUID4_RE)
                self.assertNotEqual(obj["conversation_id"], self.baseline_id)
                self.assertEqual(obj["response"], "w1")
                sse = SSE(self.port, body={"message": "nullid stream mock:tokens=1", "conversation_id": cid})
                self.assertEqual(sse.status, 200, sse.body)
                sse.read_all()
                sse.close()
                self.assertRegex(sse.header("X-Conversation-Id") or "", UUID4_RE)
                self.assertNotEqual(sse.header("X-Conversation-Id"), obj["conversation_id"])
        res, sse = self.stream("empty id get mock:tokens=1", conversation_id="", method="GET")
        self.assertEqual(res.content, "w1")

    def test_body_over_max_body_is_413(self):
        before = self.counts()
        for path in ("/api/chat", "/api/chat-stream"):
            with self.subTest(path=path):
                self.assert_error(self.req("POST", path, padded_body(MAX_BODY + 1)), 413)
                self.assert_error(self.req("POST", path, padded_body(4 * MAX_BODY)), 413)
        self.assertEqual(self.counts(), before)
        self.assert_baseline_intact()

    def test_body_of_exactly_max_body_is_accepted(self):
        resp = self.req("POST", "/api/chat", padded_body(MAX_BODY, "limit body mock:tokens=2"))
        obj = self.assert_json(resp, 200)
        self.assertEqual(obj["response"], "w1 w2")

    def test_huge_content_length_without_body_is_413_promptly(self):
        for path in ("/api/chat", "/api/chat-stream"):
            with self.subTest(path=path):
                c = RawConn(self.port, timeout=t(10))
                try:
                    c.send(("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            "Content-Length: 1000000000\r\n\r\n" % path).encode())
                    start = time.monotonic()
                    resp = c.read_response()
                finally:
                    c.close()
                self.assertLess(time.monotonic() - start, t(10))
                self.assert_error(resp, 413)

    def test_expect_100_continue(self):
        body = b'{"message": "expect mock:tokens=2", "pad": "' + b"x" * 4000 + b'"}'
        c = RawConn(self.port, timeout=t(10))
        try:
            c.send(("POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)).encode())
            c.settimeout(2)
            try:
                head = c.read_head()
                self.assertEqual(head.status, 100, "interim response")
            except OSError:
                pass  # like curl: after a short wait, send the body anyway
            c.settimeout(t(30))
            c.send(body)
            resp = c.read_response()
        finally:
            c.close()
        obj = self.assert_json(resp, 200)
        self.assertEqual(obj["response"], "w1 w2")
        # too large: refused without asking for the body
        c = RawConn(self.port, timeout=t(10))
        try:
            c.send(("POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (MAX_BODY + 1)).encode())
            resp = c.read_response()
        finally:
            c.close()
        self.assert_error(resp, 413)

    def test_chunked_request_bodies(self):
        def chunked(parts):
            out = b""
            for p in parts:
                out += b"%x\r\n%s\r\n" % (len(p), p)
            return out + b"0\r\n\r\n"
        head = (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        resp = raw_request(self.port, head + chunked([b'{"mess', b'age": "chunk', b'ed mock:tokens=2"}']))
        obj = self.assert_json(resp, 200)
        self.assertEqual(obj["response"], "w1 w2")
        before = self.counts()
        big = padded_body(MAX_BODY + 5000)
        resp = raw_request(self.port, head + chunked([big[i:i + 8000] for i in range(0, len(big), 8000)]))
        self.assert_error(resp, 413)
        self.assertEqual(self.counts(), before)

    def test_message_over_max_message_is_413(self):
        before = self.counts()
        cases = [("ascii", "m" * (MAX_MESSAGE + 1)),
                 # 334 characters, 1002 bytes: the limit is in bytes
                 ("chinese", "你" * 334)]
        for path in ("/api/chat", "/api/chat-stream"):
            for name, msg in cases:
                with self.subTest(path=path, case=name):
                    self.assert_error(self.req("POST", path, {"message": msg}), 413)
        resp = self.req("GET", "/api/chat-stream?message=" + quote_path("q" * (MAX_MESSAGE + 1)))
        self.assert_error(resp, 413)
        self.assertEqual(self.counts(), before)

    def test_message_of_exactly_max_message_is_accepted(self):
        msg = "mock:tokens=1 " + "m" * (MAX_MESSAGE - 14)
        self.assertEqual(len(msg.encode()), MAX_MESSAGE)
        obj = self.chat(msg)
        self.assertEqual(obj["response"], "w1")
        msg = "mock:tokens=1 " + "你" * ((MAX_MESSAGE - 14) // 3)
        msg += "m" * (MAX_MESSAGE - len(msg.encode()))
        self.assertEqual(len(msg.encode()), MAX_MESSAGE)
        res, _ = self.stream(msg)
        self.assertEqual(res.content, "w1")

    def test_odd_conversation_ids_are_404_and_harmless(self):
        before = self.counts()
        ids = ["x", "0", "NULL", "' OR '1'='1", "1; DROP TABLE messages; --", "%", "你好",
               "a" * 2000, str(uuid.uuid4()), self.baseline_id + "0", self.baseline_id[:-1],
               " " + self.baseline_id]
        for cid in ids:
            with self.subTest(id=cid[:40]):
                path = "/api/conversations/" + quote_path(cid)
                self.assert_json(self.req("GET", path), 404,
                                 {"status": "error", "message": "Conversation not found"})
                self.assert_json(self.req("DELETE", path), 404,
                                 {"status": "错误", "message": "会话历史未找到"})
        for path in ("/api/conversations/..%2Fhealth", "/api/conversations/..%2F..%2Fetc%2Fpasswd",
                     "/api/conversations/%2e%2e"):
            with self.subTest(path=path):
                self.assert_error(self.req("GET", path), 404)
                self.assertEqual(self.req("DELETE", path).status, 404)
        self.assertEqual(self.counts(), before)
        self.assert_baseline_intact()

    def test_odd_conversation_ids_in_chat_start_new_conversations(self):
        for cid in ("' OR '1'='1", "a" * 3000, "你好", self.baseline_id + "0", "null"):
            with self.subTest(id=cid[:40]):
                obj = self.chat("odd id mock:tokens=1", cid)
                self.assertNotEqual(obj["conversation_id"], cid)
                self.assertNotEqual(obj["conversation_id"], self.baseline_id)
                self.assertEqual(obj["cached"], False)
        self.assert_baseline_intact()

    def test_garbage_and_broken_requests_do_not_hurt(self):
        payloads = [
            b"GARBAGE\r\n\r\n",
            b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /health HTTP/9.9\r\n\r\n",
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
            b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        before = self.counts()
        for data in payloads:
            with self.subTest(data=data[:40]):
                c = RawConn(self.port, timeout=t(5))
                try:
                    c.send(data)
                    try:
                        resp = c.read_response()
                        self.assertGreaterEqual(resp.status, 400, resp)
                    except (OSError, EOFError, ValueError, IndexError):
                        pass  # closing the connection is an acceptable answer
                finally:
                    c.close()
        # connections opened and dropped at every stage
        for data in (b"", b"POST /api/chat HTTP/1.1\r\n", b"POST /api/chat HTTP/1.1\r\nContent-Length: 30\r\n\r\n{"):
            c = RawConn(self.port)
            c.send(data)
            c.close()
        self.assertEqual(self.counts(), before)
        self.assert_json(self.req("GET", "/health"), 200)
        self.assert_baseline_intact()

    def test_access_log_line_per_request(self):
        marker = "/access-log-probe-%s" % uuid.uuid4().hex
        self.req("GET", marker)
        self.req("POST", "/api/chat", {"message": "access log mock:tokens=1"})

        def found():
            lines = self.chatd.stderr_text().splitlines()
            probe = [l for l in lines if marker in l]
            chat = [l for l in lines if "POST" in l and "/api/chat" in l and re.search(r"\b200\b", l)]
            return probe, chat
        wait_for(lambda: all(found()), t(5))
        probe, chat = found()
        self.assertEqual(len(probe), 1, "one access-log line for GET %s" % marker)
        self.assertIn("GET", probe[0])
        self.assertRegex(probe[0], r"\b404\b")
        # method, path, status, bytes, milliseconds: at least three numbers besides the path
        self.assertGreaterEqual(len(re.findall(r"\b\d+(?:\.\d+)?", probe[0].replace(marker, ""))), 3, probe[0])
        self.assertTrue(chat, "access-log line for POST /api/chat")

    def test_whitespace_message_is_a_message(self):
        obj = self.chat("   ")
        self.assertEqual(obj["response"], demo_answer("   "))

    def test_pretty_printed_body_with_extra_fields(self):
        body = b'\n  {\n\t"extra": [1, 2, {"x": null}],\n  "message" :  "pretty mock:tokens=2" ,\n  "conversation_id": null\n}\n'
        obj = self.assert_json(self.req("POST", "/api/chat", body), 200)
        self.assertEqual(obj["response"], "w1 w2")

    def test_nul_in_message_is_refused_or_kept_whole(self):
        before = self.counts()
        resp = self.req("POST", "/api/chat", b'{"message": "nul\\u0000byte mock:echo"}')
        if resp.status == 400:
            self.assert_error(resp, 400)
            self.assertEqual(self.counts(), before)
        else:
            obj = self.assert_json(resp, 200)
            hist = self.history(obj["conversation_id"])
            self.assertEqual(hist["history"][0]["content"], "nul\x00byte mock:echo", "message truncated")

    def test_deeply_nested_json_does_not_crash(self):
        before = self.counts()
        for depth in (100, 5000, 20000):
            with self.subTest(depth=depth):
                body = b'{"message": "deep mock:tokens=1", "x": ' + b"[" * depth + b"]" * depth + b"}"
                resp = self.req("POST", "/api/chat", body)
                self.assertIn(resp.status, (200, 400), resp)
                if resp.status == 400:
                    self.assert_error(resp, 400)
        self.assert_json(self.req("GET", "/health"), 200)
        self.assertLessEqual(self.counts()[0], before[0] + 3)

    def test_pipelined_requests_are_answered_in_order(self):
        c = RawConn(self.port, timeout=t(10))
        try:
            c.send(build_request("GET", "/health") +
                   build_request("POST", "/api/chat", {"message": "pipelined mock:tokens=2"}) +
                   build_request("GET", "/api/conversations/" + self.baseline_id))
            r1 = c.read_response()
            r2 = c.read_response()
            r3 = c.read_response()
        finally:
            c.close()
        self.assert_json(r1, 200)
        self.assertEqual(self.assert_json(r2, 200)["response"], "w1 w2")
        self.assertEqual(r3.body, self.baseline_body)

    def test_slowly_sent_body(self):
        body = b'{"message": "trickled in mock:tokens=3"}'
        c = RawConn(self.port, timeout=t(10))
        try:
            c.send(("POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\n\r\n" % len(body)).encode())
            for i in range(0, len(body), 10):
                time.sleep(0.15)
                c.send(body[i:i + 10])
            resp = c.read_response()
        finally:
            c.close()
        self.assertEqual(self.assert_json(resp, 200)["response"], "w1 w2 w3")

    def test_zz_server_up_and_data_intact_after_everything(self):
        self.assert_json(self.req("GET", "/health"), 200)
        self.assert_baseline_intact()
        obj = self.chat("still here mock:tokens=3", self.baseline_id)
        self.assertEqual(obj["conversation_id"], self.baseline_id)
        self.assertEqual(obj["response"], tokens_answer(3))


class CorsOriginAndDefaultLimitsTests(ChatdCase):
    """--cors-origin changes every response's header; the default limits are 1 MiB and 64 KiB."""

    cors = "https://app.example.com"
    chatd_args = ("--cors-origin", cors)

    def test_cors_origin_everywhere(self):
        for resp in (self.req("GET", "/health"), self.req("GET", "/nope"), self.req("GET", "/api/chat"),
                     self.req("POST", "/api/chat", b"{"), self.req("OPTIONS", "/api/chat"),
                     self.req("GET", "/api/conversations/nope"),
                     self.req("POST", "/api/chat", {"message": "cors mock:tokens=1"})):
            with self.subTest(resp=resp):
                self.assertEqual(resp.header("Access-Control-Allow-Origin"), self.cors)
        res, sse = self.stream("cors stream mock:tokens=1")
        self.assertEqual(sse.header("Access-Control-Allow-Origin"), self.cors)

    def test_default_max_body(self):
        c = RawConn(self.port, timeout=t(10))
        try:
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 1048577\r\n\r\n")
            resp = c.read_response()
        finally:
            c.close()
        self.assert_error(resp, 413)
        obj = self.assert_json(self.req("POST", "/api/chat", padded_body(1048576, "big body mock:tokens=1")), 200)
        self.assertEqual(obj["response"], "w1")

    def test_default_max_message(self):
        msg = "mock:tokens=1 " + "m" * (65536 - 14)
        self.assert_error(self.req("POST", "/api/chat", {"message": msg + "m"}), 413)
        obj = self.chat(msg)
        self.assertEqual(obj["response"], "w1")


if __name__ == "__main__":
    unittest.main()
