/*
 * test_cache_redis.c - the Redis response cache (src/cache/redis.c)
 * against a throwaway redis-server: run under tests/db/with-redis.sh, which
 * exports CHATD_TEST_REDIS_URL (redis://:PASS@127.0.0.1:PORT/DB) and
 * CHATD_TEST_REDIS_CTL (stop|start). Exits 77 (skipped) without them.
 *
 * Each test uses its own Redis database number, so counts do not mix.
 * TTL boundaries are tested with passed-in time like the memory cache's
 * tests; Redis's own expiry with a real short TTL. The outage tests stop
 * and start the server, and point a cache at a socket that never answers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../unit/cache_check.h"
#include "cache/cache.h"
#include "core/buf.h"
#include "core/timefmt.h"

#define TTL     (3600 * USEC_PER_SEC)
#define TIMEOUT (150 * 1000) /* usec: the caches' connect/command timeout */

static char host[256], password[256];
static unsigned port;
static const char *ctl;

static bool parse_url(const char *url)
{
    /* redis://:PASS@HOST:PORT/DB, as with-redis.sh writes it */
    unsigned db;
    return sscanf(url, "redis://:%255[^@]@%255[^:]:%u/%u", password, host, &port, &db) == 4;
}

static struct cache *new_cache_at(unsigned db, size_t max_entries, int64_t ttl, const char *h,
                                  unsigned p, const char *pw)
{
    struct cache_options opt = {.max_entries = max_entries, .ttl = ttl};
    struct cache_redis_options ro = {
        .host = h, .port = p, .db = db, .password = pw, .timeout = TIMEOUT};
    char why[256] = "";
    struct cache *c = cache_redis_new(&opt, &ro, why, sizeof why);
    if (!c)
        fail_msg("cache_redis_new: %s", why);
    return c;
}

static struct cache *new_cache(unsigned db, size_t max_entries, int64_t ttl)
{
    return new_cache_at(db, max_entries, ttl, host, port, password);
}

static size_t count(struct cache *c)
{
    size_t n = 0;
    char why[256];
    if (!cache_probe(c, &n, why, sizeof why))
        fail_msg("cache_probe: %s", why);
    return n;
}

static void test_put_get_replace(void **state)
{
    (void)state;
    struct cache *c = new_cache(2, 100, TTL);
    int64_t now = time_now_usec();
    assert_true(miss(c, "conv-a", "hello", now));
    put(c, "conv-a", "hello", "world", now);
    assert_true(HIT(c, "conv-a", "hello", now, "world"));
    assert_true(miss(c, "conv-a", "hello!", now));
    assert_true(miss(c, "conv-b", "hello", now));
    put(c, "conv-a", "hello", "again", now);
    assert_true(HIT(c, "conv-a", "hello", now, "again"));
    assert_int_equal(count(c), 1);
    assert_int_equal(cache_count(c), 1);
    put(c, "conv-a", "", "empty question", now);
    assert_true(HIT(c, "conv-a", "", now, "empty question"));
    put(c, "conv-a", "empty answer", "", now);
    assert_true(HIT(c, "conv-a", "empty answer", now, ""));
    assert_int_equal(count(c), 3);
    cache_remove_conversation(c, "conv-a");
    assert_int_equal(count(c), 0);
    cache_free(c);
}

static void test_ttl_boundary_with_passed_time(void **state)
{
    (void)state;
    int64_t ttl = 10 * USEC_PER_SEC;
    struct cache *c = new_cache(3, 100, ttl);
    int64_t t0 = time_now_usec();
    put(c, "conv", "q", "a", t0);
    assert_true(HIT(c, "conv", "q", t0 + ttl, "a"));
    assert_true(miss(c, "conv", "q", t0 + ttl + 1));
    /* the get found it expired and removed it: gone even for an earlier now */
    assert_true(miss(c, "conv", "q", t0));
    assert_int_equal(count(c), 0);
    cache_free(c);
}

static void test_real_short_ttl(void **state)
{
    (void)state;
    int64_t ttl = 300 * 1000;
    struct cache *c = new_cache(4, 100, ttl);
    put(c, "conv", "q1", "a1", time_now_usec());
    put(c, "conv2", "q2", "a2", time_now_usec());
    assert_true(HIT(c, "conv", "q1", time_now_usec(), "a1"));
    assert_int_equal(count(c), 2);
    usleep(600 * 1000);
    /* Redis dropped the hashes itself; the count drops them too */
    assert_true(miss(c, "conv", "q1", time_now_usec()));
    assert_true(miss(c, "conv2", "q2", 0)); /* gone from Redis, whatever now says */
    assert_int_equal(count(c), 0);
    cache_free(c);
}

static void test_same_question_two_conversations(void **state)
{
    (void)state;
    struct cache *c = new_cache(5, 100, TTL);
    int64_t now = time_now_usec();
    put(c, "conv-1", "same", "answer one", now);
    put(c, "conv-2", "same", "answer two", now);
    assert_true(HIT(c, "conv-1", "same", now, "answer one"));
    assert_true(HIT(c, "conv-2", "same", now, "answer two"));
    cache_remove_conversation(c, "conv-1");
    assert_true(miss(c, "conv-1", "same", now));
    assert_true(HIT(c, "conv-2", "same", now, "answer two"));
    cache_remove_conversation(c, "conv-2");
    cache_free(c);
}

static void test_binary_safe(void **state)
{
    (void)state;
    struct cache *c = new_cache(6, 100, TTL);
    int64_t now = time_now_usec();
    static const char q1[] = "你好\0world";
    static const char q2[] = "你好\0WORLD"; /* differs only after the NUL */
    static const char a1[] = "答案\0one\r\n\xff";
    static const char a2[] = "答案\0two";
    cache_put(c, "conv", q1, sizeof q1 - 1, a1, sizeof a1 - 1, now);
    cache_put(c, "conv", q2, sizeof q2 - 1, a2, sizeof a2 - 1, now);
    assert_true(hit(c, "conv", q1, sizeof q1 - 1, now, a1, sizeof a1 - 1));
    assert_true(hit(c, "conv", q2, sizeof q2 - 1, now, a2, sizeof a2 - 1));
    assert_true(miss(c, "conv", "你好", now));
    /* a big answer */
    size_t big = 3 * 1024 * 1024;
    char *a = malloc(big);
    assert_non_null(a);
    for (size_t i = 0; i < big; i++)
        a[i] = (char)(i * 7);
    cache_put(c, "conv", "big", 3, a, big, now);
    assert_true(hit(c, "conv", "big", 3, now, a, big));
    /* an answer past out's cap is a miss and leaves out empty */
    struct buf out;
    buf_init(&out, 1024);
    assert_false(cache_get(c, "conv", "big", 3, now, &out));
    assert_int_equal(out.len, 0);
    buf_release(&out);
    free(a);
    cache_remove_conversation(c, "conv");
    assert_int_equal(count(c), 0);
    cache_free(c);
}

static void test_remove_exactly_one_conversation(void **state)
{
    (void)state;
    struct cache *c = new_cache(7, 100, TTL);
    int64_t now = time_now_usec();
    char q[32];
    for (int i = 0; i < 5; i++) {
        snprintf(q, sizeof q, "q%d", i);
        put(c, "victim", q, "v", now);
        put(c, "bystander", q, "b", now);
    }
    put(c, "victim2", "q0", "v2", now); /* an id with victim as prefix */
    assert_int_equal(count(c), 11);
    cache_remove_conversation(c, "victim");
    for (int i = 0; i < 5; i++) {
        snprintf(q, sizeof q, "q%d", i);
        assert_true(miss(c, "victim", q, now));
        assert_true(HIT(c, "bystander", q, now, "b"));
    }
    assert_true(HIT(c, "victim2", "q0", now, "v2"));
    assert_int_equal(count(c), 6);
    /* idempotent: every instance's sweeper may remove the same ids */
    cache_remove_conversation(c, "victim");
    cache_remove_conversation(c, "never-cached");
    assert_int_equal(count(c), 6);
    cache_remove_conversation(c, "bystander");
    cache_remove_conversation(c, "victim2");
    assert_int_equal(count(c), 0);
    cache_free(c);
}

static void test_two_instances_share(void **state)
{
    (void)state;
    struct cache *a = new_cache(8, 100, TTL);
    struct cache *b = new_cache(8, 100, TTL);
    int64_t now = time_now_usec();
    put(a, "conv", "asked on a", "answered on a", now);
    assert_true(HIT(b, "conv", "asked on a", now, "answered on a"));
    assert_int_equal(count(a), 1);
    assert_int_equal(count(b), 1);
    put(b, "conv", "asked on b", "answered on b", now);
    assert_true(HIT(a, "conv", "asked on b", now, "answered on b"));
    cache_remove_conversation(b, "conv");
    assert_true(miss(a, "conv", "asked on a", now));
    assert_true(miss(a, "conv", "asked on b", now));
    assert_int_equal(count(a), 0);
    cache_free(a);
    cache_free(b);
}

static void test_max_entries_evicts_oldest(void **state)
{
    (void)state;
    struct cache *c = new_cache(9, 3, TTL);
    int64_t now = time_now_usec();
    put(c, "c1", "q1", "a1", now);
    put(c, "c2", "q2", "a2", now + 1);
    put(c, "c1", "q3", "a3", now + 2);
    assert_int_equal(count(c), 3);
    put(c, "c3", "q4", "a4", now + 3);
    put(c, "c2", "q5", "a5", now + 4);
    assert_int_equal(count(c), 3);
    assert_true(miss(c, "c1", "q1", now + 5));
    assert_true(miss(c, "c2", "q2", now + 5));
    assert_true(HIT(c, "c1", "q3", now + 5, "a3"));
    assert_true(HIT(c, "c3", "q4", now + 5, "a4"));
    assert_true(HIT(c, "c2", "q5", now + 5, "a5"));
    cache_remove_conversation(c, "c1");
    cache_remove_conversation(c, "c2");
    cache_remove_conversation(c, "c3");
    assert_int_equal(count(c), 0);
    cache_free(c);
}

static void test_disabled_never_connects(void **state)
{
    (void)state;
    /* port 1 has no Redis: a disabled cache must not even try */
    struct cache *c = new_cache_at(10, 0, TTL, "127.0.0.1", 1, NULL);
    int64_t now = time_now_usec();
    put(c, "conv", "q", "a", now);
    assert_true(miss(c, "conv", "q", now));
    cache_remove_conversation(c, "conv");
    assert_int_equal(count(c), 0);
    cache_free(c);
}

static void test_bad_options(void **state)
{
    (void)state;
    struct cache_options opt = {.max_entries = 10, .ttl = TTL};
    struct cache_redis_options ro = {.host = "", .port = 6379};
    char why[256] = "";
    assert_null(cache_redis_new(&opt, &ro, why, sizeof why));
    assert_true(why[0] != '\0');
}

static void test_wrong_password(void **state)
{
    (void)state;
    static const char bad[] = "not-the-password-4711";
    struct cache *c = new_cache_at(11, 100, TTL, host, port, bad);
    int64_t now = time_now_usec();
    put(c, "conv", "q", "a", now);
    assert_true(miss(c, "conv", "q", now));
    size_t n = 99;
    char why[256] = "";
    assert_false(cache_probe(c, &n, why, sizeof why));
    assert_int_equal(n, 0);
    assert_non_null(strstr(why, "auth"));
    assert_null(strstr(why, bad));
    assert_null(strstr(why, password));
    cache_free(c);
}

/* A listening socket that never accepts: connects succeed (the backlog),
 * commands never get an answer. */
static void test_silent_server_times_out(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 64), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);

    struct cache *c = new_cache_at(12, 100, TTL, "127.0.0.1", ntohs(sa.sin_port), "pw");
    int64_t t0 = time_mono_usec();
    assert_true(miss(c, "conv", "q", time_now_usec()));
    int64_t first = time_mono_usec() - t0;
    assert_true(first >= TIMEOUT / 2);
    assert_true(first < 4 * TIMEOUT);
    /* down now: the next calls return at once, no reconnect for a second */
    t0 = time_mono_usec();
    for (int i = 0; i < 50; i++) {
        assert_true(miss(c, "conv", "q", time_now_usec()));
        put(c, "conv", "q", "a", time_now_usec());
        cache_remove_conversation(c, "conv");
    }
    size_t n;
    char why[256] = "";
    assert_false(cache_probe(c, &n, why, sizeof why));
    assert_non_null(strstr(why, "timed out"));
    assert_true(time_mono_usec() - t0 < TIMEOUT);
    cache_free(c);
    close(fd);
}

struct worker {
    struct cache *c;
    int id;
    int hits;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char conv[32], q[32], a[64];
    snprintf(conv, sizeof conv, "conv-%d", w->id % 3); /* threads share conversations */
    for (int i = 0; i < 100; i++) {
        snprintf(q, sizeof q, "t%d-q%d", w->id, i);
        snprintf(a, sizeof a, "answer %d of thread %d", i, w->id);
        int64_t now = time_now_usec();
        put(w->c, conv, q, a, now);
        if (HIT(w->c, conv, q, now, a))
            w->hits++;
        if (i % 25 == 0)
            count(w->c);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct cache *c = new_cache(13, 100000, TTL);
    enum { N = 8 };
    pthread_t th[N];
    struct worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.c = c, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].hits, 100);
    }
    assert_int_equal(count(c), N * 100);
    for (int i = 0; i < 3; i++) {
        char conv[32];
        snprintf(conv, sizeof conv, "conv-%d", i);
        cache_remove_conversation(c, conv);
    }
    assert_int_equal(count(c), 0);
    cache_free(c);
}

static void ctl_run(const char *verb)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' %s", ctl, verb);
    assert_int_equal(system(cmd), 0);
}

static void test_redis_stopped_then_back(void **state)
{
    (void)state;
    struct cache *c = new_cache(14, 100, TTL);
    struct cache *other = new_cache(14, 100, TTL);
    int64_t now = time_now_usec();
    put(c, "conv", "before", "cached before", now);
    assert_true(HIT(c, "conv", "before", now, "cached before"));

    ctl_run("stop");
    int64_t t0 = time_mono_usec();
    assert_true(miss(c, "conv", "before", time_now_usec()));
    put(c, "conv", "during", "lost", time_now_usec());
    cache_remove_conversation(c, "conv");
    for (int i = 0; i < 100; i++)
        assert_true(miss(c, "conv", "before", time_now_usec()));
    assert_true(time_mono_usec() - t0 < 2 * TIMEOUT + 200 * 1000);
    size_t n = 7;
    char why[256] = "";
    assert_false(cache_probe(c, &n, why, sizeof why));
    assert_int_equal(n, 0);
    assert_true(why[0] != '\0');
    assert_null(strstr(why, password));

    ctl_run("start"); /* no persistence: it comes back empty */
    /* by itself, within the one-second retry: no call from outside */
    int64_t deadline = time_mono_usec() + 5 * USEC_PER_SEC;
    bool back = false;
    while (!back && time_mono_usec() < deadline) {
        put(c, "conv", "after", "cached after", time_now_usec());
        back = HIT(c, "conv", "after", time_now_usec(), "cached after");
        if (!back)
            usleep(100 * 1000);
    }
    assert_true(back);
    assert_true(cache_probe(c, &n, why, sizeof why));
    assert_int_equal(n, 1);
    /* the other instance, whose pooled connections all died, recovers too */
    deadline = time_mono_usec() + 5 * USEC_PER_SEC;
    back = false;
    while (!back && time_mono_usec() < deadline) {
        back = HIT(other, "conv", "after", time_now_usec(), "cached after");
        if (!back)
            usleep(100 * 1000);
    }
    assert_true(back);
    cache_remove_conversation(other, "conv");
    assert_int_equal(count(c), 0);
    cache_free(c);
    cache_free(other);
}

int main(void)
{
    const char *url = getenv("CHATD_TEST_REDIS_URL");
    ctl = getenv("CHATD_TEST_REDIS_CTL");
    if (!url || !ctl) {
        printf("skipped: CHATD_TEST_REDIS_URL is not set (run under tests/db/with-redis.sh)\n");
        return 77;
    }
    if (!parse_url(url)) {
        fprintf(stderr, "cannot parse CHATD_TEST_REDIS_URL\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_ttl_boundary_with_passed_time),
        cmocka_unit_test(test_real_short_ttl),
        cmocka_unit_test(test_same_question_two_conversations),
        cmocka_unit_test(test_binary_safe),
        cmocka_unit_test(test_remove_exactly_one_conversation),
        cmocka_unit_test(test_two_instances_share),
        cmocka_unit_test(test_max_entries_evicts_oldest),
        cmocka_unit_test(test_disabled_never_connects),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_silent_server_times_out),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_redis_stopped_then_back),
    };
    return cmocka_run_group_tests_name("cache.redis", tests, NULL, NULL);
}
