/*
 * execution.h — execution states, the event → status mapping and error
 * types (DESIGN §4), plus the field conventions of the `executions`
 * collection shared by its three writers.
 *
 * Status ranks: queued 0 < scheduled 1 < running 2 < terminal 3, where the
 * terminal states are completed, failed, timeout and cancelled.  Status
 * never moves backwards and a terminal status is never replaced by another.
 *
 * `executions` documents (one per execution, unique index
 * "execution_id_unique" on execution_id; every writer uses conditional
 * updates and never touches another writer's fields):
 *
 *   api (insert only):  execution_id, user_id, script, lang, lang_version,
 *                       priority, created_at, updated_at, status "queued",
 *                       status_rank 0
 *   projection:         status, status_rank, updated_at, queued_at,
 *                       scheduled_at, started_at, finished_at, pod_name,
 *                       queue_position, estimated_wait_seconds, error_type,
 *                       error_message, and from the (first) terminal event
 *                       the result fields stdout, stderr, exit_code,
 *                       resource_usage, stdout_truncated, stderr_truncated;
 *                       on upsert (the api lagging) it also sets user_id,
 *                       lang, lang_version, priority, created_at with
 *                       $setOnInsert, never with $set
 *
 * After the api's insert the projection is the only writer of a document:
 * FerretDB 1.24 updates are a query plus a separate whole-document write, so
 * two roles updating one document concurrently lose one of the updates.
 * The results role keeps its exactly-once record in `execution_results`
 * ({_id: execution_id, the same result fields, error_type, error_message,
 * status, size_bytes, result_event_id, stored_at, published}); it is
 * written before result_stored is published, so a reader that saw
 * result_stored finds the result there even if the projection lags.
 *
 * Dates (*_at) are BSON dates (store_date).  error_type is one of the
 * names of enum execution_error; the coordinator ends a rejected execution
 * `failed` with rate_limited (user limits, full queue), system_error
 * (unknown runtime) or resource_limit (script or timeout beyond the
 * configured maximum).
 *
 * exec_json builds cJSON documents and filters from a template, so ids from
 * events are always escaped: %S a C string (JSON-escaped; NULL → null),
 * %L long long, %F double, %B int as true/false, %J a cJSON node (printed,
 * not consumed), %% a percent sign.
 */
#ifndef EXECD_EXECUTION_H
#define EXECD_EXECUTION_H

#include <stdbool.h>

#include "events.h"

struct cJSON;

enum execution_status {
    EXEC_QUEUED,
    EXEC_SCHEDULED,
    EXEC_RUNNING,
    EXEC_COMPLETED,
    EXEC_FAILED,
    EXEC_TIMEOUT,
    EXEC_CANCELLED,
    EXEC_STATUS_COUNT
};

#define EXEC_RANK_TERMINAL 3

enum execution_error {
    EXEC_ERR_SCRIPT_ERROR,
    EXEC_ERR_TIMEOUT,
    EXEC_ERR_RESOURCE_LIMIT,
    EXEC_ERR_SYSTEM_ERROR,
    EXEC_ERR_PERMISSION_DENIED,
    EXEC_ERR_RATE_LIMITED,
    EXEC_ERR_COUNT
};

const char *execution_status_name(enum execution_status status);
/* -1 when unknown. */
int execution_status_lookup(const char *name);
/* 0..3 (EXEC_RANK_TERMINAL for every terminal state). */
int execution_status_rank(enum execution_status status);
bool execution_status_terminal(enum execution_status status);
/* The timestamp field the status sets: queued_at, scheduled_at, started_at
 * or finished_at. */
const char *execution_status_time_field(enum execution_status status);

/* The status an event moves its execution to, or -1 when the event does not
 * change the status (rejections, results, sagas, commands, pod_deleted…):
 * requested/accepted/queued → queued; scheduled, pod_created, pod_scheduled
 * → scheduled; started, pod_running → running; completed, failed, timeout,
 * cancelled → themselves. */
int execution_status_of_event(enum event_type type);
/* True for execution_completed/_failed/_timeout/_cancelled. */
bool execution_event_terminal(enum event_type type);

/* Whether a document at cur_rank (-1: no status yet) takes next: a higher
 * rank always, the same non-terminal rank too (it may add information such
 * as a queue position or a pod name), never a lower one and never a second
 * terminal state. */
bool execution_transition_allowed(int cur_rank, enum execution_status next);
/* The largest rank a document may have for next to apply (the filter's
 * status_rank bound, inclusive). */
int execution_rank_bound(enum execution_status next);

const char *execution_error_name(enum execution_error err);
/* -1 when unknown. */
int execution_error_lookup(const char *name);

/* A cJSON tree from a template (see above); NULL on a template or memory
 * error.  The caller owns (cJSON_Delete) the result. */
struct cJSON *exec_json(const char *fmt, ...);

#endif
