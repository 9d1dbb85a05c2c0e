/*
 * retry.h — pure retry-delay arithmetic (no clocks, no randomness).
 *
 *   delay(attempt) = min(base_ms * multiplier^attempt, max_ms) * (1 + jitter * (2r - 1))
 *
 * attempt counts from 0 (the delay before the first retry is base_ms); r is a
 * caller-supplied random value in [0, 1), so the result is deterministic and
 * testable.  The jittered delay is clamped to [0, max_ms].  Used by the bus
 * consumer between handler attempts and by the DLQ role between redeliveries.
 */
#ifndef EXECD_RETRY_H
#define EXECD_RETRY_H

#include <stdint.h>

struct retry_policy {
    int64_t base_ms;   /* > 0 */
    double multiplier; /* >= 1 (2 = doubling) */
    int64_t max_ms;    /* cap, >= base_ms */
    double jitter;     /* fraction in [0, 1]: 0.2 = ±20 % */
};

/* Delay in ms before retry number `attempt` (0-based); r in [0, 1).
 * Out-of-range inputs are clamped (negative attempt = 0, r outside [0,1)
 * = 0.5 i.e. no jitter, jitter outside [0,1] clamped). */
int64_t retry_delay_ms(const struct retry_policy *p, int attempt, double r);

/* Checks a policy: 0 or -EINVAL. */
int retry_policy_check(const struct retry_policy *p);

#endif
