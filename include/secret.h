/* secret.h — where passwords and tokens come from. Results are
 * g_malloc'd; callers wipe and free them with secret_free(). */
#ifndef MAILFS_SECRET_H
#define MAILFS_SECRET_H

/* Runs cmd with "sh -c" and returns the first line of its output (no
 * newline), or NULL with *err set (a one-line g_malloc'd message). The
 * command gets at most timeout seconds. */
char *secret_from_command(const char *cmd, int timeout, char **err);
/* The first line of path; refused when the file is readable or writable
 * by group or others. */
char *secret_from_file(const char *path, char **err);
/* Overwrites and frees. NULL-safe. */
void secret_free(char *s);

#endif
