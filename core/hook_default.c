/* The built-in hooks: accept everything and log each message received. */
#include "hook.h"

#include "log.h"

static enum hook_status default_call(void *ctx, struct session *s, enum hook_stage stage,
                                     const struct hook_args *args, struct verdict *v)
{
    (void)ctx;
    v->code = VERDICT_ACCEPT;
    v->enhanced[0] = v->text[0] = '\0';
    v->disconnect = false;
    /* Addresses reaching a hook are validated: no control characters. */
    if (stage == HOOK_MESSAGE)
        log_msg(LOG_INFO, session_id(s), "message %s from=<%s> to=<%s>%s size=%zu",
                session_message_id(s), session_sender(s), session_recipient(s, 0),
                session_nrecipients(s) > 1 ? ",..." : "", args->size);
    return HOOK_DONE;
}

static void default_close(void *ctx, struct session *s)
{
    (void)ctx;
    (void)s;
}

const struct hooks hook_default = { NULL, default_call, default_close };
