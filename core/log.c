#include "log.h"
#include "util.h"
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum pb_log_level min_level = PB_LOG_INFO;
static int text_format;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *level_names[] = {"debug", "info", "warn", "error"};

int pb_log_setup(const char *level, const char *format)
{
    if (level) {
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(level, level_names[i]) == 0)
                found = i;
        if (found < 0)
            return -1;
        min_level = (enum pb_log_level)found;
    }
    if (format) {
        if (strcmp(format, "json") == 0)
            text_format = 0;
        else if (strcmp(format, "text") == 0)
            text_format = 1;
        else
            return -1;
    }
    return 0;
}

int pb_log_enabled(enum pb_log_level level)
{
    return level >= min_level;
}

void pb_log_json(enum pb_log_level level, const char *msg, json_t *fields)
{
    if (!pb_log_enabled(level)) {
        json_decref(fields);
        return;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    char ts[40], base[32];
    pb_fmt_rfc3339((int64_t)tv.tv_sec * 1000, base, sizeof base);
    /* Milliseconds keep lines from one burst ordered. */
    snprintf(ts, sizeof ts, "%.19s.%03dZ", base, (int)(tv.tv_usec / 1000));
    json_t *o = json_object();
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(level_names[level]));
    json_object_set_new(o, "msg", json_string(msg ? msg : ""));
    if (fields)
        json_object_update_missing(o, fields);
    json_decref(fields);
    char *line;
    if (text_format) {
        json_object_del(o, "ts");
        json_object_del(o, "level");
        json_object_del(o, "msg");
        char *rest = json_object_size(o) ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        line = pb_xasprintf("%s %s %s%s%s", ts, level_names[level], msg ? msg : "",
                            rest ? " " : "", rest ? rest : "");
        free(rest);
    } else {
        line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref(o);
    if (!line)
        return;
    pthread_mutex_lock(&log_lock);
    fputs(line, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
    free(line);
}

void pb_logf(enum pb_log_level level, const char *fmt, ...)
{
    if (!pb_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pb_log_json(level, msg, NULL);
}

void pb_vlog_provider(enum pb_log_level level, const char *provider, const char *fmt, va_list ap)
{
    if (!pb_log_enabled(level))
        return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    pb_log_json(level, msg, json_pack("{s:s}", "provider", provider ? provider : ""));
}

void pb_log_provider(enum pb_log_level level, const char *provider, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pb_vlog_provider(level, provider, fmt, ap);
    va_end(ap);
}
