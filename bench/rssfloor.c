/*
 * rssfloor.c - the resident memory chatd cannot go below: a program that
 * links exactly what chatd links (chatd_core's libraries) and does
 * nothing, then only initialises libcurl as chatd's main() does.
 *
 *   rssfloor
 *
 * Prints one JSON line, sizes in KB from /proc/self/status:
 *
 *   {"linked_rss_kb": 8428, "linked_file_kb": 7204,
 *    "curl_init_rss_kb": 10692, "curl_init_file_kb": 9224}
 *
 * The libraries are loaded by the dynamic linker before main(), so the
 * first reading is their cost alone; the second adds curl_global_init()
 * (OpenSSL's initialisation). The version calls at the end only keep each
 * library referenced, so a linker with --as-needed cannot drop one.
 * bench/http.sh prints both beside chatd's idle RSS.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#ifdef CHATD_HAVE_POSTGRESQL
#include <libpq-fe.h>
#endif
#ifdef CHATD_HAVE_MYSQL
#include <mysql.h>
#endif

/* Reads "Name:   N kB" of /proc/self/status; -1 if absent. */
static long status_kb(const char *name)
{
    char line[256];
    long v = -1;
    size_t n = strlen(name);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, n) == 0 && line[n] == ':' && sscanf(line + n + 1, "%ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

int main(void)
{
    long rss0 = status_kb("VmRSS"), file0 = status_kb("RssFile");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    long rss1 = status_kb("VmRSS"), file1 = status_kb("RssFile");
    printf("{\"linked_rss_kb\": %ld, \"linked_file_kb\": %ld, \"curl_init_rss_kb\": %ld, "
           "\"curl_init_file_kb\": %ld}\n",
           rss0, file0, rss1, file1);
    /* Keep every library referenced (see the top). */
    fprintf(stderr, "rssfloor: libcurl %s, libmicrohttpd %s, sqlite %s, jansson %s", curl_version(),
            MHD_get_version(), sqlite3_libversion(), jansson_version_str());
#ifdef CHATD_HAVE_POSTGRESQL
    fprintf(stderr, ", libpq %d", PQlibVersion());
#endif
#ifdef CHATD_HAVE_MYSQL
    fprintf(stderr, ", mariadb %s", mysql_get_client_info());
#endif
    fprintf(stderr, "\n");
    curl_global_cleanup();
    return rss0 > 0 && rss1 > 0 ? 0 : 1;
}
