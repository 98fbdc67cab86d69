/*
 * web.h - the web page's files, embedded into the binary at build time.
 *
 * tools/embed-web.c generates the table below (build/generated/
 * web_assets.c) from src/web/ and the two libraries that npm installs
 * (marked, DOMPurify); nothing generated is committed. index.html is
 * served at "/"; every other file at "/assets/NAME" and, immutable, at
 * "/assets/STEM.HASH.EXT", the name index.html refers to it by (the
 * generator rewrites index.html accordingly). api_web() in web.c serves
 * them.
 */
#ifndef CHATD_API_WEB_H
#define CHATD_API_WEB_H

#include <stddef.h>

struct web_asset {
    const char *name;         /* "index.html", "app.js" */
    const char *hashed;       /* "app.0123456789abcdef.js"; for index.html the same as name */
    const char *content_type; /* with charset for text */
    const unsigned char *data;
    size_t len;       /* bytes of data */
    const char *etag; /* strong, quoted: "\"0123456789abcdef\"" (FNV-1a 64 of data) */
};

/* The generated table; the first entry is index.html. */
extern const struct web_asset web_assets[];
extern const size_t web_asset_count;

#endif
