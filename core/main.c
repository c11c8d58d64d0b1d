/* The plugboard command line: serve, check-config, plugins, project create. */
#include "app.h"
#include "log.h"
#include "secrets.h"
#include "server.h"
#include "util.h"
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

static int valid_project_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 (i > 0 && (c == '-' || c == '_' || c == '.'));
        if (!ok)
            return 0;
    }
    return 1;
}

static int cmd_project_create(const char *config, const char *name)
{
    if (!valid_project_name(name))
        return fail(EXIT_USAGE,
                    "project name '%s' is invalid: 1-64 letters, digits, '-', '_' or '.', "
                    "starting with a letter or digit",
                    name);
    struct pb_app *app;
    int rc = open_app(config, PB_APP_STORE, &app);
    if (rc)
        return rc;
    char id[64], key_id[64], hash[65];
    pb_random_id("prj_", id, sizeof id);
    pb_random_id("key_", key_id, sizeof key_id);
    char *key = pb_api_key_new();
    pb_key_hash(key, hash);
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%.10s", key);
    json_t *proj = NULL;
    rc = pb_store_project_create_with_key(app->store, id, name, key_id, hash, prefix, &proj);
    if (rc == PB_STORE_CONFLICT) {
        rc = fail(EXIT_RUNTIME, "project '%s' already exists", name);
    } else if (rc != 0) {
        rc = fail(EXIT_RUNTIME, "cannot create project '%s': the store failed", name);
    } else {
        json_t *outj = json_pack("{s:O, s:O, s:s}", "id", json_object_get(proj, "id"), "name",
                                 json_object_get(proj, "name"), "apiKey", key);
        char *s = json_dumps(outj, JSON_PRESERVE_ORDER);
        puts(s);
        free(s);
        json_decref(outj);
    }
    json_decref(proj);
    memset(key, 0, strlen(key));
    free(key);
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
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (++i >= argc)
                return fail(EXIT_USAGE, "--config needs a file");
            config = argv[i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config = argv[i] + 9;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("plugboard %s (plugin ABI %d.%d)\n", PACKAGE_VERSION, PB_PLUGIN_ABI_MAJOR,
                   PB_PLUGIN_ABI_MINOR);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return fail(EXIT_USAGE, "unknown option '%s'", argv[i]);
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
    return fail(EXIT_USAGE, "unknown command '%s' (see plugboard --help)", cmd);
}
