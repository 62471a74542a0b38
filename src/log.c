/* log.c — one log for the daemon: a file, stderr, or syslog once
 * daemonized. Lines are written whole under a lock so threads don't mix. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include "log.h"

static FILE *log_file;
static int log_debug_on;
static int log_syslog_on;
static GMutex log_lock;

int log_setup(const char *path, int debug)
{
	log_debug_on = debug;
	if (!path)
		return 0;
	log_file = fopen(path, "ae");
	if (!log_file)
		return -1;
	setvbuf(log_file, NULL, _IOLBF, 0);
	return 0;
}

void log_use_syslog(void)
{
	if (log_file)
		return;
	openlog("mailfs", LOG_PID, LOG_USER);
	log_syslog_on = 1;
}

int log_debug_enabled(void)
{
	return log_debug_on;
}

/* Server text (error lines, folder names) may hold ESC, CR or other
 * control characters that would rewrite a terminal or forge log lines:
 * they are shown as \xNN, as are bytes that are not UTF-8 and C1
 * controls. Returns text, or a new string (text freed). */
static char *log_escape(char *text)
{
	const char *p = text;
	GString *out;

	for (; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			break;
	if (!*p)
		return text;  /* plain ASCII: the usual case */
	out = g_string_sized_new(strlen(text) + 16);
	for (p = text; *p;) {
		unsigned char c = (unsigned char)*p;
		if (c >= 0x20 && c < 0x7f) {
			g_string_append_c(out, (char)c);
			p++;
			continue;
		}
		if (c >= 0x80) {
			gunichar u = g_utf8_get_char_validated(p, -1);
			if (u != (gunichar)-1 && u != (gunichar)-2 && u >= 0xa0) {
				const char *next = g_utf8_next_char(p);
				g_string_append_len(out, p, next - p);
				p = next;
				continue;
			}
		}
		g_string_append_printf(out, "\\x%02x", c);
		p++;
	}
	g_free(text);
	return g_string_free(out, FALSE);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	va_list ap;
	char *text;

	if (level == LOG_LEVEL_DEBUG && !log_debug_on)
		return;
	va_start(ap, fmt);
	text = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	text = log_escape(text);
	if (log_syslog_on) {
		syslog(prio[level], "%s", text);
	} else {
		FILE *out = log_file ? log_file : stderr;
		GDateTime *now = g_date_time_new_now_utc();
		char *stamp = g_date_time_format(now, "%H:%M:%S.%f");
		g_mutex_lock(&log_lock);
		fprintf(out, "%.12s mailfs %s: %s\n", stamp, names[level], text);
		g_mutex_unlock(&log_lock);
		g_free(stamp);
		g_date_time_unref(now);
	}
	g_free(text);
}
