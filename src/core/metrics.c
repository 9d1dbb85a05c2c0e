/*
 * metrics.c — a registry of counters, gauges and histograms.
 *
 * Metrics live in a list guarded by a mutex for creation and rendering;
 * updates are lock-free atomics.  Histogram sums are kept in microseconds.
 */
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1,     2.5,  5,     10,   30};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

struct metric {
    struct metric *next;
    enum metric_kind kind;
    char *name, *help, *labels;
    atomic_llong value;
    atomic_llong count;
    atomic_llong sum_us;
    atomic_llong bucket[NBUCKETS];
};

struct metrics {
    pthread_mutex_t mu;
    struct metric *head, *tail;
};

struct metrics *metrics_new(void)
{
    struct metrics *metrics = calloc(1, sizeof(*metrics));
    if (metrics)
        pthread_mutex_init(&metrics->mu, NULL);
    return metrics;
}

void metrics_free(struct metrics *metrics)
{
    if (!metrics)
        return;
    for (struct metric *m = metrics->head, *n; m; m = n) {
        n = m->next;
        free(m->name);
        free(m->help);
        free(m->labels);
        free(m);
    }
    pthread_mutex_destroy(&metrics->mu);
    free(metrics);
}

struct metric *metrics_get(struct metrics *metrics, enum metric_kind kind, const char *name,
                           const char *help, const char *labels)
{
    if (!metrics)
        return NULL;
    labels = labels ? labels : "";
    pthread_mutex_lock(&metrics->mu);
    struct metric *m;
    for (m = metrics->head; m; m = m->next)
        if (strcmp(m->name, name) == 0 && strcmp(m->labels, labels) == 0)
            goto out;
    m = calloc(1, sizeof(*m));
    if (!m)
        goto out;
    m->kind = kind;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    m->labels = strdup(labels);
    if (!m->name || !m->help || !m->labels) {
        free(m->name);
        free(m->help);
        free(m->labels);
        free(m);
        m = NULL;
        goto out;
    }
    if (metrics->tail)
        metrics->tail->next = m;
    else
        metrics->head = m;
    metrics->tail = m;
out:
    pthread_mutex_unlock(&metrics->mu);
    return m;
}

void metric_add(struct metric *m, int64_t delta)
{
    if (m)
        atomic_fetch_add(&m->value, delta);
}

void metric_set(struct metric *m, int64_t value)
{
    if (m)
        atomic_store(&m->value, value);
}

void metric_observe(struct metric *m, double seconds)
{
    if (!m)
        return;
    for (size_t i = 0; i < NBUCKETS; i++)
        if (seconds <= buckets[i]) {
            atomic_fetch_add(&m->bucket[i], 1);
            break;
        }
    atomic_fetch_add(&m->count, 1);
    atomic_fetch_add(&m->sum_us, (long long)(seconds * 1e6));
}

static const char *kind_name(enum metric_kind kind)
{
    return kind == METRIC_COUNTER ? "counter" : kind == METRIC_GAUGE ? "gauge" : "histogram";
}

static void labels_with(struct strbuf *out, const char *labels, const char *extra)
{
    if (!labels[0] && !extra)
        return;
    sb_puts(out, "{");
    sb_puts(out, labels);
    if (extra) {
        if (labels[0])
            sb_puts(out, ",");
        sb_puts(out, extra);
    }
    sb_puts(out, "}");
}

static void render_one(struct strbuf *out, struct metric *m)
{
    if (m->kind != METRIC_HISTOGRAM) {
        sb_puts(out, m->name);
        labels_with(out, m->labels, NULL);
        sb_printf(out, " %lld\n", (long long)atomic_load(&m->value));
        return;
    }
    long long cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        char le[48];
        cum += atomic_load(&m->bucket[i]);
        snprintf(le, sizeof(le), "le=\"%g\"", buckets[i]);
        sb_printf(out, "%s_bucket", m->name);
        labels_with(out, m->labels, le);
        sb_printf(out, " %lld\n", cum);
    }
    sb_printf(out, "%s_bucket", m->name);
    labels_with(out, m->labels, "le=\"+Inf\"");
    sb_printf(out, " %lld\n%s_sum", (long long)atomic_load(&m->count), m->name);
    labels_with(out, m->labels, NULL);
    sb_printf(out, " %.6f\n%s_count", (double)atomic_load(&m->sum_us) / 1e6, m->name);
    labels_with(out, m->labels, NULL);
    sb_printf(out, " %lld\n", (long long)atomic_load(&m->count));
}

int metrics_render(struct metrics *metrics, struct strbuf *out)
{
    pthread_mutex_lock(&metrics->mu);
    for (struct metric *m = metrics->head; m; m = m->next) {
        /* One family per name: emit it where its first member appears. */
        int seen = 0;
        for (struct metric *p = metrics->head; p != m && !seen; p = p->next)
            seen = strcmp(p->name, m->name) == 0;
        if (seen)
            continue;
        sb_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                  kind_name(m->kind));
        for (struct metric *p = m; p; p = p->next)
            if (strcmp(p->name, m->name) == 0)
                render_one(out, p);
    }
    pthread_mutex_unlock(&metrics->mu);
    return out->s || !metrics->head ? 0 : -ENOMEM;
}
