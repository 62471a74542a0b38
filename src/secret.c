/* secret.c — read a password or an OAuth token from a command or a file.
 * Nothing here logs the secret. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib.h>
#include "secret.h"

static char *secret_first_line(const char *data, size_t len)
{
	size_t n = 0;
	while (n < len && data[n] != '\n' && data[n] != '\r')
		n++;
	return g_strndup(data, n);
}

void secret_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	g_free(s);
}

char *secret_from_command(const char *cmd, int timeout, char **err)
{
	int pipefd[2];
	pid_t pid;
	GString *out = NULL;
	char *result = NULL;
	int status;
	gint64 deadline = g_get_monotonic_time() + (gint64)timeout * G_USEC_PER_SEC;

	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		*err = g_strdup_printf("cannot run command: %s", g_strerror(errno));
		return NULL;
	}
	pid = fork();
	if (pid < 0) {
		*err = g_strdup_printf("cannot run command: %s", g_strerror(errno));
		close(pipefd[0]);
		close(pipefd[1]);
		return NULL;
	}
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	out = g_string_new(NULL);
	for (;;) {
		char buf[4096];
		gint64 left = deadline - g_get_monotonic_time();
		GPollFD pfd = { .fd = pipefd[0], .events = G_IO_IN };
		ssize_t n;

		if (left <= 0 || g_poll(&pfd, 1, (int)(left / 1000) + 1) == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			*err = g_strdup_printf("command did not finish within %d s", timeout);
			goto out;
		}
		n = read(pipefd[0], buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		g_string_append_len(out, buf, n);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		*err = g_strdup("command failed (non-zero exit)");
		goto out;
	}
	result = secret_first_line(out->str, out->len);
	if (!*result) {
		secret_free(result);
		result = NULL;
		*err = g_strdup("command printed nothing");
	}
out:
	close(pipefd[0]);
	explicit_bzero(out->str, out->len);
	g_string_free(out, TRUE);
	return result;
}

char *secret_from_file(const char *path, char **err)
{
	struct stat st;
	char buf[4096];
	char *result = NULL;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		*err = g_strdup_printf("cannot open %s: %s", path, g_strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || (st.st_mode & 077)) {
		*err = g_strdup_printf("%s is accessible by group or others: chmod 600 it", path);
		goto out;
	}
	n = read(fd, buf, sizeof buf);
	if (n <= 0) {
		*err = g_strdup_printf("%s is empty", path);
		goto out;
	}
	result = secret_first_line(buf, n);
	explicit_bzero(buf, sizeof buf);
out:
	close(fd);
	return result;
}
