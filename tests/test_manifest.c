/* amp.yaml parsing: the example manifest to exact JSON, defaults, the field
 * forms, generic delivery/backfill, anchors and merges, and every error class
 * with its exact "amp.yaml:line:col: message" text. Leaks are caught by ASan. */
#include "manifest.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD "specVersion: 1.0.0\nintegrations:\n"
#define INTEG HEAD "  - name: a\n    provider: p\n"

/* JSON written with ' for " (readable in C). */
static json_t *J(const char *text)
{
    char *s = strdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t e;
    json_t *v = json_loads(s, 0, &e);
    if (!v)
        fprintf(stderr, "\n  bad expected JSON: %s at %d:%d\n", e.text, e.line, e.column);
    free(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    return v;
}

/* Same values and the same key order. */
static void check_json(json_t *got, const char *want_text)
{
    json_t *want = J(want_text);
    char *g = json_dumps(got, JSON_COMPACT), *w = json_dumps(want, JSON_COMPACT);
    if (!json_equal(got, want) || strcmp(g, w))
        fprintf(stderr, "\n  want: %s\n  got:  %s\n", w, g);
    CU_ASSERT_TRUE(json_equal(got, want));
    CU_ASSERT_STRING_EQUAL(g, w);
    free(g);
    free(w);
    json_decref(want);
}

static json_t *parse_ok_cb(const char *yaml, int (*cb)(const char *, void *), void *ctx)
{
    json_t *out = NULL;
    char err[512] = "";
    int line = -1, col = -1;
    int rc = pb_manifest_parse(yaml, strlen(yaml), "amp.yaml", cb, ctx, &out, err, sizeof err,
                               &line, &col);
    if (rc)
        fprintf(stderr, "\n  unexpected error: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_STRING_EQUAL(err, "");
    return out;
}

static json_t *parse_ok(const char *yaml)
{
    return parse_ok_cb(yaml, NULL, NULL);
}

static void expect_ok(const char *yaml, const char *want)
{
    json_t *out = parse_ok(yaml);
    check_json(out, want);
    json_decref(out);
}

/* Parses `len` bytes, which must fail with exactly `want`
 * ("amp.yaml:L:C: message"); *out is NULL and line/col match L:C. */
static void expect_error_n(const char *yaml, size_t len, int (*cb)(const char *, void *),
                           void *ctx, const char *want)
{
    json_t *out = json_true(); /* must be overwritten with NULL */
    char err[512] = "x";
    int line = -1, col = -1, wl = 0, wc = 0;
    int rc = pb_manifest_parse(yaml, len, "amp.yaml", cb, ctx, &out, err, sizeof err, &line, &col);
    if (strcmp(err, want))
        fprintf(stderr, "\n  want: %s\n  got:  %s\n", want, err);
    CU_ASSERT_EQUAL(rc, -1);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_STRING_EQUAL(err, want);
    CU_ASSERT_EQUAL_FATAL(sscanf(want, "amp.yaml:%d:%d:", &wl, &wc), 2);
    CU_ASSERT_EQUAL(line, wl);
    CU_ASSERT_EQUAL(col, wc);
    if (rc == 0)
        json_decref(out);
}

static void expect_error(const char *yaml, const char *want)
{
    expect_error_n(yaml, strlen(yaml), NULL, NULL, want);
}

/* ---- providers ---------------------------------------------------------- */

struct enabled {
    const char *const *names;
    int calls;
    char asked[8][32];
};

static int provider_ok(const char *provider, void *ctx)
{
    struct enabled *e = ctx;
    if (e->calls < 8)
        snprintf(e->asked[e->calls], sizeof e->asked[0], "%s", provider);
    e->calls++;
    for (const char *const *n = e->names; *n; n++)
        if (!strcmp(*n, provider))
            return 1;
    return 0;
}

/* ---- the example -------------------------------------------------------- */

static const char EXAMPLE_JSON[] =
    "{'specVersion': '1.0.0', 'integrations': ["
    " {'name': 'hubspot-crm', 'provider': 'hubspot', 'displayName': 'HubSpot CRM',"
    "  'proxy': {'enabled': true},"
    "  'write': {'objects': [{'objectName': 'contacts', 'inheritMapping': true},"
    "                        {'objectName': 'companies', 'inheritMapping': false}]},"
    "  'read': {'objects': [{'objectName': 'contacts', 'destination': 'contactsWebhook',"
    "    'schedule': '*/30 * * * *',"
    "    'requiredFields': [{'fieldName': 'email'},"
    "                       {'fieldName': 'firstname', 'mapToName': 'firstName'},"
    "                       {'fieldName': 'lastname', 'mapToName': 'lastName'}],"
    "    'optionalFields': [{'fieldName': 'phone'},"
    "                       {'fieldName': 'lifecyclestage', 'mapToName': 'stage'},"
    "                       {'mapToName': 'priority', 'mapToDisplayName': 'Priority'},"
    "                       {'fieldName': 'jobtitle'}]}]}},"
    " {'name': 'salesforce-crm', 'provider': 'salesforce', 'displayName': 'Salesforce',"
    "  'proxy': {'enabled': true},"
    "  'write': {'objects': [{'objectName': 'Account', 'inheritMapping': false},"
    "                        {'objectName': 'Contact', 'inheritMapping': false}]},"
    "  'read': {'objects': [{'objectName': 'Account', 'destination': 'accountsWebhook',"
    "    'schedule': '0 */6 * * *',"
    "    'requiredFields': [{'fieldName': 'Id'}, {'fieldName': 'Name', 'mapToName': 'name'}],"
    "    'optionalFields': [{'fieldName': 'Industry', 'mapToName': 'industry'},"
    "                       {'fieldName': 'AnnualRevenue'}],"
    "    'backfill': {'defaultPeriod': {'days': 30}}}]}},"
    " {'name': 'sendgrid-email', 'provider': 'sendgrid', 'proxy': {'enabled': true},"
    "  'write': {'objects': []}, 'read': {'objects': []}}]}";

static char *read_example(size_t *len)
{
    const char *dir = getenv("PB_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/examples/amp.yaml", dir && *dir ? dir : ".");
    char *text = pbt_read_file(path, len);
    if (!text)
        fprintf(stderr, "\n  cannot read %s\n", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    return text;
}

static void test_example(void)
{
    static const char *const names[] = {"hubspot", "salesforce", "sendgrid", NULL};
    struct enabled e = {.names = names};
    size_t len;
    char *text = read_example(&len);
    json_t *out = NULL;
    char err[512] = "";
    int rc = pb_manifest_parse(text, len, "examples/amp.yaml", provider_ok, &e, &out, err,
                               sizeof err, NULL, NULL);
    if (rc)
        fprintf(stderr, "\n  unexpected error: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    check_json(out, EXAMPLE_JSON);
    CU_ASSERT_EQUAL(e.calls, 3);
    CU_ASSERT_STRING_EQUAL(e.asked[0], "hubspot");
    CU_ASSERT_STRING_EQUAL(e.asked[1], "salesforce");
    CU_ASSERT_STRING_EQUAL(e.asked[2], "sendgrid");
    json_decref(out);

    /* Without the callback every provider is accepted. */
    out = NULL;
    CU_ASSERT_EQUAL(pb_manifest_parse(text, len, "amp.yaml", NULL, NULL, &out, NULL, 0, NULL,
                                      NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(out);
    json_decref(out);
    free(text);
}

static void test_example_provider_disabled(void)
{
    static const char *const names[] = {"hubspot", "salesforce", NULL};
    struct enabled e = {.names = names};
    size_t len;
    char *text = read_example(&len);
    /* sendgrid's provider value in the example. */
    const char *at = strstr(text, "provider: sendgrid");
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    int line = 1, col = 1 + (int)strlen("provider: ");
    for (const char *p = text; p < at; p++) {
        if (*p == '\n') {
            line++;
            col = 1 + (int)strlen("provider: ");
        } else {
            col++;
        }
    }
    char want[128];
    snprintf(want, sizeof want, "amp.yaml:%d:%d: provider 'sendgrid' is not enabled in plugboard.yaml",
             line, col);
    expect_error_n(text, len, provider_ok, &e, want);
    CU_ASSERT_EQUAL(e.calls, 3);
    free(text);
}

/* ---- shapes ------------------------------------------------------------- */

static void test_defaults(void)
{
    const char *want = "{'specVersion': '1.0.0', 'integrations': [{'name': 'a', 'provider': 'p',"
                       " 'proxy': {'enabled': false}, 'write': {'objects': []},"
                       " 'read': {'objects': []}}]}";
    expect_ok(INTEG, want);
    /* Empty (null) sections are absent ones. */
    expect_ok(INTEG "    proxy:\n    write:\n    read:\n", want);
    expect_ok(INTEG "    proxy: {}\n    write: {}\n    read: {objects: }\n", want);
    expect_ok(INTEG "    proxy: {enabled: false}\n    write: {objects: []}\n", want);
    /* specVersion may be quoted; keys may come in any order. */
    expect_ok("integrations:\n  - provider: p\n    name: a\nspecVersion: '1.0.0'\n", want);

    expect_ok(INTEG "    write:\n      objects:\n        - objectName: deals\n"
                    "    read:\n      objects:\n        - objectName: deals\n",
              "{'specVersion': '1.0.0', 'integrations': [{'name': 'a', 'provider': 'p',"
              " 'proxy': {'enabled': false},"
              " 'write': {'objects': [{'objectName': 'deals', 'inheritMapping': false}]},"
              " 'read': {'objects': [{'objectName': 'deals', 'requiredFields': [],"
              " 'optionalFields': []}]}}]}");
    /* The same object may be both written and read; booleans in any core-schema case. */
    expect_ok(INTEG "    proxy: {enabled: TRUE}\n"
                    "    write: {objects: [{objectName: x, inheritMapping: True}]}\n",
              "{'specVersion': '1.0.0', 'integrations': [{'name': 'a', 'provider': 'p',"
              " 'proxy': {'enabled': true},"
              " 'write': {'objects': [{'objectName': 'x', 'inheritMapping': true}]},"
              " 'read': {'objects': []}}]}");
}

static void test_names(void)
{
    /* 64 characters, digits first, '_' and '-' are fine. */
    char yaml[512];
    snprintf(yaml, sizeof yaml, HEAD "  - name: 9%s\n    provider: p\n  - name: a_b-C\n    provider: p\n",
             "123456789012345678901234567890123456789012345678901234567890_-z");
    json_t *out = parse_ok(yaml);
    CU_ASSERT_EQUAL(strlen(json_string_value(
                        json_object_get(json_array_get(json_object_get(out, "integrations"), 0),
                                        "name"))), 64);
    json_decref(out);
}

static void test_field_forms(void)
{
    expect_ok(INTEG "    read:\n      objects:\n        - objectName: contacts\n"
                    "          requiredFields:\n"
                    "            - email\n"
                    "            - 'first name'\n"
                    "            - fieldName: lastname\n"
                    "              mapToName: lastName\n"
                    "          optionalFields: [phone, {mapToName: priority, mapToDisplayName: Priority},"
                    " {mapToName: tier}, {fieldName: x, mapToName: y, mapToDisplayName: Y}]\n",
              "{'specVersion': '1.0.0', 'integrations': [{'name': 'a', 'provider': 'p',"
              " 'proxy': {'enabled': false}, 'write': {'objects': []},"
              " 'read': {'objects': [{'objectName': 'contacts',"
              "  'requiredFields': [{'fieldName': 'email'}, {'fieldName': 'first name'},"
              "                     {'fieldName': 'lastname', 'mapToName': 'lastName'}],"
              "  'optionalFields': [{'fieldName': 'phone'},"
              "                     {'mapToName': 'priority', 'mapToDisplayName': 'Priority'},"
              "                     {'mapToName': 'tier'},"
              "                     {'fieldName': 'x', 'mapToName': 'y', 'mapToDisplayName': 'Y'}]}]}}]}");
}

static void test_delivery_backfill(void)
{
    expect_ok(INTEG "    read:\n      objects:\n        - objectName: o\n"
                    "          schedule: '*/10 * * * *'\n"
                    "          destination: hook\n"
                    "          delivery:\n"
                    "            mode: auto\n"
                    "            pageSize: 500\n"
                    "            negative: -3\n"
                    "            ratio: 0.5\n"
                    "            exp: 1e3\n"
                    "            hex: 0x1F\n"
                    "            octal: 0o17\n"
                    "            on: true\n"
                    "            off: FALSE\n"
                    "            legacy: yes\n"
                    "            nothing: ~\n"
                    "            empty:\n"
                    "            quoted: \"123\"\n"
                    "            tagged: !!str 42\n"
                    "            real: !!float 2\n"
                    "            version: 1.0.0\n"
                    "            list: [a, 1, null, {k: v}]\n"
                    "          backfill:\n"
                    "            defaultPeriod:\n"
                    "              fullHistory: true\n",
              "{'specVersion': '1.0.0', 'integrations': [{'name': 'a', 'provider': 'p',"
              " 'proxy': {'enabled': false}, 'write': {'objects': []},"
              " 'read': {'objects': [{'objectName': 'o', 'destination': 'hook',"
              "  'schedule': '*/10 * * * *', 'requiredFields': [], 'optionalFields': [],"
              "  'delivery': {'mode': 'auto', 'pageSize': 500, 'negative': -3, 'ratio': 0.5,"
              "   'exp': 1000.0, 'hex': 31, 'octal': 15, 'on': true, 'off': false,"
              "   'legacy': 'yes', 'nothing': null, 'empty': null, 'quoted': '123',"
              "   'tagged': '42', 'real': 2.0, 'version': '1.0.0', 'list': ['a', 1, null, {'k': 'v'}]},"
              "  'backfill': {'defaultPeriod': {'fullHistory': true}}}]}}]}");
}

static void test_anchors_and_merges(void)
{
    expect_ok(HEAD "  - &base\n"
                   "    name: one\n"
                   "    provider: hubspot\n"
                   "    proxy: {enabled: true}\n"
                   "    read:\n"
                   "      objects:\n"
                   "        - objectName: contacts\n"
                   "          requiredFields: &fields [email, {fieldName: firstname, mapToName: first}]\n"
                   "          delivery: &d {mode: auto}\n"
                   "        - objectName: leads\n"
                   "          requiredFields: *fields\n"
                   "          delivery: *d\n"
                   "  - <<: *base\n"
                   "    name: two\n"
                   "    write:\n"
                   "      objects:\n"
                   "        - objectName: contacts\n"
                   "  - <<: [{name: three, provider: x}, *base]\n",
              "{'specVersion': '1.0.0', 'integrations': ["
              " {'name': 'one', 'provider': 'hubspot', 'proxy': {'enabled': true},"
              "  'write': {'objects': []},"
              "  'read': {'objects': ["
              "   {'objectName': 'contacts', 'requiredFields': [{'fieldName': 'email'},"
              "    {'fieldName': 'firstname', 'mapToName': 'first'}], 'optionalFields': [],"
              "    'delivery': {'mode': 'auto'}},"
              "   {'objectName': 'leads', 'requiredFields': [{'fieldName': 'email'},"
              "    {'fieldName': 'firstname', 'mapToName': 'first'}], 'optionalFields': [],"
              "    'delivery': {'mode': 'auto'}}]}},"
              " {'name': 'two', 'provider': 'hubspot', 'proxy': {'enabled': true},"
              "  'write': {'objects': [{'objectName': 'contacts', 'inheritMapping': false}]},"
              "  'read': {'objects': ["
              "   {'objectName': 'contacts', 'requiredFields': [{'fieldName': 'email'},"
              "    {'fieldName': 'firstname', 'mapToName': 'first'}], 'optionalFields': [],"
              "    'delivery': {'mode': 'auto'}},"
              "   {'objectName': 'leads', 'requiredFields': [{'fieldName': 'email'},"
              "    {'fieldName': 'firstname', 'mapToName': 'first'}], 'optionalFields': [],"
              "    'delivery': {'mode': 'auto'}}]}},"
              " {'name': 'three', 'provider': 'x', 'proxy': {'enabled': true},"
              "  'write': {'objects': []},"
              "  'read': {'objects': ["
              "   {'objectName': 'contacts', 'requiredFields': [{'fieldName': 'email'},"
              "    {'fieldName': 'firstname', 'mapToName': 'first'}], 'optionalFields': [],"
              "    'delivery': {'mode': 'auto'}},"
              "   {'objectName': 'leads', 'requiredFields': [{'fieldName': 'email'},"
              "    {'fieldName': 'firstname', 'mapToName': 'first'}], 'optionalFields': [],"
              "    'delivery': {'mode': 'auto'}}]}}]}");
    /* An anchor cannot refer to the node that contains it. */
    expect_error(HEAD "  - &x {name: a, provider: p, read: *x}\n",
                 "amp.yaml:3:37: unknown alias '*x'");
    expect_error("a: *nope\n", "amp.yaml:1:4: unknown alias '*nope'");
    expect_error("a: &x 1\nb:\n  <<: *x\n",
                 "amp.yaml:3:7: '<<' takes a mapping or a sequence of mappings in b");
    expect_error("a: &x {k: 1}\nb:\n  <<: [*x, 2]\n",
                 "amp.yaml:3:12: '<<' takes a mapping or a sequence of mappings in b");
}

/* ---- errors ------------------------------------------------------------- */

/* Ampersand's extra read-object keys are kept as they are, not refused. */
static void test_ampersand_read_keys_kept(void)
{
    const char *text = "specVersion: 1.0.0\nintegrations:\n  - name: a\n    provider: p\n"
                       "    read:\n      objects:\n        - objectName: contacts\n"
                       "          optionalFieldsAuto: all\n          mapToName: people\n"
                       "          mapToDisplayName: People\n";
    json_t *out = NULL;
    char err[256] = "";
    int rc = pb_manifest_parse(text, strlen(text), "amp.yaml", NULL, NULL, &out, err, sizeof err,
                               NULL, NULL);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    json_t *obj = json_array_get(
        json_object_get(json_object_get(json_array_get(json_object_get(out, "integrations"), 0),
                                        "read"),
                        "objects"),
        0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(obj, "optionalFieldsAuto")), "all");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(obj, "mapToName")), "people");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(obj, "mapToDisplayName")), "People");
    json_decref(out);
}

static void test_syntax_errors(void)
{
    expect_error(HEAD "  - name: a\n    provider: p\n   proxy: {}\n",
                 "amp.yaml:5:4: invalid YAML: did not find expected '-' indicator while "
                 "parsing a block collection that starts at 3:3");
    expect_error("specVersion: 1.0.0\nintegrations: [\n",
                 "amp.yaml:3:1: invalid YAML: did not find expected node content");
    expect_error("a: [1, 2\nb: 3\n",
                 "amp.yaml:2:2: invalid YAML: did not find expected ',' or ']' while parsing "
                 "a flow sequence that starts at 1:4");
    expect_error("a: b\n  c: d\n",
                 "amp.yaml:2:4: invalid YAML: mapping values are not allowed in this context");
    expect_error("a:\n\tb: 1\n",
                 "amp.yaml:2:1: invalid YAML: found character that cannot start any token");
    expect_error("a: 'b\n", "amp.yaml:2:1: invalid YAML: found unexpected end of stream while "
                            "scanning a quoted scalar that starts at 1:4");
    expect_error("a: \"\xff\"\n", "amp.yaml:1:5: invalid YAML: invalid leading UTF-8 octet");
    expect_error("a: b\nc: \x01\n",
                 "amp.yaml:2:4: invalid YAML: control characters are not allowed");
    expect_error_n("a: 1\0\n", 6, NULL, NULL,
                   "amp.yaml:1:5: invalid YAML: control characters are not allowed");
}

static void test_document_errors(void)
{
    expect_error("", "amp.yaml:1:1: the manifest is empty");
    expect_error("# nothing here\n", "amp.yaml:1:1: the manifest is empty");
    expect_error("---\n", "amp.yaml:2:1: the manifest is empty");
    expect_error("- a\n- b\n", "amp.yaml:1:1: the manifest must be a mapping");
    expect_error("just text\n", "amp.yaml:1:1: the manifest must be a mapping");
    expect_error(HEAD "  - {name: a, provider: p}\n---\nx: 1\n",
                 "amp.yaml:4:1: a manifest is a single YAML document");
    expect_error("? [a]\n: b\n", "amp.yaml:1:3: mapping keys must be strings at the top level");
    expect_error("specVersion: \"1.0.0\\0\"\n",
                 "amp.yaml:1:14: specVersion must not contain NUL characters");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: o\n"
                       "          delivery: {\"a\\0b\": 1}\n",
                 "amp.yaml:8:22: keys must not contain NUL characters in "
                 "integrations[0].read.objects[0].delivery");
}

static void test_spec_version(void)
{
    expect_error("integrations: []\n", "amp.yaml:1:1: specVersion is missing");
    expect_error("specVersion: 2.0.0\nintegrations: []\n",
                 "amp.yaml:1:14: unsupported specVersion '2.0.0' (expected 1.0.0)");
    expect_error("specVersion: 1.0\nintegrations: []\n",
                 "amp.yaml:1:14: unsupported specVersion '1.0' (expected 1.0.0)");
    expect_error("specVersion: [1]\n", "amp.yaml:1:14: specVersion must be a string");
    expect_error("specVersion:\n", "amp.yaml:1:13: specVersion must be a string");
}

static void test_integrations_list(void)
{
    expect_error("specVersion: 1.0.0\n", "amp.yaml:1:1: integrations is missing");
    expect_error(HEAD, "amp.yaml:2:14: integrations must be a sequence");
    expect_error("specVersion: 1.0.0\nintegrations: {a: 1}\n",
                 "amp.yaml:2:15: integrations must be a sequence");
    expect_error("specVersion: 1.0.0\nintegrations: []\n",
                 "amp.yaml:2:15: integrations must not be empty");
    expect_error(HEAD "  - hubspot\n", "amp.yaml:3:5: integrations[0] must be a mapping");
}

static void test_integration_name(void)
{
    expect_error(HEAD "  - provider: p\n", "amp.yaml:3:5: integrations[0].name is missing");
    expect_error(HEAD "  - name: {x: 1}\n    provider: p\n",
                 "amp.yaml:3:11: integrations[0].name must be a string");
    expect_error(HEAD "  - name: ''\n    provider: p\n",
                 "amp.yaml:3:11: integrations[0].name must not be empty");
    expect_error(HEAD "  - name: bad name\n    provider: p\n",
                 "amp.yaml:3:11: integrations[0].name 'bad name' is not a valid name (letters, "
                 "digits, '_' and '-', starting with a letter or digit, at most 64 characters)");
    expect_error(HEAD "  - {name: a, provider: p}\n  - name: _a\n    provider: p\n",
                 "amp.yaml:4:11: integrations[1].name '_a' is not a valid name (letters, "
                 "digits, '_' and '-', starting with a letter or digit, at most 64 characters)");
    char yaml[512], want[512];
    const char *n65 = "a1234567890123456789012345678901234567890123456789012345678901234";
    snprintf(yaml, sizeof yaml, HEAD "  - name: %s\n    provider: p\n", n65);
    snprintf(want, sizeof want,
             "amp.yaml:3:11: integrations[0].name '%s' is not a valid name (letters, digits, "
             "'_' and '-', starting with a letter or digit, at most 64 characters)", n65);
    expect_error(yaml, want);
    expect_error(HEAD "  - name: a\n    provider: p\n  - name: b\n    provider: p\n"
                      "  - name: a\n    provider: q\n",
                 "amp.yaml:7:11: duplicate integration name 'a' (first at 3:11)");
}

static void test_provider(void)
{
    expect_error(HEAD "  - name: a\n", "amp.yaml:3:5: integrations[0].provider is missing");
    expect_error(HEAD "  - name: a\n    provider: ''\n",
                 "amp.yaml:4:15: integrations[0].provider must not be empty");
    expect_error(HEAD "  - name: a\n    provider: [x]\n",
                 "amp.yaml:4:15: integrations[0].provider must be a string");

    static const char *const names[] = {"hubspot", NULL};
    struct enabled e = {.names = names};
    const char *yaml = HEAD "  - name: a\n    provider: hubspot\n"
                            "  - name: b\n    provider: zendesk\n";
    expect_error_n(yaml, strlen(yaml), provider_ok, &e,
                   "amp.yaml:6:15: provider 'zendesk' is not enabled in plugboard.yaml");
    CU_ASSERT_EQUAL(e.calls, 2);
    CU_ASSERT_STRING_EQUAL(e.asked[0], "hubspot");
    CU_ASSERT_STRING_EQUAL(e.asked[1], "zendesk");

    /* An alias reports where it is used. */
    struct enabled e2 = {.names = names};
    yaml = HEAD "  - name: a\n    provider: &p salesforce\n";
    expect_error_n(yaml, strlen(yaml), provider_ok, &e2,
                   "amp.yaml:4:15: provider 'salesforce' is not enabled in plugboard.yaml");
    yaml = HEAD "  - name: a\n    displayName: &p salesforce\n    provider: *p\n";
    expect_error_n(yaml, strlen(yaml), provider_ok, &e2,
                   "amp.yaml:5:15: provider 'salesforce' is not enabled in plugboard.yaml");
}

static void test_unknown_keys(void)
{
    expect_error("specVersion: 1.0.0\nfoo: 1\nintegrations: []\n",
                 "amp.yaml:2:1: unknown key 'foo' at the top level");
    expect_error(INTEG "    foo: 1\n", "amp.yaml:5:5: unknown key 'foo' in integrations[0]");
    expect_error(INTEG "    proxy: {enabled: true, foo: 1}\n",
                 "amp.yaml:5:28: unknown key 'foo' in integrations[0].proxy");
    expect_error(INTEG "    write:\n      foo: 1\n",
                 "amp.yaml:6:7: unknown key 'foo' in integrations[0].write");
    expect_error(INTEG "    read:\n      objects: []\n      foo: 1\n",
                 "amp.yaml:7:7: unknown key 'foo' in integrations[0].read");
    expect_error(INTEG "    write:\n      objects:\n        - objectName: x\n          foo: 1\n",
                 "amp.yaml:8:11: unknown key 'foo' in integrations[0].write.objects[0]");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: x\n"
                       "          optionalFieldz: all\n",
                 "amp.yaml:8:11: unknown key 'optionalFieldz' in "
                 "integrations[0].read.objects[0]");
    /* write objects do not take read keys. */
    expect_error(INTEG "    write:\n      objects:\n        - objectName: x\n"
                       "          requiredFields: []\n",
                 "amp.yaml:8:11: unknown key 'requiredFields' in integrations[0].write.objects[0]");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: x\n"
                       "          requiredFields:\n            - fieldName: a\n              foo: b\n",
                 "amp.yaml:10:15: unknown key 'foo' in "
                 "integrations[0].read.objects[0].requiredFields[0]");
}

static void test_duplicate_keys(void)
{
    expect_error("specVersion: 1.0.0\nspecVersion: 1.0.0\n",
                 "amp.yaml:2:1: duplicate key 'specVersion' at the top level");
    expect_error(INTEG "    name: b\n", "amp.yaml:5:5: duplicate key 'name' in integrations[0]");
    expect_error(INTEG "    proxy: {enabled: true, enabled: false}\n",
                 "amp.yaml:5:28: duplicate key 'enabled' in integrations[0].proxy");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: x\n"
                       "          requiredFields:\n            - {fieldName: a, fieldName: b}\n",
                 "amp.yaml:9:30: duplicate key 'fieldName' in "
                 "integrations[0].read.objects[0].requiredFields[0]");
    /* Also in generic parts, and between two spellings of one key. */
    expect_error(INTEG "    read:\n      objects:\n        - objectName: x\n"
                       "          delivery: {mode: auto, 'mode': x}\n",
                 "amp.yaml:8:34: duplicate key 'mode' in integrations[0].read.objects[0].delivery");
}

static void test_objects(void)
{
    expect_error(INTEG "    write:\n      objects:\n        - inheritMapping: true\n",
                 "amp.yaml:7:11: integrations[0].write.objects[0].objectName is missing");
    expect_error(INTEG "    read:\n      objects:\n        - destination: x\n",
                 "amp.yaml:7:11: integrations[0].read.objects[0].objectName is missing");
    expect_error(INTEG "    write:\n      objects:\n        - objectName: ''\n",
                 "amp.yaml:7:23: integrations[0].write.objects[0].objectName must not be empty");
    expect_error(INTEG "    write:\n      objects:\n        - objectName: contacts\n"
                       "        - objectName: companies\n        - objectName: contacts\n",
                 "amp.yaml:9:23: duplicate objectName 'contacts' in integrations[0].write.objects "
                 "(first at 7:23)");
    expect_error(INTEG "    read:\n      objects: [{objectName: a}, {objectName: a}]\n",
                 "amp.yaml:6:47: duplicate objectName 'a' in integrations[0].read.objects "
                 "(first at 6:30)");
    expect_error(INTEG "    write:\n      objects:\n        - contacts\n",
                 "amp.yaml:7:11: integrations[0].write.objects[0] must be a mapping");
}

static void test_types(void)
{
    expect_error(INTEG "    proxy:\n      enabled: yes\n",
                 "amp.yaml:6:16: integrations[0].proxy.enabled must be true or false");
    expect_error(INTEG "    proxy:\n      enabled: \"true\"\n",
                 "amp.yaml:6:16: integrations[0].proxy.enabled must be true or false");
    expect_error(INTEG "    proxy: {enabled: 1}\n",
                 "amp.yaml:5:22: integrations[0].proxy.enabled must be true or false");
    expect_error(INTEG "    proxy: {enabled: }\n",
                 "amp.yaml:5:22: integrations[0].proxy.enabled must be true or false");
    expect_error(INTEG "    proxy: true\n", "amp.yaml:5:12: integrations[0].proxy must be a mapping");
    expect_error(INTEG "    displayName: [x]\n",
                 "amp.yaml:5:18: integrations[0].displayName must be a string");
    expect_error(INTEG "    write: [contacts]\n",
                 "amp.yaml:5:12: integrations[0].write must be a mapping");
    expect_error(INTEG "    write:\n      objects: {contacts: {}}\n",
                 "amp.yaml:6:16: integrations[0].write.objects must be a sequence");
    expect_error(INTEG "    write:\n      objects:\n        - objectName: c\n"
                       "          inheritMapping: \"yes\"\n",
                 "amp.yaml:8:27: integrations[0].write.objects[0].inheritMapping must be true or "
                 "false");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          schedule: {every: 5m}\n",
                 "amp.yaml:8:21: integrations[0].read.objects[0].schedule must be a string");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          requiredFields: {email: 1}\n",
                 "amp.yaml:8:27: integrations[0].read.objects[0].requiredFields must be a sequence");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          optionalFields: email\n",
                 "amp.yaml:8:27: integrations[0].read.objects[0].optionalFields must be a sequence");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          requiredFields: [[email]]\n",
                 "amp.yaml:8:28: integrations[0].read.objects[0].requiredFields[0] must be a field "
                 "name or a mapping");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          requiredFields: [{mapToDisplayName: X}]\n",
                 "amp.yaml:8:28: integrations[0].read.objects[0].requiredFields[0] needs "
                 "fieldName or mapToName");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          requiredFields: [{fieldName: x, mapToDisplayName: X}]\n",
                 "amp.yaml:8:43: integrations[0].read.objects[0].requiredFields[0]."
                 "mapToDisplayName needs mapToName");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          requiredFields: [{fieldName: ''}]\n",
                 "amp.yaml:8:40: integrations[0].read.objects[0].requiredFields[0].fieldName "
                 "must not be empty");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          delivery: {mode: !custom auto}\n",
                 "amp.yaml:8:28: unsupported tag '!custom' in "
                 "integrations[0].read.objects[0].delivery");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          delivery: {pageSize: !!int lots}\n",
                 "amp.yaml:8:32: 'lots' is not a valid !!int in "
                 "integrations[0].read.objects[0].delivery");
}

static void test_fields_twice(void)
{
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          requiredFields:\n            - email\n            - fieldName: email\n",
                 "amp.yaml:10:26: field 'email' is listed twice in integrations[0].read.objects[0] "
                 "(first at 9:15)");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          requiredFields: [email]\n          optionalFields: [phone, email]\n",
                 "amp.yaml:9:35: field 'email' is listed twice in integrations[0].read.objects[0] "
                 "(first at 8:28)");
    expect_error(INTEG "    read:\n      objects:\n        - objectName: c\n"
                       "          optionalFields: [{fieldName: a, mapToName: x}, {mapToName: x}]\n",
                 "amp.yaml:8:70: mapToName 'x' is used twice in integrations[0].read.objects[0] "
                 "(first at 8:54)");
    /* The same field in two objects is fine. */
    json_t *out = parse_ok(INTEG "    read:\n      objects:\n"
                                 "        - {objectName: a, requiredFields: [email]}\n"
                                 "        - {objectName: b, requiredFields: [email]}\n");
    json_decref(out);
}

/* ---- limits ------------------------------------------------------------- */

static void test_size_limit(void)
{
    size_t max = PB_MANIFEST_MAX_BYTES;
    char *text = malloc(max + 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    size_t head = strlen(INTEG);
    memcpy(text, INTEG, head);
    /* Pad with a comment up to exactly 1 MiB: accepted. */
    text[head] = '#';
    memset(text + head + 1, 'x', max - head - 2);
    text[max - 1] = '\n';
    text[max] = '\0';
    json_t *out = NULL;
    char err[256] = "";
    CU_ASSERT_EQUAL(pb_manifest_parse(text, max, "amp.yaml", NULL, NULL, &out, err, sizeof err,
                                      NULL, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(out);
    json_decref(out);
    /* One byte more is refused before parsing. */
    text[max] = '\n';
    text[max + 1] = '\0';
    expect_error_n(text, max + 1, NULL, NULL,
                   "amp.yaml:1:1: the manifest is too large (1048577 bytes; the limit is 1 MiB)");
    free(text);
}

/* INTEG with a read object whose delivery holds `levels` nested sequences. */
static char *nested_delivery(int levels, size_t *col_of_last)
{
    const char *pre = INTEG "    read:\n      objects:\n        - objectName: o\n          delivery: ";
    size_t n = strlen(pre);
    char *s = malloc(n + 2 * (size_t)levels + 2);
    memcpy(s, pre, n);
    memset(s + n, '[', (size_t)levels);
    memset(s + n + levels, ']', (size_t)levels);
    s[n + 2 * (size_t)levels] = '\n';
    s[n + 2 * (size_t)levels + 1] = '\0';
    /* "          delivery: " is 20 columns; the last '[' is at 20 + levels. */
    *col_of_last = 20 + (size_t)levels;
    return s;
}

static void test_depth_limit(void)
{
    size_t col;
    /* The object mapping is level 6; 58 more levels make 64: accepted. */
    char *ok = nested_delivery(58, &col);
    json_t *out = parse_ok(ok);
    json_t *d = json_object_get(json_array_get(json_object_get(json_object_get(json_array_get(
                    json_object_get(out, "integrations"), 0), "read"), "objects"), 0), "delivery");
    int depth = 0;
    for (; json_is_array(d); d = json_array_get(d, 0))
        depth++;
    CU_ASSERT_EQUAL(depth, 58);
    json_decref(out);
    free(ok);

    char *deep = nested_delivery(59, &col), want[128];
    snprintf(want, sizeof want, "amp.yaml:8:%zu: nesting deeper than 64 levels", col);
    expect_error(deep, want);
    free(deep);

    /* Far deeper input stops at the first level too many, whatever follows. */
    size_t n = 200000;
    char *bomb = malloc(n + 8);
    memcpy(bomb, "a: ", 3);
    memset(bomb + 3, '[', n);
    bomb[n + 3] = '\0';
    expect_error(bomb, "amp.yaml:1:67: nesting deeper than 64 levels");
    free(bomb);

    /* Block style counts the same way. */
    char block[8192] = "";
    size_t len = 0;
    for (int i = 0; i < 70; i++)
        len += (size_t)snprintf(block + len, sizeof block - len, "%*sk:\n", i, "");
    expect_error(block, "amp.yaml:65:65: nesting deeper than 64 levels");

    /* An alias is as deep as what it refers to. */
    char alias[512];
    len = (size_t)snprintf(alias, sizeof alias, "a: &d ");
    for (int i = 0; i < 60; i++)
        alias[len++] = '[';
    for (int i = 0; i < 60; i++)
        alias[len++] = ']';
    snprintf(alias + len, sizeof alias - len, "\nb: [[[[[*d]]]]]\n");
    expect_error(alias, "amp.yaml:2:9: nesting deeper than 64 levels (through an alias)");
}

static void test_alias_bombs(void)
{
    /* Billion laughs in a generic part. */
    char yaml[4096];
    size_t len = (size_t)snprintf(yaml, sizeof yaml, "%s",
                                  INTEG "    read:\n      objects:\n        - objectName: o\n"
                                        "          delivery:\n"
                                        "            l0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 10; i++)
        len += (size_t)snprintf(yaml + len, sizeof yaml - len,
                                "            l%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, "
                                "*a%d, *a%d, *a%d]\n",
                                i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1,
                                i - 1, i - 1);
    json_t *out = json_true();
    char err[512];
    int line = 0, col = 0;
    CU_ASSERT_EQUAL(pb_manifest_parse(yaml, len, "amp.yaml", NULL, NULL, &out, err, sizeof err,
                                      &line, &col), -1);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ": the manifest expands to too much data (aliases?)"));
    CU_ASSERT_TRUE(line >= 8 && line <= 18 && col > 0);

    /* Merges of a big mapping, many times over. */
    size_t cap = 900000, n = 0;
    char *big = malloc(cap);
    n += (size_t)snprintf(big + n, cap - n, "x: &m {");
    for (int i = 0; i < 2000; i++)
        n += (size_t)snprintf(big + n, cap - n, "%sk%d: 1", i ? ", " : "", i);
    n += (size_t)snprintf(big + n, cap - n, "}\ny:\n");
    while (n + 32 < cap)
        n += (size_t)snprintf(big + n, cap - n, "  - {<<: *m}\n");
    out = json_true();
    CU_ASSERT_EQUAL(pb_manifest_parse(big, n, "amp.yaml", NULL, NULL, &out, err, sizeof err,
                                      NULL, NULL), -1);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ": the manifest expands to too much data (aliases?)"));
    free(big);
}

static void test_outputs(void)
{
    /* err may be NULL, line/col may be NULL; a short buffer is cut and terminated. */
    json_t *out = json_true();
    CU_ASSERT_EQUAL(pb_manifest_parse("x", 1, "amp.yaml", NULL, NULL, &out, NULL, 0, NULL, NULL),
                    -1);
    CU_ASSERT_PTR_NULL(out);
    char small[12];
    CU_ASSERT_EQUAL(pb_manifest_parse("x", 1, "amp.yaml", NULL, NULL, &out, small, sizeof small,
                                      NULL, NULL), -1);
    CU_ASSERT_STRING_EQUAL(small, "amp.yaml:1:");
    /* The source names the file; a value quoted in a message stays on one line. */
    char err[256];
    int line, col;
    CU_ASSERT_EQUAL(pb_manifest_parse("specVersion: \"1\\n2\"\n", 20, "conf/amp.yaml", NULL, NULL,
                                      &out, err, sizeof err, &line, &col), -1);
    CU_ASSERT_STRING_EQUAL(err, "conf/amp.yaml:1:14: unsupported specVersion '1?2' (expected 1.0.0)");
    CU_ASSERT_EQUAL(line, 1);
    CU_ASSERT_EQUAL(col, 14);
    /* Long values are shortened in messages. */
    char yaml[1024], want[512];
    char longname[301];
    memset(longname, 'n', 300);
    longname[300] = '\0';
    snprintf(yaml, sizeof yaml, "specVersion: 1.0.0\n%s: 1\n", longname);
    snprintf(want, sizeof want, "amp.yaml:2:1: unknown key '%.80s...' at the top level", longname);
    expect_error(yaml, want);
    /* Not NUL-terminated input is read only up to len. */
    const char *t = INTEG "garbage: [";
    out = NULL;
    CU_ASSERT_EQUAL(pb_manifest_parse(t, strlen(INTEG), "amp.yaml", NULL, NULL, &out, err,
                                      sizeof err, NULL, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(out);
    json_decref(out);
}

static CU_TestInfo tests[] = {
    {"example", test_example},
    {"example_provider_disabled", test_example_provider_disabled},
    {"defaults", test_defaults},
    {"ampersand_read_keys_kept", test_ampersand_read_keys_kept},
    {"names", test_names},
    {"field_forms", test_field_forms},
    {"delivery_backfill", test_delivery_backfill},
    {"anchors_and_merges", test_anchors_and_merges},
    {"syntax_errors", test_syntax_errors},
    {"document_errors", test_document_errors},
    {"spec_version", test_spec_version},
    {"integrations_list", test_integrations_list},
    {"integration_name", test_integration_name},
    {"provider", test_provider},
    {"unknown_keys", test_unknown_keys},
    {"duplicate_keys", test_duplicate_keys},
    {"objects", test_objects},
    {"types", test_types},
    {"fields_twice", test_fields_twice},
    {"size_limit", test_size_limit},
    {"depth_limit", test_depth_limit},
    {"alias_bombs", test_alias_bombs},
    {"outputs", test_outputs},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    return pbt_main(argc, argv, "manifest", tests);
}
