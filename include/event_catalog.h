/*
 * event_catalog.h — every event type, once (DESIGN §3).
 *
 * EVENT_CATALOG(X): X(name, topic, version, FIELDS) where FIELDS(F) lists
 * F(field, type, required) with type STR INT NUM BOOL OBJ ARR and required
 * 1/0.  Envelope fields are not listed here; every type has them.
 * Compatibility: a new version may add optional fields, never remove or
 * retype one (checked against the schema registry at start-up).
 */
#ifndef EXECD_EVENT_CATALOG_H
#define EXECD_EVENT_CATALOG_H

#define EVF_EXECUTION_REQUESTED(F)                                                                 \
    F(execution_id, STR, 1)                                                                        \
    F(script, STR, 1) F(lang, STR, 1) F(lang_version, STR, 1) F(runtime_image, STR, 1)             \
        F(runtime_command, ARR, 1) F(timeout_seconds, INT, 1) F(cpu_request, STR, 1)               \
            F(cpu_limit, STR, 1) F(memory_request, STR, 1) F(memory_limit, STR, 1)                 \
                F(priority, INT, 1)
#define EVF_EXECUTION_ACCEPTED(F) F(execution_id, STR, 1)
#define EVF_EXECUTION_QUEUED(F)                                                                    \
    F(execution_id, STR, 1) F(position, INT, 1) F(estimated_wait_seconds, NUM, 0)
#define EVF_EXECUTION_REJECTED(F) F(execution_id, STR, 1) F(reason, STR, 1) F(retry_after, INT, 0)
#define EVF_EXECUTION_SCHEDULED(F) F(execution_id, STR, 1) F(task_topic, STR, 0)
#define EVF_EXECUTION_STARTED(F) F(execution_id, STR, 1) F(pod_name, STR, 0)
#define EVF_EXECUTION_COMPLETED(F)                                                                 \
    F(execution_id, STR, 1)                                                                        \
    F(exit_code, INT, 1) F(stdout, STR, 1) F(stderr, STR, 1) F(resource_usage, OBJ, 1)             \
        F(stdout_truncated, BOOL, 0) F(stderr_truncated, BOOL, 0)
#define EVF_EXECUTION_FAILED(F)                                                                    \
    F(execution_id, STR, 1)                                                                        \
    F(error_type, STR, 1) F(message, STR, 1) F(exit_code, INT, 0) F(stdout, STR, 0)                \
        F(stderr, STR, 0) F(resource_usage, OBJ, 0)
#define EVF_EXECUTION_TIMEOUT(F)                                                                   \
    F(execution_id, STR, 1)                                                                        \
    F(timeout_seconds, INT, 1) F(stdout, STR, 0) F(stderr, STR, 0) F(resource_usage, OBJ, 0)
#define EVF_EXECUTION_CANCEL_REQUESTED(F) F(execution_id, STR, 1) F(reason, STR, 0) F(by, STR, 0)
#define EVF_EXECUTION_CANCELLED(F) F(execution_id, STR, 1) F(reason, STR, 0)
#define EVF_POD(F)                                                                                 \
    F(execution_id, STR, 1)                                                                        \
    F(pod_name, STR, 1) F(namespace, STR, 1) F(reason, STR, 0) F(exit_code, INT, 0)
#define EVF_RESULT_STORED(F) F(execution_id, STR, 1) F(size_bytes, INT, 1) F(status, STR, 0)
#define EVF_RESULT_FAILED(F) F(execution_id, STR, 1) F(error, STR, 1)
#define EVF_SAGA(F)                                                                                \
    F(execution_id, STR, 1) F(saga_id, STR, 1) F(step, STR, 0) F(state, STR, 0) F(reason, STR, 0)
#define EVF_DELETE_POD_COMMAND(F) F(execution_id, STR, 1) F(pod_name, STR, 1) F(reason, STR, 0)
#define EVF_RELEASE_CAPACITY_COMMAND(F) F(execution_id, STR, 1) F(reason, STR, 0)
#define EVF_USER(F) F(user_id, STR, 1) F(username, STR, 0)
#define EVF_AUTH_FAILED(F) F(username, STR, 1) F(reason, STR, 1)
#define EVF_USER_SETTINGS_UPDATED(F) F(user_id, STR, 1) F(changes, OBJ, 0)
#define EVF_NOTIFICATION(F)                                                                        \
    F(notification_id, STR, 1) F(user_id, STR, 1) F(channel, STR, 0) F(error, STR, 0)
#define EVF_DLQ(F)                                                                                 \
    F(original_event_id, STR, 0)                                                                   \
    F(original_topic, STR, 1) F(consumer_group, STR, 0) F(error, STR, 0) F(retry_count, INT, 0)
#define EVF_REPLAY(F) F(session_id, STR, 1) F(status, STR, 0)
#define EVF_SCHEMA(F) F(subject, STR, 1) F(version, INT, 1) F(schema_id, INT, 1)

#define EVENT_CATALOG(X)                                                                           \
    X(execution_requested, EXECUTION_EVENTS, 1, EVF_EXECUTION_REQUESTED)                           \
    X(execution_accepted, EXECUTION_EVENTS, 1, EVF_EXECUTION_ACCEPTED)                             \
    X(execution_queued, EXECUTION_EVENTS, 1, EVF_EXECUTION_QUEUED)                                 \
    X(execution_rejected, EXECUTION_EVENTS, 1, EVF_EXECUTION_REJECTED)                             \
    X(execution_scheduled, EXECUTION_EVENTS, 1, EVF_EXECUTION_SCHEDULED)                           \
    X(execution_started, EXECUTION_EVENTS, 1, EVF_EXECUTION_STARTED)                               \
    X(execution_completed, EXECUTION_EVENTS, 1, EVF_EXECUTION_COMPLETED)                           \
    X(execution_failed, EXECUTION_EVENTS, 1, EVF_EXECUTION_FAILED)                                 \
    X(execution_timeout, EXECUTION_EVENTS, 1, EVF_EXECUTION_TIMEOUT)                               \
    X(execution_cancel_requested, EXECUTION_EVENTS, 1, EVF_EXECUTION_CANCEL_REQUESTED)             \
    X(execution_cancelled, EXECUTION_EVENTS, 1, EVF_EXECUTION_CANCELLED)                           \
    X(pod_created, EXECUTION_EVENTS, 1, EVF_POD)                                                   \
    X(pod_scheduled, EXECUTION_EVENTS, 1, EVF_POD)                                                 \
    X(pod_running, EXECUTION_EVENTS, 1, EVF_POD)                                                   \
    X(pod_succeeded, EXECUTION_EVENTS, 1, EVF_POD)                                                 \
    X(pod_failed, EXECUTION_EVENTS, 1, EVF_POD)                                                    \
    X(pod_terminated, EXECUTION_EVENTS, 1, EVF_POD)                                                \
    X(pod_deleted, EXECUTION_EVENTS, 1, EVF_POD)                                                   \
    X(result_stored, EXECUTION_EVENTS, 1, EVF_RESULT_STORED)                                       \
    X(result_failed, EXECUTION_EVENTS, 1, EVF_RESULT_FAILED)                                       \
    X(saga_started, EXECUTION_EVENTS, 1, EVF_SAGA)                                                 \
    X(saga_step_completed, EXECUTION_EVENTS, 1, EVF_SAGA)                                          \
    X(saga_compensating, EXECUTION_EVENTS, 1, EVF_SAGA)                                            \
    X(saga_completed, EXECUTION_EVENTS, 1, EVF_SAGA)                                               \
    X(saga_failed, EXECUTION_EVENTS, 1, EVF_SAGA)                                                  \
    X(saga_cancelled, EXECUTION_EVENTS, 1, EVF_SAGA)                                               \
    X(delete_pod_command, SAGA_COMMANDS, 1, EVF_DELETE_POD_COMMAND)                                \
    X(release_capacity_command, SAGA_COMMANDS, 1, EVF_RELEASE_CAPACITY_COMMAND)                    \
    X(user_registered, USER_EVENTS, 1, EVF_USER)                                                   \
    X(user_logged_in, USER_EVENTS, 1, EVF_USER)                                                    \
    X(user_logged_out, USER_EVENTS, 1, EVF_USER)                                                   \
    X(auth_failed, USER_EVENTS, 1, EVF_AUTH_FAILED)                                                \
    X(user_settings_updated, USER_EVENTS, 1, EVF_USER_SETTINGS_UPDATED)                            \
    X(notification_created, NOTIFICATION_EVENTS, 1, EVF_NOTIFICATION)                              \
    X(notification_delivered, NOTIFICATION_EVENTS, 1, EVF_NOTIFICATION)                            \
    X(notification_failed, NOTIFICATION_EVENTS, 1, EVF_NOTIFICATION)                               \
    X(dlq_message_received, SYSTEM_EVENTS, 1, EVF_DLQ)                                             \
    X(dlq_message_retried, SYSTEM_EVENTS, 1, EVF_DLQ)                                              \
    X(dlq_message_discarded, SYSTEM_EVENTS, 1, EVF_DLQ)                                            \
    X(replay_session_created, SYSTEM_EVENTS, 1, EVF_REPLAY)                                        \
    X(replay_session_completed, SYSTEM_EVENTS, 1, EVF_REPLAY)                                      \
    X(schema_registered, SYSTEM_EVENTS, 1, EVF_SCHEMA)

#endif
