/*
 * saga.h — the execution saga as a pure state machine (DESIGN §6).
 *
 * One saga per execution.  Steps, in order:
 *
 *   admit      await execution_scheduled (or execution_rejected); no deadline,
 *              a queued execution may wait as long as the queue says
 *   provision  await pod_created (or any later pod/execution event);
 *              deadline = entry + provision timeout
 *   run        await a terminal execution event; deadline = entry +
 *              timeout_seconds + grace
 *   finalize   await result_stored; deadline = entry + finalize timeout
 *
 * Triggers of compensation: the provision or run deadline passes, a step
 * fails (execution_failed before finalize), or execution_cancel_requested
 * arrives before finalize.  Compensations run in reverse order of the steps
 * they undo: delete the pod (provision, once the saga is past admit) and
 * release the capacity slot (admit).  Each is applied at most once (the
 * `compensated` bits travel with the state).  A saga that compensates goes
 * to state compensating with `final` = failed or cancelled; the role moves
 * it to `final` (saga_finish) once the effects are published.
 *
 * The functions never do I/O: they change the struct and append the
 * effects (events to publish, in order) to a struct saga_effects.  They
 * return 1 when the saga changed (the caller persists it and publishes the
 * effects), 0 when the input does not concern the saga in its state.
 */
#ifndef EXECD_SAGA_H
#define EXECD_SAGA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"

#define SAGA_NAME "execution_saga"
#define SAGA_ERROR_MAX 256
#define SAGA_EFFECTS_MAX 16

enum saga_state {
    SAGA_RUNNING,
    SAGA_COMPENSATING,
    SAGA_COMPLETED,
    SAGA_FAILED,
    SAGA_CANCELLED,
    SAGA_STATE_COUNT
};

enum saga_step { SAGA_ADMIT, SAGA_PROVISION, SAGA_RUN, SAGA_FINALIZE, SAGA_STEP_COUNT };

enum saga_comp { SAGA_COMP_DELETE_POD, SAGA_COMP_RELEASE_CAPACITY, SAGA_COMP_COUNT };

/* What the role publishes, in order. */
enum saga_action {
    SAGA_ACT_STARTED,          /* saga_started */
    SAGA_ACT_STEP_COMPLETED,   /* saga_step_completed {step} */
    SAGA_ACT_COMPENSATING,     /* saga_compensating {step, reason} */
    SAGA_ACT_EXEC_FAILED,      /* execution_failed {system_error, message = error} */
    SAGA_ACT_EXEC_TIMEOUT,     /* execution_timeout {timeout_seconds} */
    SAGA_ACT_EXEC_CANCELLED,   /* execution_cancelled {reason = error} */
    SAGA_ACT_DELETE_POD,       /* delete_pod_command (saga_commands) */
    SAGA_ACT_RELEASE_CAPACITY, /* release_capacity_command (saga_commands) */
    SAGA_ACT_COMPLETED,        /* saga_completed */
    SAGA_ACT_FAILED,           /* saga_failed {reason = error} */
    SAGA_ACT_CANCELLED,        /* saga_cancelled {reason = error} */
    SAGA_ACTION_COUNT
};

struct saga_timeouts {
    int64_t provision_ms;
    int64_t grace_ms;
    int64_t finalize_ms;
};

struct saga {
    enum saga_state state;
    enum saga_state final;              /* while compensating: failed or cancelled */
    enum saga_step step;                /* the current (or, when ended, the last) step */
    unsigned completed;                 /* bit (1u << step) per completed step */
    unsigned compensated;               /* bit (1u << comp) per applied compensation */
    int64_t timeout_s;                  /* the execution's timeout_seconds */
    int64_t deadlines[SAGA_STEP_COUNT]; /* wall ms each step's deadline was set to, 0 none */
    int64_t deadline_ms;                /* the pending deadline (wall ms), 0 = none */
    bool started;                       /* execution_started seen */
    char error[SAGA_ERROR_MAX];
};

struct saga_effect {
    enum saga_action action;
    enum saga_step step; /* for STEP_COMPLETED and COMPENSATING */
};

struct saga_effects {
    struct saga_effect list[SAGA_EFFECTS_MAX];
    size_t n;
};

/* A new saga in step admit (state running) and its saga_started effect. */
void saga_init(struct saga *s, int64_t timeout_s, struct saga_effects *fx);

/* Applies an event of the execution.  detail is the event's reason or
 * message (rejections, failures, cancels; may be NULL). */
int saga_on_event(struct saga *s, enum event_type type, const char *detail, int64_t now_ms,
                  const struct saga_timeouts *t, struct saga_effects *fx);
/* Fires the pending deadline when now_ms has reached it. */
int saga_on_deadline(struct saga *s, int64_t now_ms, const struct saga_timeouts *t,
                     struct saga_effects *fx);
/* compensating → final once its effects are out; 0 when not compensating. */
int saga_finish(struct saga *s);

bool saga_state_terminal(enum saga_state state);
/* Whether execution_cancel_requested would act on the saga now. */
bool saga_cancellable(const struct saga *s);

const char *saga_state_name(enum saga_state state);
const char *saga_step_name(enum saga_step step);
const char *saga_comp_name(enum saga_comp comp);
const char *saga_action_name(enum saga_action action);
/* -1 when unknown. */
int saga_state_lookup(const char *name);
int saga_step_lookup(const char *name);
int saga_comp_lookup(const char *name);

/* The event type an action publishes. */
enum event_type saga_action_event(enum saga_action action);

#endif
