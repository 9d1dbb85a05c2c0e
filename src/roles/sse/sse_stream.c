/*
 * sse_stream.c — the two stream handlers (api.md "Live streams").
 *
 * GET /api/v1/events/executions/{execution_id} (owner or admin):
 *   1. authenticate (JWT from Bearer or the access_token cookie, verified
 *      with EXECD_SECRET_KEY; the user read from `users`), load the
 *      execution from `executions`: 401/404/403 before the stream starts;
 *      past EXECD_SSE_MAX_STREAMS open streams 503;
 *   2. subscribe to the hub (so nothing consumed from now on is missed;
 *      the hub also hands over its recent ring: the seam);
 *   3. the status frame (read model), then the history from the event store
 *      (events with aggregate_id = id by timestamp, offset) after
 *      Last-Event-ID when given, then live frames; every event_id is sent
 *      once;
 *   4. the stream ends after result_stored, result_failed,
 *      execution_failed, execution_timeout or execution_cancelled; when the
 *      read model was already terminal but no closing event turns up (the
 *      event store lagging, or the events are gone) the history is re-read
 *      for a few seconds and the stream then ends anyway: a late subscriber
 *      never hangs;
 *   5. `: ping` every EXECD_SSE_HEARTBEAT_MS; a failed write (client gone),
 *      a dropped subscriber (queue overflow) or the server stopping end it.
 *
 * GET /api/v1/events/notifications/stream (any user): `event: notification`
 * frames for the caller's notification_events, the notification read from
 * `notifications` when the notifier has stored it.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "config.h"
#include "execution.h"
#include "host.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "sse.h"
#include "store.h"
#include "util.h"

#define TOKEN_MAX 4096
#define WAIT_SLICE_MS 1000
#define TERMINAL_GRACE_MS 5000
#define REREAD_MS 1000
#define LIVE_REREADS 3
#define GAP_WAIT_MS 3000
#define GAP_POLL_MS 50

struct caller {
    char user_id[SSE_KEY_MAX];
    bool admin;
};

/* Execution ids are uuids; anything outside [A-Za-z0-9_-] is not one. */
static bool id_valid(const char *id)
{
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

/* ---- auth ---- */

static int bearer_token(struct http_req *req, char *out, size_t len)
{
    const char *h = http_header(req, "Authorization");
    if (!h)
        return -ENOENT;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return -ENOENT;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ')
        n--;
    if (n == 0 || n >= len)
        return -ENOENT;
    memcpy(out, h, n);
    out[n] = '\0';
    return 0;
}

static const char *str_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* 0, or the response (401/503) has been sent. */
static int authenticate(struct sse *s, struct http_req *req, struct caller *out)
{
    char *token = malloc(TOKEN_MAX);
    if (!token) {
        http_respond_error(req, 503, "Infrastructure", "out of memory");
        return -ENOMEM;
    }
    struct jwt_claims claims;
    int rc = -EPERM;
    if ((bearer_token(req, token, TOKEN_MAX) == 0 ||
         http_cookie(req, "access_token", token, TOKEN_MAX) == 0) &&
        jwt_verify(s->host->cfg->secret_key, token, now_wall_ms() / 1000, &claims) == 0)
        rc = 0;
    free(token);
    if (rc == 0) {
        cJSON *filter = cJSON_CreateObject();
        cJSON_AddStringToObject(filter, "username", claims.sub);
        cJSON *doc = NULL;
        rc = store_find_one(s->host->store, "users", filter, NULL, &doc);
        cJSON_Delete(filter);
        if (rc == -EIO || rc == -ETIMEDOUT) {
            http_respond_error(req, 503, "Infrastructure", "user store unavailable");
            return -EIO;
        }
        const char *id = rc == 0 ? str_of(doc, "user_id") : NULL;
        const char *role = rc == 0 ? str_of(doc, "role") : NULL;
        if (id && role && !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(doc, "is_active"))) {
            snprintf(out->user_id, sizeof(out->user_id), "%s", id);
            out->admin = strcmp(role, "admin") == 0;
            rc = 0;
        } else {
            rc = -EPERM;
        }
        cJSON_Delete(doc);
    }
    if (rc) {
        http_add_header(req, "WWW-Authenticate", "Bearer");
        http_respond_error(req, 401, "Unauthorized", "Not authenticated");
    }
    return rc;
}

/* Takes a stream slot: false (503 sent) past EXECD_SSE_MAX_STREAMS. */
static bool take_slot(struct sse *s, struct http_req *req)
{
    int n = atomic_fetch_add(&s->active, 1);
    if (n >= s->max_streams) {
        atomic_fetch_sub(&s->active, 1);
        if (s->m_rejected)
            metric_add(s->m_rejected, 1);
        http_add_header(req, "Retry-After", "5");
        http_respond_error(req, 503, "Infrastructure", "Too many open event streams");
        return false;
    }
    if (s->m_streams)
        metric_add(s->m_streams, 1);
    return true;
}

static void give_slot(struct sse *s)
{
    atomic_fetch_sub(&s->active, 1);
    if (s->m_streams)
        metric_add(s->m_streams, -1);
}

static int begin(struct http_req *req)
{
    http_add_header(req, "Cache-Control", "no-cache");
    http_add_header(req, "X-Accel-Buffering", "no");
    return http_stream_begin(req, 200, "text/event-stream");
}

/* ---- frames ---- */

static int write_frame(struct sse *s, struct http_req *req, const char *event, const char *id,
                       const cJSON *data)
{
    char *json = cJSON_PrintUnformatted(data);
    if (!json)
        return -ENOMEM;
    struct strbuf sb = {0};
    if (event)
        sb_printf(&sb, "event: %s\n", event);
    if (id)
        sb_printf(&sb, "id: %s\n", id);
    sb_puts(&sb, "data: ");
    sb_puts(&sb, json);
    sb_puts(&sb, "\n\n");
    cJSON_free(json);
    int rc = sb.s ? http_stream_write(req, sb.s, sb.len) : -ENOMEM;
    sb_release(&sb);
    if (rc == 0 && s->m_frames)
        metric_add(s->m_frames, 1);
    return rc;
}

static void add_str_or_null(cJSON *o, const char *name, const char *v)
{
    if (v && v[0])
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

static void add_copy(cJSON *o, const char *name, const cJSON *src, const char *field)
{
    const cJSON *v = src ? cJSON_GetObjectItemCaseSensitive(src, field) : NULL;
    if (v && !cJSON_IsNull(v))
        cJSON_AddItemToObject(o, name, cJSON_Duplicate(v, 1));
    else
        cJSON_AddNullToObject(o, name);
}

static void add_date(cJSON *o, const char *name, const cJSON *src, const char *field)
{
    const cJSON *v = src ? cJSON_GetObjectItemCaseSensitive(src, field) : NULL;
    int64_t ms;
    const char *str = src ? str_of(src, field) : NULL;
    if (str) {
        cJSON_AddStringToObject(o, name, str);
    } else if (v && store_date_ms(v, &ms) == 0) {
        char ts[TS_LEN];
        ts_format_us(ms * 1000, ts);
        cJSON_AddStringToObject(o, name, ts);
    } else {
        cJSON_AddNullToObject(o, name);
    }
}

/* The result of a stored execution: execution_results (written before
 * result_stored is published) for the result fields, executions for lang,
 * lang_version and created_at. */
static cJSON *result_of(struct sse *s, const char *id, char *status, size_t slen)
{
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "_id", id);
    cJSON *res = NULL, *ex = NULL;
    if (store_find_one(s->host->store, "execution_results", filter, NULL, &res) != 0)
        res = NULL;
    cJSON_Delete(filter);
    filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "execution_id", id);
    if (store_find_one(s->host->store, "executions", filter, NULL, &ex) != 0)
        ex = NULL;
    cJSON_Delete(filter);
    const cJSON *src = res ? res : ex;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "execution_id", id);
    const char *st = str_of(src, "status");
    if (st && status && !status[0])
        snprintf(status, slen, "%s", st);
    add_str_or_null(o, "status", st);
    add_copy(o, "exit_code", src, "exit_code");
    add_copy(o, "stdout", src, "stdout");
    add_copy(o, "stderr", src, "stderr");
    add_copy(o, "lang", ex, "lang");
    add_copy(o, "lang_version", ex, "lang_version");
    add_copy(o, "resource_usage", src, "resource_usage");
    add_date(o, "created_at", ex, "created_at");
    add_copy(o, "error_type", src, "error_type");
    cJSON_Delete(res);
    cJSON_Delete(ex);
    return o;
}

static bool closes_stream(const char *type)
{
    static const char *const closers[] = {"result_stored", "result_failed", "execution_failed",
                                          "execution_timeout", "execution_cancelled"};
    for (size_t i = 0; i < sizeof(closers) / sizeof(closers[0]); i++)
        if (strcmp(type, closers[i]) == 0)
            return true;
    return false;
}

/* ---- event ids already sent ---- */

struct seen {
    char (*ids)[SSE_ID_MAX];
    size_t n, cap;
};

static bool seen_has(const struct seen *sn, const char *id)
{
    for (size_t i = sn->n; i-- > 0;)
        if (strcmp(sn->ids[i], id) == 0)
            return true;
    return false;
}

static void seen_add(struct seen *sn, const char *id)
{
    if (sn->n == sn->cap) {
        size_t cap = sn->cap ? sn->cap * 2 : 32;
        void *p = realloc(sn->ids, cap * sizeof(*sn->ids));
        if (!p)
            return;
        sn->ids = p;
        sn->cap = cap;
    }
    snprintf(sn->ids[sn->n++], SSE_ID_MAX, "%s", id);
}

/* ---- the execution stream ---- */

struct stream {
    struct sse *s;
    struct http_req *req;
    const char *id;
    struct seen seen;
    bool closed; /* a closing frame was sent */
};

/* Sends one execution event frame (once per event_id); -EPIPE when the
 * client is gone. */
static int send_event(struct stream *st, const char *event_id, const char *type,
                      const char *timestamp, const char *status)
{
    if (!event_id[0] || seen_has(&st->seen, event_id))
        return 0;
    seen_add(&st->seen, event_id);
    char stbuf[24];
    snprintf(stbuf, sizeof(stbuf), "%s", status ? status : "");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event_type", type);
    cJSON_AddStringToObject(o, "execution_id", st->id);
    add_str_or_null(o, "timestamp", timestamp);
    cJSON_AddStringToObject(o, "event_id", event_id);
    cJSON *result = NULL;
    if (strcmp(type, "result_stored") == 0)
        result = result_of(st->s, st->id, stbuf, sizeof(stbuf));
    add_str_or_null(o, "status", stbuf);
    if (result)
        cJSON_AddItemToObject(o, "result", result);
    else
        cJSON_AddNullToObject(o, "result");
    int rc = write_frame(st->s, st->req, NULL, event_id, o);
    cJSON_Delete(o);
    if (closes_stream(type))
        st->closed = true;
    return rc;
}

static const char *event_status(const cJSON *ev, char *buf, size_t len)
{
    const char *type = str_of(ev, "event_type");
    int t = type ? event_type_lookup(type) : -1;
    int stt = t >= 0 ? execution_status_of_event((enum event_type)t) : -1;
    buf[0] = '\0';
    if (stt >= 0)
        snprintf(buf, len, "%s", execution_status_name((enum execution_status)stt));
    else if (t == EV_result_stored && str_of(ev, "status"))
        snprintf(buf, len, "%s", str_of(ev, "status"));
    return buf;
}

/* Reads the event store and sends what was not sent yet, after last_id
 * when it is among the events.  With need_id, sends nothing and returns
 * -EAGAIN unless that event is stored already (the store writes a partition
 * in order, so everything before it is then stored too).  -EPIPE when the
 * client is gone, -EIO when the store cannot be read. */
static int send_history(struct stream *st, const char *last_id, const char *need_id)
{
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "aggregate_id", st->id);
    cJSON *opts = cJSON_CreateObject();
    cJSON *sort = cJSON_AddObjectToObject(opts, "sort");
    cJSON_AddNumberToObject(sort, "timestamp", 1);
    cJSON_AddNumberToObject(sort, "offset", 1);
    cJSON *proj = cJSON_AddObjectToObject(opts, "projection");
    static const char *const fields[] = {"event_id", "event_type", "timestamp", "status"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        cJSON_AddNumberToObject(proj, fields[i], 1);
    cJSON_AddNumberToObject(opts, "limit", 10000);
    cJSON *events = NULL;
    int rc = store_find(st->s->host->store, "events", filter, opts, &events);
    cJSON_Delete(filter);
    cJSON_Delete(opts);
    if (rc) {
        log_warn(SSE_ROLE, "cannot read the event history", "execution_id=\"%s\" err=%d", st->id,
                 rc);
        return -EIO;
    }
    if (need_id) {
        bool found = false;
        const cJSON *n;
        cJSON_ArrayForEach(n, events)
        {
            const char *eid = str_of(n, "event_id");
            if (eid && strcmp(eid, need_id) == 0) {
                found = true;
                break;
            }
        }
        if (!found) {
            cJSON_Delete(events);
            return -EAGAIN;
        }
    }
    bool skipping = false;
    if (last_id && last_id[0]) {
        const cJSON *e;
        cJSON_ArrayForEach(e, events)
        {
            const char *eid = str_of(e, "event_id");
            if (eid && strcmp(eid, last_id) == 0) {
                skipping = true;
                break;
            }
        }
    }
    const cJSON *e;
    rc = 0;
    cJSON_ArrayForEach(e, events)
    {
        const char *eid = str_of(e, "event_id");
        const char *type = str_of(e, "event_type");
        if (!eid || !type)
            continue;
        if (st->closed)
            break;
        if (skipping) {
            /* Everything up to and including Last-Event-ID was delivered. */
            if (!seen_has(&st->seen, eid))
                seen_add(&st->seen, eid);
            /* The client already had the closing frame: nothing follows. */
            if (closes_stream(type))
                st->closed = true;
            if (strcmp(eid, last_id) == 0)
                skipping = false;
            continue;
        }
        char buf[24];
        rc = send_event(st, eid, type, str_of(e, "timestamp"), event_status(e, buf, sizeof(buf)));
        if (rc || st->closed)
            break;
    }
    cJSON_Delete(events);
    return rc;
}

/* Before a live frame that is not in the history sent so far: waits (up to
 * GAP_WAIT_MS) for the event store to hold it, then sends the history up to
 * and including it, so the frames that precede it on the log come first even
 * when this replica's consumer joined after they were published.  When the
 * store does not catch up in time the live frame goes out anyway. */
static int fill_gap(struct stream *st, const char *last_id, const char *event_id)
{
    int64_t until = now_mono_ms() + GAP_WAIT_MS;
    for (;;) {
        int rc = send_history(st, last_id, event_id);
        if (rc == -EIO)
            return 0;
        if (rc != -EAGAIN)
            return rc;
        if (now_mono_ms() >= until || sse_stopping(st->s))
            return 0;
        sleep_ms(GAP_POLL_MS);
    }
}

static int send_ping(struct http_req *req)
{
    static const char ping[] = ": ping\n\n";
    return http_stream_write(req, ping, sizeof(ping) - 1);
}

static void on_execution_stream(struct http_req *req, void *ctx)
{
    struct sse *s = ctx;
    if (sse_stopping(s)) {
        http_respond_error(req, 503, "Infrastructure", "server is shutting down");
        return;
    }
    struct caller who;
    if (authenticate(s, req, &who) != 0)
        return;
    const char *id = http_param(req, "execution_id");
    if (!id || !id[0] || strlen(id) >= SSE_KEY_MAX || !id_valid(id)) {
        http_respond_error(req, 404, "NotFound", "Execution not found");
        return;
    }
    cJSON *filter = cJSON_CreateObject();
    cJSON_AddStringToObject(filter, "execution_id", id);
    cJSON *doc = NULL;
    int rc = store_find_one(s->host->store, "executions", filter, NULL, &doc);
    cJSON_Delete(filter);
    if (rc == -ENOENT || rc == -EINVAL) {
        http_respond_error(req, 404, "NotFound", "Execution not found");
        return;
    }
    if (rc) {
        http_respond_error(req, 503, "Infrastructure", "execution store unavailable");
        return;
    }
    const char *owner = str_of(doc, "user_id");
    if (!who.admin && (!owner || strcmp(owner, who.user_id) != 0)) {
        cJSON_Delete(doc);
        http_respond_error(req, 403, "Forbidden", "Not enough permissions");
        return;
    }
    char status[24] = "";
    if (str_of(doc, "status"))
        snprintf(status, sizeof(status), "%s", str_of(doc, "status"));
    cJSON_Delete(doc);
    int stn = execution_status_lookup(status);
    bool was_terminal = stn >= 0 && execution_status_terminal((enum execution_status)stn);

    if (!take_slot(s, req))
        return;
    struct sse_sub sub;
    if (sse_sub_init(&s->hub, &sub, SSE_EXEC, id) != 0) {
        give_slot(s);
        http_respond_error(req, 503, "Infrastructure", "out of memory");
        return;
    }
    struct stream st = {.s = s, .req = req, .id = id};
    const char *last_id = http_header(req, "Last-Event-ID");
    const char *reason = "closed";
    begin(req);
    char ts[TS_LEN];
    ts_format_us(now_wall_us(), ts);
    cJSON *first = cJSON_CreateObject();
    cJSON_AddStringToObject(first, "event_type", "status");
    cJSON_AddStringToObject(first, "execution_id", id);
    cJSON_AddStringToObject(first, "timestamp", ts);
    cJSON_AddNullToObject(first, "event_id");
    add_str_or_null(first, "status", status);
    cJSON_AddNullToObject(first, "result");
    rc = write_frame(s, req, NULL, NULL, first);
    cJSON_Delete(first);
    if (rc == 0)
        rc = send_history(&st, last_id, NULL);
    if (rc == -EIO)
        rc = 0; /* live frames still flow; a terminal run re-reads below */

    int64_t hb = s->host->cfg->sse_heartbeat_ms;
    int64_t next_ping = now_mono_ms() + hb;
    int64_t grace_end = was_terminal ? now_mono_ms() + TERMINAL_GRACE_MS : 0;
    int64_t next_reread = now_mono_ms() + REREAD_MS;
    int live_rereads = 0;
    while (rc == 0 && !st.closed) {
        if (sse_stopping(s)) {
            reason = "stopping";
            break;
        }
        int64_t now = now_mono_ms();
        if (now >= next_ping) {
            if ((rc = send_ping(req)) != 0)
                break;
            next_ping = now + hb;
        }
        if (grace_end) {
            if (now >= grace_end) {
                reason = "terminal without closing event";
                break;
            }
            if (now >= next_reread) {
                if ((rc = send_history(&st, NULL, NULL)) == -EIO)
                    rc = 0;
                next_reread = now + REREAD_MS;
                continue;
            }
        }
        int64_t deadline = next_ping;
        if (deadline > now + WAIT_SLICE_MS)
            deadline = now + WAIT_SLICE_MS;
        if (grace_end && deadline > next_reread)
            deadline = next_reread;
        struct sse_item *it = NULL;
        enum sse_wait w = sse_sub_wait(&s->hub, &sub, deadline, &it);
        if (w == SSE_STOPPING) {
            reason = "stopping";
            break;
        }
        if (w == SSE_DROPPED) {
            reason = "dropped: queue overflow";
            if (s->m_dropped)
                metric_add(s->m_dropped, 1);
            log_warn(SSE_ROLE, "slow subscriber dropped", "execution_id=\"%s\" queue_max=%zu", id,
                     s->hub.queue_max);
            break;
        }
        if (w == SSE_GOT) {
            /* Events published before this replica's consumer had its
             * partitions reach us only through the event store: before the
             * first live frames and before a closing one, fill any gap from
             * the history so frames stay in order and none is missed. */
            if (!seen_has(&st.seen, it->event_id) &&
                (live_rereads < LIVE_REREADS || closes_stream(it->type))) {
                live_rereads++;
                rc = fill_gap(&st, last_id, it->event_id);
            }
            if (rc == 0)
                rc = send_event(&st, it->event_id, it->type, it->timestamp, it->status);
            sse_item_unref(it);
        }
    }
    if (rc == -EPIPE)
        reason = "client gone";
    log_debug(SSE_ROLE, "execution stream ended", "execution_id=\"%s\" frames=%zu reason=\"%s\"",
              id, st.seen.n, reason);
    free(st.seen.ids);
    sse_sub_release(&s->hub, &sub);
    give_slot(s);
}

/* ---- the notification stream ---- */

static int send_notification(struct sse *s, struct http_req *req, const struct sse_item *it)
{
    cJSON *doc = NULL;
    if (it->extra[0]) {
        cJSON *filter = cJSON_CreateObject();
        cJSON_AddStringToObject(filter, "notification_id", it->extra);
        if (store_find_one(s->host->store, "notifications", filter, NULL, &doc) != 0)
            doc = NULL;
        cJSON_Delete(filter);
    }
    cJSON *o = cJSON_CreateObject();
    add_str_or_null(o, "notification_id", it->extra);
    const char *status = str_of(doc, "status");
    if (!status)
        status = strcmp(it->type, "notification_delivered") == 0 ? "delivered"
                 : strcmp(it->type, "notification_failed") == 0  ? "failed"
                                                                 : "pending";
    cJSON_AddStringToObject(o, "status", status);
    add_copy(o, "subject", doc, "subject");
    add_copy(o, "body", doc, "body");
    add_copy(o, "action_url", doc, "action_url");
    if (doc && cJSON_GetObjectItemCaseSensitive(doc, "created_at"))
        add_date(o, "created_at", doc, "created_at");
    else
        add_str_or_null(o, "created_at", it->timestamp);
    add_copy(o, "severity", doc, "severity");
    add_copy(o, "tags", doc, "tags");
    if (str_of(doc, "channel"))
        add_copy(o, "channel", doc, "channel");
    else
        add_str_or_null(o, "channel", it->channel);
    add_date(o, "read_at", doc, "read_at");
    int rc = write_frame(s, req, "notification", it->event_id, o);
    cJSON_Delete(o);
    cJSON_Delete(doc);
    return rc;
}

static void on_notification_stream(struct http_req *req, void *ctx)
{
    struct sse *s = ctx;
    if (sse_stopping(s)) {
        http_respond_error(req, 503, "Infrastructure", "server is shutting down");
        return;
    }
    struct caller who;
    if (authenticate(s, req, &who) != 0 || !take_slot(s, req))
        return;
    struct sse_sub sub;
    if (sse_sub_init(&s->hub, &sub, SSE_NOTIF, who.user_id) != 0) {
        give_slot(s);
        http_respond_error(req, 503, "Infrastructure", "out of memory");
        return;
    }
    begin(req);
    struct seen seen = {0};
    int64_t hb = s->host->cfg->sse_heartbeat_ms;
    int64_t next_ping = now_mono_ms() + hb;
    int rc = send_ping(req);
    while (rc == 0 && !sse_stopping(s)) {
        int64_t now = now_mono_ms();
        if (now >= next_ping) {
            if ((rc = send_ping(req)) != 0)
                break;
            next_ping = now + hb;
        }
        int64_t deadline = next_ping < now + WAIT_SLICE_MS ? next_ping : now + WAIT_SLICE_MS;
        struct sse_item *it = NULL;
        enum sse_wait w = sse_sub_wait(&s->hub, &sub, deadline, &it);
        if (w == SSE_STOPPING)
            break;
        if (w == SSE_DROPPED) {
            if (s->m_dropped)
                metric_add(s->m_dropped, 1);
            break;
        }
        if (w == SSE_GOT) {
            if (!seen_has(&seen, it->event_id)) {
                seen_add(&seen, it->event_id);
                rc = send_notification(s, req, it);
            }
            sse_item_unref(it);
        }
    }
    free(seen.ids);
    sse_sub_release(&s->hub, &sub);
    give_slot(s);
}

int sse_routes(struct sse *s)
{
    int rc = http_route(s->host->http, "GET", "/api/v1/events/executions/{execution_id}",
                        on_execution_stream, s);
    if (rc == 0)
        rc = http_route(s->host->http, "GET", "/api/v1/events/notifications/stream",
                        on_notification_stream, s);
    return rc;
}
