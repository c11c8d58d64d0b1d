/* HTTP client and in-process server helpers for tests (needs the core). */
#include "testutil.h"
#include "app.h"
#include "server.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- HTTP ------------------------------------------------------------------ */

static size_t collect(char *data, size_t size, size_t n, void *userp)
{
    char **buf = userp;
    size_t have = *buf ? strlen(*buf) : 0, add = size * n;
    *buf = realloc(*buf, have + add + 1);
    memcpy(*buf + have, data, add);
    (*buf)[have + add] = '\0';
    return add;
}

int pbt_http(const char *method, const char *url, const char *const *headers, const char *body,
             struct pbt_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    struct curl_slist *h = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        h = curl_slist_append(h, headers[i]);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    /* Send paths exactly as written: tests probe dot-segments. */
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &out->headers);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!out->body)
        out->body = strdup("");
    out->body_len = strlen(out->body);
    if (!out->headers)
        out->headers = strdup("");
    return rc == CURLE_OK ? 0 : -1;
}

char *pbt_resp_header(const struct pbt_resp *r, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *end = strstr(line, "\r\n");
        if (!end)
            end = line + strlen(line);
        if ((size_t)(end - line) > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(end - v));
        }
        line = *end ? end + 2 : end;
    }
    return NULL;
}

void pbt_resp_free(struct pbt_resp *r)
{
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof *r);
}

struct pb_app *pbt_start(const char *extra_yaml, char *base_url, size_t len)
{
    static int n;
    char dir[600], cfgpath[700], plugdir[700];
    snprintf(dir, sizeof dir, "%s/srv%d", pbt_tmpdir(), ++n);
    snprintf(plugdir, sizeof plugdir, "%s/plugins", dir);
    if (mkdir(dir, 0700) != 0 || mkdir(plugdir, 0755) != 0)
        return NULL;
    const char *names[] = {"hubspot", "salesforce", "generic"};
    for (size_t i = 0; i < 3; i++)
        if (pbt_install_plugin(names[i], plugdir, names[i]) != 0)
            return NULL;
    size_t cap = 4096 + (extra_yaml ? strlen(extra_yaml) : 0);
    char *text = malloc(cap);
    snprintf(text, cap,
             "listen: 127.0.0.1:0\n"
             "data_dir: %s/var\n"
             "store: sqlite:%s/var/plugboard.db\n"
             "master_key_file: %s/var/master.key\n"
             "plugin_dir: %s\n"
             "log: {level: warn, format: json}\n"
             "%s",
             dir, dir, dir, plugdir, extra_yaml ? extra_yaml : "");
    snprintf(cfgpath, sizeof cfgpath, "%s/plugboard.yaml", dir);
    int wrc = pbt_write_file(cfgpath, text);
    free(text);
    if (wrc != 0)
        return NULL;
    struct pb_app *app = NULL;
    char err[1024];
    if (pb_app_open(cfgpath, PB_APP_ALL, &app, err, sizeof err) != 0) {
        fprintf(stderr, "pbt_start: %s\n", err);
        return NULL;
    }
    struct pb_server *srv;
    if (pb_server_start(app, &srv, err, sizeof err) != 0) {
        fprintf(stderr, "pbt_start: %s\n", err);
        pb_app_close(app);
        return NULL;
    }
    snprintf(base_url, len, "http://127.0.0.1:%d", pb_server_port(srv));
    return app;
}

void pbt_stop(struct pb_app *app)
{
    pb_app_close(app);
}
