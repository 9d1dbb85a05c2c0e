/*
 * ratelimit.c — rule matching, sliding logs, the key table and trusted
 * proxies (see ratelimit.h).
 *
 * A log keeps at most `limit` timestamps, so memory per key is bounded by
 * the rule's limit; the table is a chained hash bounded by max_keys.
 */
#include "ratelimit.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- patterns ---- */

static bool match_here(const char *re, const char *text);

static bool lit_eq(const char **re, char c, int *adv)
{
    const char *r = *re;
    if (r[0] == '\\' && r[1]) {
        *adv = 2;
        return r[1] == c;
    }
    *adv = 1;
    return r[0] == '.' || r[0] == c;
}

static bool match_star(const char *atom, int alen, const char *re, const char *text)
{
    do {
        if (match_here(re, text))
            return true;
        if (!*text)
            return false;
        int adv;
        const char *a = atom;
        if (!lit_eq(&a, *text, &adv))
            return false;
        (void)alen;
        text++;
    } while (1);
}

static bool match_here(const char *re, const char *text)
{
    if (re[0] == '\0')
        return true;
    int alen = (re[0] == '\\' && re[1]) ? 2 : 1;
    if (re[alen] == '*')
        return match_star(re, alen, re + alen + 1, text);
    if (re[0] == '$' && re[1] == '\0')
        return *text == '\0';
    if (*text) {
        int adv;
        const char *r = re;
        if (lit_eq(&r, *text, &adv))
            return match_here(re + adv, text + 1);
    }
    return false;
}

bool rl_pattern_match(const char *pattern, const char *path)
{
    if (pattern[0] == '^')
        return match_here(pattern + 1, path);
    const char *t = path;
    do {
        if (match_here(pattern, t))
            return true;
    } while (*t++);
    return false;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int rl_rules_parse(const char *rules, const char *exempt, struct rl_rules *out, char *err,
                   size_t errlen)
{
    struct rl_rules r = {.window_ms = 60000};
    char *copy = strdup(rules ? rules : "");
    if (!copy)
        return -ENOMEM;
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!*tok)
            continue;
        char *eq = strrchr(tok, '=');
        if (!eq || eq == tok) {
            snprintf(err, errlen, "rate-limit rule '%s': expected PATTERN=LIMIT", tok);
            rc = -EINVAL;
            break;
        }
        *eq = '\0';
        char *end = NULL;
        long n = strtol(eq + 1, &end, 10);
        char *pat = trim(tok);
        if (end == eq + 1 || *trim(end) != '\0' || n < 1 || n > 1000000) {
            snprintf(err, errlen, "rate-limit rule '%s': limit must be 1..1000000", pat);
            rc = -EINVAL;
            break;
        }
        if (r.n == RL_MAX_RULES || strlen(pat) >= RL_PATTERN_MAX) {
            snprintf(err, errlen, "rate-limit rule '%s': too many rules or pattern too long", pat);
            rc = -EINVAL;
            break;
        }
        snprintf(r.rule[r.n].pattern, RL_PATTERN_MAX, "%s", pat);
        r.rule[r.n].limit = (int)n;
        r.n++;
    }
    free(copy);
    if (rc)
        return rc;
    copy = strdup(exempt ? exempt : "");
    if (!copy)
        return -ENOMEM;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!*tok)
            continue;
        if (r.nexempt == RL_MAX_RULES || strlen(tok) >= RL_PATTERN_MAX || tok[0] != '/') {
            snprintf(err, errlen, "rate-limit exempt prefix '%s': must start with '/', at most %d",
                     tok, RL_MAX_RULES);
            rc = -EINVAL;
            break;
        }
        snprintf(r.exempt[r.nexempt++], RL_PATTERN_MAX, "%s", tok);
    }
    free(copy);
    if (!rc)
        *out = r;
    return rc;
}

int rl_rules_match(const struct rl_rules *rules, const char *path, bool *exempt)
{
    *exempt = false;
    for (int i = 0; i < rules->nexempt; i++) {
        size_t n = strlen(rules->exempt[i]);
        if (strncmp(path, rules->exempt[i], n) == 0 &&
            (path[n] == '\0' || path[n] == '/' || rules->exempt[i][n - 1] == '/'))
            *exempt = true;
    }
    for (int i = 0; i < rules->n; i++)
        if (rl_pattern_match(rules->rule[i].pattern, path))
            return i;
    return -1;
}

/* ---- sliding log ---- */

int rl_log_hit(struct rl_log *log, int limit, int64_t window_ms, int64_t now_ms, bool count,
               struct rl_result *out)
{
    if (limit < 1)
        return -EINVAL;
    if (log->cap != limit) {
        /* (Re)size to the rule's limit, keeping the newest timestamps. */
        int64_t *ts = calloc((size_t)limit, sizeof(*ts));
        if (!ts)
            return -ENOMEM;
        int keep = log->n < limit ? log->n : limit;
        for (int i = 0; i < keep; i++)
            ts[i] = log->ts[(log->head + log->n - keep + i) % log->cap];
        free(log->ts);
        log->ts = ts;
        log->cap = limit;
        log->head = 0;
        log->n = keep;
    }
    while (log->n && log->ts[log->head] <= now_ms - window_ms) {
        log->head = (log->head + 1) % log->cap;
        log->n--;
    }
    struct rl_result r = {.limit = limit};
    if (log->n < limit) {
        r.allowed = true;
        if (count) {
            log->ts[(log->head + log->n) % log->cap] = now_ms;
            log->n++;
        }
        r.remaining = limit - log->n;
        r.reset_ms = (log->n ? log->ts[log->head] : now_ms) + window_ms;
    } else {
        r.allowed = false;
        r.remaining = 0;
        r.reset_ms = log->ts[log->head] + window_ms;
        int64_t wait = r.reset_ms - now_ms;
        r.retry_after_s = (int)((wait + 999) / 1000);
        if (r.retry_after_s < 1)
            r.retry_after_s = 1;
    }
    *out = r;
    return 0;
}

void rl_log_release(struct rl_log *log)
{
    free(log->ts);
    *log = (struct rl_log){0};
}

/* ---- table ---- */

struct rl_entry {
    char *key;
    struct rl_log log;
    int64_t last_ms;
    int64_t window_ms;
    struct rl_entry *next;
};

struct rl_table {
    struct rl_entry **buckets;
    size_t nbuckets;
    size_t size, max_keys;
};

struct rl_table *rl_table_new(size_t max_keys)
{
    struct rl_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->max_keys = max_keys ? max_keys : 1;
    t->nbuckets = 64;
    while (t->nbuckets < t->max_keys && t->nbuckets < (1u << 20))
        t->nbuckets <<= 1;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    return t;
}

static void entry_free(struct rl_entry *e)
{
    rl_log_release(&e->log);
    free(e->key);
    free(e);
}

void rl_table_clear(struct rl_table *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct rl_entry *e = t->buckets[i], *n; e; e = n) {
            n = e->next;
            entry_free(e);
        }
        t->buckets[i] = NULL;
    }
    t->size = 0;
}

void rl_table_free(struct rl_table *t)
{
    if (!t)
        return;
    rl_table_clear(t);
    free(t->buckets);
    free(t);
}

size_t rl_table_size(const struct rl_table *t)
{
    return t->size;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Drops idle entries; when none is idle, the least recently seen one. */
static void sweep(struct rl_table *t, int64_t now_ms)
{
    struct rl_entry **oldest = NULL;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct rl_entry **pp = &t->buckets[i];
        while (*pp) {
            struct rl_entry *e = *pp;
            if (e->last_ms <= now_ms - e->window_ms) {
                *pp = e->next;
                entry_free(e);
                t->size--;
                continue;
            }
            if (!oldest || e->last_ms < (*oldest)->last_ms)
                oldest = pp;
            pp = &e->next;
        }
    }
    if (t->size >= t->max_keys && oldest) {
        struct rl_entry *e = *oldest;
        *oldest = e->next;
        entry_free(e);
        t->size--;
    }
}

int rl_table_hit(struct rl_table *t, const char *key, int limit, int64_t window_ms, int64_t now_ms,
                 bool count, struct rl_result *out)
{
    size_t b = (size_t)(fnv1a(key) & (t->nbuckets - 1));
    struct rl_entry *e = t->buckets[b];
    while (e && strcmp(e->key, key) != 0)
        e = e->next;
    if (!e) {
        if (!count) {
            /* Peek at an unknown key: a full window is available. */
            *out = (struct rl_result){.allowed = true,
                                      .limit = limit,
                                      .remaining = limit,
                                      .reset_ms = now_ms + window_ms};
            return 0;
        }
        if (t->size >= t->max_keys) {
            sweep(t, now_ms);
            b = (size_t)(fnv1a(key) & (t->nbuckets - 1));
        }
        e = calloc(1, sizeof(*e));
        if (!e || !(e->key = strdup(key))) {
            free(e);
            return -ENOMEM;
        }
        e->next = t->buckets[b];
        t->buckets[b] = e;
        t->size++;
    }
    int rc = rl_log_hit(&e->log, limit, window_ms, now_ms, count, out);
    if (count) {
        e->last_ms = now_ms;
        e->window_ms = window_ms;
    }
    return rc;
}

/* ---- trusted proxies ---- */

static int parse_v4(const char *s, uint32_t *out)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1)
        return -EINVAL;
    *out = ntohl(a.s_addr);
    return 0;
}

int rl_trust_parse(const char *spec, struct rl_trust *out, char *err, size_t errlen)
{
    struct rl_trust t = {0};
    char *copy = strdup(spec ? spec : "");
    if (!copy)
        return -ENOMEM;
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!*tok)
            continue;
        if (strcmp(tok, "none") == 0) {
            t.none = true;
        } else if (strcmp(tok, "loopback") == 0) {
            t.loopback = true;
        } else if (strcmp(tok, "private") == 0) {
            t.private_nets = true;
        } else {
            char *slash = strchr(tok, '/');
            long bits = 32;
            if (slash) {
                *slash = '\0';
                char *end = NULL;
                bits = strtol(slash + 1, &end, 10);
                if (end == slash + 1 || *end || bits < 0 || bits > 32)
                    bits = -1;
            }
            uint32_t a;
            if (bits < 0 || parse_v4(tok, &a) != 0 || t.n == RL_MAX_TRUST) {
                snprintf(err, errlen,
                         "trusted proxy '%s': expected loopback, private, none, a.b.c.d or "
                         "a.b.c.d/n (at most %d)",
                         tok, RL_MAX_TRUST);
                rc = -EINVAL;
                break;
            }
            uint32_t mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
            t.net[t.n] = a & mask;
            t.mask[t.n] = mask;
            t.n++;
        }
    }
    free(copy);
    if (t.none && (t.loopback || t.private_nets || t.n)) {
        snprintf(err, errlen, "trusted proxies: 'none' cannot be combined with other entries");
        rc = -EINVAL;
    }
    if (!rc)
        *out = t;
    return rc;
}

bool rl_trust_has(const struct rl_trust *trust, const char *ip)
{
    if (trust->none || !ip)
        return false;
    uint32_t a;
    if (parse_v4(ip, &a) == 0) {
        if (trust->loopback && (a >> 24) == 127)
            return true;
        if (trust->private_nets &&
            ((a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) || (a >> 16) == (192u << 8 | 168)))
            return true;
        for (int i = 0; i < trust->n; i++)
            if ((a & trust->mask[i]) == trust->net[i])
                return true;
        return false;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, ip, &a6) != 1)
        return false;
    static const unsigned char loop6[16] = {[15] = 1};
    if (trust->loopback && memcmp(a6.s6_addr, loop6, 16) == 0)
        return true;
    if (trust->private_nets && (a6.s6_addr[0] & 0xfe) == 0xfc)
        return true;
    return false;
}

static bool valid_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

void rl_client_ip(const struct rl_trust *trust, const char *peer, const char *xff,
                  const char *x_real_ip, char *out, size_t len)
{
    snprintf(out, len, "%s", peer && *peer ? peer : "unknown");
    if (!rl_trust_has(trust, peer))
        return;
    if (xff && *xff) {
        /* Walk right to left: the first address not itself a trusted proxy
         * is the client; if every hop is trusted, the left-most valid one. */
        char buf[1024];
        snprintf(buf, sizeof(buf), "%s", xff);
        char *items[64];
        int n = 0;
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok && n < 64;
             tok = strtok_r(NULL, ",", &save)) {
            tok = trim(tok);
            if (valid_ip(tok))
                items[n++] = tok;
        }
        for (int i = n - 1; i >= 0; i--)
            if (!rl_trust_has(trust, items[i]) || i == 0) {
                snprintf(out, len, "%s", items[i]);
                return;
            }
    }
    if (x_real_ip && *x_real_ip) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%s", x_real_ip);
        char *ip = trim(buf);
        if (valid_ip(ip))
            snprintf(out, len, "%s", ip);
    }
}
