"""test_chat.py - SPEC sections 1 and 2: POST /api/chat, POST and GET
/api/chat-stream, the upstream request, history window, response cache,
reasoning relay, UTF-8 round trips, upstream failures and timeouts (each
storing nothing), client disconnects, heartbeats and concurrency.
"""

import json
import os
import socket
import threading
import time
import unittest
import uuid

from harness import (SSE, TS_RE, UUID4_RE, ChatdCase, RawConn, build_request, canonical, check_stream,
                     db_conversation, db_orphan_messages, demo_answer, quote_path, t, take_content,
                     tokens_answer, wait_for)


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def run_parallel(fn, n):
    """Runs fn(i) for i in range(n) in n threads; returns the results once all are done,
    or raises the first exception one of them raised."""
    results = [None] * n

    def work(i):
        try:
            results[i] = fn(i)
        except BaseException as e:  # raised below, once every thread is done
            results[i] = e
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return results


class ChatCase(ChatdCase):
    model = "e2e-model"
    auth = ""

    def assert_upstream_request(self, stream, messages, model=None, auth=None):
        lr = self.mock.last_request()
        body = lr["body"]
        self.assertEqual(body.get("model"), model or self.model)
        self.assertIs(body.get("stream"), stream)
        for key, value in (("temperature", 1), ("top_p", 1), ("max_tokens", 4096)):
            self.assertIn(key, body)
            self.assertNotIsInstance(body[key], bool)
            self.assertIsInstance(body[key], (int, float))
            self.assertEqual(body[key], value, key)
        self.assertIsInstance(body["max_tokens"], int)
        self.assertEqual(body.get("messages"), messages)
        self.assertEqual(lr.get("authorization"), self.auth if auth is None else auth)
        return lr

    def snapshot(self, cid):
        return (self.req("GET", "/api/conversations/" + quote_path(cid)).body,
                db_conversation(self.db_path, cid))

    def stream_error(self, message, conversation_id=None, method="POST"):
        """A stream that must fail before it starts: returns the JSON error response."""
        sse = SSE(self.port, message, conversation_id, method=method)
        sse.close()
        self.assertFalse(sse.is_stream, "expected a plain error, got a stream: %r" % sse.events)
        return sse.response()

    def stream_failing_after_start(self, message, conversation_id=None):
        """A stream that starts and then fails: returns the StreamResult."""
        sse = SSE(self.port, message, conversation_id)
        try:
            self.assertEqual(sse.status, 200, "stream should have started: %r" % sse.body)
            res = check_stream(self, sse)
        finally:
            sse.close()
        self.assertIsNone(res.done, "a failed stream must not end with done")
        self.assertIsNotNone(res.error, "a failed stream must end with event: error; events %r" % sse.events)
        return res, sse


class ChatTests(ChatCase):
    chatd_args = ("--llm-model", "e2e-model")

    # -- section 1: POST /api/chat

    def test_new_conversation_exact_response(self):
        msg = "hello there"
        resp = self.req("POST", "/api/chat", {"message": msg})
        obj = self.assert_json(resp, 200)
        cid = obj["conversation_id"]
        self.assertRegex(cid, UUID4_RE)
        self.assert_json(resp, 200, {"status": "success", "response": demo_answer(msg),
                                     "conversation_id": cid, "cached": False})
        hist = self.history(cid)
        self.assertEqual(self.pairs(hist), [("user", msg), ("assistant", demo_answer(msg))])

    def test_conversation_continues_in_order(self):
        a = self.chat("first mock:tokens=2", expect_cached=False)
        cid = a["conversation_id"]
        self.assertEqual(a["response"], "w1 w2")
        b = self.chat("second mock:tokens=3", cid, expect_cached=False)
        self.assertEqual(b["conversation_id"], cid)
        self.assertEqual(b["response"], "w1 w2 w3")
        c = self.chat("third", cid)
        self.assertEqual(c["conversation_id"], cid)
        self.assertEqual(c["response"], demo_answer("third"))
        hist = self.history(cid)
        self.assertEqual(self.pairs(hist), [
            ("user", "first mock:tokens=2"), ("assistant", "w1 w2"),
            ("user", "second mock:tokens=3"), ("assistant", "w1 w2 w3"),
            ("user", "third"), ("assistant", demo_answer("third"))])
        stamps = [m["timestamp"] for m in hist["history"]]
        self.assertEqual(stamps, sorted(stamps))
        self.assertLessEqual(hist["created_at"], stamps[0])
        self.assertLessEqual(stamps[0], hist["last_active"])
        self.assertGreaterEqual(hist["last_active"], stamps[-2])

    def test_exchange_stored_in_database(self):
        msg = "stored 存储 mock:tokens=2"
        cid = self.chat(msg)["conversation_id"]
        conv, rows = db_conversation(self.db_path, cid)
        self.assertIsNotNone(conv, "conversation row")
        self.assertRegex(conv[0], TS_RE)
        self.assertRegex(conv[1], TS_RE)
        self.assertEqual([(r, c) for r, c, _ in rows], [("user", msg), ("assistant", "w1 w2")])
        for _, _, ts in rows:
            self.assertIsInstance(ts, str)
            self.assertRegex(ts, TS_RE)
        hist = self.history(cid)
        self.assertEqual(hist["created_at"], conv[0])
        self.assertEqual(hist["last_active"], conv[1])
        self.assertEqual([m["timestamp"] for m in hist["history"]], [ts for _, _, ts in rows])

    def test_unknown_id_starts_new_conversation(self):
        for unknown in ("does-not-exist", str(uuid.uuid4()), "0"):
            with self.subTest(id=unknown):
                obj = self.chat("unknown id mock:tokens=1", unknown, expect_cached=False)
                self.assertNotEqual(obj["conversation_id"], unknown)
                self.assertEqual(len(self.history(obj["conversation_id"])["history"]), 2)
                r = self.req("GET", "/api/conversations/" + quote_path(unknown))
                self.assert_json(r, 404, {"status": "error", "message": "Conversation not found"})
        res, sse = self.stream("unknown id stream mock:tokens=1", "stream-does-not-exist")
        self.assertNotEqual(res.done["conversation_id"], "stream-does-not-exist")
        res, sse = self.stream("unknown id get mock:tokens=1", "get-does-not-exist", method="GET")
        self.assertNotEqual(res.done["conversation_id"], "get-does-not-exist")

    def test_ids_are_unique_uuid4(self):
        ids = set()
        for i in range(20):
            obj = self.chat("id %d mock:tokens=1" % i)
            self.assertRegex(obj["conversation_id"], UUID4_RE)
            ids.add(obj["conversation_id"])
        for i in range(5):
            res, _ = self.stream("sid %d mock:tokens=1" % i)
            ids.add(res.done["conversation_id"])
        self.assertEqual(len(ids), 25)

    def test_upstream_request_chat(self):
        a = self.chat("shape one mock:tokens=1")
        cid = a["conversation_id"]
        self.assert_upstream_request(False, msgs(("user", "shape one mock:tokens=1")))
        self.chat("shape two mock:tokens=2", cid)
        self.assert_upstream_request(False, msgs(("user", "shape one mock:tokens=1"), ("assistant", "w1"),
                                                 ("user", "shape two mock:tokens=2")))

    def test_upstream_request_stream(self):
        res, _ = self.stream("sshape one mock:tokens=1")
        cid = res.done["conversation_id"]
        self.assert_upstream_request(True, msgs(("user", "sshape one mock:tokens=1")))
        self.wait_history(cid, 2)
        self.stream("sshape two mock:tokens=1", cid, method="GET")
        self.assert_upstream_request(True, msgs(("user", "sshape one mock:tokens=1"), ("assistant", "w1"),
                                                ("user", "sshape two mock:tokens=1")))

    def test_default_history_window_is_nine(self):
        cid = None
        for i in range(1, 6):
            obj = self.chat("h%d mock:tokens=1" % i, cid)
            cid = obj["conversation_id"]
        final = self.chat("final mock:echo", cid)
        earlier = [("user", "h1 mock:tokens=1"), ("assistant", "w1")]
        for i in range(2, 6):
            earlier += [("user", "h%d mock:tokens=1" % i), ("assistant", "w1")]
        sent = earlier[-9:] + [("user", "final mock:echo")]
        self.assert_upstream_request(False, msgs(*sent))
        self.assertEqual(final["response"], "|".join("%s:%s" % p for p in sent))

    def test_json_special_characters_round_trip(self):
        msg = 'quote " backslash \\ slash / newline \n tab \t ctrl \x01 del \x7f é 😀 mock:echo'
        obj = self.chat(msg)
        self.assertEqual(obj["response"], "user:" + msg)
        hist = self.history(obj["conversation_id"])
        self.assertEqual(self.pairs(hist), [("user", msg), ("assistant", "user:" + msg)])
        # \u escapes, including a surrogate pair, in the request
        body = b'{"message": "\\u4f60\\u597d \\ud83d\\ude00 \\"q\\" mock:echo"}'
        resp = self.req("POST", "/api/chat", body)
        obj = self.assert_json(resp, 200)
        self.assertEqual(obj["response"], 'user:你好 😀 "q" mock:echo')
        res, _ = self.stream(msg)
        self.assertEqual(res.content, "user:" + msg)

    def test_chinese_message_round_trip(self):
        msg = "你好，世界！这是一条中文消息 🌍"
        resp = self.req("POST", "/api/chat", {"message": msg})
        obj = self.assert_json(resp, 200)
        self.assertEqual(obj["response"], demo_answer(msg))
        self.assertIn(msg.encode("utf-8"), resp.body, "UTF-8 is sent unescaped")
        cid = obj["conversation_id"]
        hist = self.history(cid)
        self.assertEqual(self.pairs(hist), [("user", msg), ("assistant", demo_answer(msg))])
        _, rows = db_conversation(self.db_path, cid)
        self.assertEqual([(r, c) for r, c, _ in rows], [("user", msg), ("assistant", demo_answer(msg))])
        msg2 = "第二个问题：天气怎么样？"
        res, sse = self.stream(msg2, cid, method="GET")
        self.assertEqual(res.content, demo_answer(msg2))
        self.assertEqual(res.done["conversation_id"], cid)
        self.assertIn(msg2.encode("utf-8"), sse.raw)
        hist = self.wait_history(cid, 4)
        self.assertEqual(self.pairs(hist)[2:], [("user", msg2), ("assistant", demo_answer(msg2))])

    def test_unicode_tokens(self):
        expected, _ = self.mock.direct("mock:unicode mock:tokens=7")
        self.assertTrue(any(ord(ch) > 0xFFFF for ch in expected), "mock emits astral characters")
        resp = self.req("POST", "/api/chat", {"message": "uni mock:unicode mock:tokens=7"})
        obj = self.assert_json(resp, 200)
        self.assertEqual(obj["response"], expected)
        self.assertIn(expected.encode("utf-8"), resp.body)
        res, sse = self.stream("uni stream mock:unicode mock:tokens=7")
        self.assertEqual(res.content, expected)
        for piece in res.contents:
            self.assertNotIn("\ufffd", piece)
        hist = self.wait_history(res.done["conversation_id"], 2)
        self.assertEqual(hist["history"][1]["content"], expected)

    def test_crlf_and_split_upstream_give_the_same_answer(self):
        plain, _ = self.mock.direct("mock:unicode mock:tokens=9")
        for extra in ("mock:crlf", "mock:split", "mock:crlf mock:split"):
            msg = "framing mock:unicode mock:tokens=9 " + extra
            with self.subTest(directives=extra, endpoint="chat"):
                obj = self.chat(msg)
                self.assertEqual(obj["response"], plain)
            with self.subTest(directives=extra, endpoint="stream"):
                res, _ = self.stream(msg)
                self.assertEqual(res.content, plain)
                hist = self.wait_history(res.done["conversation_id"], 2)
                self.assertEqual(hist["history"][1]["content"], plain)
        msg = "framing mock:reasoning=3 mock:tokens=3 mock:split mock:crlf"
        res, _ = self.stream(msg)
        self.assertEqual(res.reasonings, ["r1 ", "r2 ", "r3"])
        self.assertEqual(res.content, "w1 w2 w3")
        self.assertEqual(self.chat(msg)["response"], "w1 w2 w3")
        echo = "拆分 UTF-8 🌟 é mock:echo mock:split mock:crlf"
        res, _ = self.stream(echo)
        self.assertEqual(res.content, "user:" + echo)
        self.assertEqual(self.chat(echo)["response"], "user:" + echo)

    def test_empty_answer(self):
        obj = self.chat("nothing to say mock:tokens=0")
        self.assertEqual(obj["response"], "")
        res, _ = self.stream("nothing to stream mock:tokens=0")
        self.assertEqual(res.content, "")
        hist = self.wait_history(res.done["conversation_id"], 2)
        self.assertEqual(self.pairs(hist), [("user", "nothing to stream mock:tokens=0"), ("assistant", "")])

    # -- reasoning

    def test_reasoning_not_part_of_chat_answer(self):
        obj = self.chat("think mock:reasoning=3 mock:tokens=2")
        self.assertEqual(obj["response"], "w1 w2")
        hist = self.history(obj["conversation_id"])
        self.assertEqual(self.pairs(hist)[1], ("assistant", "w1 w2"))

    def test_reasoning_relayed_in_stream_not_stored(self):
        _, reasoning = self.mock.direct("mock:reasoning=3 mock:tokens=2", stream=True)
        self.assertTrue(reasoning)
        res, sse = self.stream("think stream mock:reasoning=3 mock:tokens=2")
        self.assertEqual(res.reasoning, reasoning)
        self.assertEqual(res.content, "w1 w2")
        self.assertEqual(res.reasonings, ["r1 ", "r2 ", "r3"])
        first_content = res.kinds.index("content")
        self.assertEqual(set(res.kinds[:first_content]), {"reasoning"})
        self.assertNotIn("reasoning", res.kinds[first_content:])
        cid = res.done["conversation_id"]
        hist = self.wait_history(cid, 2)
        self.assertEqual(self.pairs(hist), [("user", "think stream mock:reasoning=3 mock:tokens=2"),
                                            ("assistant", "w1 w2")])
        _, rows = db_conversation(self.db_path, cid)
        self.assertEqual(rows[1][1], "w1 w2")

    # -- section 2: streams

    def test_stream_exact_wire_format(self):
        sse = SSE(self.port, "wire mock:tokens=5")
        res = check_stream(self, sse)
        sse.close()
        cid = sse.header("X-Conversation-Id")
        self.assertRegex(cid or "", UUID4_RE)
        self.assertTrue((sse.header("Content-Type") or "").startswith("text/event-stream"))
        self.assertEqual(sse.header("Access-Control-Allow-Origin"), "*")
        self.assertEqual(res.contents, ["w1 ", "w2 ", "w3 ", "w4 ", "w5"], "one event per upstream piece")
        self.assertEqual(res.done, {"conversation_id": cid, "cached": False})
        body = b"".join(ev.text.encode() + b"\n\n" for ev in sse.events if not ev.is_comment)
        self.assertEqual(body, ('data: {"content": "w1 "}\n\ndata: {"content": "w2 "}\n\n'
                                'data: {"content": "w3 "}\n\ndata: {"content": "w4 "}\n\n'
                                'data: {"content": "w5"}\n\n'
                                'event: done\ndata: {"conversation_id": "%s", "cached": false}\n\n'
                                % cid).encode())
        hist = self.wait_history(cid, 2)
        self.assertEqual(self.pairs(hist), [("user", "wire mock:tokens=5"), ("assistant", "w1 w2 w3 w4 w5")])

    def test_stream_is_incremental(self):
        sse = SSE(self.port, "slowly mock:tokens=4 mock:delay=300")
        head_at = time.monotonic()
        res = check_stream(self, sse)
        sse.close()
        self.assertEqual(res.content, "w1 w2 w3 w4")
        content_events = [e for e in sse.events if not e.is_comment and e.name is None]
        self.assertGreaterEqual(len(content_events), 2)
        # the answer arrives piece by piece, not all at the end (wide margin: 0.9 s expected)
        self.assertGreater(content_events[-1].at - content_events[0].at, 0.4)
        self.assertGreater(content_events[-1].at - head_at, 0.4)

    def test_stream_continues_conversation_post_and_get(self):
        obj = self.chat("start mock:tokens=1")
        cid = obj["conversation_id"]
        res, sse = self.stream("post stream mock:tokens=2", cid)
        self.assertEqual(sse.header("X-Conversation-Id"), cid)
        self.assertEqual(res.done, {"conversation_id": cid, "cached": False})
        self.wait_history(cid, 4)
        res, sse = self.stream("get 流 mock:tokens=3", cid, method="GET")
        self.assertEqual(sse.header("X-Conversation-Id"), cid)
        self.assertEqual(res.content, "w1 w2 w3")
        hist = self.wait_history(cid, 6)
        self.assertEqual(self.pairs(hist), [
            ("user", "start mock:tokens=1"), ("assistant", "w1"),
            ("user", "post stream mock:tokens=2"), ("assistant", "w1 w2"),
            ("user", "get 流 mock:tokens=3"), ("assistant", "w1 w2 w3")])

    def test_get_stream_percent_encoding(self):
        msg = "a+b & c=d ?#% 你好 mock:echo"
        res, _ = self.stream(msg, method="GET")
        self.assertEqual(res.content, "user:" + msg)

    # -- cache

    def test_cache_hit_in_same_conversation(self):
        m = "cache question mock:tokens=3"
        a = self.chat(m, expect_cached=False)
        cid = a["conversation_id"]
        h1 = self.history(cid)
        requests = self.mock.stats()["requests"]
        time.sleep(0.01)
        resp = self.req("POST", "/api/chat", {"message": m, "conversation_id": cid})
        self.assert_json(resp, 200, {"status": "success", "response": "w1 w2 w3",
                                     "conversation_id": cid, "cached": True})
        self.assertEqual(self.mock.stats()["requests"], requests, "a cache hit must not call the upstream")
        h2 = self.history(cid)
        self.assertEqual(self.pairs(h2), [("user", m), ("assistant", "w1 w2 w3")] * 2)
        self.assertGreater(h2["last_active"], h1["last_active"], "a cache hit moves last_active")
        # the same question streamed, POST and GET
        res, sse = self.stream(m, cid)
        self.assertEqual(res.content, "w1 w2 w3")
        self.assertEqual(res.done, {"conversation_id": cid, "cached": True})
        res, sse = self.stream(m, cid, method="GET")
        self.assertEqual(res.content, "w1 w2 w3")
        self.assertEqual(res.done, {"conversation_id": cid, "cached": True})
        self.assertEqual(self.mock.stats()["requests"], requests)
        h3 = self.wait_history(cid, 8)
        self.assertEqual(self.pairs(h3), [("user", m), ("assistant", "w1 w2 w3")] * 4)

    def test_stream_answer_is_cached_for_chat(self):
        m = "streamed then asked mock:tokens=2"
        res, _ = self.stream(m)
        cid = res.done["conversation_id"]
        self.wait_history(cid, 2)
        requests = self.mock.stats()["requests"]
        obj = self.chat(m, cid, expect_cached=True)
        self.assertEqual(obj["response"], "w1 w2")
        self.assertEqual(self.mock.stats()["requests"], requests)

    def test_cache_key_includes_conversation(self):
        m = "per conversation mock:tokens=2"
        a = self.chat(m, expect_cached=False)
        requests = self.mock.stats()["requests"]
        b = self.chat(m, expect_cached=False)
        self.assertNotEqual(a["conversation_id"], b["conversation_id"])
        self.assertEqual(self.mock.stats()["requests"], requests + 1)
        # and a different message in the same conversation is not a hit
        c = self.chat(m + " ", a["conversation_id"], expect_cached=False)
        self.assertEqual(c["conversation_id"], a["conversation_id"])

    def test_delete_removes_cache_entries(self):
        c0, s0 = self.health_counts()
        cid = self.chat("delete cache one mock:tokens=1")["conversation_id"]
        self.chat("delete cache two mock:tokens=1", cid)
        c1, s1 = self.health_counts()
        self.assertEqual((c1, s1), (c0 + 2, s0 + 1))
        self.assert_json(self.req("DELETE", "/api/conversations/" + cid), 200,
                         {"status": "成功", "message": "会话历史已清除"})
        c2, s2 = self.health_counts()
        self.assertEqual((c2, s2), (c0, s0))
        obj = self.chat("delete cache one mock:tokens=1", cid, expect_cached=False)
        self.assertNotEqual(obj["conversation_id"], cid)

    # -- upstream failures: each stores nothing

    def existing(self):
        cid = self.chat("existing before failure mock:tokens=2")["conversation_id"]
        return cid, self.snapshot(cid)

    def assert_nothing_changed(self, counts, cid, snap):
        time.sleep(0.2)
        self.assertEqual(self.counts(), counts, "a failed exchange changed the database")
        self.assertEqual(self.snapshot(cid), snap, "a failed exchange changed the conversation")

    def test_upstream_http_errors_are_502(self):
        cid, snap = self.existing()
        counts = self.counts()
        for code in (500, 401, 429, 503):
            msg = "fail mock:status=%d" % code
            for conv in (None, cid):
                with self.subTest(code=code, conversation=conv, endpoint="chat"):
                    err = self.assert_error(self.req("POST", "/api/chat",
                                                     {"message": msg, "conversation_id": conv}), 502)
                    self.assertIn("mock failure %d" % code, err["message"])
                for method in ("POST", "GET"):
                    with self.subTest(code=code, conversation=conv, endpoint="stream " + method):
                        err = self.assert_error(self.stream_error(msg, conv, method), 502)
                        self.assertIn("mock failure %d" % code, err["message"])
            with self.subTest(code=code, endpoint="retry is not a cached failure"):
                self.assert_error(self.req("POST", "/api/chat", {"message": msg, "conversation_id": cid}), 502)
        self.assert_nothing_changed(counts, cid, snap)

    def stream_fails_after_first_token(self, message, conversation_id=None, reason=None, status=502):
        """mock:malformed/error-event/close fail right after the first token, in the same write.

        chatd may see both at once and answer a plain error (the stream has not
        started), or start the stream and end it with event: error; either way
        nothing is stored."""
        sse = SSE(self.port, message, conversation_id)
        try:
            if not sse.is_stream:
                err = self.assert_error(sse.response(), status)
                text = err["message"]
            else:
                res = check_stream(self, sse)
                self.assertIsNone(res.done, "a failed stream must not end with done")
                self.assertIsNotNone(res.error, "a failed stream must end with event: error; %r" % sse.events)
                self.assertIn(res.content, ("", "w1 "))
                text = res.error["message"]
        finally:
            sse.close()
        if reason:
            self.assertIn(reason, text)

    def test_upstream_malformed_reply(self):
        cid, snap = self.existing()
        counts = self.counts()
        for conv in (None, cid):
            with self.subTest(conversation=conv):
                self.assert_error(self.req("POST", "/api/chat",
                                           {"message": "garbled mock:malformed", "conversation_id": conv}), 502)
                self.stream_fails_after_first_token("garbled stream mock:malformed", conv)
                # reasoning pieces go out first, so this stream has surely started
                res, _ = self.stream_failing_after_start(
                    "garbled late mock:malformed mock:reasoning=2 mock:delay=300", conv)
                self.assertEqual(res.reasonings, ["r1 ", "r2"])
                self.assertIn(res.content, ("", "w1 "))
        self.assert_nothing_changed(counts, cid, snap)

    def test_upstream_error_event(self):
        cid, snap = self.existing()
        counts = self.counts()
        for conv in (None, cid):
            with self.subTest(conversation=conv):
                self.stream_fails_after_first_token("oops mock:error-event", conv, reason="mock stream error")
                res, _ = self.stream_failing_after_start(
                    "oops late mock:error-event mock:reasoning=2 mock:delay=300", conv)
                self.assertEqual(res.reasonings, ["r1 ", "r2"])
                self.assertIn(res.content, ("", "w1 "))
                self.assertIn("mock stream error", res.error["message"])
        self.assert_nothing_changed(counts, cid, snap)

    def test_upstream_truncated_stream(self):
        cid, snap = self.existing()
        counts = self.counts()
        for conv in (None, cid):
            with self.subTest(conversation=conv):
                self.stream_fails_after_first_token("cut mock:close", conv)
                res, _ = self.stream_failing_after_start("cut late mock:close mock:reasoning=2 mock:delay=300", conv)
                self.assertEqual(res.reasonings, ["r1 ", "r2"])
                self.assertIn(res.content, ("", "w1 "))
        self.assert_nothing_changed(counts, cid, snap)

    def test_no_authorization_without_key(self):
        self.chat("no key mock:tokens=1")
        self.assertEqual(self.mock.last_request()["authorization"], "")
        self.stream("no key stream mock:tokens=1")
        self.assertEqual(self.mock.last_request()["authorization"], "")

    # -- disconnect

    def test_client_disconnect_cancels_upstream_and_stores_partial(self):
        full = tokens_answer(200)
        msg = "disconnect mock:tokens=200 mock:delay=50"
        cancelled = self.mock.stats()["cancelled"]
        sse = SSE(self.port, msg)
        self.assertEqual(sse.status, 200, sse.body)
        cid = sse.header("X-Conversation-Id")
        got = take_content(self, sse, 3)
        sse.close()
        closed_at = time.monotonic()
        ok = wait_for(lambda: self.mock.stats()["cancelled"] > cancelled, t(4))
        self.assertTrue(ok, "upstream call not cancelled after the client left (stats %r)" % self.mock.stats())
        self.assertLess(time.monotonic() - closed_at, t(4))

        def stored():
            r = self.req("GET", "/api/conversations/" + cid)
            return r.status == 200 and r.json()
        hist = wait_for(stored, t(5))
        self.assertTrue(hist, "partial exchange not stored")
        pairs = [(m["role"], m["content"]) for m in hist["history"]]
        self.assertEqual(len(pairs), 2, pairs)
        self.assertEqual(pairs[0], ("user", msg))
        self.assertEqual(pairs[1][0], "assistant")
        partial = pairs[1][1]
        self.assertTrue(partial, "partial answer is empty")
        self.assertTrue(full.startswith(partial), "stored %r is not a prefix of the answer" % partial[:80])
        self.assertTrue(partial.startswith(got), "stored %r lacks what the client got %r" % (partial[:80], got))
        self.assertLess(len(partial), len(full))

    # -- concurrency

    def test_fifty_concurrent_streams(self):
        n = 50
        counts = self.counts()

        def one(i):
            if i % 2 == 0:
                msg = "concurrent %d mock:echo mock:delay=20" % i
                expected = "user:" + msg
            else:
                msg = "concurrent %d mock:tokens=%d mock:delay=20" % (i, i + 3)
                expected = tokens_answer(i + 3)
            sse = SSE(self.port, msg, timeout=t(60))
            try:
                res = check_stream(self, sse)
            finally:
                sse.close()
            self.assertIsNone(res.error)
            self.assertIsNotNone(res.done)
            self.assertEqual(res.content, expected, "stream %d" % i)
            self.assertEqual(res.done["conversation_id"], sse.header("X-Conversation-Id"))
            return res.done["conversation_id"], msg, expected
        results = run_parallel(one, n)
        self.assertEqual(len({cid for cid, _, _ in results}), n)
        for cid, msg, expected in results:
            hist = self.wait_history(cid, 2)
            self.assertEqual(self.pairs(hist), [("user", msg), ("assistant", expected)])
        self.assertEqual(self.counts(), (counts[0] + n, counts[1] + 2 * n))
        self.assertTrue(wait_for(lambda: self.mock.stats()["active"] == 0, t(5)))

    def test_twenty_concurrent_chats(self):
        def one(i):
            msg = "parallel %d mock:tokens=%d mock:delay=10" % (i, i + 1)
            obj = self.chat(msg)
            self.assertEqual(obj["response"], tokens_answer(i + 1))
            return obj["conversation_id"]
        results = run_parallel(one, 20)
        self.assertEqual(len(set(results)), 20)

    def test_parallel_exchanges_in_one_conversation_stay_whole(self):
        cid = self.chat("shared start mock:tokens=1")["conversation_id"]
        expected = {}

        def one(i):
            msg = "shared %d mock:tokens=%d mock:delay=20" % (i, i + 1)
            expected[msg] = tokens_answer(i + 1)
            if i % 2:
                res, _ = self.stream(msg, cid)
                self.assertEqual(res.content, tokens_answer(i + 1))
                self.assertEqual(res.done["conversation_id"], cid)
            else:
                obj = self.chat(msg, cid)
                self.assertEqual(obj["response"], tokens_answer(i + 1))
                self.assertEqual(obj["conversation_id"], cid)
        results = run_parallel(one, 10)
        hist = self.wait_history(cid, 22)
        pairs = self.pairs(hist)
        self.assertEqual(len(pairs), 22)
        for k in range(2, 22, 2):
            role, msg = pairs[k]
            self.assertEqual(role, "user")
            self.assertEqual(pairs[k + 1], ("assistant", expected[msg]), "exchange split apart")
        self.assertEqual(sorted(p[1] for p in pairs[2::2]), sorted(expected))

    def test_large_answers(self):
        n = 20000
        full = tokens_answer(n)
        obj = self.chat("big mock:tokens=%d mock:delay=0" % n)
        self.assertEqual(obj["response"], full)
        res, _ = self.stream("big stream mock:tokens=%d mock:delay=0" % n)
        self.assertEqual(res.content, full)
        # a client that does not read for a while gets everything afterwards
        sse = SSE(self.port, "big slow reader mock:tokens=%d mock:delay=0" % n)
        time.sleep(2)
        res = check_stream(self, sse)
        sse.close()
        self.assertEqual(res.content, full)
        self.assertIsNotNone(res.done)
        hist = self.wait_history(res.done["conversation_id"], 2)
        self.assertEqual(hist["history"][1]["content"], full)

    def test_disconnect_before_first_token(self):
        cancelled = self.mock.stats()["cancelled"]
        c = RawConn(self.port)
        c.send(build_request("POST", "/api/chat-stream", {"message": "leave early mock:tokens=3 mock:delay=3000"}))
        time.sleep(0.5)
        c.close()
        self.assertTrue(wait_for(lambda: self.mock.stats()["cancelled"] > cancelled, t(4)),
                        "upstream not cancelled: %r" % self.mock.stats())
        self.assertTrue(wait_for(lambda: self.mock.stats()["active"] == 0, t(4)))
        self.assert_json(self.req("GET", "/health"), 200)

    def test_disconnect_from_a_quiet_stream_is_noticed_at_once(self):
        # The upstream sends one piece and then nothing: the suspended
        # stream has nothing to write, yet the client's leaving must end
        # the upstream call within seconds, not at a later heartbeat.
        cancelled = self.mock.stats()["cancelled"]
        sse = SSE(self.port, "quiet then leave mock:stall=1 mock:tokens=5")
        self.assertEqual(sse.status, 200)
        ev = sse.next_data_event()
        self.assertEqual(ev.data, '{"content": "w1 "}')
        sse.close()
        self.assertTrue(wait_for(lambda: self.mock.stats()["cancelled"] > cancelled, t(4)),
                        "upstream of a quiet stream not cancelled: %r" % self.mock.stats())

    def test_disconnect_during_chat(self):
        c = RawConn(self.port)
        c.send(build_request("POST", "/api/chat", {"message": "impatient mock:tokens=20 mock:delay=100"}))
        time.sleep(0.5)
        c.close()
        # the upstream call does not outlive the answer it was for
        self.assertTrue(wait_for(lambda: self.mock.stats()["active"] == 0, t(8)))
        self.assert_json(self.req("GET", "/health"), 200)

    def test_concurrent_streams_with_half_disconnecting(self):
        n = 40
        cancelled = self.mock.stats()["cancelled"]

        def one(i):
            msg = "churn %d mock:tokens=40 mock:delay=25" % i
            sse = SSE(self.port, msg, timeout=t(60))
            try:
                if i % 2:
                    self.assertEqual(sse.status, 200)
                    self.assertIsNotNone(sse.next_data_event())
                    return None
                res = check_stream(self, sse)
                self.assertEqual(res.content, tokens_answer(40))
                self.assertIsNotNone(res.done)
                return res.done["conversation_id"]
            finally:
                sse.close()
        results = run_parallel(one, n)
        self.assertTrue(wait_for(lambda: self.mock.stats()["cancelled"] >= cancelled + n // 2, t(5)),
                        "cancelled %r, expected +%d" % (self.mock.stats(), n // 2))
        self.assertTrue(wait_for(lambda: self.mock.stats()["active"] == 0, t(5)))
        for cid in results:
            if cid:
                hist = self.wait_history(cid, 2)
                self.assertEqual(hist["history"][1]["content"], tokens_answer(40))
        self.assert_json(self.req("GET", "/health"), 200)

    def test_delete_during_a_stream_leaves_no_orphans(self):
        cid = self.chat("to be deleted mock:tokens=1")["conversation_id"]
        sse = SSE(self.port, "outlive it mock:tokens=20 mock:delay=50", cid)
        try:
            self.assertEqual(sse.status, 200, sse.body)
            self.assertIsNotNone(sse.next_data_event())
            self.assert_json(self.req("DELETE", "/api/conversations/" + cid), 200,
                             {"status": "成功", "message": "会话历史已清除"})
            res = check_stream(self, sse)
        finally:
            sse.close()
        self.assertTrue(res.done or res.error)
        time.sleep(0.3)
        self.assertEqual(db_orphan_messages(self.db_path), 0, "messages stored for a deleted conversation")
        r = self.req("GET", "/api/conversations/" + cid)
        self.assertIn(r.status, (200, 404))
        if r.status == 200:
            self.assertEqual([(m["role"], m["content"]) for m in r.json()["history"]],
                             [("user", "outlive it mock:tokens=20 mock:delay=50"), ("assistant", tokens_answer(20))])

    # -- heartbeat

    def test_idle_stream_gets_heartbeat(self):
        sse = SSE(self.port, "heartbeat mock:delay=17000 mock:tokens=2", timeout=t(60))
        try:
            res = check_stream(self, sse)
        finally:
            sse.close()
        self.assertEqual(res.content, "w1 w2")
        self.assertIsNotNone(res.done)
        texts = [e.text for e in sse.events]
        self.assertIn(": ping", texts, "no ': ping' heartbeat in %r" % texts)
        last_content = max(i for i, e in enumerate(sse.events) if not e.is_comment and e.name is None)
        self.assertLess(texts.index(": ping"), last_content, "heartbeat while the stream was idle")


class HistoryWindowTests(ChatCase):
    """--history 3, cache disabled."""

    chatd_args = ("--llm-model", "e2e-model", "--history", "3", "--cache-size", "0")

    def test_history_window_of_three(self):
        cid = self.chat("first mock:tokens=1")["conversation_id"]
        self.chat("second mock:tokens=2", cid)
        third = self.chat("third mock:echo", cid)
        sent = [("assistant", "w1"), ("user", "second mock:tokens=2"), ("assistant", "w1 w2"),
                ("user", "third mock:echo")]
        self.assert_upstream_request(False, msgs(*sent))
        self.assertEqual(third["response"], "|".join("%s:%s" % p for p in sent))
        res, _ = self.stream("fourth mock:echo", cid)
        sent = [("assistant", "w1 w2"), ("user", "third mock:echo"), ("assistant", third["response"]),
                ("user", "fourth mock:echo")]
        self.assert_upstream_request(True, msgs(*sent))
        self.assertEqual(res.content, "|".join("%s:%s" % p for p in sent))

    def test_first_message_goes_alone(self):
        obj = self.chat("solo mock:echo")
        self.assertEqual(obj["response"], "user:solo mock:echo")
        self.assert_upstream_request(False, msgs(("user", "solo mock:echo")))

    def test_cache_disabled(self):
        m = "no cache mock:tokens=2"
        cid = self.chat(m, expect_cached=False)["conversation_id"]
        requests = self.mock.stats()["requests"]
        self.chat(m, cid, expect_cached=False)
        res, _ = self.stream(m, cid)
        self.assertEqual(res.done["cached"], False)
        self.assertEqual(self.mock.stats()["requests"], requests + 2)
        self.assertEqual(self.health()["system"]["cache"], "缓存 0 条记录")


class CacheSizeTests(ChatCase):
    chatd_args = ("--cache-size", "2")

    def test_cache_holds_at_most_cache_size_entries(self):
        cid = None
        for m in ("size a mock:tokens=1", "size b mock:tokens=1", "size c mock:tokens=1", "size d mock:tokens=1"):
            cid = self.chat(m, cid)["conversation_id"]
        entries, _ = self.health_counts()
        self.assertLessEqual(entries, 2)
        self.assertGreaterEqual(entries, 1)
        requests = self.mock.stats()["requests"]
        self.chat("size d mock:tokens=1", cid, expect_cached=True)
        self.assertEqual(self.mock.stats()["requests"], requests)


class CacheTtlTests(ChatCase):
    chatd_args = ("--cache-ttl", "1")

    def test_cached_answer_expires_after_cache_ttl(self):
        m = "short lived mock:tokens=2"
        cid = self.chat(m, expect_cached=False)["conversation_id"]
        self.chat(m, cid, expect_cached=True)
        time.sleep(2.2)
        requests = self.mock.stats()["requests"]
        obj = self.chat(m, cid, expect_cached=False)
        self.assertEqual(obj["conversation_id"], cid)
        self.assertEqual(self.mock.stats()["requests"], requests + 1)


class ApiKeyTests(ChatCase):
    """--llm-key is sent as a Bearer token and never shows up anywhere else."""

    KEY = "sk-e2e-9f8e7d6c5b4a3-TOPSECRETKEY"
    model = "e2e/model-x"
    auth = "Bearer " + KEY
    chatd_args = ("--llm-key", KEY, "--llm-model", "e2e/model-x", "--log-level", "debug")

    def test_bearer_sent_upstream(self):
        self.chat("with key mock:tokens=1")
        self.assert_upstream_request(False, msgs(("user", "with key mock:tokens=1")))
        res, _ = self.stream("with key stream mock:tokens=1")
        self.assert_upstream_request(True, msgs(("user", "with key stream mock:tokens=1")))

    def test_key_never_in_responses_or_logs(self):
        seen = []
        ok = self.chat("leak check mock:tokens=1")
        cid = ok["conversation_id"]
        for msg in ("leak mock:status=401", "leak mock:status=500", "leak mock:status=403", "leak mock:malformed"):
            for conv in (None, cid):
                seen.append(self.req("POST", "/api/chat", {"message": msg, "conversation_id": conv}))
                sse = SSE(self.port, msg, conv)
                if sse.is_stream:
                    sse.read_all()
                seen.append(sse.response())
                sse.close()
        for msg in ("leak mock:error-event", "leak mock:close", "leak mock:malformed", "leak ok mock:tokens=2"):
            sse = SSE(self.port, msg)
            sse.read_all()
            sse.close()
            seen.append(sse.response())
        for path in ("/health", "/api/conversations/" + cid, "/nope"):
            seen.append(self.req("GET", path))
        self.assertTrue(any(r.status == 502 for r in seen))
        for r in seen:
            raw = r.raw_bytes()
            self.assertNotIn(self.KEY.encode(), raw, r)
            self.assertNotIn(b"TOPSECRETKEY", raw, r)
        time.sleep(0.3)
        err = self.chatd.stderr_text()
        self.assertNotIn(self.KEY, err, "the API key is in chatd's log")
        self.assertNotIn("TOPSECRETKEY", err, "part of the API key is in chatd's log")
        for suffix in ("", "-wal"):
            path = self.db_path + suffix
            if os.path.exists(path):
                with open(path, "rb") as f:
                    self.assertNotIn(b"TOPSECRETKEY", f.read())


class TimeoutTests(ChatCase):
    """--llm-timeout 2: silent upstreams give 504, or an error event once streaming."""

    chatd_args = ("--llm-timeout", "2")

    def setUp(self):
        self.counts_before = self.counts()

    def tearDown(self):
        # the upstream connection is released after a timeout
        self.assertTrue(wait_for(lambda: self.mock.stats()["active"] == 0, t(5)),
                        "upstream calls still open: %r" % self.mock.stats())

    def assert_nothing_stored(self):
        time.sleep(0.2)
        self.assertEqual(self.counts(), self.counts_before)

    def test_silent_upstream_chat_is_504(self):
        start = time.monotonic()
        resp = self.req("POST", "/api/chat", {"message": "silent mock:stall-headers"})
        elapsed = time.monotonic() - start
        self.assertIn("(limit 2 s)", self.assert_error(resp, 504)["message"])
        self.assertGreater(elapsed, 1.5, "answered 504 before --llm-timeout elapsed")
        self.assertLess(elapsed, 2 + t(10))
        self.assert_nothing_stored()

    def test_silent_upstream_stream_is_504(self):
        for method in ("POST", "GET"):
            with self.subTest(method=method):
                start = time.monotonic()
                resp = self.stream_error("silent stream mock:stall-headers", method=method)
                self.assertIn("2 s without a byte", self.assert_error(resp, 504)["message"])
                self.assertGreater(time.monotonic() - start, 1.5)
        self.assert_nothing_stored()

    def test_stall_mid_stream_is_error_event(self):
        start = time.monotonic()
        res, _ = self.stream_failing_after_start("stall mock:stall=1")
        self.assertEqual(res.content, "w1 ")
        self.assertGreater(time.monotonic() - start, 1.5)
        self.assert_nothing_stored()

    def test_stall_mid_answer_chat_is_504(self):
        self.assert_error(self.req("POST", "/api/chat", {"message": "stall chat mock:stall=2"}), 504)
        self.assert_nothing_stored()

    def test_existing_conversation_untouched_by_timeout(self):
        cid = self.chat("before timeout mock:tokens=1")["conversation_id"]
        snap = self.snapshot(cid)
        self.counts_before = self.counts()
        self.assert_error(self.req("POST", "/api/chat",
                                   {"message": "silent mock:stall-headers", "conversation_id": cid}), 504)
        self.stream_failing_after_start("stall mock:stall=1", cid)
        self.assert_nothing_stored()
        self.assertEqual(self.snapshot(cid), snap)

    def test_slow_answer_within_timeout_succeeds(self):
        obj = self.chat("slow mock:tokens=3 mock:delay=400")
        self.assertEqual(obj["response"], "w1 w2 w3")
        res, _ = self.stream("slow stream mock:tokens=3 mock:delay=400")
        self.assertEqual(res.content, "w1 w2 w3")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class UnreachableUpstreamTests(ChatCase):
    """An upstream that refuses connections: 502, nothing stored, server fine, key not shown."""

    KEY = "sk-e2e-unreachable-HIDDENKEY42"
    chatd_args = ("--llm-key", KEY, "--log-level", "debug")

    @classmethod
    def llm_url(cls):
        return "http://127.0.0.1:%d/v1" % closed_port()  # the mock is started, but not asked

    def test_unreachable_upstream_is_502(self):
        counts = self.counts()
        seen = [self.req("POST", "/api/chat", {"message": "anyone there?"}),
                self.stream_error("anyone there?"), self.stream_error("anyone there?", method="GET")]
        for r in seen:
            self.assert_error(r, 502)
            self.assertNotIn(b"HIDDENKEY42", r.raw_bytes())
        self.assertEqual(self.counts(), counts)
        self.assert_json(self.req("GET", "/health"), 200)
        time.sleep(0.2)
        self.assertNotIn("HIDDENKEY42", self.chatd.stderr_text())


class LlmUrlTrailingSlashTests(ChatCase):
    """--llm-url with a trailing slash still reaches BASE/chat/completions."""

    chatd_args = ("--llm-model", "e2e-model")

    @classmethod
    def llm_url(cls):
        return cls.mock.url + "/"

    def test_trailing_slash_in_llm_url(self):
        self.assertEqual(self.chat("slash url mock:tokens=2")["response"], "w1 w2")
        res, _ = self.stream("slash url stream mock:tokens=2")
        self.assertEqual(res.content, "w1 w2")


if __name__ == "__main__":
    unittest.main()
