/*
 * hello: a minimal third-party plugboard provider plugin.
 *
 *   providers:
 *     hello: { plugin: hello, base_url: https://api.hello.example }
 *
 * Calls go to base_url with the connection's API key in X-Hello-Key.
 * Needs only <plugboard/plugin.h> (and jansson, which it includes).
 */
#include <plugboard/plugin.h>

#include <stdlib.h>
#include <string.h>

struct hello_state {
    const struct pb_core_services *svc;
    char base_url[512];
};

static const char *const hello_config_keys[] = {"base_url", NULL};

static int hello_init(const struct pb_core_services *svc, const struct pb_plugin_config *cfg,
                      void **state, pb_error *err)
{
    *state = NULL;
    const char *url = json_string_value(json_object_get(cfg->options, "base_url"));
    if (!url || (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0)) {
        svc->error_set(err, PB_ECONFIG, "base_url",
                       "option base_url is required and must be an http(s) URL");
        return PB_ECONFIG;
    }
    struct hello_state *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    s->svc = svc;
    if (svc->str_format(s->base_url, sizeof s->base_url, "%s", url) != PB_OK) {
        svc->error_set(err, PB_ECONFIG, "base_url", "option base_url is too long");
        free(s);
        return PB_ECONFIG;
    }
    size_t n = strlen(s->base_url);
    while (n > 0 && s->base_url[n - 1] == '/')
        s->base_url[--n] = '\0';
    *state = s;
    return PB_OK;
}

static void hello_fini(void *state)
{
    free(state);
}

static int hello_base_url(void *state, const struct pb_credentials *cred, char *out,
                          size_t out_len, pb_error *err)
{
    const struct hello_state *s = state;
    (void)cred;
    if (s->svc->str_format(out, out_len, "%s", s->base_url) != PB_OK) {
        s->svc->error_set(err, PB_EINVAL, NULL, "base URL does not fit");
        return PB_EINVAL;
    }
    return PB_OK;
}

static int hello_apply_credentials(void *state, const struct pb_credentials *cred,
                                   pb_http_request *req, pb_error *err)
{
    const struct hello_state *s = state;
    if (!cred || !cred->api_key || !*cred->api_key) {
        s->svc->error_set(err, PB_EAUTH, NULL, "hello needs an api_key connection");
        return PB_EAUTH;
    }
    if (s->svc->req_add_header(req, "X-Hello-Key", cred->api_key) != PB_OK) {
        s->svc->error_set(err, PB_EAUTH, NULL, "the API key cannot be sent in a header");
        return PB_EAUTH;
    }
    return PB_OK;
}

static const struct pb_plugin hello_plugin = {
    PB_PLUGIN_HEAD,
    .name = "hello",
    .version = "1.0.0",
    .description = "Example plugin: base_url plus an X-Hello-Key API key",
    .config_keys = hello_config_keys,
    .init = hello_init,
    .fini = hello_fini,
    .base_url = hello_base_url,
    .apply_credentials = hello_apply_credentials,
};

PB_PLUGIN_DEFINE(hello_plugin)
