/* JSON log lines on stderr: one object per line with ts, level, msg. */
#ifndef PB_CORE_LOG_H
#define PB_CORE_LOG_H
#include <jansson.h>
#include "plugboard/plugin.h"

/* Sets the minimum level ("debug", "info", "warn", "error") and format
 * ("json" or "text"). Returns -1 on an unknown name. */
int pb_log_setup(const char *level, const char *format);
int pb_log_enabled(enum pb_log_level level);
/* Logs `msg`; `fields` (stolen, may be NULL) adds keys such as requestId. */
void pb_log_json(enum pb_log_level level, const char *msg, json_t *fields);
void pb_logf(enum pb_log_level level, const char *fmt, ...) PB_PRINTF(2, 3);
/* For plugins through the services table. */
void pb_log_provider(enum pb_log_level level, const char *provider, const char *fmt, ...) PB_PRINTF(3, 4);
void pb_vlog_provider(enum pb_log_level level, const char *provider, const char *fmt, va_list ap);
#endif
