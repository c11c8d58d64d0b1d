/* plugboard.yaml loading: values, defaults, env expansion and every error
 * class with its exact "file:line:col: message" text. */
/* Not "config.h": automake puts -I. (autoconf's generated config.h) ahead of
 * -Icore, so the plain name would find the wrong header. */
#include "../core/config.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PB_DEFAULT_PLUGIN_DIR
#define PB_DEFAULT_PLUGIN_DIR "/usr/local/lib/plugboard/plugins"
#endif

/* Writes `yaml` to a temp file and loads it; the caller frees *path. */
static int load(const char *yaml, char **path, struct pb_config **cfg, char *err, size_t err_len)
{
    *path = pbt_path("plugboard.yaml");
    CU_ASSERT_FATAL(pbt_write_file(*path, yaml) == 0);
    return pb_config_load(*path, cfg, err, err_len);
}

/* Loads `yaml`, which must succeed. */
static struct pb_config *load_ok(const char *yaml)
{
    char *path, err[512] = "";
    struct pb_config *cfg = NULL;
    int rc = load(yaml, &path, &cfg, err, sizeof err);
    if (rc)
        fprintf(stderr, "\n  unexpected error: %s\n", err);
    free(path);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    return cfg;
}

/* Loads `yaml`, which must fail with exactly "<path>:<where>", leaving the
 * output pointer NULL. */
static void check_error(const char *yaml, const char *where)
{
    static struct pb_config sentinel;
    struct pb_config *cfg = &sentinel;
    char *path, err[512] = "", want[1024];
    int rc = load(yaml, &path, &cfg, err, sizeof err);
    snprintf(want, sizeof want, "%s:%s", path, where);
    if (strcmp(err, want))
        fprintf(stderr, "\n  want: %s\n  got:  %s\n", want, err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NULL(cfg);
    CU_ASSERT_STRING_EQUAL(err, want);
    if (rc == 0 && cfg != &sentinel)
        pb_config_free(cfg);
    free(path);
}

static void check_pos(const json_t *positions, const char *key, int line, int col)
{
    json_t *pos = json_object_get(positions, key);
    CU_ASSERT_TRUE(json_is_array(pos) && json_array_size(pos) == 2);
    CU_ASSERT_EQUAL(json_integer_value(json_array_get(pos, 0)), line);
    CU_ASSERT_EQUAL(json_integer_value(json_array_get(pos, 1)), col);
}

static const char full_yaml[] =
    "listen: 0.0.0.0:9090\n"                              /* 1 */
    "public_url: https://pb.example.com\n"                /* 2 */
    "data_dir: /srv/pb\n"                                 /* 3 */
    "store: sqlite:/srv/pb/db.sqlite\n"                   /* 4 */
    "master_key_file: /etc/pb/master.key\n"               /* 5 */
    "plugin_dir: ./plugins\n"                             /* 6 */
    "log: { level: debug, format: text }\n"               /* 7 */
    "egress:\n"                                           /* 8 */
    "  timeout_ms: 1500\n"                                /* 9 */
    "  ca_file: /etc/ssl/corp.pem\n"                      /* 10 */
    "  connect_to:\n"                                     /* 11 */
    "    - \"api.hubapi.com:443:127.0.0.1:8443\"\n"       /* 12 */
    "    - \"[::1]:80:[::1]:8080\"\n"                     /* 13 */
    "  http_proxy: http://proxy:3128\n"                   /* 14 */
    "  allow_private: true\n"                             /* 15 */
    "server:\n"                                           /* 16 */
    "  max_body_bytes: 2048\n"                            /* 17 */
    "  connection_limit: 16\n"                            /* 18 */
    "  connection_timeout_s: 5\n"                         /* 19 */
    "  drain_timeout_s: 7\n"                              /* 20 */
    "tokens:\n"                                           /* 21 */
    "  refresh_margin_s: 0\n"                             /* 22 */
    "providers:\n"                                        /* 23 */
    "  hubspot:\n"                                        /* 24 */
    "    plugin: hubspot\n"                               /* 25 */
    "    client_id: abc\n"                                /* 26 */
    "    port: 8443\n"                                    /* 27 */
    "    negative: -3\n"                                  /* 28 */
    "    enabled: true\n"                                 /* 29 */
    "    disabled: false\n"                               /* 30 */
    "    quoted_bool: \"true\"\n"                         /* 31 */
    "    quoted_int: '42'\n"                              /* 32 */
    "    tilde: ~\n"                                      /* 33 */
    "    null_word: null\n"                               /* 34 */
    "    empty:\n"                                        /* 35 */
    "    ratio: 1.5\n"                                    /* 36 */
    "    scopes: [crm.read, crm.write]\n"                 /* 37 */
    "    nested:\n"                                       /* 38 */
    "      deep: { a: 1, b: [x, 2, false] }\n"            /* 39 */
    "  sendgrid: { plugin: generic, catalog: ./catalog/providers.yaml }\n"; /* 40 */

static void test_full_config(void)
{
    struct pb_config *cfg = load_ok(full_yaml);
    char *path = pbt_path("plugboard.yaml");
    CU_ASSERT_STRING_EQUAL(cfg->path, path);
    CU_ASSERT_STRING_EQUAL(cfg->dir, pbt_tmpdir());
    free(path);
    CU_ASSERT_STRING_EQUAL(cfg->listen_host, "0.0.0.0");
    CU_ASSERT_EQUAL(cfg->listen_port, 9090);
    CU_ASSERT_STRING_EQUAL(cfg->public_url, "https://pb.example.com");
    CU_ASSERT_STRING_EQUAL(cfg->data_dir, "/srv/pb");
    CU_ASSERT_STRING_EQUAL(cfg->store, "sqlite:/srv/pb/db.sqlite");
    CU_ASSERT_STRING_EQUAL(cfg->master_key_file, "/etc/pb/master.key");
    CU_ASSERT_STRING_EQUAL(cfg->plugin_dir, "./plugins");
    CU_ASSERT_STRING_EQUAL(cfg->log_level, "debug");
    CU_ASSERT_STRING_EQUAL(cfg->log_format, "text");
    CU_ASSERT_EQUAL(cfg->egress.timeout_ms, 1500);
    CU_ASSERT_STRING_EQUAL(cfg->egress.ca_file, "/etc/ssl/corp.pem");
    CU_ASSERT_EQUAL_FATAL(cfg->egress.n_connect_to, 2);
    CU_ASSERT_STRING_EQUAL(cfg->egress.connect_to[0], "api.hubapi.com:443:127.0.0.1:8443");
    CU_ASSERT_STRING_EQUAL(cfg->egress.connect_to[1], "[::1]:80:[::1]:8080");
    CU_ASSERT_PTR_NULL(cfg->egress.connect_to[2]);
    CU_ASSERT_STRING_EQUAL(cfg->egress.http_proxy, "http://proxy:3128");
    CU_ASSERT_EQUAL(cfg->egress.allow_private, 1);
    CU_ASSERT_EQUAL(cfg->server.max_body_bytes, 2048);
    CU_ASSERT_EQUAL(cfg->server.connection_limit, 16);
    CU_ASSERT_EQUAL(cfg->server.connection_timeout_s, 5);
    CU_ASSERT_EQUAL(cfg->server.drain_timeout_s, 7);
    CU_ASSERT_EQUAL(cfg->tokens.refresh_margin_s, 0);

    CU_ASSERT_EQUAL_FATAL(cfg->n_providers, 2);
    const struct pb_provider_cfg *hub = &cfg->providers[0];
    CU_ASSERT_STRING_EQUAL(hub->name, "hubspot");
    CU_ASSERT_STRING_EQUAL(hub->plugin, "hubspot");
    CU_ASSERT_EQUAL(hub->line, 24);
    CU_ASSERT_EQUAL(hub->column, 3);
    CU_ASSERT_PTR_EQUAL(pb_config_provider(cfg, "hubspot"), hub);

    /* Typed options; `plugin` is not an option. */
    json_t *want = json_pack(
        "{s:s, s:i, s:i, s:b, s:b, s:s, s:s, s:n, s:n, s:n, s:s, s:[s,s], s:{s:{s:i, s:[s,i,b]}}}",
        "client_id", "abc", "port", 8443, "negative", -3, "enabled", 1, "disabled", 0,
        "quoted_bool", "true", "quoted_int", "42", "tilde", "null_word", "empty", "ratio", "1.5",
        "scopes", "crm.read", "crm.write", "nested", "deep", "a", 1, "b", "x", 2, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    CU_ASSERT_TRUE(json_equal(hub->options, want));
    json_decref(want);
    CU_ASSERT_PTR_NULL(json_object_get(hub->options, "plugin"));
    CU_ASSERT_TRUE(json_is_integer(json_object_get(hub->options, "port")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(hub->options, "enabled")));
    CU_ASSERT_TRUE(json_is_string(json_object_get(hub->options, "quoted_bool")));

    /* Positions: every key of the block, 1-based line and column. */
    CU_ASSERT_EQUAL(json_object_size(hub->positions), 14);
    check_pos(hub->positions, "plugin", 25, 5);
    check_pos(hub->positions, "client_id", 26, 5);
    check_pos(hub->positions, "empty", 35, 5);
    check_pos(hub->positions, "nested", 38, 5);

    const struct pb_provider_cfg *sg = pb_config_provider(cfg, "sendgrid");
    CU_ASSERT_PTR_EQUAL_FATAL(sg, &cfg->providers[1]);
    CU_ASSERT_STRING_EQUAL(sg->plugin, "generic");
    CU_ASSERT_EQUAL(sg->line, 40);
    CU_ASSERT_EQUAL(sg->column, 3);
    CU_ASSERT_EQUAL(json_object_size(sg->options), 1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(sg->options, "catalog")),
                           "./catalog/providers.yaml");
    check_pos(sg->positions, "plugin", 40, 15);
    check_pos(sg->positions, "catalog", 40, 32);
    CU_ASSERT_PTR_NULL(pb_config_provider(cfg, "salesforce"));
    pb_config_free(cfg);
}

static void check_defaults(const struct pb_config *cfg)
{
    CU_ASSERT_STRING_EQUAL(cfg->listen_host, "127.0.0.1");
    CU_ASSERT_EQUAL(cfg->listen_port, 8080);
    CU_ASSERT_STRING_EQUAL(cfg->public_url, "http://127.0.0.1:8080");
    CU_ASSERT_STRING_EQUAL(cfg->data_dir, "./var");
    CU_ASSERT_STRING_EQUAL(cfg->store, "sqlite:./var/plugboard.db");
    CU_ASSERT_STRING_EQUAL(cfg->master_key_file, "./var/master.key");
    CU_ASSERT_STRING_EQUAL(cfg->plugin_dir, PB_DEFAULT_PLUGIN_DIR);
    CU_ASSERT_STRING_EQUAL(cfg->log_level, "info");
    CU_ASSERT_STRING_EQUAL(cfg->log_format, "json");
    CU_ASSERT_EQUAL(cfg->egress.timeout_ms, 30000);
    CU_ASSERT_PTR_NULL(cfg->egress.ca_file);
    CU_ASSERT_EQUAL(cfg->egress.n_connect_to, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg->egress.connect_to);
    CU_ASSERT_PTR_NULL(cfg->egress.connect_to[0]);
    CU_ASSERT_PTR_NULL(cfg->egress.http_proxy);
    CU_ASSERT_EQUAL(cfg->egress.allow_private, 0);
    CU_ASSERT_EQUAL(cfg->server.max_body_bytes, 10L * 1024 * 1024);
    CU_ASSERT_EQUAL(cfg->server.connection_limit, 1024);
    CU_ASSERT_EQUAL(cfg->server.connection_timeout_s, 60);
    CU_ASSERT_EQUAL(cfg->server.drain_timeout_s, 30);
    CU_ASSERT_EQUAL(cfg->tokens.refresh_margin_s, 300);
    CU_ASSERT_EQUAL(cfg->n_providers, 0);
}

static void test_defaults(void)
{
    /* Empty file, comments only, and empty sections all mean defaults. */
    static const char *const docs[] = {
        "",
        "# nothing configured\n",
        "log: {}\negress:\nserver: {}\ntokens: ~\nproviders: {}\n",
        "egress: { ca_file: null, http_proxy: ~, connect_to: [] }\nproviders:\n",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        struct pb_config *cfg = load_ok(docs[i]);
        check_defaults(cfg);
        CU_ASSERT_PTR_NULL(pb_config_provider(cfg, "hubspot"));
        pb_config_free(cfg);
    }
}

static void test_derived_defaults(void)
{
    /* store and master_key_file follow data_dir; public_url follows listen. */
    struct pb_config *cfg = load_ok("listen: localhost:0\ndata_dir: ./state/\n");
    CU_ASSERT_STRING_EQUAL(cfg->listen_host, "localhost");
    CU_ASSERT_EQUAL(cfg->listen_port, 0);
    CU_ASSERT_STRING_EQUAL(cfg->public_url, "http://localhost:0");
    CU_ASSERT_STRING_EQUAL(cfg->data_dir, "./state/");
    CU_ASSERT_STRING_EQUAL(cfg->store, "sqlite:./state/plugboard.db");
    CU_ASSERT_STRING_EQUAL(cfg->master_key_file, "./state/master.key");
    pb_config_free(cfg);

    cfg = load_ok("listen: \"[::1]:8443\"\ndata_dir: /var/lib/pb\n");
    CU_ASSERT_STRING_EQUAL(cfg->listen_host, "::1");
    CU_ASSERT_EQUAL(cfg->listen_port, 8443);
    CU_ASSERT_STRING_EQUAL(cfg->public_url, "http://[::1]:8443");
    CU_ASSERT_STRING_EQUAL(cfg->store, "sqlite:/var/lib/pb/plugboard.db");
    CU_ASSERT_STRING_EQUAL(cfg->master_key_file, "/var/lib/pb/master.key");
    pb_config_free(cfg);
}

static void test_relative_path(void)
{
    /* A path without a directory part: dir is ".", path kept as given. */
    char cwd[4096];
    CU_ASSERT_PTR_NOT_NULL_FATAL(getcwd(cwd, sizeof cwd));
    CU_ASSERT_EQUAL_FATAL(chdir(pbt_tmpdir()), 0);
    CU_ASSERT_EQUAL_FATAL(pbt_write_file("rel.yaml", "plugin_dir: plugins\n"), 0);
    struct pb_config *cfg = NULL;
    char err[256] = "";
    int rc = pb_config_load("rel.yaml", &cfg, err, sizeof err);
    CU_ASSERT_EQUAL(chdir(cwd), 0);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(cfg->path, "rel.yaml");
    CU_ASSERT_STRING_EQUAL(cfg->dir, ".");
    CU_ASSERT_STRING_EQUAL(cfg->plugin_dir, "plugins");
    pb_config_free(cfg);
}

static void test_error_unreadable(void)
{
    static struct pb_config sentinel;
    struct pb_config *cfg = &sentinel;
    char err[512], want[1024];
    char *path = pbt_path("does-not-exist.yaml");
    CU_ASSERT_EQUAL(pb_config_load(path, &cfg, err, sizeof err), -1);
    CU_ASSERT_PTR_NULL(cfg);
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", path);
    CU_ASSERT_STRING_EQUAL(err, want);
    free(path);

    cfg = &sentinel;
    CU_ASSERT_EQUAL(pb_config_load(pbt_tmpdir(), &cfg, err, sizeof err), -1);
    CU_ASSERT_PTR_NULL(cfg);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", pbt_tmpdir());
    CU_ASSERT_STRING_EQUAL(err, want);

    /* No error buffer, or a tiny one: still fails cleanly. */
    cfg = &sentinel;
    CU_ASSERT_EQUAL(pb_config_load("/nonexistent/x.yaml", &cfg, NULL, 0), -1);
    CU_ASSERT_PTR_NULL(cfg);
    char small[8];
    CU_ASSERT_EQUAL(pb_config_load("/nonexistent/x.yaml", &cfg, small, sizeof small), -1);
    CU_ASSERT_STRING_EQUAL(small, "/nonexi");
}

static void test_error_syntax(void)
{
    check_error("listen: a: b\n", "1:10: mapping values are not allowed in this context");
    check_error("egress:\n  connect_to: [a, b\n",
                "3:1: did not find expected ',' or ']' (while parsing a flow sequence)");
    check_error("data_dir: \"unterminated\n",
                "2:1: found unexpected end of stream (while scanning a quoted scalar)");
    check_error("\tlisten: x\n",
                "1:1: found character that cannot start any token (while scanning for the next "
                "token)");
    check_error("listen: *nowhere\n", "1:9: found undefined alias");
    check_error("listen: a:1\n---\nlisten: b:2\n", "3:1: only one YAML document is allowed");
}

static void test_error_top_level(void)
{
    check_error("- listen\n- data_dir\n", "1:1: the top level must be a mapping of settings");
    check_error("just words\n", "1:1: the top level must be a mapping of settings");
    check_error("? [a, b]\n: 1\n", "1:3: keys must be strings");
    check_error("data_dir: \"a\\0b\"\n", "1:11: strings must not contain NUL characters");
}

static void test_error_unknown_key(void)
{
    check_error("listen: a:1\nfoo: 1\n", "2:1: unknown key 'foo'");
    check_error("egress:\n  timeout_ms: 10\n  retries: 3\n", "3:3: unknown key 'egress.retries'");
    check_error("log: { level: info, colour: red }\n", "1:21: unknown key 'log.colour'");
    check_error("server:\n  threads: 4\n", "2:3: unknown key 'server.threads'");
    check_error("tokens:\n  refresh_margin: 4\n", "2:3: unknown key 'tokens.refresh_margin'");
}

static void test_error_wrong_type(void)
{
    check_error("egress:\n  timeout_ms: 0\n", "2:15: 'egress.timeout_ms' must be a positive integer");
    check_error("egress:\n  timeout_ms: -5\n",
                "2:15: 'egress.timeout_ms' must be a positive integer");
    check_error("egress:\n  timeout_ms: soon\n",
                "2:15: 'egress.timeout_ms' must be a positive integer");
    check_error("egress:\n  timeout_ms: 99999999999999999999999\n",
                "2:15: 'egress.timeout_ms' must be a positive integer");
    check_error("egress:\n  timeout_ms: [1]\n",
                "2:15: 'egress.timeout_ms' must be a positive integer");
    check_error("egress:\n  allow_private: yes\n",
                "2:18: 'egress.allow_private' must be true or false");
    check_error("egress:\n  ca_file: [a]\n", "2:12: 'egress.ca_file' must be a string or null");
    check_error("egress:\n  connect_to: a:1:b:2\n",
                "2:15: 'egress.connect_to' must be a list of strings");
    check_error("egress: 5\n", "1:9: 'egress' must be a mapping");
    check_error("log: { level: loud }\n", "1:15: 'log.level' must be one of debug, info, warn, error");
    check_error("log:\n  format: xml\n", "2:11: 'log.format' must be json or text");
    check_error("server:\n  connection_limit: 0\n",
                "2:21: 'server.connection_limit' must be a positive integer");
    check_error("server:\n  drain_timeout_s: 1.5\n",
                "2:20: 'server.drain_timeout_s' must be a positive integer");
    check_error("tokens:\n  refresh_margin_s: -1\n",
                "2:21: 'tokens.refresh_margin_s' must be a non-negative integer");
    check_error("data_dir: [a, b]\n", "1:11: 'data_dir' must be a string");
    check_error("store: ~\n", "1:8: 'store' must be a string");
    check_error("master_key_file: ''\n", "1:18: 'master_key_file' must not be empty");
    check_error("public_url: ftp://x\n", "1:13: 'public_url' must start with http:// or https://");
    check_error("providers: [hubspot]\n", "1:12: 'providers' must be a mapping");
}

static void test_error_listen(void)
{
    static const char *const bad[] = {"8080", "localhost", ":8080", "localhost:", "host:65536",
                                      "host:80:90", "[::1]8080", "[]:80", "[::1:80", "a b:80",
                                      "host:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char yaml[128], where[256];
        snprintf(yaml, sizeof yaml, "listen: \"%s\"\n", bad[i]);
        snprintf(where, sizeof where,
                 "1:9: 'listen' must be host:port or [ipv6]:port with a port from 0 to 65535, "
                 "got '%s'",
                 bad[i]);
        check_error(yaml, where);
    }
    struct pb_config *cfg = load_ok("listen: 0.0.0.0:65535\n");
    CU_ASSERT_EQUAL(cfg->listen_port, 65535);
    CU_ASSERT_STRING_EQUAL(cfg->public_url, "http://0.0.0.0:65535");
    pb_config_free(cfg);
}

static void test_error_duplicate_key(void)
{
    check_error("listen: a:1\ndata_dir: x\nlisten: b:2\n", "3:1: duplicate key 'listen'");
    check_error("egress:\n  timeout_ms: 1\n  timeout_ms: 2\n",
                "3:3: duplicate key 'egress.timeout_ms'");
    check_error("providers:\n  a: {plugin: x}\n  a: {plugin: y}\n",
                "3:3: duplicate key 'providers.a'");
    check_error("providers:\n  a:\n    plugin: x\n    id: 1\n    id: 2\n",
                "5:5: duplicate key 'providers.a.id'");
    check_error("providers:\n  a:\n    plugin: x\n    plugin: y\n",
                "4:5: duplicate key 'providers.a.plugin'");
    check_error("providers:\n  a:\n    plugin: x\n    o: [{k: 1, k: 2}]\n",
                "4:16: duplicate key 'providers.a.o[0].k'");
}

static void test_error_provider(void)
{
    check_error("providers:\n  hubspot:\n    client_id: x\n",
                "2:3: provider 'hubspot' has no 'plugin' key");
    check_error("providers:\n  hubspot: {}\n", "2:3: provider 'hubspot' has no 'plugin' key");
    check_error("providers:\n  hubspot:\n", "2:11: provider 'hubspot' must be a mapping");
    check_error("providers:\n  hubspot: [plugin]\n", "2:12: provider 'hubspot' must be a mapping");
    check_error("providers:\n  hubspot: { plugin: [a] }\n",
                "2:22: 'providers.hubspot.plugin' must be a string");
    check_error("providers:\n  hubspot: { plugin: ~ }\n",
                "2:22: 'providers.hubspot.plugin' must be a string");
    /* A self-referencing alias cannot expand forever. */
    check_error("providers:\n  p: { plugin: x, o: &a [*a] }\n",
                "2:22: provider options are nested too deeply (alias cycle?)");
    /* Nor can aliases multiply into billions of nodes. */
    char yaml[2048];
    int n = snprintf(yaml, sizeof yaml,
                     "providers:\n  p:\n    plugin: x\n    l0: &l0 [a,a,a,a,a,a,a,a,a,a]\n");
    for (int i = 1; i <= 8; i++)
        n += snprintf(yaml + n, sizeof yaml - (size_t)n,
                      "    l%d: &l%d [*l%d,*l%d,*l%d,*l%d,*l%d,*l%d,*l%d,*l%d,*l%d,*l%d]\n", i, i,
                      i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    CU_ASSERT_FATAL(n < (int)sizeof yaml);
    check_error(yaml, "4:9: provider options have too many nodes (alias expansion?)");
}

static void test_provider_names(void)
{
    /* The last one is 65 characters. */
    static const char *const bad[] = {
        "HubSpot", "-x", "_x", "a.b", "a b", "\"\"",
        "a1234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char yaml[256], where[512];
        snprintf(yaml, sizeof yaml, "providers:\n  %s: { plugin: x }\n", bad[i]);
        snprintf(where, sizeof where,
                 "2:3: invalid provider name '%s': must match [a-z0-9][a-z0-9_-]* and be at most "
                 "64 characters",
                 strcmp(bad[i], "\"\"") ? bad[i] : "");
        check_error(yaml, where);
    }
    /* 64 characters, digits first, '_' and '-' inside are fine. */
    const char *name64 = "a123456789012345678901234567890123456789012345678901234567890123";
    CU_ASSERT_EQUAL_FATAL(strlen(name64), 64);
    char yaml[256];
    snprintf(yaml, sizeof yaml, "providers:\n  %s: { plugin: x }\n  0a_b-c: { plugin: y }\n",
             name64);
    struct pb_config *cfg = load_ok(yaml);
    CU_ASSERT_EQUAL_FATAL(cfg->n_providers, 2);
    CU_ASSERT_STRING_EQUAL(cfg->providers[0].name, name64);
    CU_ASSERT_STRING_EQUAL(cfg->providers[1].name, "0a_b-c");
    CU_ASSERT_STRING_EQUAL(cfg->providers[1].plugin, "y");
    CU_ASSERT_EQUAL(json_object_size(cfg->providers[1].options), 0);
    check_pos(cfg->providers[1].positions, "plugin", 3, 13);
    pb_config_free(cfg);
}

static void test_env_expansion(void)
{
    setenv("PBT_DIR", "/opt/pb", 1);
    setenv("PBT_HOST", "example.test", 1);
    setenv("PBT_PORT", "7000", 1);
    setenv("PBT_TIMEOUT", "2500", 1);
    setenv("PBT_PLUGIN", "hubspot", 1);
    setenv("PBT_SECRET", "s3cr3t", 1);
    setenv("PBT_EMPTY", "", 1);
    struct pb_config *cfg = load_ok(
        "data_dir: ${PBT_DIR}/data\n"
        "listen: ${PBT_HOST}:${PBT_PORT}\n"
        "egress:\n"
        "  timeout_ms: ${PBT_TIMEOUT}\n"
        "  http_proxy: 'http://${PBT_HOST}:3128'\n"
        "  connect_to: [\"${PBT_HOST}:443:127.0.0.1:${PBT_PORT}\"]\n"
        "providers:\n"
        "  hub:\n"
        "    plugin: ${PBT_PLUGIN}\n"
        "    client_secret: \"${PBT_SECRET}\"\n"
        "    literal: $PBT_SECRET and $${PBT_SECRET} and $ {x}\n"
        /* In flow collections '{' and '}' are indicators: quote ${...} there. */
        "    list:\n"
        "      - \"${PBT_SECRET}\"\n"
        "      - x${PBT_EMPTY}y\n"
        "      - { k: \"${PBT_PORT}\" }\n");
    CU_ASSERT_STRING_EQUAL(cfg->data_dir, "/opt/pb/data");
    CU_ASSERT_STRING_EQUAL(cfg->store, "sqlite:/opt/pb/data/plugboard.db");
    CU_ASSERT_STRING_EQUAL(cfg->master_key_file, "/opt/pb/data/master.key");
    CU_ASSERT_STRING_EQUAL(cfg->listen_host, "example.test");
    CU_ASSERT_EQUAL(cfg->listen_port, 7000);
    CU_ASSERT_STRING_EQUAL(cfg->public_url, "http://example.test:7000");
    CU_ASSERT_EQUAL(cfg->egress.timeout_ms, 2500);
    CU_ASSERT_STRING_EQUAL(cfg->egress.http_proxy, "http://example.test:3128");
    CU_ASSERT_EQUAL_FATAL(cfg->egress.n_connect_to, 1);
    CU_ASSERT_STRING_EQUAL(cfg->egress.connect_to[0], "example.test:443:127.0.0.1:7000");
    CU_ASSERT_EQUAL_FATAL(cfg->n_providers, 1);
    const struct pb_provider_cfg *hub = &cfg->providers[0];
    CU_ASSERT_STRING_EQUAL(hub->plugin, "hubspot");
    json_t *want = json_pack("{s:s, s:s, s:[s, s, {s:s}]}", "client_secret", "s3cr3t", "literal",
                             "$PBT_SECRET and $s3cr3t and $ {x}", "list", "s3cr3t", "xy", "k",
                             "7000");
    CU_ASSERT_TRUE(json_equal(hub->options, want));
    json_decref(want);
    pb_config_free(cfg);
    unsetenv("PBT_DIR");
    unsetenv("PBT_HOST");
    unsetenv("PBT_PORT");
    unsetenv("PBT_TIMEOUT");
    unsetenv("PBT_PLUGIN");
    unsetenv("PBT_SECRET");
    unsetenv("PBT_EMPTY");
}

static void test_env_errors(void)
{
    unsetenv("PBT_UNSET_VAR");
    check_error("providers:\n  hub:\n    plugin: hubspot\n    client_secret: ${PBT_UNSET_VAR}\n",
                "4:20: environment variable PBT_UNSET_VAR is not set");
    check_error("providers:\n  hub:\n    plugin: x\n    o: { a: [1, \"pre-${PBT_UNSET_VAR}\"] }\n",
                "4:17: environment variable PBT_UNSET_VAR is not set");
    check_error("data_dir: /x/${PBT_UNSET_VAR}/y\n",
                "1:11: environment variable PBT_UNSET_VAR is not set");
    check_error("egress:\n  timeout_ms: ${PBT_UNSET_VAR}\n",
                "2:15: environment variable PBT_UNSET_VAR is not set");
    check_error("data_dir: ${PBT_DIR\n", "1:11: unterminated '${' (missing '}')");
    check_error("data_dir: ${1X}\n", "1:11: invalid environment variable reference '${1X}'");
    check_error("data_dir: a${}b\n", "1:11: invalid environment variable reference '${}'");
    check_error("data_dir: ${A-B}\n", "1:11: invalid environment variable reference '${A-B}'");
    /* An expanded value must still have the right type. */
    setenv("PBT_WORD", "soon", 1);
    check_error("egress:\n  timeout_ms: ${PBT_WORD}\n",
                "2:15: 'egress.timeout_ms' must be a positive integer");
    unsetenv("PBT_WORD");
}

static void test_connect_to(void)
{
    struct pb_config *cfg = load_ok("egress:\n"
                                    "  connect_to:\n"
                                    "    - a.example:443:127.0.0.1:8443\n"
                                    "    - \"[2001:db8::1]:443:[::1]:9000\"\n"
                                    "    - \"::127.0.0.1:8080\"\n"
                                    "    - \"login.example:443::\"\n");
    CU_ASSERT_EQUAL_FATAL(cfg->egress.n_connect_to, 4);
    CU_ASSERT_STRING_EQUAL(cfg->egress.connect_to[0], "a.example:443:127.0.0.1:8443");
    CU_ASSERT_STRING_EQUAL(cfg->egress.connect_to[1], "[2001:db8::1]:443:[::1]:9000");
    CU_ASSERT_STRING_EQUAL(cfg->egress.connect_to[2], "::127.0.0.1:8080");
    CU_ASSERT_STRING_EQUAL(cfg->egress.connect_to[3], "login.example:443::");
    CU_ASSERT_PTR_NULL(cfg->egress.connect_to[4]);
    pb_config_free(cfg);

    static const char *const bad[] = {"a:443:b", "a:443:b:80:c", "a:https:b:80", "a:443:b:70000",
                                      "a:443:b:0", "[::1:443:b:80", "a b:443:c:80", "a:443:b:80 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char yaml[256], where[512];
        snprintf(yaml, sizeof yaml, "egress:\n  connect_to:\n    - x:1:y:2\n    - \"%s\"\n", bad[i]);
        snprintf(where, sizeof where,
                 "4:7: 'egress.connect_to[1]' must be host:port:addr:port, got '%s'", bad[i]);
        check_error(yaml, where);
    }
    check_error("egress:\n  connect_to: [[a]]\n", "2:16: 'egress.connect_to[0]' must be a string");
    check_error("egress:\n  connect_to: [~]\n", "2:16: 'egress.connect_to[0]' must be a string");
}

int main(int argc, char **argv)
{
    CU_TestInfo tests[] = {
        {"full_config", test_full_config},
        {"defaults", test_defaults},
        {"derived_defaults", test_derived_defaults},
        {"relative_path", test_relative_path},
        {"error_unreadable", test_error_unreadable},
        {"error_syntax", test_error_syntax},
        {"error_top_level", test_error_top_level},
        {"error_unknown_key", test_error_unknown_key},
        {"error_wrong_type", test_error_wrong_type},
        {"error_listen", test_error_listen},
        {"error_duplicate_key", test_error_duplicate_key},
        {"error_provider", test_error_provider},
        {"provider_names", test_provider_names},
        {"env_expansion", test_env_expansion},
        {"env_errors", test_env_errors},
        {"connect_to", test_connect_to},
        CU_TEST_INFO_NULL,
    };
    return pbt_main(argc, argv, "config", tests);
}
