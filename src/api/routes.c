/*
 * routes.c - the route table: every endpoint of SPEC.md and its methods.
 * Order matters only where patterns overlap: the first match wins.
 */
#include "api/api.h"

#include "http/server.h"

const struct http_route api_routes[] = {
    {"/api/chat", HTTP_POST, api_chat},
    {"/api/chat-stream", HTTP_POST | HTTP_GET, api_chat_stream},
    {"/api/conversations/export-all", HTTP_GET, api_export_all},
    {"/api/conversations/*", HTTP_GET | HTTP_HEAD, api_conversation_get},
    {"/api/conversations/*/export", HTTP_GET, api_export_one},
    {"/api/exports/*", HTTP_GET | HTTP_HEAD, api_export_file},
    {"/api/conversations/*", HTTP_DELETE, api_conversation_delete},
    {"/health", HTTP_GET | HTTP_HEAD, api_health},
    {"/", HTTP_GET | HTTP_HEAD, api_web_page},
    {"/assets/*", HTTP_GET | HTTP_HEAD, api_web_asset},
};

const size_t api_route_count = sizeof api_routes / sizeof api_routes[0];

void api_store_error(struct http_request *req, enum chatd_err err, const char *not_found)
{
    if (err == CHATD_ENOTFOUND)
        http_respond_error(req, err, not_found);
    else if (err == CHATD_EDB)
        http_respond_error(req, err, "database unavailable");
    else
        http_respond_error(req, err, chatd_strerror(err));
}
