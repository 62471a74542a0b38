/* log.h — the daemon's log. Secrets never reach it: callers pass
 * redacted text (imap_engine.c traces "LOGIN <redacted>"). */
#ifndef MAILFS_LOG_H
#define MAILFS_LOG_H

#include <glib.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* path: a log file (appended), or NULL for stderr. debug: also keep
 * LOG_LEVEL_DEBUG lines (the protocol trace). Returns 0, -1 when the file
 * cannot be opened. */
int log_setup(const char *path, int debug);
/* After daemonizing with no log file, stderr is gone: use syslog. */
void log_use_syslog(void);
int log_debug_enabled(void);
void log_msg(enum log_level level, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_debug_enabled()) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)

#endif
