/*
 * firstreply.c - start-up time of a server: from its exec to its first 200.
 *
 *   firstreply --port PORT [--path /health] [--interval-us 1000]
 *              [--timeout-ms 10000] -- COMMAND [ARGS...]
 *
 * Forks, and the child reads CLOCK_MONOTONIC just before execvp(COMMAND)
 * and hands that time to the parent through a close-on-exec pipe. The
 * parent then polls 127.0.0.1:PORT in a tight loop: a blocking connect
 * (refused at once on the loopback while nothing listens), and once one
 * succeeds, `GET PATH HTTP/1.1` with `Connection: close`, reading the
 * status line; anything but 200 (or a connection that ends early) is
 * retried. Between attempts it sleeps --interval-us. When the first 200
 * arrives it reads the child's VmRSS, sends it SIGTERM (SIGKILL after 10 s)
 * and prints one JSON line:
 *
 *   {"ok": true, "exec_to_listen_ms": 3.1, "exec_to_200_ms": 3.4,
 *    "attempts": 4, "connects": 1, "non200": 0, "rss_kb": 9876,
 *    "exit_status": 0}
 *
 * exec_to_listen_ms: exec to the first accepted connection;
 * exec_to_200_ms: exec to the end of the 200's status line. The child's
 * stdout and stderr are this tool's. Exit status: 0 when a 200 came in
 * time, 1 otherwise (the child is stopped either way), 2 usage error.
 * Only 127.0.0.1. Linux (reads /proc/PID/status).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <fcntl.h>

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static long vm_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long kb = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

enum attempt {
    A_REFUSED, /* nothing listens yet (or connect failed) */
    A_NON200,  /* connected, but no 200 */
    A_OK,      /* 200 */
};

/* One attempt; sets *t_conn to when the connect succeeded, else 0. */
static enum attempt attempt(const struct sockaddr_in *addr, const char *req, size_t reqlen,
                            int64_t *t_conn)
{
    *t_conn = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return A_REFUSED;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0) {
        close(fd);
        return A_REFUSED;
    }
    *t_conn = mono_us();
    enum attempt res = A_NON200;
    if (send(fd, req, reqlen, MSG_NOSIGNAL) == (ssize_t)reqlen) {
        char buf[512];
        size_t got = 0;
        /* the status line: "HTTP/1.1 200 ..." up to its LF */
        while (got < sizeof(buf) - 1) {
            ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
            if (r <= 0)
                break;
            got += (size_t)r;
            buf[got] = '\0';
            if (strchr(buf, '\n'))
                break;
        }
        buf[got] = '\0';
        if (got >= 12 && memcmp(buf, "HTTP/1.", 7) == 0 && memcmp(buf + 8, " 200", 4) == 0 &&
            strchr(buf, '\n'))
            res = A_OK;
    }
    close(fd);
    return res;
}

/* SIGTERM, up to 10 s, then SIGKILL; returns the wait status. */
static int stop_child(pid_t pid)
{
    int st = 0;
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            return st;
        if (w < 0)
            return 0;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return st;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: firstreply --port PORT [--path /health] [--interval-us 1000]\n"
               "                  [--timeout-ms 10000] -- COMMAND [ARGS...]\n"
               "  Runs COMMAND and prints, as JSON, the time from its exec to the first\n"
               "  200 answer to GET PATH on 127.0.0.1:PORT, then stops it.\n");
}

int main(int argc, char **argv)
{
    long port = 0, interval_us = 1000, timeout_ms = 10000;
    const char *path = "/health";
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (!ok)
            ;
        else if (strcmp(a, "--port") == 0)
            ok = parse_long(v, 1, 65535, &port);
        else if (strcmp(a, "--interval-us") == 0)
            ok = parse_long(v, 0, 1000000, &interval_us);
        else if (strcmp(a, "--timeout-ms") == 0)
            ok = parse_long(v, 1, 600000, &timeout_ms);
        else if (strcmp(a, "--path") == 0)
            ok = v[0] == '/' && strlen(v) < 200 && !strpbrk(v, " \r\n");
        else
            ok = false;
        if (!ok) {
            fprintf(stderr, "firstreply: bad or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--path") == 0)
            path = v;
        i++;
    }
    if (port == 0 || i >= argc) {
        usage(stderr);
        return 2;
    }

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[320];
    int reqlen =
        snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%ld\r\nConnection: close\r\n\r\n", path, port);
    signal(SIGPIPE, SIG_IGN);

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        perror("firstreply: pipe2");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("firstreply: fork");
        return 1;
    }
    if (pid == 0) {
        close(pfd[0]);
        int64_t t = mono_us();
        if (write(pfd[1], &t, sizeof(t)) != sizeof(t))
            _exit(127);
        execvp(argv[i], &argv[i]);
        fprintf(stderr, "firstreply: cannot run %s: %s\n", argv[i], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    int64_t t_exec = 0;
    if (read(pfd[0], &t_exec, sizeof(t_exec)) != sizeof(t_exec)) {
        fprintf(stderr, "firstreply: the child did not report its exec time\n");
        stop_child(pid);
        return 1;
    }
    close(pfd[0]);

    int64_t deadline = t_exec + timeout_ms * 1000;
    int64_t t_listen = 0, t_ok = 0;
    long attempts = 0, connects = 0, non200 = 0, rss_kb = 0;
    bool died = false;
    int st = 0;
    for (;;) {
        int64_t t_conn;
        attempts++;
        enum attempt r = attempt(&addr, req, (size_t)reqlen, &t_conn);
        int64_t now = mono_us();
        if (t_conn) {
            connects++;
            if (!t_listen)
                t_listen = t_conn;
        }
        if (r == A_OK) {
            t_ok = now;
            rss_kb = vm_rss_kb(pid);
            break;
        }
        if (r == A_NON200)
            non200++;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            died = true;
            break;
        }
        if (now >= deadline)
            break;
        if (interval_us)
            usleep((useconds_t)interval_us);
    }
    if (!died)
        st = stop_child(pid);
    int exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    printf("{\"ok\": %s, \"exec_to_listen_ms\": ", t_ok ? "true" : "false");
    if (t_listen)
        printf("%.3f", (double)(t_listen - t_exec) / 1e3);
    else
        printf("null");
    printf(", \"exec_to_200_ms\": ");
    if (t_ok)
        printf("%.3f", (double)(t_ok - t_exec) / 1e3);
    else
        printf("null");
    printf(", \"attempts\": %ld, \"connects\": %ld, \"non200\": %ld, \"rss_kb\": %ld, "
           "\"died_before_200\": %s, \"exit_status\": %d}\n",
           attempts, connects, non200, rss_kb, died ? "true" : "false", exit_status);
    fflush(stdout);
    if (!t_ok)
        fprintf(stderr, "firstreply: no 200 from 127.0.0.1:%ld%s %s\n", port, path,
                died ? "(the command exited)" : "in time");
    return t_ok ? 0 : 1;
}
