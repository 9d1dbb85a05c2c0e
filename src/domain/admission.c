/*
 * admission.c — validation, per-user limits, queue order and wait
 * estimates for the coordinator (see admission.h).  Pure: no I/O.
 */
#include "admission.h"

#include <stdio.h>
#include <string.h>

#include "runtimes.h"

static int decide(struct admission_decision *out, enum admission_verdict v, int64_t retry_ms,
                  const char *reason)
{
    out->verdict = v;
    out->retry_after_s = retry_ms > 0 ? (retry_ms + 999) / 1000 : 0;
    snprintf(out->reason, sizeof(out->reason), "%s", reason);
    return 0;
}

int admission_validate(const struct admission_policy *pol, const struct admission_request *req,
                       struct admission_decision *out)
{
    char why[ADMISSION_REASON_LEN];
    const char *lang = req->lang ? req->lang : "";
    const char *version = req->lang_version ? req->lang_version : "";
    if (runtime_find_version(lang, version, NULL) == NULL) {
        snprintf(why, sizeof(why), "unsupported runtime '%.40s' version '%.20s'", lang, version);
        return decide(out, ADMIT_INVALID_RUNTIME, 0, why);
    }
    if ((int64_t)req->script_bytes > pol->max_script_bytes) {
        snprintf(why, sizeof(why), "script of %zu bytes exceeds the limit of %lld bytes",
                 req->script_bytes, (long long)pol->max_script_bytes);
        return decide(out, ADMIT_INVALID_LIMITS, 0, why);
    }
    if (req->timeout_seconds <= 0 || req->timeout_seconds > pol->max_timeout_seconds) {
        snprintf(why, sizeof(why), "timeout of %lld s is outside 1..%lld s",
                 (long long)req->timeout_seconds, (long long)pol->max_timeout_seconds);
        return decide(out, ADMIT_INVALID_LIMITS, 0, why);
    }
    return decide(out, ADMIT_OK, 0, "");
}

int64_t admission_scaled_limit(int64_t base, const struct admission_override *ov)
{
    if (ov == NULL)
        return base;
    if (ov->bypass)
        return INT64_MAX;
    double m = ov->multiplier > 0 ? ov->multiplier : 1.0;
    double v = (double)base * m;
    if (v >= 9.0e18)
        return INT64_MAX;
    int64_t limit = (int64_t)v;
    return limit < 1 ? 1 : limit;
}

int64_t admission_window_wait_ms(const int64_t *recent_ms, size_t n, int64_t now_ms, int64_t limit)
{
    size_t first = 0; /* the oldest admission still inside the window */
    while (first < n && recent_ms[first] <= now_ms - ADMISSION_WINDOW_MS)
        first++;
    size_t inside = n - first;
    if (limit <= 0)
        limit = 1;
    if ((int64_t)inside < limit)
        return 0;
    /* One more fits once all but limit-1 of them have left the window. */
    size_t must_leave = inside - (size_t)limit; /* index among the inside ones */
    int64_t leaves_at = recent_ms[first + must_leave] + ADMISSION_WINDOW_MS;
    int64_t wait = leaves_at - now_ms;
    return wait > 0 ? wait : 1;
}

int admission_decide(const struct admission_policy *pol, const struct admission_request *req,
                     const struct admission_state *st, const struct admission_override *ov,
                     struct admission_decision *out)
{
    admission_validate(pol, req, out);
    if (out->verdict != ADMIT_OK)
        return 0;
    char why[ADMISSION_REASON_LEN];
    if (ov == NULL || !ov->bypass) {
        int64_t max_active = admission_scaled_limit(pol->user_max_concurrent, ov);
        if (st->active >= max_active) {
            snprintf(why, sizeof(why), "concurrent execution limit of %lld reached",
                     (long long)max_active);
            int64_t avg = st->avg_run_ms > 0 ? st->avg_run_ms : 1000;
            return decide(out, ADMIT_USER_CONCURRENCY, avg, why);
        }
        int64_t per_minute = admission_scaled_limit(pol->user_max_per_minute, ov);
        int64_t wait = admission_window_wait_ms(st->recent_ms, st->nrecent, st->now_ms, per_minute);
        if (wait > 0) {
            snprintf(why, sizeof(why), "rate limit of %lld executions per minute exceeded",
                     (long long)per_minute);
            return decide(out, ADMIT_USER_RATE, wait, why);
        }
    }
    if (st->queue_depth >= pol->queue_max) {
        snprintf(why, sizeof(why), "execution queue is full (%lld waiting)",
                 (long long)st->queue_depth);
        int64_t avg = st->avg_run_ms > 0 ? st->avg_run_ms : 1000;
        return decide(out, ADMIT_QUEUE_FULL, avg, why);
    }
    return decide(out, ADMIT_OK, 0, "");
}

int admission_compare(const struct admission_key *a, const struct admission_key *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    if (a->arrival_us != b->arrival_us)
        return a->arrival_us < b->arrival_us ? -1 : 1;
    int c = strcmp(a->execution_id ? a->execution_id : "", b->execution_id ? b->execution_id : "");
    return c < 0 ? -1 : c > 0;
}

int64_t admission_estimated_wait_ms(int64_t position, int64_t cap, int64_t avg_run_ms)
{
    if (position <= 0)
        return 0;
    if (cap <= 0)
        cap = 1;
    if (avg_run_ms <= 0)
        avg_run_ms = 1000;
    /* Position p starts after ceil(p / cap) runs have ended on some slot. */
    int64_t rounds = (position + cap - 1) / cap;
    return rounds * avg_run_ms;
}

int64_t admission_avg_update(int64_t avg_ms, int64_t sample_ms)
{
    if (sample_ms < 0)
        sample_ms = 0;
    if (avg_ms <= 0)
        return sample_ms;
    return avg_ms + (sample_ms - avg_ms) / 8;
}

void admission_slot_id(int64_t n, char *out, size_t len)
{
    snprintf(out, len, "slot-%lld", (long long)n);
}
