/*
 * api_admin.c — admin user routes: list (limit ≤ 1000, offset, search,
 * role) and detail.  Admin only; hashed_password is projected away at the
 * store and the documents are rendered as UserResponse.
 *
 * search is a case-insensitive substring of username or email, applied in C
 * over the role-filtered cursor (FerretDB portability: no $regex reliance).
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "host.h"
#include "store.h"

static bool icontains(const char *hay, const char *needle)
{
    if (!hay)
        return false;
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return n == 0;
}

static const char *str_of(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static cJSON *find_opts(long skip, long limit)
{
    cJSON *opts = cJSON_CreateObject();
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(opts, "projection"), "hashed_password", 0);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(opts, "sort"), "username", 1);
    if (skip > 0)
        cJSON_AddNumberToObject(opts, "skip", (double)skip);
    if (limit > 0)
        cJSON_AddNumberToObject(opts, "limit", (double)limit);
    return opts;
}

static void on_list(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user admin;
    if (api_require_admin(api, req, &admin) != 0)
        return;
    api_user_release(&admin);
    long limit, offset;
    if (api_query_int(req, "limit", 100, 1, 1000, &limit) ||
        api_query_int(req, "offset", 0, 0, 1000000000, &offset))
        return;
    char search[256] = "", role[32] = "";
    if (http_query(req, "search", 0, search, sizeof(search)) == -E2BIG) {
        api_respond_invalid(req, "query", "search", "String should have at most 255 characters",
                            "string_too_long");
        return;
    }
    if (http_query(req, "role", 0, role, sizeof(role)) == -E2BIG ||
        (role[0] && strcmp(role, "user") != 0 && strcmp(role, "admin") != 0)) {
        api_respond_invalid(req, "query", "role", "Input should be 'user' or 'admin'", "enum");
        return;
    }
    cJSON *filter = cJSON_CreateObject();
    if (role[0])
        cJSON_AddStringToObject(filter, "role", role);
    struct store *store = api->host->store;
    cJSON *docs = NULL;
    int64_t total = 0;
    int rc;
    cJSON *opts = find_opts(search[0] ? 0 : offset, search[0] ? 0 : limit);
    rc = store_find(store, API_USERS, filter, opts, &docs);
    if (rc == 0 && !search[0])
        rc = store_count(store, API_USERS, filter, &total);
    cJSON_Delete(opts);
    cJSON_Delete(filter);
    if (rc) {
        cJSON_Delete(docs);
        http_respond_error(req, 503, "Infrastructure", "user store unavailable");
        return;
    }
    cJSON *resp = cJSON_CreateObject();
    cJSON *users = cJSON_AddArrayToObject(resp, "users");
    const cJSON *doc;
    long seen = 0;
    cJSON_ArrayForEach(doc, docs)
    {
        if (search[0]) {
            if (!icontains(str_of(doc, "username"), search) &&
                !icontains(str_of(doc, "email"), search))
                continue;
            seen++;
            if (seen <= offset || seen > offset + limit)
                continue;
        }
        cJSON_AddItemToArray(users, api_user_response(doc));
    }
    if (search[0])
        total = seen;
    cJSON_AddNumberToObject(resp, "total", (double)total);
    cJSON_AddNumberToObject(resp, "offset", (double)offset);
    cJSON_AddNumberToObject(resp, "limit", (double)limit);
    http_respond_json(req, 200, resp);
    cJSON_Delete(resp);
    cJSON_Delete(docs);
}

static void on_get(struct http_req *req, void *ctx)
{
    struct api *api = ctx;
    struct api_user admin;
    if (api_require_admin(api, req, &admin) != 0)
        return;
    api_user_release(&admin);
    const char *id = http_param(req, "user_id");
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "user_id", id ? id : "");
    cJSON *opts = find_opts(0, 0);
    cJSON *doc = NULL;
    int rc = store_find_one(api->host->store, API_USERS, filter, opts, &doc);
    cJSON_Delete(opts);
    cJSON_Delete(filter);
    if (rc == -ENOENT) {
        http_respond_error(req, 404, "NotFound", "User not found");
    } else if (rc) {
        http_respond_error(req, 503, "Infrastructure", "user store unavailable");
    } else {
        cJSON *resp = api_user_response(doc);
        http_respond_json(req, 200, resp);
        cJSON_Delete(resp);
    }
    cJSON_Delete(doc);
}

static const struct api_route admin_routes[] = {
    {"GET", "/api/v1/admin/users/", on_list,
     "List users (limit 1-1000, offset, search in username/email, role)", "admin", "admin", NULL,
     "UserList"},
    {"GET", "/api/v1/admin/users/{user_id}", on_get, "One user", "admin", "admin", NULL,
     "UserResponse"},
};

int api_admin_init(struct api *api)
{
    return api_routes_add(api, admin_routes, sizeof(admin_routes) / sizeof(admin_routes[0]));
}
