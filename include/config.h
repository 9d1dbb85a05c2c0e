/*
 * config.h — the one configuration table.
 *
 * Every key is one row of CONFIG_TABLE: field, env name, type, default,
 * min, max, flags, doc.  The table generates struct config, the defaults,
 * the parser and validator, --help, --print-config and config/reference.md.
 * Precedence: default < config file (--config, default config/execd.conf if
 * present) < environment < --set KEY=VALUE.  Unknown EXECD_* keys and
 * out-of-range values are errors naming the key.  EXECD_KAFKA_PROP_x_y is
 * passed through to librdkafka as x.y (see bus.h).  Sizes are bytes,
 * durations milliseconds unless the name says otherwise.
 */
#ifndef EXECD_CONFIG_H
#define EXECD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_SECRET 1u

/* X(field, ENV, type, default, min, max, flags, doc); type: STR INT BOOL.
 * For STR rows min/max bound the length; default is a string literal. */
#define CONFIG_TABLE(X)                                                                            \
    X(roles, "EXECD_ROLES", STR, "all", 1, 512, 0,                                                 \
      "Roles this process runs: a comma list (api,store,...) or 'all'")                            \
    X(service_name, "EXECD_SERVICE_NAME", STR, "execd", 1, 64, 0,                                  \
      "Service name stamped into event metadata and logs")                                         \
    X(log_level, "EXECD_LOG_LEVEL", STR, "info", 4, 5, 0, "debug, info, warn or error")            \
    X(log_format, "EXECD_LOG_FORMAT", STR, "logfmt", 4, 6, 0, "logfmt or json")                    \
    X(shutdown_timeout_ms, "EXECD_SHUTDOWN_TIMEOUT_MS", INT, "10000", 100, 600000, 0,              \
      "Deadline for the ordered stop after SIGTERM/SIGINT")                                        \
    X(http_listen, "EXECD_HTTP_LISTEN", STR, "127.0.0.1:8080", 1, 128, 0,                          \
      "Main HTTP server address (API, SSE, health, metrics)")                                      \
    X(http_threads, "EXECD_HTTP_THREADS", INT, "64", 4, 4096, 0,                                   \
      "HTTP worker threads (one per open connection)")                                             \
    X(http_body_limit_bytes, "EXECD_HTTP_BODY_LIMIT_BYTES", INT, "10485760", 1024, 1073741824, 0,  \
      "Largest request body accepted (413 beyond)")                                                \
    X(http_request_timeout_ms, "EXECD_HTTP_REQUEST_TIMEOUT_MS", INT, "30000", 100, 3600000, 0,     \
      "Bound on each HTTP read or write")                                                          \
    X(kafka_brokers, "EXECD_KAFKA_BROKERS", STR, "127.0.0.1:9092", 1, 1024, 0,                     \
      "Kafka bootstrap servers")                                                                   \
    X(topic_prefix, "EXECD_TOPIC_PREFIX", STR, "", 0, 64, 0,                                       \
      "Prefix for every topic name, so deployments can share a cluster")                           \
    X(kafka_publish_timeout_ms, "EXECD_KAFKA_PUBLISH_TIMEOUT_MS", INT, "10000", 100, 300000, 0,    \
      "How long a publish waits for its delivery report before failing")                           \
    X(kafka_handler_attempts, "EXECD_KAFKA_HANDLER_ATTEMPTS", INT, "3", 1, 100, 0,                 \
      "Attempts of a failing handler before its message goes to the dead-letter queue")            \
    X(kafka_retry_backoff_ms, "EXECD_KAFKA_RETRY_BACKOFF_MS", INT, "100", 1, 60000, 0,             \
      "Base delay between handler attempts (doubles each attempt)")                                \
    X(kafka_session_timeout_ms, "EXECD_KAFKA_SESSION_TIMEOUT_MS", INT, "6000", 1000, 300000, 0,    \
      "Consumer group session timeout")                                                            \
    X(kafka_replication_factor, "EXECD_KAFKA_REPLICATION_FACTOR", INT, "1", 1, 16, 0,              \
      "Replication factor of topics created at start-up")                                          \
    X(event_retention_days, "EXECD_EVENT_RETENTION_DAYS", INT, "7", 1, 3650, 0,                    \
      "Retention of the execution_events topic")                                                   \
    X(mongo_uri, "EXECD_MONGO_URI", STR, "mongodb://127.0.0.1:27017/execd", 1, 1024, CFG_SECRET,   \
      "MongoDB connection string (database taken from the path)")                                  \
    X(mongo_pool_size, "EXECD_MONGO_POOL_SIZE", INT, "16", 1, 1000, 0,                             \
      "Largest number of pooled MongoDB connections")                                              \
    X(mongo_timeout_ms, "EXECD_MONGO_TIMEOUT_MS", INT, "5000", 100, 120000, 0,                     \
      "MongoDB server selection and socket timeout")                                               \
    X(reaper_interval_ms, "EXECD_REAPER_INTERVAL_MS", INT, "60000", 100, 86400000, 0,              \
      "How often documents past their expires_at are deleted")                                     \
    X(store_threads, "EXECD_STORE_THREADS", INT, "1", 1, 64, 0,                                    \
      "Threads of the store role (event store consumers)")                                         \
    X(store_batch_size, "EXECD_STORE_BATCH_SIZE", INT, "500", 1, 10000, 0,                         \
      "Events per event-store insert batch")                                                       \
    X(store_batch_ms, "EXECD_STORE_BATCH_MS", INT, "50", 1, 10000, 0,                              \
      "Longest wait to fill an event-store batch")                                                 \
    X(node_listen, "EXECD_NODE_LISTEN", STR, "127.0.0.1:8081", 1, 128, 0,                          \
      "Address of the embedded node's Kubernetes API")                                             \
    X(node_threads, "EXECD_NODE_THREADS", INT, "32", 4, 1024, 0,                                   \
      "HTTP threads of the node role (each open watch holds one)")                                 \
    X(node_slots, "EXECD_NODE_SLOTS", INT, "0", 0, 1024, 0,                                        \
      "Pods running at once on the node (0 = number of cores)")                                    \
    X(node_token, "EXECD_NODE_TOKEN", STR, "", 0, 512, CFG_SECRET,                                 \
      "Bearer token the node requires (empty = no auth)")                                          \
    X(node_state_dir, "EXECD_NODE_STATE_DIR", STR, "var/node", 1, 1024, 0,                         \
      "Directory for pod state, ConfigMaps and logs of the node role")                             \
    X(node_log_limit_bytes, "EXECD_NODE_LOG_LIMIT_BYTES", INT, "2097152", 1024, 1073741824, 0,     \
      "Cap on a pod's stored log")                                                                 \
    X(node_pids_max, "EXECD_NODE_PIDS_MAX", INT, "64", 4, 100000, 0, "Process limit per pod")      \
    X(node_watch_history, "EXECD_NODE_WATCH_HISTORY", INT, "1000", 10, 1000000, 0,                 \
      "Watch events kept for resumption; older resourceVersions get 410 Gone")                     \
    /* api role: accounts, sessions, CSRF, rate limits, CORS (src/roles/api) */                    \
    X(secret_key, "EXECD_SECRET_KEY", STR, "execd-dev-secret-key-change-me-0123456789", 32, 512,   \
      CFG_SECRET,                                                                                  \
      "HMAC-SHA256 key signing session JWTs (HS256) and CSRF tokens; at least 32 bytes. The "      \
      "default is a public development key and the api logs a warning while it is in use")         \
    X(bcrypt_cost, "EXECD_BCRYPT_COST", INT, "12", 4, 15, 0,                                       \
      "bcrypt cost (log2 of the rounds) of new password hashes ($2b$ through crypt(3)); 12 costs " \
      "roughly 0.2-0.4 s of one core per hash or login, each step up doubles it")                  \
    X(session_timeout_minutes, "EXECD_SESSION_TIMEOUT_MINUTES", INT, "60", 1, 10080, 0,            \
      "Session lifetime: the JWT exp claim and the Max-Age of the access_token and csrf_token "    \
      "cookies (default 60 minutes)")                                                              \
    X(login_max_attempts, "EXECD_LOGIN_MAX_ATTEMPTS", INT, "5", 1, 1000, 0,                        \
      "Failed logins of one username (known or not) before it is locked; while locked every "      \
      "login answers 423, even with the right password")                                           \
    X(login_lockout_minutes, "EXECD_LOGIN_LOCKOUT_MINUTES", INT, "15", 1, 10080, 0,                \
      "How long a locked username stays locked (default 15 minutes); failures older than this "    \
      "are forgotten, a successful login forgets them at once")                                    \
    X(rate_limit_enabled, "EXECD_RATE_LIMIT_ENABLED", BOOL, "true", 0, 1, 0,                       \
      "Per-client-IP rate limiting of /api/v1 with X-RateLimit-* headers and 429; false turns it " \
      "off (no headers, no 429). Counters live in each process's memory")                          \
    X(rate_limit_rules, "EXECD_RATE_LIMIT_RULES", STR,                                             \
      "^/api/v1/execute=10,^/api/v1/auth/.*=20,^/api/v1/admin/.*=100,^/api/v1/events/.*=5,"        \
      "^/api/v1/.*=60",                                                                            \
      1, 4096, 0,                                                                                  \
      "Rate-limit rules, first match wins: comma list of PATTERN=LIMIT, LIMIT requests per "       \
      "client IP per sliding 60 s; PATTERN is a small regex (^ $ . * and literals)")               \
    X(rate_limit_exempt, "EXECD_RATE_LIMIT_EXEMPT", STR,                                           \
      "/api/v1/health,/metrics,/api/v1/auth/login,/api/v1/auth/register,/api/v1/auth/logout", 0,   \
      4096, 0, "Path prefixes never counted by the rate limiter (comma list)")                     \
    X(cors_origins, "EXECD_CORS_ORIGINS", STR, "", 0, 4096, 0,                                     \
      "Origins allowed cross-origin with credentials (comma list of scheme://host[:port]); empty " \
      "= no CORS headers")                                                                         \
    X(trusted_proxies, "EXECD_TRUSTED_PROXIES", STR, "loopback,private", 0, 4096, 0,               \
      "Peers whose X-Forwarded-For/X-Real-IP are believed: comma list of loopback, private, "      \
      "IPv4 addresses or a.b.c.d/n; 'none' or empty trusts nobody")                                \
    X(admin_username, "EXECD_ADMIN_USERNAME", STR, "", 0, 64, 0,                                   \
      "Bootstrap admin created at start-up when no admin exists (needs EXECD_ADMIN_PASSWORD)")     \
    X(admin_password, "EXECD_ADMIN_PASSWORD", STR, "", 0, 1024, CFG_SECRET,                        \
      "Password of the bootstrap admin (at least 8 characters)")                                   \
    X(admin_email, "EXECD_ADMIN_EMAIL", STR, "", 0, 254, 0,                                        \
      "Email of the bootstrap admin (empty = <username>@execd.local)")                             \
    X(api_threads, "EXECD_API_THREADS", INT, "4", 1, 256, 0,                                       \
      "Threads of the api role's pool, which runs every bcrypt hash and check (bounds the CPU "    \
      "spent on logins; a full queue answers 503)")                                                \
    /* pipeline: coordinator, results, projection (src/roles/{coordinator,results,projection}) */  \
    X(max_concurrent, "EXECD_MAX_CONCURRENT", INT, "10", 1, 100000, 0,                             \
      "Global cap on scheduled and running executions, exact across coordinator replicas "         \
      "(one capacity slot document per execution in resource_allocations, unique _id and holder)") \
    X(user_max_concurrent, "EXECD_USER_MAX_CONCURRENT", INT, "5", 1, 100000, 0,                    \
      "Admitted, not yet ended executions (queued or running) one user may have; beyond it the "   \
      "request ends failed/rate_limited")                                                          \
    X(user_max_per_minute, "EXECD_USER_MAX_PER_MINUTE", INT, "60", 1, 1000000, 0,                  \
      "Admissions per user per sliding 60 s window (rate_limit_overrides may bypass or scale it)") \
    X(queue_max, "EXECD_QUEUE_MAX", INT, "1000", 1, 10000000, 0,                                   \
      "Executions the coordinator's priority queue (execution_queue) holds; a full queue rejects") \
    X(max_script_bytes, "EXECD_MAX_SCRIPT_BYTES", INT, "1048576", 1, 1900000, 0,                   \
      "Largest script the coordinator admits (bytes)")                                             \
    X(max_timeout_seconds, "EXECD_MAX_TIMEOUT_SECONDS", INT, "300", 1, 86400, 0,                   \
      "Largest timeout_seconds the coordinator admits")                                            \
    X(execution_timeout_seconds, "EXECD_EXECUTION_TIMEOUT_SECONDS", INT, "10", 1, 86400, 0,        \
      "Default deadline of one execution (activeDeadlineSeconds); ends it timeout")                \
    X(coordinator_threads, "EXECD_COORDINATOR_THREADS", INT, "2", 1, 64, 0,                        \
      "Consumers of the coordinator role (group execd-coordinator)")                               \
    X(coordinator_sweep_ms, "EXECD_COORDINATOR_SWEEP_MS", INT, "1000", 50, 600000, 0,              \
      "How often the coordinator frees capacity slots held past their deadline and drains the "    \
      "queue into free slots")                                                                     \
    X(results_threads, "EXECD_RESULTS_THREADS", INT, "1", 1, 64, 0,                                \
      "Consumers of the results role (group execd-results)")                                       \
    X(projection_threads, "EXECD_PROJECTION_THREADS", INT, "1", 1, 64, 0,                          \
      "Consumers of the projection role (group execd-projection)")                                 \
    /* sse: live streams (src/roles/sse); each open stream holds one EXECD_HTTP_THREADS thread */  \
    X(sse_max_streams, "EXECD_SSE_MAX_STREAMS", INT, "1000", 1, 100000, 0,                         \
      "Open SSE streams per process, past it 503; also capped at EXECD_HTTP_THREADS - 16")         \
    X(sse_heartbeat_ms, "EXECD_SSE_HEARTBEAT_MS", INT, "15000", 10, 3600000, 0,                    \
      "Interval of the ': ping' comment on every open SSE stream")                                 \
    X(sse_queue_max, "EXECD_SSE_QUEUE_MAX", INT, "256", 1, 1000000, 0,                             \
      "Frames queued per SSE subscriber; a subscriber that falls this far behind is dropped")      \
    X(sse_threads, "EXECD_SSE_THREADS", INT, "1", 1, 16, 0,                                        \
      "Consumers of the sse role (one group per process, unique id, latest offsets)")              \
    /* executor: worker and monitor (src/roles/{worker,monitor}, src/infra/k8s_client.c) */        \
    X(k8s_api, "EXECD_K8S_API", STR, "", 0, 500, 0,                                                \
      "Kubernetes API of worker and monitor: an http(s) base URL, 'in-cluster' (service account) " \
      "or 'kubeconfig' ($KUBECONFIG or ~/.kube/config); empty = the embedded node at "             \
      "http://EXECD_NODE_LISTEN (http://127.0.0.1:8081 by default)")                               \
    X(k8s_token, "EXECD_K8S_TOKEN", STR, "", 0, 4096, CFG_SECRET,                                  \
      "Bearer token for EXECD_K8S_API (overrides the service account and kubeconfig credentials)") \
    X(k8s_namespace, "EXECD_K8S_NAMESPACE", STR, "execd", 1, 63, 0,                                \
      "Namespace of execution pods, their ConfigMaps and the deny-all NetworkPolicy")              \
    X(k8s_timeout_ms, "EXECD_K8S_TIMEOUT_MS", INT, "10000", 100, 600000, 0,                        \
      "Connect and request timeout of Kubernetes API calls (watches: timeoutSeconds plus this)")   \
    X(worker_threads, "EXECD_WORKER_THREADS", INT, "3", 1, 64, 0,                                  \
      "Consumers of the worker role on execution_tasks (group execd-worker)")                      \
    X(monitor_threads, "EXECD_MONITOR_THREADS", INT, "4", 1, 64, 0,                                \
      "Threads of the monitor role handling pod transitions (one execution stays on one thread)")  \
    X(output_limit_bytes, "EXECD_OUTPUT_LIMIT_BYTES", INT, "524288", 1024, 838860, 0,              \
      "Cap on stdout and on stderr of one execution (each); beyond it the *_truncated flag is "    \
      "set")                                                                                       \
    /* api: resources of an execution's pod, sent in execution_requested (api_executions.c) */     \
    X(pod_cpu_limit, "EXECD_POD_CPU_LIMIT", STR, "1000m", 1, 32, 0,                                \
      "CPU limit of an execution pod (Kubernetes quantity; /k8s-limits shows it)")                 \
    X(pod_memory_limit, "EXECD_POD_MEMORY_LIMIT", STR, "128Mi", 1, 32, 0,                          \
      "Memory limit of an execution pod (Kubernetes quantity; /k8s-limits shows it)")              \
    X(pod_cpu_request, "EXECD_POD_CPU_REQUEST", STR, "100m", 1, 32, 0,                             \
      "CPU request of an execution pod (Kubernetes quantity)")                                     \
    X(pod_memory_request, "EXECD_POD_MEMORY_REQUEST", STR, "64Mi", 1, 32, 0,                       \
      "Memory request of an execution pod (Kubernetes quantity)")                                  \
    /* saga role: one saga per execution, deadlines, compensations (src/roles/saga) */             \
    X(saga_threads, "EXECD_SAGA_THREADS", INT, "3", 1, 64, 0,                                      \
      "Consumers of the saga role on execution_events (group execd-saga)")                         \
    X(saga_provision_timeout_seconds, "EXECD_SAGA_PROVISION_TIMEOUT_SECONDS", INT, "30", 1, 3600,  \
      0,                                                                                           \
      "How long a scheduled execution may wait for its pod (pod_created) before the saga "         \
      "deletes the pod, releases the capacity and ends it failed/system_error")                    \
    X(saga_grace_seconds, "EXECD_SAGA_GRACE_SECONDS", INT, "15", 1, 3600, 0,                       \
      "Slack past an execution's timeout_seconds before the saga gives up on a terminal event "    \
      "(the pod's activeDeadlineSeconds is timeout + 5)")                                          \
    X(saga_finalize_timeout_seconds, "EXECD_SAGA_FINALIZE_TIMEOUT_SECONDS", INT, "30", 1, 3600, 0, \
      "How long the saga waits for result_stored after the execution ended")

#define CFG_CTYPE_STR char *
#define CFG_CTYPE_INT int64_t
#define CFG_CTYPE_BOOL bool
#define CFG_FIELD(field, env, type, def, min, max, flags, doc) CFG_CTYPE_##type field;

struct config {
    CONFIG_TABLE(CFG_FIELD)
};

/* Loads defaults, the config file, the environment and --set overrides from
 * argv (argv is scanned for --config PATH and --set K=V; other arguments are
 * ignored).  On error returns -EINVAL and writes a message naming the key
 * into err.  Release with config_release. */
int config_load(struct config *cfg, int argc, char **argv, char *err, size_t errlen);
void config_release(struct config *cfg);

/* Writes KEY=VALUE lines, secrets masked. */
void config_print(const struct config *cfg, FILE *out);
/* Writes the key table as help text. */
void config_help(FILE *out);
/* Writes config/reference.md. */
void config_reference(FILE *out);
/* Writes an example config file with every key commented. */
void config_example(FILE *out);

/* Effective node slots (node_slots, or cores when 0). */
int config_node_slots(const struct config *cfg);

#endif
