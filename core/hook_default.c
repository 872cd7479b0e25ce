/* The built-in hooks: accept everything (the core logs each message). */
#include "hook.h"


static enum hook_status default_call(void *ctx, struct session *s, enum hook_stage stage,
                                     const struct hook_args *args, struct verdict *v)
{
    (void)ctx;
    (void)s;
    (void)stage;
    (void)args;
    v->code = VERDICT_ACCEPT;
    v->enhanced[0] = v->text[0] = '\0';
    v->disconnect = false;
    return HOOK_DONE;
}

static void default_close(void *ctx, struct session *s)
{
    (void)ctx;
    (void)s;
}

static bool default_defines(void *ctx, enum hook_stage stage)
{
    (void)ctx;
    (void)stage;
    return false;
}

const struct hooks hook_default = { NULL, default_call, default_close, default_defines };
