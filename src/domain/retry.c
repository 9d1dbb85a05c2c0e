/*
 * retry.c — exponential backoff with a capped delay and symmetric jitter.
 */
#include "retry.h"

#include <errno.h>

int retry_policy_check(const struct retry_policy *p)
{
    if (!p || p->base_ms <= 0 || p->multiplier < 1.0 || p->max_ms < p->base_ms || p->jitter < 0.0 ||
        p->jitter > 1.0)
        return -EINVAL;
    return 0;
}

int64_t retry_delay_ms(const struct retry_policy *p, int attempt, double r)
{
    if (!p || p->base_ms <= 0)
        return 0;
    double cap = (double)(p->max_ms > p->base_ms ? p->max_ms : p->base_ms);
    double mult = p->multiplier < 1.0 ? 1.0 : p->multiplier;
    double jitter = p->jitter < 0.0 ? 0.0 : (p->jitter > 1.0 ? 1.0 : p->jitter);
    if (attempt < 0)
        attempt = 0;
    if (!(r >= 0.0 && r < 1.0))
        r = 0.5;

    /* Multiply step by step and stop at the cap: no overflow, no pow(). */
    double d = (double)p->base_ms;
    for (int i = 0; i < attempt && d < cap; i++)
        d *= mult;
    if (d > cap)
        d = cap;

    d *= 1.0 + jitter * (2.0 * r - 1.0);
    if (d < 0.0)
        d = 0.0;
    if (d > cap)
        d = cap;
    return (int64_t)(d + 0.5);
}
