/*
 * Deliberately broken plugins for the loader tests. One source, built once
 * per variant with exactly one of:
 *   BROKEN_ABI_NEWER   ABI major one above the core's      (name "abi_newer")
 *   BROKEN_ABI_OLDER   ABI major 0                          (name "abi_older")
 *   BROKEN_NO_SYMBOL   no pb_plugin_entry, another export instead
 *   BROKEN_INIT_FAILS  init refuses with PB_ECONFIG         (name "init_fails")
 *   BROKEN_DUP_NAME    a valid plugin that calls itself "hubspot"
 *   BROKEN_ABI_V10     not broken: a plugin built against ABI 1.0, whose
 *                      struct_size ends before the 1.1 read slots; the
 *                      bytes past it hold read slots the loader must not
 *                      see (name "abi_v10")
 * Apart from the defect each variant is a complete, valid plugin.
 */
#include <plugboard/plugin.h>

#include <stdlib.h>

#if defined(BROKEN_ABI_NEWER)
#define BROKEN_NAME "abi_newer"
#define BROKEN_ABI_MAJOR (PB_PLUGIN_ABI_MAJOR + 1)
#elif defined(BROKEN_ABI_OLDER)
#define BROKEN_NAME "abi_older"
#define BROKEN_ABI_MAJOR 0
#elif defined(BROKEN_NO_SYMBOL)
#define BROKEN_NAME "no_symbol"
#elif defined(BROKEN_INIT_FAILS)
#define BROKEN_NAME "init_fails"
#elif defined(BROKEN_DUP_NAME)
#define BROKEN_NAME "hubspot"
#elif defined(BROKEN_ABI_V10)
#define BROKEN_NAME "abi_v10"
#else
#error "define one of BROKEN_ABI_NEWER, BROKEN_ABI_OLDER, BROKEN_NO_SYMBOL, BROKEN_INIT_FAILS, BROKEN_DUP_NAME, BROKEN_ABI_V10"
#endif

struct broken_state {
    const struct pb_core_services *svc;
};

static const char *const broken_config_keys[] = {"api_token", NULL};

static int broken_init(const struct pb_core_services *svc, const struct pb_plugin_config *cfg,
                       void **state, pb_error *err)
{
    (void)cfg;
    *state = NULL;
#ifdef BROKEN_INIT_FAILS
    svc->error_set(err, PB_ECONFIG, "api_token", "missing api_token option");
    return PB_ECONFIG;
#else
    (void)err;
    struct broken_state *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    s->svc = svc;
    *state = s;
    return PB_OK;
#endif
}

static void broken_fini(void *state)
{
    free(state);
}

static int broken_base_url(void *state, const struct pb_credentials *cred, char *out,
                           size_t out_len, pb_error *err)
{
    const struct broken_state *s = state;
    (void)cred;
    if (s->svc->str_format(out, out_len, "%s", "https://" BROKEN_NAME ".invalid") != PB_OK) {
        s->svc->error_set(err, PB_EINVAL, NULL, "base URL does not fit");
        return PB_EINVAL;
    }
    return PB_OK;
}

static int broken_apply_credentials(void *state, const struct pb_credentials *cred,
                                    pb_http_request *req, pb_error *err)
{
    const struct broken_state *s = state;
    if (!cred || !cred->api_key) {
        s->svc->error_set(err, PB_EAUTH, NULL, "connection has no API key");
        return PB_EAUTH;
    }
    return s->svc->req_add_header(req, "X-Api-Key", cred->api_key);
}

#ifdef BROKEN_ABI_V10
/* Past the 1.0 struct_size: a loader that read them would be wrong. */
static int v10_encode_read(void *state, const struct pb_write *w, const json_t *fields,
                           pb_http_request *req, pb_error *err)
{
    (void)state, (void)w, (void)fields, (void)req, (void)err;
    abort();
}

static int v10_decode_read(void *state, const struct pb_write *w, const pb_http_response *resp,
                           json_t **out, pb_error *err)
{
    (void)state, (void)w, (void)resp, (void)out, (void)err;
    abort();
}
#endif

static const struct pb_plugin broken_plugin = {
#if defined(BROKEN_ABI_V10)
    .abi_major = PB_PLUGIN_ABI_MAJOR,
    .abi_minor = 0,
    .struct_size = offsetof(struct pb_plugin, encode_read),
    .encode_read = v10_encode_read,
    .decode_read = v10_decode_read,
#elif defined(BROKEN_ABI_MAJOR)
    .abi_major = BROKEN_ABI_MAJOR,
    .abi_minor = PB_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(struct pb_plugin),
#else
    PB_PLUGIN_HEAD,
#endif
    .name = BROKEN_NAME,
    .version = "0.0.1",
    .description = "test plugin: " BROKEN_NAME,
    .config_keys = broken_config_keys,
    .init = broken_init,
    .fini = broken_fini,
    .base_url = broken_base_url,
    .apply_credentials = broken_apply_credentials,
};

#ifdef BROKEN_NO_SYMBOL
/* Exported under a name the loader does not look for. */
PB_PLUGIN_EXPORT const struct pb_plugin *pb_plugin_entry_point(void);
PB_PLUGIN_EXPORT const struct pb_plugin *pb_plugin_entry_point(void)
{
    return &broken_plugin;
}
#else
PB_PLUGIN_DEFINE(broken_plugin)
#endif
