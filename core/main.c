/* The plugboard command line: serve, check-config, plugins, project create. */
#include "app.h"
#include "control.h"
#include "log.h"
#include "secrets.h"
#include "server.h"
#include "util.h"
#include "write.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static const char usage[] =
    "usage: plugboard [--config FILE] COMMAND [ARGS]\n"
    "commands:\n"
    "  serve                 run the gateway\n"
    "  check-config          validate the config and load every enabled plugin\n"
    "  plugins               list enabled providers: name, file, ABI, capabilities\n"
    "  project create NAME   create a project and print its first API key\n"
    "  manifest apply FILE --project P\n"
    "                        create or update the project's integrations from amp.yaml\n"
    "  connection import --project P --provider X --group-ref G [--consumer-ref C]\n"
    "      [--access-token T --refresh-token R --expires-in S | --api-key K |\n"
    "       --username U --password W] [--meta k=v ...]\n"
    "                        import existing credentials as a connection\n"
    "  installation create --project P --integration I --group-ref G [--config-file F]\n"
    "      [--connection-id C]\n"
    "                        install an integration for a customer (F: the config as\n"
    "                        JSON, {\"content\": {...}})\n"
    "options:\n"
    "  --config FILE         configuration file (default ./plugboard.yaml)\n";

static int fail(int code, const char *fmt, ...) PB_PRINTF(2, 3);
static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("plugboard: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

static int open_app(const char *config, unsigned flags, struct pb_app **app)
{
    char err[1024] = "";
    int rc = pb_app_open(config, flags, app, err, sizeof err);
    if (rc != 0)
        return fail(rc, "%s", err);
    return 0;
}

static int cmd_check_config(const char *config)
{
    struct pb_app *app;
    int rc = open_app(config, PB_APP_PLUGINS, &app);
    if (rc)
        return rc;
    printf("%s: ok (%zu provider%s enabled)\n", config, app->reg->n, app->reg->n == 1 ? "" : "s");
    pb_app_close(app);
    return 0;
}

static int cmd_plugins(const char *config)
{
    struct pb_app *app;
    int rc = open_app(config, PB_APP_PLUGINS, &app);
    if (rc)
        return rc;
    for (size_t i = 0; i < app->reg->n; i++) {
        const struct pb_provider *p = &app->reg->providers[i];
        char caps[256];
        pb_caps_names(pb_provider_caps(p), caps, sizeof caps);
        printf("%s\t%s\tabi %u.%u\t%s\n", p->name, p->file->path, p->vt->abi_major,
               p->vt->abi_minor, caps);
    }
    pb_app_close(app);
    return 0;
}

/* Prints a problem as one line; 2 for bad input, 1 for the rest. */
static int fail_problem(struct pb_problem *p)
{
    const char *field = NULL;
    json_t *first = json_array_get(p->issues, 0);
    if (first)
        field = json_string_value(json_object_get(first, "name"));
    int code = p->status >= 400 && p->status < 500 && p->status != 404 && p->status != 409
                   ? EXIT_USAGE
                   : EXIT_RUNTIME;
    if (field && *field && !strstr(p->detail, field))
        fail(code, "%s: %s", field, p->detail);
    else
        fail(code, "%s", p->detail);
    pb_problem_free(p);
    return code;
}

static int print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_PRESERVE_ORDER | JSON_INDENT(2));
    json_decref(j);
    if (!s)
        return EXIT_RUNTIME;
    puts(s);
    free(s);
    return 0;
}

/* Opens the app and resolves --project into project_id. */
static int open_project(const char *config, const char *project, unsigned flags,
                        struct pb_app **app, char *project_id, size_t len)
{
    int rc = open_app(config, flags, app);
    if (rc)
        return rc;
    struct pb_problem p = {0};
    json_t *proj = NULL;
    if (pb_ctl_project_resolve(*app, project, NULL, &proj, &p) != 0) {
        pb_app_close(*app);
        return fail_problem(&p);
    }
    snprintf(project_id, len, "%s", json_string_value(json_object_get(proj, "id")));
    json_decref(proj);
    return 0;
}

static int cmd_project_create(const char *config, const char *name)
{
    struct pb_problem p = {0};
    json_t *out = NULL;
    /* Validate before touching the store, so a bad name creates nothing. */
    if (pb_ctl_project_name_check(name, &p) != 0)
        return fail_problem(&p);
    struct pb_app *app;
    int rc = open_app(config, PB_APP_STORE, &app);
    if (rc)
        return rc;
    if (pb_ctl_project_create(app, name, &out, &p) != 0)
        rc = fail_problem(&p);
    else
        rc = print_json(json_pack("{s:O, s:O, s:O}", "id", json_object_get(out, "id"), "name",
                                  json_object_get(out, "name"), "apiKey",
                                  json_object_get(out, "apiKey")));
    json_decref(out);
    pb_app_close(app);
    return rc;
}

static int cmd_manifest_apply(const char *config, const char *file, const char *project)
{
    if (!project)
        return fail(EXIT_USAGE, "usage: plugboard manifest apply FILE --project ID_OR_NAME");
    FILE *f = fopen(file, "rb");
    if (!f)
        return fail(EXIT_USAGE, "%s: cannot read: %s", file, strerror(errno));
    struct pb_buf text = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        pb_buf_append(&text, chunk, n);
    fclose(f);
    struct pb_app *app;
    char pid[64];
    int rc = open_project(config, project, PB_APP_PLUGINS | PB_APP_STORE, &app, pid, sizeof pid);
    if (rc) {
        pb_buf_free(&text);
        return rc;
    }
    struct pb_problem p = {0};
    json_t *out = NULL;
    if (pb_ctl_manifest_apply(app, pid, text.data ? text.data : "", text.len, file, &out, &p) != 0)
        rc = fail_problem(&p);
    else
        rc = print_json(out);
    pb_buf_free(&text);
    pb_app_close(app);
    return rc;
}

struct opts {
    const char *names[24];
    const char *values[24];
    size_t n;
};

static const char *opt(const struct opts *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->names[i], name) == 0)
            return o->values[i];
    return NULL;
}

static int cmd_connection_import(const char *config, const struct opts *o)
{
    const char *project = opt(o, "project"), *provider = opt(o, "provider"),
               *group = opt(o, "group-ref");
    if (!project || !provider || !group)
        return fail(EXIT_USAGE,
                    "usage: plugboard connection import --project P --provider X --group-ref G "
                    "[--access-token T --refresh-token R --expires-in S | --api-key K | "
                    "--username U --password W] [--meta k=v ...]");
    /* The credential options come in three families; say which clash here,
     * in option names, rather than later in JSON field names. */
    int families = (opt(o, "access-token") || opt(o, "refresh-token")) + !!opt(o, "api-key") +
                   (opt(o, "username") || opt(o, "password"));
    if (families > 1)
        return fail(EXIT_USAGE, "give one of --access-token/--refresh-token, --api-key or "
                                "--username/--password");
    if (opt(o, "expires-in") && !opt(o, "access-token"))
        return fail(EXIT_USAGE, "--expires-in needs --access-token");
    if (opt(o, "password") && !opt(o, "username"))
        return fail(EXIT_USAGE, "--password needs --username");
    json_t *body = json_pack("{s:s, s:s}", "groupRef", group, "provider", provider);
    if (opt(o, "consumer-ref"))
        json_object_set_new(body, "consumerRef", json_string(opt(o, "consumer-ref")));
    const char *at = opt(o, "access-token"), *rt = opt(o, "refresh-token"),
               *exp = opt(o, "expires-in");
    if (at || rt) {
        json_t *oa = json_object();
        if (at) {
            json_t *a = json_pack("{s:s}", "token", at);
            if (exp) {
                char *end = NULL;
                errno = 0;
                long secs = strtol(exp, &end, 10);
                /* Bounded (ten years) so that secs * 1000 cannot overflow. */
                if (!*exp || *end || errno || secs <= 0 || secs > 315360000L) {
                    json_decref(a);
                    json_decref(oa);
                    json_decref(body);
                    return fail(EXIT_USAGE, "--expires-in must be a number of seconds from 1 "
                                            "to 315360000, not '%s'",
                                exp);
                }
                char ts[40];
                pb_fmt_rfc3339(pb_wall_ms() + secs * 1000L, ts, sizeof ts);
                json_object_set_new(a, "expiresAt", json_string(ts));
            }
            json_object_set_new(oa, "accessToken", a);
        }
        if (rt)
            json_object_set_new(oa, "refreshToken", json_pack("{s:s}", "token", rt));
        json_object_set_new(body, "oauth2AuthorizationCode", oa);
    }
    if (opt(o, "api-key"))
        json_object_set_new(body, "apiKey", json_string(opt(o, "api-key")));
    if (opt(o, "username"))
        json_object_set_new(body, "basicAuth",
                            json_pack("{s:s, s:s}", "username", opt(o, "username"), "password",
                                      opt(o, "password") ? opt(o, "password") : ""));
    json_t *md = json_object();
    for (size_t i = 0; i < o->n; i++) {
        if (strcmp(o->names[i], "meta") != 0)
            continue;
        const char *eq = strchr(o->values[i], '=');
        if (!eq || eq == o->values[i]) {
            json_decref(md);
            json_decref(body);
            return fail(EXIT_USAGE, "--meta takes key=value, not '%s'", o->values[i]);
        }
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->values[i]), o->values[i]);
        json_object_set_new(md, key, json_pack("{s:s}", "value", eq + 1));
    }
    if (json_object_size(md))
        json_object_set(body, "providerMetadata", md);
    json_decref(md);
    struct pb_app *app;
    char pid[64];
    int rc = open_project(config, project, PB_APP_PLUGINS | PB_APP_STORE, &app, pid, sizeof pid);
    if (rc) {
        json_decref(body);
        return rc;
    }
    struct pb_problem p = {0};
    json_t *out = NULL;
    if (pb_ctl_connection_generate(app, pid, body, &out, &p) != 0)
        rc = fail_problem(&p);
    else
        rc = print_json(out);
    json_decref(body);
    pb_app_close(app);
    return rc;
}

static int cmd_installation_create(const char *config, const struct opts *o)
{
    const char *project = opt(o, "project"), *integration = opt(o, "integration"),
               *group = opt(o, "group-ref"), *file = opt(o, "config-file");
    if (!project || !integration || !group)
        return fail(EXIT_USAGE, "usage: plugboard installation create --project P --integration I "
                                "--group-ref G [--config-file F] [--connection-id C]");
    json_t *cfgj;
    if (file) {
        json_error_t e;
        cfgj = json_load_file(file, JSON_REJECT_DUPLICATES, &e);
        if (!cfgj)
            return fail(EXIT_USAGE, "%s:%d:%d: %s", file, e.line, e.column, e.text);
    } else {
        cfgj = json_pack("{s:{}}", "content");
    }
    json_t *body = json_pack("{s:s, s:o}", "groupRef", group, "config", cfgj);
    if (opt(o, "connection-id"))
        json_object_set_new(body, "connectionId", json_string(opt(o, "connection-id")));
    struct pb_app *app;
    char pid[64];
    int rc = open_project(config, project, PB_APP_PLUGINS | PB_APP_STORE, &app, pid, sizeof pid);
    if (rc) {
        json_decref(body);
        return rc;
    }
    struct pb_problem p = {0};
    json_t *out = NULL;
    if (pb_ctl_installation_create(app, pid, integration, body, &out, &p) != 0)
        rc = fail_problem(&p);
    else
        rc = print_json(out);
    json_decref(body);
    pb_app_close(app);
    return rc;
}

static int cmd_serve(const char *config)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    /* Server threads inherit the mask, so only sigwait below sees these. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct pb_app *app;
    int rc = open_app(config, PB_APP_ALL, &app);
    if (rc)
        return rc;
    char err[512];
    struct pb_server *srv;
    if (pb_server_start(app, &srv, err, sizeof err) != 0) {
        pb_app_close(app);
        return fail(EXIT_RUNTIME, "%s", err);
    }
    if (pb_writer_start(app, 2, &app->writer) != 0) {
        pb_app_close(app);
        return fail(EXIT_RUNTIME, "cannot start the write workers");
    }
    pb_log_json(PB_LOG_INFO, "listening",
                json_pack("{s:s, s:i, s:I}", "host", app->cfg->listen_host, "port",
                          pb_server_port(srv), "providers", (json_int_t)app->reg->n));
    int sig = 0;
    sigwait(&set, &sig);
    pb_log_json(PB_LOG_INFO, "stopping",
                json_pack("{s:s, s:i}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                          "inFlight", pb_server_in_flight(srv)));
    pb_app_close(app);
    pb_log_json(PB_LOG_INFO, "stopped", NULL);
    return 0;
}

int main(int argc, char **argv)
{
    const char *config = "./plugboard.yaml";
    const char *args[8];
    int nargs = 0;
    struct opts o = {.n = 0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("plugboard %s (plugin ABI %d.%d)\n", PACKAGE_VERSION, PB_PLUGIN_ABI_MAJOR,
                   PB_PLUGIN_ABI_MINOR);
            return 0;
        } else if (strncmp(argv[i], "--", 2) == 0) {
            const char *name = argv[i] + 2, *value;
            const char *eq = strchr(name, '=');
            char buf[64];
            if (eq) {
                snprintf(buf, sizeof buf, "%.*s", (int)(eq - name), name);
                name = buf;
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                return fail(EXIT_USAGE, "option '%s' needs a value", argv[i]);
            }
            if (strcmp(name, "config") == 0) {
                config = value;
                continue;
            }
            static const char *const known[] = {
                "project", "provider", "group-ref", "consumer-ref", "access-token",
                "refresh-token", "expires-in", "api-key", "username", "password", "meta",
                "integration", "config-file", "connection-id", NULL};
            const char *k = NULL;
            for (const char *const *kn = known; *kn; kn++)
                if (strcmp(*kn, name) == 0)
                    k = *kn;
            if (!k)
                return fail(EXIT_USAGE, "unknown option '--%s'", name);
            if (o.n >= sizeof o.names / sizeof o.names[0])
                return fail(EXIT_USAGE, "too many options");
            o.names[o.n] = k;
            o.values[o.n++] = value;
        } else if (nargs < 8) {
            args[nargs++] = argv[i];
        } else {
            return fail(EXIT_USAGE, "too many arguments");
        }
    }
    if (nargs == 0) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = args[0];
    if (strcmp(cmd, "serve") == 0 && nargs == 1)
        return cmd_serve(config);
    if (strcmp(cmd, "check-config") == 0 && nargs == 1)
        return cmd_check_config(config);
    if (strcmp(cmd, "plugins") == 0 && nargs == 1)
        return cmd_plugins(config);
    if (strcmp(cmd, "project") == 0) {
        if (nargs == 3 && strcmp(args[1], "create") == 0)
            return cmd_project_create(config, args[2]);
        return fail(EXIT_USAGE, "usage: plugboard project create NAME");
    }
    if (strcmp(cmd, "manifest") == 0) {
        if (nargs == 3 && strcmp(args[1], "apply") == 0)
            return cmd_manifest_apply(config, args[2], opt(&o, "project"));
        return fail(EXIT_USAGE, "usage: plugboard manifest apply FILE --project ID_OR_NAME");
    }
    if (strcmp(cmd, "connection") == 0) {
        if (nargs == 2 && strcmp(args[1], "import") == 0)
            return cmd_connection_import(config, &o);
        return fail(EXIT_USAGE, "usage: plugboard connection import --project P --provider X "
                                "--group-ref G [credentials] [--meta k=v ...]");
    }
    if (strcmp(cmd, "installation") == 0) {
        if (nargs == 2 && strcmp(args[1], "create") == 0)
            return cmd_installation_create(config, &o);
        return fail(EXIT_USAGE, "usage: plugboard installation create --project P --integration I "
                                "--group-ref G [--config-file F] [--connection-id C]");
    }
    return fail(EXIT_USAGE, "unknown command '%s' (see plugboard --help)", cmd);
}
