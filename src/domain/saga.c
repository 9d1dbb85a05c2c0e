/*
 * saga.c — the execution saga's steps, deadlines and compensations
 * (include/saga.h, DESIGN §6).  Pure: no I/O, no clock, no logging.
 */
#include "saga.h"

#include <stdio.h>
#include <string.h>

static const char *const state_names[SAGA_STATE_COUNT] = {
    "running", "compensating", "completed", "failed", "cancelled",
};
static const char *const step_names[SAGA_STEP_COUNT] = {
    "admit",
    "provision",
    "run",
    "finalize",
};
static const char *const comp_names[SAGA_COMP_COUNT] = {
    "delete_pod",
    "release_capacity",
};
static const char *const action_names[SAGA_ACTION_COUNT] = {
    "started",          "step_completed",    "compensating",
    "execution_failed", "execution_timeout", "execution_cancelled",
    "delete_pod",       "release_capacity",  "completed",
    "failed",           "cancelled",
};
static const enum event_type action_events[SAGA_ACTION_COUNT] = {
    EV_saga_started,       EV_saga_step_completed,      EV_saga_compensating,
    EV_execution_failed,   EV_execution_timeout,        EV_execution_cancelled,
    EV_delete_pod_command, EV_release_capacity_command, EV_saga_completed,
    EV_saga_failed,        EV_saga_cancelled,
};

static int lookup(const char *const *names, int n, const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

const char *saga_state_name(enum saga_state state)
{
    return (unsigned)state < SAGA_STATE_COUNT ? state_names[state] : "unknown";
}

const char *saga_step_name(enum saga_step step)
{
    return (unsigned)step < SAGA_STEP_COUNT ? step_names[step] : "unknown";
}

const char *saga_comp_name(enum saga_comp comp)
{
    return (unsigned)comp < SAGA_COMP_COUNT ? comp_names[comp] : "unknown";
}

const char *saga_action_name(enum saga_action action)
{
    return (unsigned)action < SAGA_ACTION_COUNT ? action_names[action] : "unknown";
}

int saga_state_lookup(const char *name)
{
    return lookup(state_names, SAGA_STATE_COUNT, name);
}

int saga_step_lookup(const char *name)
{
    return lookup(step_names, SAGA_STEP_COUNT, name);
}

int saga_comp_lookup(const char *name)
{
    return lookup(comp_names, SAGA_COMP_COUNT, name);
}

enum event_type saga_action_event(enum saga_action action)
{
    return action_events[(unsigned)action < SAGA_ACTION_COUNT ? action : SAGA_ACT_STARTED];
}

bool saga_state_terminal(enum saga_state state)
{
    return state == SAGA_COMPLETED || state == SAGA_FAILED || state == SAGA_CANCELLED;
}

bool saga_cancellable(const struct saga *s)
{
    return s->state == SAGA_RUNNING && s->step != SAGA_FINALIZE;
}

static void emit(struct saga_effects *fx, enum saga_action action, enum saga_step step)
{
    if (fx->n < SAGA_EFFECTS_MAX)
        fx->list[fx->n++] = (struct saga_effect){.action = action, .step = step};
}

static void set_error(struct saga *s, const char *msg)
{
    snprintf(s->error, sizeof(s->error), "%s", msg ? msg : "");
}

void saga_init(struct saga *s, int64_t timeout_s, struct saga_effects *fx)
{
    memset(s, 0, sizeof(*s));
    s->state = SAGA_RUNNING;
    s->final = SAGA_RUNNING;
    s->step = SAGA_ADMIT;
    s->timeout_s = timeout_s > 0 ? timeout_s : 0;
    emit(fx, SAGA_ACT_STARTED, SAGA_ADMIT);
}

static void set_deadline(struct saga *s, int64_t at)
{
    s->deadline_ms = at;
    s->deadlines[s->step] = at;
}

/* Completes every step before target and enters target. */
static void advance(struct saga *s, enum saga_step target, int64_t now_ms,
                    const struct saga_timeouts *t, struct saga_effects *fx)
{
    while (s->step < target) {
        s->completed |= 1u << s->step;
        emit(fx, SAGA_ACT_STEP_COMPLETED, s->step);
        s->step = (enum saga_step)(s->step + 1);
    }
    switch (target) {
    case SAGA_PROVISION:
        set_deadline(s, now_ms + t->provision_ms);
        break;
    case SAGA_RUN:
        set_deadline(s, now_ms + s->timeout_s * 1000 + t->grace_ms);
        break;
    case SAGA_FINALIZE:
        set_deadline(s, now_ms + t->finalize_ms);
        break;
    default:
        s->deadline_ms = 0;
        break;
    }
}

/* Ends the saga without compensation. */
static void end(struct saga *s, enum saga_state state, enum saga_action action, const char *error,
                struct saga_effects *fx)
{
    s->state = state;
    s->final = state;
    s->deadline_ms = 0;
    if (error)
        set_error(s, error);
    emit(fx, action, s->step);
}

/* Compensates what the saga did so far, in reverse: the pod (once past
 * admit — a task may be on its way to the worker), then the capacity slot.
 * ending is the execution event the saga publishes itself first (so the
 * execution's status is decided before the pod disappears), or
 * SAGA_ACTION_COUNT for none. */
static void compensate(struct saga *s, enum saga_state final, enum saga_action ending,
                       const char *error, struct saga_effects *fx)
{
    set_error(s, error);
    s->state = SAGA_COMPENSATING;
    s->final = final;
    s->deadline_ms = 0;
    emit(fx, SAGA_ACT_COMPENSATING, s->step);
    if (ending != SAGA_ACTION_COUNT)
        emit(fx, ending, s->step);
    if (s->step >= SAGA_PROVISION && !(s->compensated & (1u << SAGA_COMP_DELETE_POD))) {
        s->compensated |= 1u << SAGA_COMP_DELETE_POD;
        emit(fx, SAGA_ACT_DELETE_POD, s->step);
    }
    if (!(s->compensated & (1u << SAGA_COMP_RELEASE_CAPACITY))) {
        s->compensated |= 1u << SAGA_COMP_RELEASE_CAPACITY;
        emit(fx, SAGA_ACT_RELEASE_CAPACITY, s->step);
    }
    emit(fx, final == SAGA_CANCELLED ? SAGA_ACT_CANCELLED : SAGA_ACT_FAILED, s->step);
}

/* A pod showing up for a saga that already gave up: delete it (once). */
static int late_pod(struct saga *s, enum event_type type, struct saga_effects *fx)
{
    bool pod = type == EV_execution_scheduled || type == EV_pod_created ||
               type == EV_pod_scheduled || type == EV_pod_running || type == EV_execution_started;
    if (!pod || (s->state != SAGA_FAILED && s->state != SAGA_CANCELLED) ||
        (s->compensated & (1u << SAGA_COMP_DELETE_POD)) ||
        !(s->compensated & (1u << SAGA_COMP_RELEASE_CAPACITY)))
        return 0;
    s->compensated |= 1u << SAGA_COMP_DELETE_POD;
    emit(fx, SAGA_ACT_DELETE_POD, s->step);
    return 1;
}

int saga_on_event(struct saga *s, enum event_type type, const char *detail, int64_t now_ms,
                  const struct saga_timeouts *t, struct saga_effects *fx)
{
    if (s->state != SAGA_RUNNING)
        return saga_state_terminal(s->state) ? late_pod(s, type, fx) : 0;
    char msg[SAGA_ERROR_MAX];
    switch (type) {
    case EV_execution_rejected:
        if (s->step != SAGA_ADMIT)
            return 0;
        snprintf(msg, sizeof(msg), "rejected: %s", detail ? detail : "");
        end(s, SAGA_FAILED, SAGA_ACT_FAILED, msg, fx);
        return 1;
    case EV_execution_scheduled:
        if (s->step != SAGA_ADMIT)
            return 0;
        advance(s, SAGA_PROVISION, now_ms, t, fx);
        return 1;
    case EV_pod_created:
    case EV_pod_scheduled:
    case EV_pod_running:
    case EV_execution_started: {
        int changed = 0;
        if (type == EV_execution_started && !s->started) {
            s->started = true;
            changed = 1;
        }
        if (s->step < SAGA_RUN) {
            advance(s, SAGA_RUN, now_ms, t, fx);
            changed = 1;
        }
        return changed;
    }
    case EV_execution_completed:
    case EV_execution_timeout:
        if (s->step >= SAGA_FINALIZE)
            return 0;
        advance(s, SAGA_FINALIZE, now_ms, t, fx);
        return 1;
    case EV_execution_failed:
        if (s->step >= SAGA_FINALIZE)
            return 0;
        snprintf(msg, sizeof(msg), "%s step failed: %s", saga_step_name(s->step),
                 detail ? detail : "execution failed");
        compensate(s, SAGA_FAILED, SAGA_ACTION_COUNT, msg, fx);
        return 1;
    case EV_execution_cancelled:
        if (s->step >= SAGA_FINALIZE)
            return 0;
        compensate(s, SAGA_CANCELLED, SAGA_ACTION_COUNT, detail ? detail : "cancelled", fx);
        return 1;
    case EV_execution_cancel_requested:
        if (!saga_cancellable(s))
            return 0;
        snprintf(msg, sizeof(msg), "cancelled: %s", detail && *detail ? detail : "requested");
        compensate(s, SAGA_CANCELLED, SAGA_ACT_EXEC_CANCELLED, msg, fx);
        return 1;
    case EV_result_stored:
        advance(s, SAGA_FINALIZE, now_ms, t, fx);
        s->completed |= 1u << SAGA_FINALIZE;
        emit(fx, SAGA_ACT_STEP_COMPLETED, SAGA_FINALIZE);
        end(s, SAGA_COMPLETED, SAGA_ACT_COMPLETED, NULL, fx);
        return 1;
    case EV_result_failed:
        if (s->step != SAGA_FINALIZE)
            return 0;
        snprintf(msg, sizeof(msg), "finalize step failed: %s", detail ? detail : "");
        end(s, SAGA_FAILED, SAGA_ACT_FAILED, msg, fx);
        return 1;
    default:
        return 0;
    }
}

int saga_on_deadline(struct saga *s, int64_t now_ms, const struct saga_timeouts *t,
                     struct saga_effects *fx)
{
    if (s->state != SAGA_RUNNING || s->deadline_ms == 0 || now_ms < s->deadline_ms)
        return 0;
    char msg[SAGA_ERROR_MAX];
    switch (s->step) {
    case SAGA_PROVISION:
        snprintf(msg, sizeof(msg), "worker did not provision the pod within %lld s",
                 (long long)(t->provision_ms / 1000));
        compensate(s, SAGA_FAILED, SAGA_ACT_EXEC_FAILED, msg, fx);
        return 1;
    case SAGA_RUN:
        if (s->started) {
            snprintf(msg, sizeof(msg),
                     "execution still running after its timeout of %lld s plus %lld s grace",
                     (long long)s->timeout_s, (long long)(t->grace_ms / 1000));
            compensate(s, SAGA_FAILED, SAGA_ACT_EXEC_TIMEOUT, msg, fx);
        } else {
            snprintf(msg, sizeof(msg), "execution did not start or end within %lld s",
                     (long long)(s->timeout_s + t->grace_ms / 1000));
            compensate(s, SAGA_FAILED, SAGA_ACT_EXEC_FAILED, msg, fx);
        }
        return 1;
    case SAGA_FINALIZE:
        snprintf(msg, sizeof(msg), "result not stored within %lld s",
                 (long long)(t->finalize_ms / 1000));
        end(s, SAGA_FAILED, SAGA_ACT_FAILED, msg, fx);
        return 1;
    default:
        s->deadline_ms = 0;
        return 1;
    }
}

int saga_finish(struct saga *s)
{
    if (s->state != SAGA_COMPENSATING)
        return 0;
    s->state = s->final;
    return 1;
}
