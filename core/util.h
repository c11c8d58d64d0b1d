/* Small helpers shared by the core: allocation that aborts on OOM, time
 * formats, growable buffers. */
#ifndef PB_CORE_UTIL_H
#define PB_CORE_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include "plugboard/plugin.h"

void *pb_xmalloc(size_t n);
void *pb_xcalloc(size_t n, size_t m);
void *pb_xrealloc(void *p, size_t n);
char *pb_xstrdup(const char *s);
char *pb_xasprintf(const char *fmt, ...) PB_PRINTF(1, 2);

/* "2026-11-26T12:00:00Z" from unix ms (out >= 32 bytes). */
void pb_fmt_rfc3339(int64_t ms, char *out, size_t len);
/* "Thu, 06 Mar 2025 22:09:49 UTC" from unix ms (out >= 40 bytes). */
void pb_fmt_retry_after(int64_t ms, char *out, size_t len);
/* Unix ms from an HTTP date, -1 when unparseable. */
int64_t pb_parse_http_date(const char *s);
/* Wall clock, unix ms. */
int64_t pb_wall_ms(void);
/* Monotonic clock, ms. */
int64_t pb_mono_ms(void);

/* Case-insensitive ASCII comparison. */
int pb_strieq(const char *a, const char *b);

struct pb_buf {
    char *data;
    size_t len, cap;
};
void pb_buf_append(struct pb_buf *b, const void *data, size_t len);
void pb_buf_appends(struct pb_buf *b, const char *s);
void pb_buf_free(struct pb_buf *b);
#endif
