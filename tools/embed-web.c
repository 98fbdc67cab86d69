/*
 * embed-web - generates the C file that embeds the web page into chatd.
 *
 *   embed-web OUT.c FILE[=NAME]...
 *
 * Reads every FILE (served under NAME, by default its base name) and writes
 * OUT.c: one byte array per file and the table web_assets[] of
 * src/api/web.h, index.html first. Each file gets a 64-bit FNV-1a hash of
 * its bytes, which is its strong ETag and part of its immutable name
 * (app.js -> app.0123456789abcdef.js). In index.html every reference
 * "/assets/NAME" (followed by a quote) is rewritten to the hashed name, so a
 * browser may cache the assets forever and still sees a new build at once:
 * index.html itself is revalidated on every load. The output is written to
 * OUT.c.tmp and renamed, so a failed run leaves nothing half-written. A
 * missing input is reported with a hint to run scripts/install-deps.sh,
 * which installs the libraries with npm.
 *
 * Runs on the build machine as part of the build; plain C, no chatd code.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 32

struct file {
    const char *path;
    char name[128];   /* served as /assets/name */
    char hashed[160]; /* stem.HASH.ext */
    unsigned char *data;
    size_t len;
    uint64_t hash;
};

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static const char *content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".json", "application/json; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

static int read_file(struct file *f)
{
    int rc = -1;
    FILE *in = fopen(f->path, "rb");
    if (!in) {
        fprintf(stderr,
                "embed-web: cannot read '%s': %s\n"
                "embed-web: run scripts/install-deps.sh first (it installs the page's libraries "
                "with npm ci)\n",
                f->path, strerror(errno));
        return -1;
    }
    size_t cap = 65536;
    f->data = malloc(cap);
    for (;;) {
        if (!f->data) {
            fprintf(stderr, "embed-web: out of memory\n");
            goto out;
        }
        f->len += fread(f->data + f->len, 1, cap - f->len, in);
        if (f->len < cap)
            break;
        cap *= 2;
        unsigned char *p = realloc(f->data, cap);
        if (!p)
            free(f->data);
        f->data = p;
    }
    if (ferror(in)) {
        fprintf(stderr, "embed-web: cannot read '%s'\n", f->path);
        goto out;
    }
    rc = 0;
out:
    fclose(in);
    return rc;
}

/* index.html: "/assets/NAME" followed by a quote becomes the hashed name. */
static int rewrite_index(struct file *index, const struct file *files, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct file *a = &files[i];
        if (a == index)
            continue;
        char from[160], to[192];
        int fl = snprintf(from, sizeof from, "/assets/%s", a->name);
        int tl = snprintf(to, sizeof to, "/assets/%s", a->hashed);
        /* a hashed name is 17 bytes longer than a name of at least 9: < 3x */
        unsigned char *out = malloc(index->len * 3 + 1);
        size_t o = 0, k = 0, hits = 0;
        if (!out) {
            fprintf(stderr, "embed-web: out of memory\n");
            return -1;
        }
        while (k < index->len) {
            if (k + (size_t)fl < index->len && memcmp(index->data + k, from, (size_t)fl) == 0 &&
                (index->data[k + fl] == '"' || index->data[k + fl] == '\'')) {
                memcpy(out + o, to, (size_t)tl);
                o += (size_t)tl;
                k += (size_t)fl;
                hits++;
            } else {
                out[o++] = index->data[k++];
            }
        }
        free(index->data);
        index->data = out;
        index->len = o;
        if (hits == 0)
            fprintf(stderr, "embed-web: note: index.html does not refer to /assets/%s\n", a->name);
    }
    return 0;
}

static void emit_bytes(FILE *out, size_t idx, const struct file *f)
{
    fprintf(out, "static const unsigned char asset%zu[%zu] = {", idx, f->len ? f->len : 1);
    for (size_t i = 0; i < f->len; i++)
        fprintf(out, "%s%u,", i % 24 ? "" : "\n", f->data[i]);
    if (!f->len)
        fputs("0", out);
    fputs("\n};\n", out);
}

int main(int argc, char **argv)
{
    struct file files[MAX_FILES];
    size_t n = 0, index = MAX_FILES;
    int rc = 1;
    char tmp[4096];
    FILE *out = NULL;

    memset(files, 0, sizeof files);
    if (argc < 3 || (size_t)(argc - 2) > MAX_FILES) {
        fprintf(stderr, "usage: embed-web OUT.c FILE[=NAME]... (at most %d files)\n", MAX_FILES);
        return 2;
    }
    for (int i = 2; i < argc; i++, n++) {
        struct file *f = &files[n];
        char *eq = strchr(argv[i], '=');
        const char *name;
        if (eq) {
            *eq = '\0';
            name = eq + 1;
        } else {
            const char *slash = strrchr(argv[i], '/');
            name = slash ? slash + 1 : argv[i];
        }
        f->path = argv[i];
        if (!*name || strlen(name) >= sizeof f->name || strchr(name, '/') || strchr(name, '"') ||
            strchr(name, '\\')) {
            fprintf(stderr, "embed-web: bad name '%s'\n", name);
            goto out;
        }
        memcpy(f->name, name, strlen(name) + 1);
        if (strcmp(name, "index.html") == 0)
            index = n;
        if (read_file(f) != 0)
            goto out;
    }
    if (index == MAX_FILES) {
        fprintf(stderr, "embed-web: no index.html among the files\n");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct file *f = &files[i];
        if (i == index)
            continue;
        char name[sizeof f->name]; /* a copy: GCC cannot see that name and hashed differ */
        memcpy(name, f->name, sizeof name);
        f->hash = fnv1a(f->data, f->len);
        const char *dot = strrchr(name, '.');
        size_t stem = dot ? (size_t)(dot - name) : strlen(name);
        snprintf(f->hashed, sizeof f->hashed, "%.*s.%016llx%s", (int)stem, name,
                 (unsigned long long)f->hash, dot ? dot : "");
    }
    if (rewrite_index(&files[index], files, n) != 0)
        goto out;
    files[index].hash = fnv1a(files[index].data, files[index].len);
    memcpy(files[index].hashed, files[index].name, sizeof files[index].name);

    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    out = fopen(tmp, "w");
    if (!out) {
        fprintf(stderr, "embed-web: cannot write '%s': %s\n", tmp, strerror(errno));
        goto out;
    }
    fputs("/* Generated by tools/embed-web from src/web/ and node_modules: do not edit. */\n"
          "#include \"api/web.h\"\n\n",
          out);
    for (size_t i = 0; i < n; i++)
        emit_bytes(out, i, &files[i]);
    fputs("\nconst struct web_asset web_assets[] = {\n", out);
    /* index.html first, then the others in the order given */
    for (size_t k = 0; k < n; k++) {
        size_t i = k == 0 ? index : (k <= index ? k - 1 : k);
        const struct file *f = &files[i];
        fprintf(out, "    {\"%s\", \"%s\", \"%s\", asset%zu, %zu, \"\\\"%016llx\\\"\"},\n", f->name,
                f->hashed, content_type(f->name), i, f->len, (unsigned long long)f->hash);
    }
    fprintf(out, "};\n\nconst size_t web_asset_count = %zu;\n", n);
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, "embed-web: cannot write '%s'\n", tmp);
        goto out;
    }
    out = NULL;
    if (rename(tmp, argv[1]) != 0) {
        fprintf(stderr, "embed-web: cannot rename '%s': %s\n", tmp, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (out) {
        fclose(out);
        remove(tmp);
    }
    for (size_t i = 0; i < MAX_FILES; i++)
        free(files[i].data);
    return rc;
}
