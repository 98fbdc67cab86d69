#!/usr/bin/env python3
"""export_gen.py - writes a chatd SQLite database for bench/export.sh.

    python3 bench/export_gen.py --convs C --msgs M --out FILE [--seed S]

C conversations of M messages each, written straight into a new SQLite
file with chatd's schema (src/store/sqlite.c, copied verbatim below;
export.sh checks it against the schema chatd itself creates), so chatd
opens it as its own:

- ids: UUIDv4, lowercase; times: TEXT 'YYYY-MM-DDTHH:MM:SS.ffffff' UTC.
- created_at: one conversation is created M * ~2 s before now; with more
  than one, the creation times are spread over the 30 days before now.
  Messages follow their conversation's creation 20-120 s apart, and all
  messages are inserted in timestamp order across conversations, so the
  messages of concurrently active conversations interleave in the table
  as they would in a live database (export-all then reads scattered rows).
- last_active: now, so every conversation is live (export.sh refreshes it
  before each run, as a cached file ages).
- roles alternate user/assistant; content 100-300 bytes of mixed ASCII
  and Chinese, some with commas, double quotes, newlines, and Markdown
  list lines that begin with '-' (CSV's formula guard then applies).

Deterministic for given parameters and seed (except for 'now'). Writes
FILE.tmp-PID and renames it to FILE when complete, so a file at FILE is
always whole. Python 3 standard library only.
"""

import argparse
import datetime
import os
import random
import sqlite3
import sys
import time
import uuid

# chatd's schema, the text of src/store/sqlite.c's schema_sql, without its
# BEGIN/COMMIT. Indexes are created after the rows are in (faster); the
# resulting file is the same.
TABLES = [
    "CREATE TABLE IF NOT EXISTS conversations ("
    " id TEXT PRIMARY KEY,"
    " created_at TEXT NOT NULL,"
    " last_active TEXT NOT NULL);",
    "CREATE TABLE IF NOT EXISTS messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
    " role TEXT NOT NULL,"
    " content TEXT NOT NULL,"
    " timestamp TEXT NOT NULL);",
]
INDEXES = [
    "CREATE INDEX IF NOT EXISTS idx_conversations_created_at ON conversations(created_at, id);",
    "CREATE INDEX IF NOT EXISTS idx_conversations_last_active ON conversations(last_active);",
    "CREATE INDEX IF NOT EXISTS idx_messages_conversation ON messages(conversation_id, id);",
]

USER_EN = [
    "How do I read a large CSV file in Python without loading it all into memory?",
    "Can you explain the difference between TCP and UDP, with an example?",
    "What does \"eventual consistency\" mean for a distributed database?",
    "Please summarise the meeting notes below, in three bullet points.",
    "Why does my SQL query get slower when the table grows past a million rows?",
    "Write a haiku about autumn, rain, and an old server room.",
    "Is it safe to store passwords with SHA-256? If not, what should I use?",
    "Translate this into English: 今天的会议改到下午三点。",
    "What's a good name for a cat that likes to sit on keyboards?",
    "Compare Rust and Go for writing a small HTTP service.",
]
USER_ZH = [
    "请帮我写一封请假邮件，理由是家里有事，需要请两天假。",
    "如何用 Python 读取一个很大的 CSV 文件，而不一次性加载到内存？",
    "解释一下“最终一致性”是什么意思，最好举个例子。",
    "我的 SQL 查询在数据量变大以后变慢了，应该从哪里开始排查？",
    "帮我把下面这段话翻译成英文：我们下周一开始新项目。",
    "推荐几本适合初学者的机器学习书籍，并说明理由。",
    "北京到上海坐高铁大概需要多长时间？",
    "给我的咖啡店想一个名字，要简短、好记。",
]
ASSIST_EN = [
    "Sure. The short answer is: stream it, row by row, instead of reading the whole file.",
    "Here is a step-by-step explanation, with the trade-offs at each step.",
    "TCP gives you ordered, reliable delivery; UDP gives you speed and no guarantees.",
    "In practice, \"eventual\" means seconds, not hours, but you must design for the gap.",
    "The usual culprit is a missing index, so check the query plan first.",
    "Use a slow, salted password hash such as Argon2id, bcrypt or scrypt.",
    "Both work well; Go is quicker to start with, Rust gives you more control.",
    "Let me know if you want a longer version, or one in a different tone.",
]
ASSIST_ZH = [
    "好的，下面是详细的解释，分为三个部分。",
    "简单来说，就是边读边处理，不要一次性把整个文件读进内存。",
    "最常见的原因是缺少索引，建议先看一下查询计划。",
    "这个问题可以从两个角度来看：性能和可维护性。",
    "总结一下：先测量，再优化，不要凭感觉改代码。",
    "如果还有其他问题，欢迎继续提问！",
    "注意：生产环境中一定要先备份数据，再做迁移。",
]
LIST_ITEMS = [
    "- Check the query plan with EXPLAIN.",
    "- 使用分批读取，每批 1000 行。",
    "- Add an index on (user_id, created_at).",
    "- 不要在循环里拼接 SQL 字符串。",
    "- Measure before and after, on the same data.",
    "* Use a generator, e.g. `for row in reader: ...`",
    "1. Open the file with newline=''.",
    "2. 逐行处理，然后写入结果。",
]


def make_content(rng, role, target):
    """One message of about target bytes (UTF-8), built from fragments."""
    parts = []
    size = 0
    first = True
    while size < target:
        r = rng.random()
        if role == "user":
            frag = rng.choice(USER_ZH if r < 0.45 else USER_EN)
            sep = " " if not first else ""
        elif r < 0.25 and not first:
            frag = rng.choice(LIST_ITEMS)
            sep = "\n"
        else:
            frag = rng.choice(ASSIST_ZH if r < 0.6 else ASSIST_EN)
            sep = "\n\n" if (not first and rng.random() < 0.3) else ("" if first else " ")
        if first and role == "assistant" and rng.random() < 0.05:
            frag = "- " + frag  # starts with '-': the CSV formula guard applies
        parts.append(sep + frag)
        size += len((sep + frag).encode())
        first = False
    text = "".join(parts)
    raw = text.encode()
    if len(raw) > 300:  # cut at a character boundary, 300 bytes at most
        text = raw[:300].decode("utf-8", "ignore").rstrip()
    return text


def iso(us):
    """Microseconds since the epoch -> 'YYYY-MM-DDTHH:MM:SS.ffffff' UTC."""
    return (EPOCH + datetime.timedelta(microseconds=us)).isoformat(timespec="microseconds")


EPOCH = datetime.datetime(1970, 1, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--convs", type=int, required=True)
    ap.add_argument("--msgs", type=int, required=True, help="messages per conversation")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.convs < 1 or a.msgs < 0:
        ap.error("--convs must be >= 1 and --msgs >= 0")

    t0 = time.monotonic()
    rng = random.Random(f"{a.seed}/{a.convs}/{a.msgs}")
    now_us = int(time.time() * 1e6)
    now_s = iso(now_us)

    # A pool of distinct messages per role, picked from at random: building
    # every one of a million messages from fragments would be slower for no
    # difference to the exports.
    pool = {
        role: [make_content(rng, role, rng.randint(90, 180) if role == "user" else rng.randint(140, 290))
               for _ in range(4096)]
        for role in ("user", "assistant")
    }
    roles = ("user", "assistant")

    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(a.convs)]
    if a.convs == 1:
        created = [now_us - (a.msgs * 2 + 3600) * 1_000_000]
        gaps = [2_000_000]
    else:
        span = 30 * 86400 * 1_000_000
        created = [now_us - span + rng.randrange(span - a.msgs * 120_000_000 - 3_600_000_000)
                   for _ in range(a.convs)]
        gaps = [rng.randint(20, 120) * 1_000_000 for _ in range(a.convs)]

    tmp = f"{a.out}.tmp-{os.getpid()}"
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(tmp + suffix)
        except FileNotFoundError:
            pass
    db = sqlite3.connect(tmp, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")  # 256 MiB, for the index builds
    db.execute("BEGIN")
    for sql in TABLES:
        db.execute(sql)
    db.executemany("INSERT INTO conversations(id, created_at, last_active) VALUES (?, ?, ?)",
                   ((ids[i], iso(created[i]), now_s) for i in range(a.convs)))

    # Messages in timestamp order over all conversations: (time, conv, k).
    if a.convs == 1:
        order = ((created[0] + (k + 1) * gaps[0], 0, k) for k in range(a.msgs))
    else:
        order = sorted((created[i] + (k + 1) * gaps[i] + rng.randrange(1_000_000), i, k)
                       for i in range(a.convs) for k in range(a.msgs))
    upool, apool = pool["user"], pool["assistant"]
    rand = rng.random

    def rows():
        for us, i, k in order:
            p = apool if k & 1 else upool
            yield ids[i], roles[k & 1], p[int(rand() * 4096)], iso(us)

    db.executemany("INSERT INTO messages(conversation_id, role, content, timestamp)"
                   " VALUES (?, ?, ?, ?)", rows())
    for sql in INDEXES:
        db.execute(sql)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    size = db.execute("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size").fetchone()[0]
    db.close()
    if n != a.convs * a.msgs:
        sys.exit(f"export_gen.py: wrote {n} messages, want {a.convs * a.msgs}")
    os.replace(tmp, a.out)
    print(f"export_gen.py: {a.out}: {a.convs} conversations x {a.msgs} messages,"
          f" {size / 1e6:.1f} MB, {time.monotonic() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
