/*
 * api.h - the HTTP API of SPEC.md: one file per resource, one route table.
 *
 * Handlers get the application context (struct app) through http_app().
 * main() builds the app once and it outlives the HTTP server. Nothing here
 * knows which database, cache backend or HTTP library is underneath.
 */
#ifndef CHATD_API_API_H
#define CHATD_API_API_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"

struct config;
struct store;
struct cache;
struct llm;

struct app {
    const struct config *cfg;
    struct store *store;
    struct cache *cache;
    struct llm *llm;
};

extern const struct http_route api_routes[];
extern const size_t api_route_count;

/* chat.c: SPEC sections 1 and 2 */
void api_chat(struct http_request *req);
void api_chat_stream(struct http_request *req);
/* conversations.c: sections 3 and 4 */
void api_conversation_get(struct http_request *req);
void api_conversation_delete(struct http_request *req);
/* export.c: sections 5, 6 and "Export files" */
void api_export_one(struct http_request *req);
void api_export_all(struct http_request *req);
void api_export_file(struct http_request *req);
/* health.c: section 7 */
void api_health(struct http_request *req);
/* web.c: the web page at "/" and its files under "/assets/" */
void api_web_page(struct http_request *req);
void api_web_asset(struct http_request *req);

/* Answers a store error: 404 with message for CHATD_ENOTFOUND, 503
 * "database unavailable" for CHATD_EDB, 500 otherwise. */
void api_store_error(struct http_request *req, enum chatd_err err, const char *not_found);

#endif
