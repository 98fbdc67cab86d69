/*
 * web.c - the web page: "/" and its files under "/assets/".
 *
 * The files are embedded in the binary (web.h, generated at build time),
 * so serving one is a table lookup and a response that points at static
 * memory. This is a resource like the others, so it lives in api/ and talks
 * to the HTTP layer through server.h only; http/ stays the one place that
 * knows libmicrohttpd.
 *
 * Caching (RFC 9111): every file has a strong ETag, the hash of its bytes
 * taken at build time, and If-None-Match answers 304. "/" is "no-cache":
 * the browser revalidates it on every load (a 304 costs a few hundred
 * bytes), so a new chatd shows its new page at once. index.html refers to
 * the assets by content-hashed names (app.0123456789abcdef.js): a new build
 * means new names, so those are cached for a year as immutable and never
 * fetched twice. The plain names (/assets/app.js) are served too, for
 * people and tools, with "no-cache". The page's Content-Security-Policy
 * allows scripts, styles and requests from chatd alone: even if model
 * output got past the sanitiser, no inline script or handler could run.
 * Unknown files are the usual 404 JSON error; other paths never fall back
 * to the page.
 */
#include <string.h>

#include "api/api.h"
#include "api/web.h"

#define CACHE_REVALIDATE "no-cache"
#define CACHE_IMMUTABLE  "public, max-age=31536000, immutable"
#define PAGE_CSP                                                                                   \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "                 \
    "frame-ancestors 'none'"

static void serve(struct http_request *req, const struct web_asset *a, const char *cache_control)
{
    http_add_header(req, "ETag", a->etag);
    http_add_header(req, "Cache-Control", cache_control);
    http_add_header(req, "X-Content-Type-Options", "nosniff");
    if (a == &web_assets[0]) {
        http_add_header(req, "Content-Security-Policy", PAGE_CSP);
        http_add_header(req, "Referrer-Policy", "no-referrer");
    }
    if (http_etag_match(req, a->etag))
        http_respond(req, 304, NULL, "", 0);
    else
        http_respond_static(req, 200, a->content_type, a->data, a->len);
}

void api_web_page(struct http_request *req)
{
    serve(req, &web_assets[0], CACHE_REVALIDATE);
}

void api_web_asset(struct http_request *req)
{
    struct str p = http_param(req, 0);
    for (size_t i = 1; i < web_asset_count; i++) {
        const struct web_asset *a = &web_assets[i];
        if (str_eq(p, a->hashed)) {
            serve(req, a, CACHE_IMMUTABLE);
            return;
        }
        if (str_eq(p, a->name)) {
            serve(req, a, CACHE_REVALIDATE);
            return;
        }
    }
    http_respond_error(req, CHATD_ENOTFOUND, "no such file");
}
