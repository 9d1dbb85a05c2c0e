/*
 * metrics.h — the process metrics registry, rendered as Prometheus text.
 *
 * Metrics are created once (idempotent by name+labels) and updated with
 * atomics from any thread.  Histograms use fixed buckets in seconds.
 */
#ifndef EXECD_METRICS_H
#define EXECD_METRICS_H

#include <stdint.h>

struct metrics;
struct metric;
struct strbuf;

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metrics *metrics_new(void);
void metrics_free(struct metrics *metrics);

/* labels: "" or Prometheus label pairs without braces, e.g. "topic=\"x\"".
 * Returns the metric (owned by the registry) or NULL on allocation failure. */
struct metric *metrics_get(struct metrics *metrics, enum metric_kind kind, const char *name,
                           const char *help, const char *labels);
void metric_add(struct metric *m, int64_t delta);      /* counter or gauge */
void metric_set(struct metric *m, int64_t value);      /* gauge */
void metric_observe(struct metric *m, double seconds); /* histogram */

/* Appends the Prometheus text exposition; 0 or -ENOMEM. */
int metrics_render(struct metrics *metrics, struct strbuf *out);

#endif
