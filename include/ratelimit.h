/*
 * ratelimit.h — rate-limit math, pure and in memory.
 *
 * Rules are "PATTERN=LIMIT" items matched in order (first match wins, so the
 * list order is the priority); PATTERN is a small regex: ^ and $ anchors,
 * '.' any char, 'x*' repetition, '\x' a literal, everything else literal.
 * Every rule counts LIMIT requests per key per sliding window (an exact
 * sliding log of timestamps, so "the 11th request inside a minute" is
 * refused whatever the wall clock's minute boundaries are).  A table maps
 * keys (client IP + rule) to logs, bounded by max_keys; it is not
 * thread-safe — the caller holds a lock.  Counters live in one process's
 * memory: N api replicas allow up to N × LIMIT.
 *
 * Trusted proxies: a peer in the trust list (loopback, private, IPv4 a.b.c.d
 * or a.b.c.d/n) may name the client in X-Forwarded-For (the right-most
 * address that is not itself trusted) or X-Real-IP.
 */
#ifndef EXECD_RATELIMIT_H
#define EXECD_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RL_MAX_RULES 32
#define RL_PATTERN_MAX 128
#define RL_MAX_TRUST 32

struct rl_rule {
    char pattern[RL_PATTERN_MAX];
    int limit;
};

struct rl_rules {
    struct rl_rule rule[RL_MAX_RULES];
    int n;
    char exempt[RL_MAX_RULES][RL_PATTERN_MAX]; /* path prefixes */
    int nexempt;
    int64_t window_ms;
};

/* Parses "PAT=N,PAT=N" and the comma list of exempt prefixes; -EINVAL with
 * a message in err. */
int rl_rules_parse(const char *rules, const char *exempt, struct rl_rules *out, char *err,
                   size_t errlen);
/* 1 when pattern matches path. */
bool rl_pattern_match(const char *pattern, const char *path);
/* Index of the first matching rule, or -1; *exempt tells whether the path
 * is exempt (then it is not counted, but the rule still names the limit). */
int rl_rules_match(const struct rl_rules *rules, const char *path, bool *exempt);

struct rl_result {
    bool allowed;
    int limit;
    int remaining;     /* after this request */
    int64_t reset_ms;  /* wall/mono ms (same clock as now) when a slot frees */
    int retry_after_s; /* ≥ 1 when !allowed, else 0 */
};

/* One sliding log. */
struct rl_log {
    int64_t *ts; /* ring of up to cap timestamps, oldest at head */
    int cap, head, n;
};
/* Checks (and when count, records) a request at now_ms. */
int rl_log_hit(struct rl_log *log, int limit, int64_t window_ms, int64_t now_ms, bool count,
               struct rl_result *out);
void rl_log_release(struct rl_log *log);

struct rl_table;
struct rl_table *rl_table_new(size_t max_keys);
void rl_table_free(struct rl_table *t);
size_t rl_table_size(const struct rl_table *t);
/* rl_log_hit on key's log (created on first use).  When the table is full,
 * idle keys are swept, then the least recently seen key is evicted. */
int rl_table_hit(struct rl_table *t, const char *key, int limit, int64_t window_ms, int64_t now_ms,
                 bool count, struct rl_result *out);
/* Forgets every key (e.g. an admin reset). */
void rl_table_clear(struct rl_table *t);

struct rl_trust {
    bool none;
    bool loopback;
    bool private_nets;
    uint32_t net[RL_MAX_TRUST];
    uint32_t mask[RL_MAX_TRUST];
    int n;
};
int rl_trust_parse(const char *spec, struct rl_trust *out, char *err, size_t errlen);
bool rl_trust_has(const struct rl_trust *trust, const char *ip);
/* The client address: peer, or (when peer is trusted) the address named by
 * xff / x_real_ip (either may be NULL).  Invalid addresses are ignored. */
void rl_client_ip(const struct rl_trust *trust, const char *peer, const char *xff,
                  const char *x_real_ip, char *out, size_t len);

#endif
