/* The loader against the real built plugins and deliberately broken ones. */
#include "config.h"
#include "loader.h"
#include "testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char plugin_dir[512];
static char err[1024];

/* A fresh plugin dir per test holding the named built modules. */
static void fresh_dir(const char *const *names, const char *const *as)
{
    static int n;
    snprintf(plugin_dir, sizeof plugin_dir, "%s/plugins%d", pbt_tmpdir(), ++n);
    CU_ASSERT_FATAL(mkdir(plugin_dir, 0755) == 0);
    for (size_t i = 0; names && names[i]; i++)
        CU_ASSERT_FATAL(pbt_install_plugin(names[i], plugin_dir, as[i]) == 0);
}

/* Writes a config with the given providers block and loads plugins. */
static int load(const char *providers, struct pb_config **cfg, struct pb_registry **reg)
{
    static int n;
    char name[64], text[4096];
    snprintf(name, sizeof name, "cfg%d.yaml", ++n);
    char *path = pbt_path(name);
    snprintf(text, sizeof text, "plugin_dir: %s\nproviders:\n%s", plugin_dir, providers);
    CU_ASSERT_FATAL(pbt_write_file(path, text) == 0);
    err[0] = '\0';
    int rc = pb_config_load(path, cfg, err, sizeof err);
    free(path);
    CU_ASSERT_FATAL(rc == 0);
    *reg = NULL;
    return pb_registry_load(*cfg, reg, err, sizeof err);
}

/* 1 when a file of that name is mapped into this process. */
static int mapped(const char *needle)
{
    char *maps = pbt_read_file("/proc/self/maps", NULL);
    int found = maps && strstr(maps, needle) != NULL;
    free(maps);
    return found;
}

static void test_loads_in_tree_plugins(void)
{
    const char *names[] = {"hubspot", "salesforce", "generic", NULL};
    fresh_dir(names, names);
    struct pb_config *cfg;
    struct pb_registry *reg;
    int rc = load("  hubspot: {plugin: hubspot, client_id: a, client_secret: b}\n"
                  "  salesforce: {plugin: salesforce, client_id: a, client_secret: b}\n"
                  "  mail: {plugin: generic, base_url: 'https://api.example.com'}\n",
                  &cfg, &reg);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(reg->n, 3);
    CU_ASSERT_EQUAL(reg->n_files, 3);
    char caps[256];
    const struct pb_provider *hs = pb_registry_find(reg, "hubspot");
    CU_ASSERT_PTR_NOT_NULL_FATAL(hs);
    pb_caps_names(pb_provider_caps(hs), caps, sizeof caps);
    CU_ASSERT_STRING_EQUAL(caps,
                           "write,batch,associations,delete,oauth2_refresh,oauth2_connect,read");
    const struct pb_provider *sf = pb_registry_find(reg, "salesforce");
    CU_ASSERT_PTR_NOT_NULL_FATAL(sf);
    pb_caps_names(pb_provider_caps(sf), caps, sizeof caps);
    CU_ASSERT_STRING_EQUAL(
        caps, "write,batch,delete,header_passthrough,oauth2_refresh,oauth2_connect,read");
    const struct pb_provider *g = pb_registry_find(reg, "mail");
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_STRING_EQUAL(g->vt->name, "generic");
    CU_ASSERT_EQUAL(pb_provider_caps(g) & (PB_CAP_BATCH | PB_CAP_ASSOCIATIONS | PB_CAP_DELETE |
                                           PB_CAP_HEADER_PASSTHROUGH | PB_CAP_READ),
                    0);
    CU_ASSERT_EQUAL(hs->vt->abi_major, PB_PLUGIN_ABI_MAJOR);
    CU_ASSERT_EQUAL(hs->vt->abi_minor, 1);
    CU_ASSERT_PTR_NOT_NULL(hs->vt->encode_read_batch);
    CU_ASSERT_PTR_NOT_NULL(sf->vt->decode_read_batch);
    CU_ASSERT_EQUAL(hs->vt->max_batch_size, 100);
    CU_ASSERT_PTR_NULL(pb_registry_find(reg, "nope"));
    CU_ASSERT_TRUE(mapped("/hubspot.so"));
    pb_registry_free(reg);
    CU_ASSERT_FALSE(mapped(plugin_dir));
    pb_config_free(cfg);
}

/* A plugin built against ABI 1.0 (PB_PLUGIN_ABI_MINOR 0) still loads: its
 * struct_size ends before the 1.1 read slots, so they read as absent even
 * though the bytes past its struct hold something. */
static void test_abi_1_0_plugin_loads_without_read(void)
{
    const char *names[] = {"tests/plugins/abi_v10", NULL}, *as[] = {"v10", NULL};
    fresh_dir(names, as);
    struct pb_config *cfg;
    struct pb_registry *reg;
    int rc = load("  crm: {plugin: v10}\n", &cfg, &reg);
    if (rc != 0)
        fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    const struct pb_provider *p = pb_registry_find(reg, "crm");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(p->vt->name, "abi_v10");
    CU_ASSERT_EQUAL(p->vt->abi_major, PB_PLUGIN_ABI_MAJOR);
    CU_ASSERT_EQUAL(p->vt->abi_minor, 0);
    CU_ASSERT_EQUAL(p->vt->struct_size, offsetof(struct pb_plugin, encode_read));
    CU_ASSERT_PTR_NOT_NULL(p->vt->apply_credentials);
    CU_ASSERT_PTR_NULL(p->vt->encode_read);
    CU_ASSERT_PTR_NULL(p->vt->decode_read);
    CU_ASSERT_PTR_NULL(p->vt->encode_read_batch);
    CU_ASSERT_PTR_NULL(p->vt->decode_read_batch);
    CU_ASSERT_EQUAL(pb_provider_caps(p) & PB_CAP_READ, 0);
    char caps[128];
    pb_caps_names(pb_provider_caps(p), caps, sizeof caps);
    CU_ASSERT_STRING_EQUAL(caps, "none");
    pb_registry_free(reg);
    pb_config_free(cfg);
}

static void test_two_providers_share_one_file(void)
{
    const char *names[] = {"generic", NULL};
    fresh_dir(names, names);
    struct pb_config *cfg;
    struct pb_registry *reg;
    int rc = load("  a: {plugin: generic, base_url: 'https://a.example.com'}\n"
                  "  b: {plugin: generic, base_url: 'https://b.example.com'}\n",
                  &cfg, &reg);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(reg->n, 2);
    CU_ASSERT_EQUAL(reg->n_files, 1);
    CU_ASSERT_PTR_EQUAL(reg->providers[0].file, reg->providers[1].file);
    pb_registry_free(reg);
    pb_config_free(cfg);
}

/* Loads one provider that must fail; checks the message and that nothing
 * stays mapped. */
static void expect_failure(const char *providers, const char *want1, const char *want2)
{
    struct pb_config *cfg;
    struct pb_registry *reg;
    int rc = load(providers, &cfg, &reg);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NULL(reg);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        fprintf(stderr, "\nunexpected message: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want1));
    if (want2)
        CU_ASSERT_PTR_NOT_NULL(strstr(err, want2));
    CU_ASSERT_PTR_NULL(strchr(err, '\n'));
    CU_ASSERT_FALSE(mapped(plugin_dir));
    pb_config_free(cfg);
}

static void test_not_found(void)
{
    fresh_dir(NULL, NULL);
    char want[700];
    snprintf(want, sizeof want, "%s/acme.so: plugin 'acme' for provider 'crm' not found",
             plugin_dir);
    expect_failure("  crm: {plugin: acme}\n", want, NULL);
}

static void test_not_a_shared_object(void)
{
    fresh_dir(NULL, NULL);
    char path[700];
    snprintf(path, sizeof path, "%s/junk.so", plugin_dir);
    CU_ASSERT_FATAL(pbt_write_file(path, "this is not an ELF file\n") == 0);
    char want[800];
    snprintf(want, sizeof want, "%s: not a loadable shared object", path);
    expect_failure("  crm: {plugin: junk}\n", want, NULL);
}

static void test_missing_symbol(void)
{
    const char *names[] = {"tests/plugins/no_symbol", NULL}, *as[] = {"nosym", NULL};
    fresh_dir(names, as);
    char want[800];
    snprintf(want, sizeof want, "%s/nosym.so: not a plugboard plugin: missing symbol pb_plugin_entry",
             plugin_dir);
    expect_failure("  crm: {plugin: nosym}\n", want, NULL);
}

static void test_abi_newer(void)
{
    const char *names[] = {"tests/plugins/abi_newer", NULL}, *as[] = {"newer", NULL};
    fresh_dir(names, as);
    char want[800], both[200];
    snprintf(want, sizeof want, "%s/newer.so: plugin ABI %d.", plugin_dir, PB_PLUGIN_ABI_MAJOR + 1);
    snprintf(both, sizeof both, "is incompatible with plugboard's ABI %d.%d (major version differs)",
             PB_PLUGIN_ABI_MAJOR, PB_PLUGIN_ABI_MINOR);
    expect_failure("  crm: {plugin: newer}\n", want, both);
}

static void test_abi_older(void)
{
    const char *names[] = {"tests/plugins/abi_older", NULL}, *as[] = {"older", NULL};
    fresh_dir(names, as);
    char want[800], both[200];
    snprintf(want, sizeof want, "%s/older.so: plugin ABI 0.", plugin_dir);
    snprintf(both, sizeof both, "plugboard's ABI %d.%d", PB_PLUGIN_ABI_MAJOR, PB_PLUGIN_ABI_MINOR);
    expect_failure("  crm: {plugin: older}\n", want, both);
}

static void test_init_fails(void)
{
    const char *names[] = {"tests/plugins/init_fails", NULL}, *as[] = {"initfail", NULL};
    fresh_dir(names, as);
    char want[800];
    snprintf(want, sizeof want,
             "%s/initfail.so: init failed for provider 'crm': missing api_token option",
             plugin_dir);
    expect_failure("  crm: {plugin: initfail}\n", want, NULL);
}

static void test_duplicate_name(void)
{
    const char *names[] = {"hubspot", "tests/plugins/dup_name", NULL},
               *as[] = {"hubspot", "hubspot2", NULL};
    fresh_dir(names, as);
    char want[800];
    snprintf(want, sizeof want, "%s/hubspot2.so: duplicate provider plugin name 'hubspot'",
             plugin_dir);
    expect_failure("  hubspot: {plugin: hubspot}\n  other: {plugin: hubspot2}\n", want, NULL);
}

static void test_symlink_refused(void)
{
    const char *names[] = {"generic", NULL}, *as[] = {"real", NULL};
    fresh_dir(names, as);
    char link[700], target[700];
    snprintf(target, sizeof target, "%s/real.so", plugin_dir);
    snprintf(link, sizeof link, "%s/linked.so", plugin_dir);
    CU_ASSERT_FATAL(symlink(target, link) == 0);
    char want[800];
    snprintf(want, sizeof want, "%s: refusing to load a symbolic link", link);
    expect_failure("  crm: {plugin: linked, base_url: 'https://x.example.com'}\n", want, NULL);
}

static void test_unknown_option_names_position(void)
{
    const char *names[] = {"hubspot", NULL};
    fresh_dir(names, names);
    /* The provider block starts on line 3: plugin_dir, providers:, then it. */
    expect_failure("  hubspot:\n    plugin: hubspot\n    client_idd: x\n",
                   ":5:5: unknown key 'client_idd' for provider 'hubspot' (plugin 'hubspot' accepts: ",
                   "client_id");
}

static void test_failure_unloads_earlier_plugins(void)
{
    const char *names[] = {"hubspot", "tests/plugins/init_fails", NULL},
               *as[] = {"hubspot", "initfail", NULL};
    fresh_dir(names, as);
    expect_failure("  hubspot: {plugin: hubspot}\n  crm: {plugin: initfail}\n",
                   "init failed for provider 'crm'", NULL);
}

static void test_caps_names(void)
{
    char buf[128];
    pb_caps_names(0, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, "none");
    pb_caps_names(PB_CAP_DELETE | PB_CAP_WRITE, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, "write,delete");
    CU_ASSERT_STRING_EQUAL(pb_cap_name(PB_CAP_ASSOCIATIONS), "associations");
    CU_ASSERT_STRING_EQUAL(pb_cap_name(PB_CAP_HEADER_PASSTHROUGH), "header_passthrough");
    CU_ASSERT_STRING_EQUAL(pb_cap_name(PB_CAP_READ), "read");
    pb_caps_names(PB_CAP_READ | PB_CAP_WRITE, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, "write,read");
}

static CU_TestInfo tests[] = {
    {"loads_in_tree_plugins", test_loads_in_tree_plugins},
    {"abi_1_0_plugin_loads_without_read", test_abi_1_0_plugin_loads_without_read},
    {"two_providers_share_one_file", test_two_providers_share_one_file},
    {"not_found", test_not_found},
    {"not_a_shared_object", test_not_a_shared_object},
    {"missing_symbol", test_missing_symbol},
    {"abi_newer", test_abi_newer},
    {"abi_older", test_abi_older},
    {"init_fails", test_init_fails},
    {"duplicate_name", test_duplicate_name},
    {"symlink_refused", test_symlink_refused},
    {"unknown_option_names_position", test_unknown_option_names_position},
    {"failure_unloads_earlier_plugins", test_failure_unloads_earlier_plugins},
    {"caps_names", test_caps_names},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    return pbt_main(argc, argv, "loader", tests);
}
