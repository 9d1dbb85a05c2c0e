/*
 * admission.h — the coordinator's admission rules (DESIGN §5), pure.
 *
 *  - validation of a request: language and version known to the runtimes
 *    table, script size and timeout within the configured maxima;
 *  - per-user limits: active (admitted, not yet ended) executions and a
 *    sliding 60 s window of admissions, with an admin override per user
 *    (bypass: no per-user limits; multiplier: both limits scaled, at least 1);
 *  - the bounded queue (a full queue rejects);
 *  - queue order: higher priority first, then earlier arrival, then the
 *    execution id (a total order, the same on every replica);
 *  - the estimated wait of a queue position and the capacity slot names.
 *
 * The counts come from the caller (the coordinator reads them from MongoDB);
 * nothing here does I/O or keeps time.
 */
#ifndef EXECD_ADMISSION_H
#define EXECD_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ADMISSION_WINDOW_MS 60000
#define ADMISSION_REASON_LEN 192

struct admission_policy {
    int64_t max_script_bytes;
    int64_t max_timeout_seconds;
    int64_t user_max_concurrent;
    int64_t user_max_per_minute;
    int64_t queue_max;
};

struct admission_override {
    bool bypass;
    double multiplier; /* <= 0 means 1 */
};

enum admission_verdict {
    ADMIT_OK,
    ADMIT_INVALID_RUNTIME,  /* unknown lang/version → failed/system_error */
    ADMIT_INVALID_LIMITS,   /* script or timeout too large → failed/resource_limit */
    ADMIT_USER_CONCURRENCY, /* → failed/rate_limited */
    ADMIT_USER_RATE,        /* → failed/rate_limited */
    ADMIT_QUEUE_FULL,       /* → failed/rate_limited */
};

struct admission_request {
    const char *lang;
    const char *lang_version;
    size_t script_bytes;
    int64_t timeout_seconds;
};

struct admission_state {
    int64_t now_ms;
    int64_t active;           /* the user's admitted, not yet ended executions */
    const int64_t *recent_ms; /* the user's admission times in the window, ascending */
    size_t nrecent;
    int64_t queue_depth; /* executions waiting in the queue (all users) */
    int64_t avg_run_ms;  /* mean slot hold time, for retry_after of concurrency */
};

struct admission_decision {
    enum admission_verdict verdict;
    int64_t retry_after_s; /* 0 when not applicable */
    char reason[ADMISSION_REASON_LEN];
};

/* Request validation only (ADMIT_OK, _INVALID_RUNTIME, _INVALID_LIMITS). */
int admission_validate(const struct admission_policy *pol, const struct admission_request *req,
                       struct admission_decision *out);

/* Scales a limit by an override (bypass → INT64_MAX; multiplier ≥ 1 result). */
int64_t admission_scaled_limit(int64_t base, const struct admission_override *ov);

/* Milliseconds until one more admission fits a sliding window of limit
 * admissions per ADMISSION_WINDOW_MS, given the admission times (ascending;
 * older ones are ignored); 0 when it fits now. */
int64_t admission_window_wait_ms(const int64_t *recent_ms, size_t n, int64_t now_ms, int64_t limit);

/* The full decision: validation, then the user's limits (skipped when
 * ov->bypass), then the queue bound.  ov may be NULL. */
int admission_decide(const struct admission_policy *pol, const struct admission_request *req,
                     const struct admission_state *st, const struct admission_override *ov,
                     struct admission_decision *out);

/* Queue order key. */
struct admission_key {
    int64_t priority;
    int64_t arrival_us;
    const char *execution_id;
};
/* < 0 when a goes first, > 0 when b goes first, 0 for the same key. */
int admission_compare(const struct admission_key *a, const struct admission_key *b);

/* Estimated wait of the position-th in the queue (1 = next) with cap slots
 * whose runs take avg_run_ms on average. */
int64_t admission_estimated_wait_ms(int64_t position, int64_t cap, int64_t avg_run_ms);

/* Exponential moving average of run times (weight 1/8 for the new sample);
 * avg <= 0 takes the sample as is. */
int64_t admission_avg_update(int64_t avg_ms, int64_t sample_ms);

/* "slot-<n>" into out. */
void admission_slot_id(int64_t n, char *out, size_t len);

#endif
