/*
 * The generic plugin's templates: the strings of a providers.yaml entry
 * with ${apiKey}, ${accessToken}, ${connectionConfig.<key>},
 * ${credentials.<field>}, base64(...) (also written ${base64(...)}) and, in
 * URLs, `a || b` alternatives. Checked once at init, evaluated per call
 * against the connection's credentials.
 */
#ifndef PB_GENERIC_TEMPLATE_H
#define PB_GENERIC_TEMPLATE_H
#include <plugboard/plugin.h>
#include <stddef.h>

enum gen_tpl_ctx {
    GEN_TPL_TEXT, /* header and query values, token parameters: any text */
    GEN_TPL_URL   /* URLs: a substituted value may not reshape the URL */
};

struct gen_tpl_err {
    enum pb_errcode code; /* PB_EAUTH: a value is missing; PB_EINVAL: unusable
                             value; PB_ECONFIG: bad template; PB_ENOMEM */
    char msg[400];
};

/* Syntax and variable names; `fallback` allows `a || b`. 0, or -1 with
 * err->msg saying what is wrong. */
int gen_tpl_check(const char *tpl, int fallback, struct gen_tpl_err *err);

/* 1 when tpl refers to ${name} (for instance "apiKey"), also inside base64(). */
int gen_tpl_uses(const char *tpl, const char *name);

/* 1 when tpl holds any ${...} or base64(...). */
int gen_tpl_has_vars(const char *tpl);

/* Evaluates tpl with the connection's values. With `fallback`, the first
 * alternative whose variables all have values wins. A variable without a
 * value is an error (PB_EAUTH) whose message names it: a result never has
 * a hole. *out is malloc'd. cred may be NULL (nothing has a value). */
int gen_tpl_eval(const char *tpl, enum gen_tpl_ctx ctx, int fallback,
                 const struct pb_core_services *svc, const struct pb_credentials *cred,
                 char **out, struct gen_tpl_err *err);
#endif
