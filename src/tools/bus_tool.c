/*
 * bus_tool.c — `execd bus-publish`: publishes test traffic through the real
 * bus, for the integration tests and benchmarks.
 *
 *   execd bus-publish --count N [--type execution_requested] [--invalid]
 *                     [--raw-topic TOPIC] [--payload STRING]
 *                     [--aggregate ID] [--user-id U] [--priority N] [--lang L]
 *
 * --aggregate fixes the aggregate (execution) id instead of a fresh uuid per
 * event (e.g. a terminal event for an execution published before);
 * --user-id sets metadata.user_id (and user_id fields); --priority and
 * --lang set those fields of execution_requested.
 * Execution tasks (worker/monitor tests): --script (or --script-file PATH),
 * --lang-version, --image,
 * --timeout S and --command '["python3","-u","main.py"]' (a JSON array of
 * strings) set the fields of execution_requested; --raw-topic execution_tasks
 * publishes the event there instead of its catalog topic; --repeat N publishes
 * the same event (same event_id) N times, as a redelivery would.
 *
 * Ensures the topics first.  Valid events are built with event_new and the
 * event_set_* setters from the type's catalog fields, so they pass their
 * schema.  --invalid encodes events by hand without their first required
 * field (still with the event headers), so consumers must dead-letter them.
 * --payload publishes raw bytes (key: a fresh uuid) to --raw-topic.
 * Prints one event_id (or, for --payload, the key) per line; exits 0 only
 * when every message was delivery-reported.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bus.h"
#include "config.h"
#include "events.h"
#include "metrics.h"
#include "tools.h"
#include "util.h"

struct tool_opts {
    long count;
    int type;
    int invalid;
    int topic; /* -1: the type's catalog topic */
    const char *payload;
    const char *aggregate; /* NULL: a fresh uuid per event */
    const char *user_id;
    const char *lang;
    long long priority;
    const char *script, *lang_version, *image, *command;
    long long timeout;
    long repeat;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: execd bus-publish --count N [--type EVENT_TYPE] [--invalid]\n"
                 "                         [--raw-topic TOPIC] [--payload STRING]\n"
                 "                         [--aggregate ID] [--user-id U] [--priority N] "
                 "[--lang L]\n");
}

static int parse(int argc, char **argv, struct tool_opts *o)
{
    *o = (struct tool_opts){
        .count = 1, .type = EV_execution_requested, .topic = -1, .priority = 5, .repeat = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--invalid") == 0) {
            o->invalid = 1;
            continue;
        }
        if (strcmp(a, "--config") == 0 || strcmp(a, "--set") == 0) {
            i++; /* handled by config_load */
            continue;
        }
        if (!v) {
            fprintf(stderr, "bus-publish: unknown or incomplete option '%s'\n", a);
            return -EINVAL;
        }
        if (strcmp(a, "--count") == 0) {
            char *end;
            o->count = strtol(v, &end, 10);
            if (*end || o->count < 0 || o->count > 10000000) {
                fprintf(stderr, "bus-publish: bad --count '%s'\n", v);
                return -EINVAL;
            }
        } else if (strcmp(a, "--type") == 0) {
            o->type = event_type_lookup(v);
            if (o->type < 0) {
                fprintf(stderr, "bus-publish: unknown event type '%s'\n", v);
                return -EINVAL;
            }
        } else if (strcmp(a, "--raw-topic") == 0) {
            o->topic = topic_lookup(v);
            if (o->topic < 0) {
                fprintf(stderr, "bus-publish: unknown topic '%s'\n", v);
                return -EINVAL;
            }
        } else if (strcmp(a, "--payload") == 0) {
            o->payload = v;
        } else if (strcmp(a, "--aggregate") == 0) {
            if (!*v || strlen(v) >= UUID_LEN) {
                fprintf(stderr, "bus-publish: bad --aggregate '%s'\n", v);
                return -EINVAL;
            }
            o->aggregate = v;
        } else if (strcmp(a, "--user-id") == 0) {
            o->user_id = v;
        } else if (strcmp(a, "--lang") == 0) {
            o->lang = v;
        } else if (strcmp(a, "--script") == 0) {
            o->script = v;
        } else if (strcmp(a, "--script-file") == 0) {
            static struct strbuf file; /* lives until exit */
            FILE *f = fopen(v, "rb");
            char buf[8192];
            size_t n;
            while (f && (n = fread(buf, 1, sizeof(buf), f)) > 0)
                if (sb_append(&file, buf, n))
                    break;
            if (!f || ferror(f) || !file.s) {
                fprintf(stderr, "bus-publish: cannot read --script-file '%s'\n", v);
                if (f)
                    (void)fclose(f);
                return -EINVAL;
            }
            (void)fclose(f);
            o->script = file.s;
        } else if (strcmp(a, "--lang-version") == 0) {
            o->lang_version = v;
        } else if (strcmp(a, "--image") == 0) {
            o->image = v;
        } else if (strcmp(a, "--command") == 0) {
            cJSON *cmd = cJSON_Parse(v);
            int ok = cJSON_IsArray(cmd);
            cJSON_Delete(cmd);
            if (!ok) {
                fprintf(stderr, "bus-publish: --command must be a JSON array of strings\n");
                return -EINVAL;
            }
            o->command = v;
        } else if (strcmp(a, "--timeout") == 0 || strcmp(a, "--repeat") == 0) {
            char *end;
            long long n = strtoll(v, &end, 10);
            if (*end || end == v || n < 1 || n > 100000) {
                fprintf(stderr, "bus-publish: bad %s '%s'\n", a, v);
                return -EINVAL;
            }
            if (a[2] == 't')
                o->timeout = n;
            else
                o->repeat = (long)n;
        } else if (strcmp(a, "--priority") == 0) {
            char *end;
            o->priority = strtoll(v, &end, 10);
            if (*end || end == v) {
                fprintf(stderr, "bus-publish: bad --priority '%s'\n", v);
                return -EINVAL;
            }
        } else {
            fprintf(stderr, "bus-publish: unknown option '%s'\n", a);
            return -EINVAL;
        }
        i++;
    }
    if (o->payload && o->topic < 0) {
        fprintf(stderr, "bus-publish: --payload needs --raw-topic\n");
        return -EINVAL;
    }
    return 0;
}

static const char *str_value(const char *field, const char *aggregate)
{
    static const struct {
        const char *name, *value;
    } known[] = {
        {"script", "print('hello from bus-publish')"},
        {"lang", "python"},
        {"lang_version", "3.11"},
        {"runtime_image", "python:3.11-slim"},
        {"cpu_request", "100m"},
        {"cpu_limit", "500m"},
        {"memory_request", "64Mi"},
        {"memory_limit", "128Mi"},
        {"error_type", "system_error"},
        {"namespace", "execd"},
        {"reason", "bus-publish test"},
        {"username", "bus-tester"},
        {"original_topic", "execution_events"},
        {"subject", "execution_requested"},
        {"stdout", "hello\n"},
        {"stderr", ""},
        {"message", "test failure"},
        {"channel", "in_app"},
        {"status", "completed"},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(known[i].name, field) == 0)
            return known[i].value;
    if (strcmp(field, "execution_id") == 0 || strcmp(field, "user_id") == 0)
        return aggregate;
    if (strcmp(field, "pod_name") == 0)
        return NULL; /* built from the aggregate */
    return NULL;
}

static long long int_value(const char *field)
{
    if (strcmp(field, "timeout_seconds") == 0)
        return 30;
    if (strcmp(field, "priority") == 0)
        return 5;
    if (strcmp(field, "size_bytes") == 0)
        return 6;
    if (strcmp(field, "version") == 0 || strcmp(field, "schema_id") == 0)
        return 1;
    return 0;
}

static cJSON *obj_value(const char *field)
{
    cJSON *o = cJSON_CreateObject();
    if (o && strcmp(field, "resource_usage") == 0) {
        cJSON_AddNumberToObject(o, "execution_time_wall_seconds", 0.02);
        cJSON_AddNumberToObject(o, "cpu_time_jiffies", 2);
        cJSON_AddNumberToObject(o, "clk_tck_hertz", 100);
        cJSON_AddNumberToObject(o, "peak_memory_kb", 9000);
    }
    return o;
}

/* Fills every field of the type (required and optional) with a plausible value. */
static int fill(struct event *ev, const char *aggregate, const struct tool_opts *o)
{
    size_t n = 0;
    const struct field_spec *f = event_fields(ev->type, &n);
    for (size_t i = 0; i < n; i++) {
        int rc = 0;
        switch (f[i].type) {
        case FT_STR: {
            char buf[UUID_LEN + 8];
            const char *v = str_value(f[i].name, aggregate);
            if (o->user_id && strcmp(f[i].name, "user_id") == 0)
                v = o->user_id;
            if (o->lang && strcmp(f[i].name, "lang") == 0)
                v = o->lang;
            if (o->script && strcmp(f[i].name, "script") == 0)
                v = o->script;
            if (o->lang_version && strcmp(f[i].name, "lang_version") == 0)
                v = o->lang_version;
            if (o->image && strcmp(f[i].name, "runtime_image") == 0)
                v = o->image;
            if (!v) {
                if (strcmp(f[i].name, "pod_name") == 0)
                    snprintf(buf, sizeof(buf), "exec-%s", aggregate);
                else
                    uuid_v4(buf);
                v = buf;
            }
            rc = event_set_str(ev, f[i].name, v);
            break;
        }
        case FT_INT:
            rc = event_set_int(ev, f[i].name,
                               strcmp(f[i].name, "priority") == 0 ? o->priority
                               : o->timeout && strcmp(f[i].name, "timeout_seconds") == 0
                                   ? o->timeout
                                   : int_value(f[i].name));
            break;
        case FT_NUM:
            rc = event_set_json(ev, f[i].name, cJSON_CreateNumber(1.5));
            break;
        case FT_BOOL:
            rc = event_set_bool(ev, f[i].name, 0);
            break;
        case FT_OBJ:
            rc = event_set_json(ev, f[i].name, obj_value(f[i].name));
            break;
        case FT_ARR: {
            if (o->command && strcmp(f[i].name, "runtime_command") == 0) {
                rc = event_set_json(ev, f[i].name, cJSON_Parse(o->command));
                break;
            }
            cJSON *a = cJSON_CreateArray();
            if (a) {
                cJSON_AddItemToArray(a, cJSON_CreateString("python3"));
                cJSON_AddItemToArray(a, cJSON_CreateString("main.py"));
            }
            rc = event_set_json(ev, f[i].name, a);
            break;
        }
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* An encoded event with its first required field removed; *json owned by caller. */
static int encode_invalid(const struct event *ev, char **json)
{
    char err[256];
    char *valid = NULL;
    int rc = event_encode(ev, &valid, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "bus-publish: cannot encode: %s\n", err);
        return rc;
    }
    cJSON *root = cJSON_Parse(valid);
    free(valid);
    if (!root)
        return -ENOMEM;
    size_t n = 0;
    const struct field_spec *f = event_fields(ev->type, &n);
    int removed = 0;
    for (size_t i = 0; i < n && !removed; i++)
        if (f[i].required) {
            cJSON_DeleteItemFromObjectCaseSensitive(root, f[i].name);
            removed = 1;
        }
    if (!removed) /* a type without required fields: break the envelope instead */
        cJSON_ReplaceItemInObjectCaseSensitive(root, "event_version", cJSON_CreateString("x"));
    *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return *json ? 0 : -ENOMEM;
}

static int publish_invalid(struct bus *bus, enum topic_id topic, const struct event *ev)
{
    char *json = NULL;
    int rc = encode_invalid(ev, &json);
    if (rc)
        return rc;
    char version[16], schema[16], traceparent[96], span[33];
    snprintf(version, sizeof(version), "%d", ev->version);
    snprintf(schema, sizeof(schema), "%d", event_schema_id(ev->type));
    trace_id_new(span);
    span[16] = '\0';
    snprintf(traceparent, sizeof(traceparent), "00-%s-%s-01", ev->meta.trace_id, span);
    const struct bus_header h[] = {
        {"event_type", event_type_name(ev->type)},
        {"event_version", version},
        {"schema_id", schema},
        {"content-type", "application/json"},
        {"traceparent", traceparent},
    };
    rc = bus_publish(bus, topic, ev->aggregate_id, json, strlen(json), h, sizeof(h) / sizeof(h[0]));
    free(json);
    return rc;
}

static int publish_one(struct bus *bus, const struct tool_opts *o, char *id, size_t idlen)
{
    if (o->payload) {
        char key[UUID_LEN];
        uuid_v4(key);
        snprintf(id, idlen, "%s", key);
        return bus_publish(bus, (enum topic_id)o->topic, key, o->payload, strlen(o->payload), NULL,
                           0);
    }
    char aggregate[UUID_LEN];
    if (o->aggregate)
        snprintf(aggregate, sizeof(aggregate), "%s", o->aggregate);
    else
        uuid_v4(aggregate);
    struct event *ev = event_new((enum event_type)o->type, aggregate);
    if (!ev)
        return -ENOMEM;
    if (o->user_id) {
        free(ev->meta.user_id);
        ev->meta.user_id = xstrdup(o->user_id);
    }
    int rc = fill(ev, aggregate, o);
    if (rc == 0) {
        snprintf(id, idlen, "%s", ev->event_id);
        enum topic_id topic =
            o->topic >= 0 ? (enum topic_id)o->topic : event_topic((enum event_type)o->type);
        for (long r = 0; r < o->repeat && rc == 0; r++)
            rc =
                o->invalid ? publish_invalid(bus, topic, ev) : bus_publish_event_to(bus, topic, ev);
    }
    event_free(ev);
    return rc;
}

int tool_bus_main(const struct config *cfg, int argc, char **argv)
{
    struct tool_opts o;
    if (parse(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    int rc;
    int failed = 0;
    struct bus *bus = NULL;
    struct metrics *metrics = metrics_new();
    if (!metrics)
        return 1;
    rc = bus_new(cfg, metrics, &bus);
    if (rc) {
        fprintf(stderr, "bus-publish: cannot create the producer: %s\n", strerror(-rc));
        goto out;
    }
    rc = bus_ensure_topics(bus);
    if (rc) {
        fprintf(stderr, "bus-publish: cannot create topics on '%s': %s\n", cfg->kafka_brokers,
                strerror(-rc));
        goto out;
    }
    for (long i = 0; i < o.count; i++) {
        char id[UUID_LEN];
        int r = publish_one(bus, &o, id, sizeof(id));
        if (r) {
            fprintf(stderr, "bus-publish: message %ld not delivered: %s\n", i + 1, strerror(-r));
            failed++;
            continue;
        }
        printf("%s\n", id);
    }
    fflush(stdout);
    rc = failed ? -EIO : 0;

out:
    bus_free(bus);
    metrics_free(metrics);
    return rc ? 1 : 0;
}
