/* main.c — the command line: parse options, find the password, open the
 * cache, log in and list the folders, and only then mount and daemonize,
 * so that every refusal is one line on stderr and nothing is mounted.
 * The exit status says whether trying again can help (mailfs(1), EXIT
 * STATUS), and a service manager hears when the mount is up (notify.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <pwd.h>
#include <unistd.h>
#include <curl/curl.h>
#include <glib.h>
#include "fs.h"
#include <fuse_lowlevel.h>
#include "log.h"
#include "mailbox.h"
#include "mime.h"
#include "net.h"
#include "notify.h"
#include "prefetch.h"
#include "secret.h"
#include "store.h"
#include "sync.h"

/* Exit statuses. The systemd unit lists the permanent ones in
 * RestartPreventExitStatus=, so that only a failure that may pass by
 * itself is retried. */
enum main_exit {
	MAIN_EXIT_OK = 0,       /* mounted (daemon), or unmounted cleanly (-f) */
	MAIN_EXIT_FAILURE = 1,  /* may pass: server unreachable, timeout, mount failed */
	MAIN_EXIT_USAGE = 2,    /* the command line or a file it names is wrong */
	MAIN_EXIT_LOGIN = 3,    /* login refused, certificate not trusted, no secret */
};

struct main_opts {
	char *password_command, *password_file, *oauth_command;
	char *tls, *cafile, *cache_dir, *cache_size, *names, *trash, *logfile;
	/* Numbers as text: libfuse's %d would accept "30abc" and refuse "abc"
	 * with a message of its own. */
	char *refresh, *connections, *timeout, *watch, *follow_reader;
	int insecure, mark_seen, show_deleted, offline, readonly, debug;
	int show_help, show_version;
	char *url;
	int nonopt;
	char *refusal;  /* why main_opt_proc refused an argument */
};

enum { KEY_HELP, KEY_VERSION, KEY_RO };

#define MAIN_OPT(t, p, v) { t, offsetof(struct main_opts, p), v }
static const struct fuse_opt main_opt_spec[] = {
	MAIN_OPT("password_command=%s", password_command, 0),
	MAIN_OPT("password_file=%s", password_file, 0),
	MAIN_OPT("oauth_command=%s", oauth_command, 0),
	MAIN_OPT("tls=%s", tls, 0),
	MAIN_OPT("cafile=%s", cafile, 0),
	MAIN_OPT("insecure", insecure, 1),
	MAIN_OPT("cache_dir=%s", cache_dir, 0),
	MAIN_OPT("cache_size=%s", cache_size, 0),
	MAIN_OPT("names=%s", names, 0),
	MAIN_OPT("mark_seen", mark_seen, 1),
	MAIN_OPT("refresh=%s", refresh, 0),
	MAIN_OPT("connections=%s", connections, 0),
	MAIN_OPT("watch=%s", watch, 0),
	MAIN_OPT("trash=%s", trash, 0),
	MAIN_OPT("show_deleted", show_deleted, 1),
	MAIN_OPT("offline", offline, 1),
	MAIN_OPT("timeout=%s", timeout, 0),
	MAIN_OPT("logfile=%s", logfile, 0),
	MAIN_OPT("debug", debug, 1),
	MAIN_OPT("follow_reader=%s", follow_reader, 0),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END
};

static void main_usage(FILE *out)
{
	fprintf(out,
"usage: mailfs [options] URL MOUNTPOINT\n"
"       mailfs prefetch PATH...\n"
"       mailfs --version | --help\n"
"\n"
"Mounts a mail account: folders are directories, messages are files whose\n"
"bodies are fetched when read. URL: imap[s]://[user@]host[:port][/], or\n"
"pop3[s]://[user@]host[:port][/] for a POP3 inbox (mounted read-only)\n"
"\n"
"Login (a password is never taken from the command line):\n"
"    -o password_command=CMD  run CMD with sh -c; first line of output is the password\n"
"    -o password_file=FILE    first line of FILE (must not be group/other readable)\n"
"    MAILFS_PASSWORD=...      the password, from the environment\n"
"    ~/.netrc                 used when none of the above is given\n"
"    -o oauth_command=CMD     CMD prints an OAuth2 access token (XOAUTH2)\n"
"TLS:\n"
"    -o tls=implicit|starttls|none   default: implicit for imaps/pop3s, starttls for imap/pop3\n"
"    -o cafile=FILE           trust this CA\n"
"    -o insecure              do not verify the certificate (warns)\n"
"Cache:\n"
"    -o cache_dir=DIR         default $XDG_CACHE_HOME/mailfs/USER@HOST\n"
"    -o cache_size=SIZE       cap on cached bodies, e.g. 500M, 2G (default 1G)\n"
"    -o refresh=SECONDS       re-check a folder older than this (default 30)\n"
"    -o offline               never connect; serve the cache, read-only\n"
"Behaviour:\n"
"    -o names=subject|uid     file names (default subject; POP3: always subject)\n"
"    -o mark_seen             reading a message sets \\Seen (default: it does not)\n"
"    -o show_deleted          list messages flagged \\Deleted too\n"
"    -o trash=FOLDER          rm moves messages to FOLDER\n"
"    -o connections=N         IMAP connections in parallel (default 6)\n"
"    -o watch=N               folders in use kept under IMAP IDLE, INBOX first, at most\n"
"                             connections-1 (default 2; 0: no push, -o refresh alone)\n"
"    -o timeout=SECONDS       bound on every network wait (default 60)\n"
"    -o ro                    read-only (always on for POP3)\n"
"    -o logfile=FILE          log here (default: stderr with -f, else syslog)\n"
"    -o debug                 protocol trace in the log (credentials never shown)\n"
"FUSE:\n"
"    -f                       stay in the foreground\n"
"    -d                       FUSE debug output (implies -f)\n"
"    -s                       single-threaded\n"
"    -o fsname=NAME           the name mount and df show (default user@host[:port])\n"
"    -o max_threads=N         threads serving requests at most (libfuse's default 10)\n"
"    -o max_idle_threads=N    idle ones kept; -o clone_fd: a /dev/fuse fd per thread\n"
"    -o follow_reader=0|1     a thread answering opens moves to the CPU of a process\n"
"                             opening file after file, so no wake-up crosses CPUs\n"
"                             (default 1)\n"
"    -o allow_other, ...      the other libfuse mount options\n"
"\n"
"mailfs prefetch PATH... fetches every body under PATH (folders of a running\n"
"mount, or the mount) into its cache, for offline use, with a progress bar\n"
"on a terminal; resumable, stopped by Ctrl-C; refused when it does not fit\n"
"in cache_size.\n"
"\n"
"See mailfs(1).\n");
}

static int main_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct main_opts *mo = data;

	switch (key) {
	case KEY_HELP:
		mo->show_help = 1;
		return 0;
	case KEY_VERSION:
		mo->show_version = 1;
		return 0;
	case KEY_RO:
		mo->readonly = 1;
		return 1;  /* libfuse mounts read-only too */
	case FUSE_OPT_KEY_OPT:
		/* Nothing between commas, or -o "": the unit passes -o
		 * "${MAILFS_OPTIONS}" also when an account's file sets none. */
		return *arg ? 1 : 0;
	case FUSE_OPT_KEY_NONOPT:
		if (mo->nonopt++ == 0) {
			mo->url = g_strdup(arg);
			return 0;
		}
		if (mo->nonopt == 2)
			return 1;  /* the mount point, for fuse_parse_cmdline */
		if (!mo->refusal)
			mo->refusal = g_strdup_printf("unexpected argument '%s' after the mount point "
			                              "(usage: mailfs [options] URL MOUNTPOINT)", arg);
		return -1;
	default:
		return 1;
	}
}

/* Prints the one line of a refusal; returns status, an enum main_exit. */
static int main_fail(int status, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int main_fail(int status, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	/* One line, whatever the message held. */
	g_strdelimit(msg, "\r\n", ' ');
	fprintf(stderr, "mailfs: %s\n", msg);
	g_free(msg);
	return status;
}

/* A refusal in libfuse's words (what main_capture_stderr_end caught),
 * without its "fuse: " prefix, or fallback when it said nothing. */
static int main_fail_fuse(int status, const char *said, const char *fallback)
{
	if (!said || !*said)
		return main_fail(status, "%s", fallback);
	if (g_str_has_prefix(said, "fuse: "))
		said += strlen("fuse: ");
	return main_fail(status, "%s", said);
}

/* A whole number from min to max for option name (NULL: keep *out). */
static int main_parse_number(const char *name, const char *text, int min, int max, int *out)
{
	char *end;
	long v;

	if (!text)
		return 0;
	errno = 0;
	v = strtol(text, &end, 10);
	if (end == text || *end || errno)
		return main_fail(MAIN_EXIT_USAGE, "bad option %s=%s: not a whole number", name, text);
	if (v < min || v > max)
		return main_fail(MAIN_EXIT_USAGE, "bad option %s=%s: use %d to %d", name, text, min, max);
	*out = (int)v;
	return 0;
}

static int main_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;

	errno = 0;
	v = g_ascii_strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	switch (g_ascii_toupper(*end)) {
	case 0:   break;
	case 'K': v *= 1024.0; end++; break;
	case 'M': v *= 1024.0 * 1024; end++; break;
	case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
	case 'T': v *= 1024.0 * 1024 * 1024 * 1024; end++; break;
	default:  return -1;
	}
	if (g_ascii_toupper(*end) == 'B' || g_ascii_toupper(*end) == 'I')
		end++;
	if (*end)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* Splits imap[s]://[user@]host[:port][/] with libcurl's URL parser. */
static int main_parse_url(const char *url, struct mf_config *cfg, char **err)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *user = NULL, *port = NULL, *path = NULL;
	int rc = -1;

	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		*err = g_strdup_printf("bad URL '%s': expected imaps://[user@]host[:port]/", url);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PASSWORD, &path, 0) == CURLUE_OK) {
		*err = g_strdup("a password in the URL is refused: use password_command, password_file, MAILFS_PASSWORD or ~/.netrc");
		goto out;
	}
	if (strcmp(scheme, "imap") == 0 || strcmp(scheme, "imaps") == 0) {
		cfg->protocol = MF_PROTO_IMAP;
	} else if (strcmp(scheme, "pop3") == 0 || strcmp(scheme, "pop3s") == 0) {
		cfg->protocol = MF_PROTO_POP3;
	} else {
		*err = g_strdup_printf("unsupported URL scheme '%s': use imaps, imap, pop3s or pop3", scheme);
		goto out;
	}
	cfg->scheme = g_strdup(scheme);
	cfg->tls = scheme[strlen(scheme) - 1] == 's' ? MF_TLS_IMPLICIT : MF_TLS_STARTTLS;
	cfg->host = g_strdup(host);
	if (curl_url_get(u, CURLUPART_USER, &user, CURLU_URLDECODE) == CURLUE_OK && *user)
		cfg->user = g_strdup(user);
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
		cfg->port = atoi(port);
	rc = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return rc;
}

/* Does ~/.netrc name this host (or a default)? */
static int main_netrc_has(const char *host)
{
	const char *home = g_getenv("HOME");
	char *path, *text = NULL;
	int found = 0;

	if (!home)
		return 0;
	path = g_build_filename(home, ".netrc", NULL);
	if (g_file_get_contents(path, &text, NULL, NULL)) {
		char **tok = g_strsplit_set(text, " \t\r\n", -1);
		for (char **t = tok; *t; t++) {
			if (strcmp(*t, "default") == 0 ||
			    (strcmp(*t, "machine") == 0 && t[1] && strcmp(t[1], host) == 0))
				found = 1;
		}
		g_strfreev(tok);
		explicit_bzero(text, strlen(text));
		g_free(text);
	}
	g_free(path);
	return found;
}

static char *main_default_cache_dir(const struct mf_config *cfg)
{
	char *who, *dir;

	if (cfg->port)
		who = g_strdup_printf("%s@%s:%d", cfg->user ? cfg->user : "netrc", cfg->host, cfg->port);
	else
		who = g_strdup_printf("%s@%s", cfg->user ? cfg->user : "netrc", cfg->host);
	g_strdelimit(who, "/", '_');
	dir = g_build_filename(g_get_user_cache_dir(), "mailfs", who, NULL);
	g_free(who);
	return dir;
}

/* Runs f with stderr captured, so that libfuse's own complaints become
 * our one line. Returns what f wrote (g_free), or NULL. */
static char *main_capture_stderr_begin(int *saved, int pipefd[2])
{
	*saved = -1;
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		return NULL;
	fflush(stderr);
	*saved = dup(STDERR_FILENO);
	dup2(pipefd[1], STDERR_FILENO);
	return NULL;
}

static char *main_capture_stderr_end(int saved, int pipefd[2])
{
	char buf[1024];
	ssize_t n;

	if (saved < 0)
		return NULL;
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(pipefd[1]);
	n = read(pipefd[0], buf, sizeof buf - 1);
	close(pipefd[0]);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	g_strstrip(buf);
	g_strdelimit(buf, "\r\n", ' ');
	return g_strdup(buf);
}

/* Returns 0, or the exit status of the refusal it printed. */
static int main_build_config(struct main_opts *mo, struct mf_config *cfg)
{
	char *err = NULL;
	int rc;

	if (main_parse_url(mo->url, cfg, &err) != 0) {
		main_fail(MAIN_EXIT_USAGE, "%s", err);
		g_free(err);
		return MAIN_EXIT_USAGE;
	}
	if (mo->tls) {
		if (strcmp(mo->tls, "implicit") == 0)
			cfg->tls = MF_TLS_IMPLICIT;
		else if (strcmp(mo->tls, "starttls") == 0)
			cfg->tls = MF_TLS_STARTTLS;
		else if (strcmp(mo->tls, "none") == 0)
			cfg->tls = MF_TLS_NONE;
		else
			return main_fail(MAIN_EXIT_USAGE, "bad option tls=%s: use implicit, starttls or none", mo->tls);
	}
	cfg->cafile = g_strdup(mo->cafile);
	if (cfg->cafile && access(cfg->cafile, R_OK) != 0)
		return main_fail(MAIN_EXIT_USAGE, "cafile %s: %s", cfg->cafile, g_strerror(errno));
	cfg->insecure = mo->insecure;
	cfg->cache_size = 1024ULL * 1024 * 1024;
	if (mo->cache_size && main_parse_size(mo->cache_size, &cfg->cache_size) != 0)
		return main_fail(MAIN_EXIT_USAGE, "bad option cache_size=%s: use a size such as 500M or 2G", mo->cache_size);
	cfg->names_uid = 0;
	/* POP3 message numbers are not stable: POP3 always uses subject names. */
	if (mo->names && strcmp(mo->names, "uid") == 0)
		cfg->names_uid = cfg->protocol != MF_PROTO_POP3;
	else if (mo->names && strcmp(mo->names, "subject") != 0)
		return main_fail(MAIN_EXIT_USAGE, "bad option names=%s: use subject or uid", mo->names);
	cfg->mark_seen = mo->mark_seen;
	cfg->refresh = 30;
	cfg->connections = 6;  /* two under watch, four for reading (DESIGN said 4, before push) */
	cfg->watch = 2;
	cfg->timeout = 60;  /* at most INT_MAX / 1000: net.c counts milliseconds in an int */
	cfg->follow_reader = 1;
	if ((rc = main_parse_number("refresh", mo->refresh, 0, INT_MAX, &cfg->refresh)) != 0 ||
	    (rc = main_parse_number("connections", mo->connections, 1, 64, &cfg->connections)) != 0 ||
	    (rc = main_parse_number("timeout", mo->timeout, 1, INT_MAX / 1000, &cfg->timeout)) != 0 ||
	    (rc = main_parse_number("watch", mo->watch, 0, 64, &cfg->watch)) != 0 ||
	    (rc = main_parse_number("follow_reader", mo->follow_reader, 0, 1, &cfg->follow_reader)) != 0)
		return rc;
	if (cfg->watch > cfg->connections - 1)
		cfg->watch = cfg->connections - 1;  /* one at least is left for reading */
	cfg->trash = g_strdup(mo->trash);
	cfg->show_deleted = mo->show_deleted;
	cfg->offline = mo->offline;
	cfg->readonly = mo->readonly || mo->offline;
	if (cfg->protocol == MF_PROTO_POP3)
		cfg->readonly = 1;  /* nothing on a POP3 server is ever changed */
	cfg->debug = mo->debug;
	cfg->oauth_command = g_strdup(mo->oauth_command);
	cfg->cache_dir = mo->cache_dir ? g_strdup(mo->cache_dir) : main_default_cache_dir(cfg);
	if (cfg->insecure)
		fprintf(stderr, "mailfs: warning: -o insecure: the server's certificate is not checked\n");
	return 0;
}

/* MAILFS_PASSWORD leaves the environment (children, /proc/PID/environ):
 * unsetenv alone leaves the bytes where the kernel reads environ from. */
static char *main_take_env_password(void)
{
	char *env = getenv("MAILFS_PASSWORD");
	char *copy = env && *env ? g_strdup(env) : NULL;

	if (env)
		explicit_bzero(env, strlen(env));
	unsetenv("MAILFS_PASSWORD");
	return copy;
}

/* Returns 0, or the exit status of the refusal it printed. */
static int main_get_password(struct main_opts *mo, struct mf_config *cfg)
{
	char *err = NULL;
	char *env;

	/* No core dump (an abort, a signal) and no ptrace by other users
	 * while a password or token is in memory. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	env = main_take_env_password();
	if (cfg->offline || cfg->oauth_command) {
		secret_free(env);
		return 0;
	}
	if (mo->password_command || mo->password_file) {
		secret_free(env);  /* those come first */
		env = NULL;
	}
	if (mo->password_command) {
		cfg->password = secret_from_command(mo->password_command, cfg->timeout, &err);
		if (!cfg->password) {
			/* No secret, no login: retrying would only run it again. */
			main_fail(MAIN_EXIT_LOGIN, "password_command: %s", err);
			g_free(err);
			return MAIN_EXIT_LOGIN;
		}
	} else if (mo->password_file) {
		cfg->password = secret_from_file(mo->password_file, &err);
		if (!cfg->password) {
			main_fail(MAIN_EXIT_USAGE, "password_file: %s", err);
			g_free(err);
			return MAIN_EXIT_USAGE;
		}
	} else if (env) {
		cfg->password = env;
		env = NULL;
	} else if (!main_netrc_has(cfg->host)) {
		return main_fail(MAIN_EXIT_USAGE, "no password for %s: give -o password_command=CMD, -o password_file=FILE, "
		                 "MAILFS_PASSWORD, or a ~/.netrc entry", cfg->host);
	}
	if (!cfg->user && cfg->password)
		return main_fail(MAIN_EXIT_USAGE, "no user name: put it in the URL (imaps://USER@%s/)", cfg->host);
	return 0;
}

/* mount(8) and mount.fuse3 run a user's fstab mount with HOME unset or
 * set to root's: the cache, ~/.netrc and a password_command such as
 * pass(1) must still find the user's home. */
static void main_fix_home(void)
{
	const char *home = g_getenv("HOME");
	struct passwd *pw = getpwuid(getuid());
	struct stat st;

	if (!pw || !pw->pw_dir)
		return;
	if (!home || !*home || stat(home, &st) != 0 || st.st_uid != getuid())
		g_setenv("HOME", pw->pw_dir, TRUE);
}

static void main_config_clear(struct mf_config *cfg)
{
	g_free(cfg->scheme);
	g_free(cfg->host);
	g_free(cfg->user);
	secret_free(cfg->password);
	g_free(cfg->oauth_command);
	g_free(cfg->cafile);
	g_free(cfg->cache_dir);
	g_free(cfg->trash);
}

/* Whether the command line names an fsname of its own (-o fsname=...). */
static int main_has_fsname(const struct fuse_args *args)
{
	for (int i = 1; i < args->argc; i++) {
		const char *opts = NULL;
		if (strcmp(args->argv[i], "-o") == 0 && i + 1 < args->argc)
			opts = args->argv[++i];
		else if (strncmp(args->argv[i], "-o", 2) == 0)
			opts = args->argv[i] + 2;
		for (const char *p = opts; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
			if (strncmp(p, "fsname=", 7) == 0)
				return 1;
	}
	return 0;
}

/* Whether waiting can help: a refused login or an untrusted certificate
 * stays so until the user acts. */
static int main_exit_for(enum mf_status st)
{
	return st == MF_ERR_AUTH || st == MF_ERR_TLS ? MAIN_EXIT_LOGIN : MAIN_EXIT_FAILURE;
}

/* Tells the service manager that the mount is up. A failure is only
 * logged: the mount works, and systemd reports the start timeout itself. */
static void main_notify_ready(const struct mf_config *cfg, const char *mountpoint)
{
	char *state = g_strdup_printf("READY=1\nSTATUS=%s://%s mounted on %s",
	                              cfg->scheme, cfg->host, mountpoint);
	int rc = notify_send(state);

	if (rc < 0)
		log_error("cannot notify the service manager ($NOTIFY_SOCKET): %s", g_strerror(-rc));
	g_free(state);
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct main_opts mo = { 0 };
	struct fuse_cmdline_opts cmd = { 0 };
	struct mf_config cfg = { 0 };
	struct store *store = NULL;
	struct mailbox *mb = NULL;
	struct sync_ctx *sync = NULL;
	struct fs_ctx *fsctx = NULL;
	struct fuse_session *se = NULL;
	char *err = NULL, *fsname = NULL;
	int saved_stderr, pipefd[2];
	int rc = MAIN_EXIT_FAILURE, mounted = 0, prc;
	enum mf_status st;

	/* mailfs prefetch PATH...: a client of a running mount (prefetch.c). */
	if (argc > 1 && strcmp(argv[1], "prefetch") == 0)
		return prefetch_main(argc - 1, argv + 1);
	/* Before anything can start a child (password_command). */
	notify_init();
	signal(SIGPIPE, SIG_IGN);
	/* Two malloc arenas, not eight per core: the parse pool's threads
	 * would each keep an arena of freed listing data (a 50,000-message
	 * folder's RSS fell by a tenth). */
	mallopt(M_ARENA_MAX, 2);
	main_fix_home();
	/* libfuse prints its own complaint: caught, so that it becomes our one line. */
	main_capture_stderr_begin(&saved_stderr, pipefd);
	prc = fuse_opt_parse(&args, &mo, main_opt_spec, main_opt_proc);
	err = main_capture_stderr_end(saved_stderr, pipefd);
	if (prc != 0) {
		rc = mo.refusal ? main_fail(MAIN_EXIT_USAGE, "%s", mo.refusal)
		                : main_fail_fuse(MAIN_EXIT_USAGE, err, "cannot parse the options (try mailfs --help)");
		goto out;
	}
	g_clear_pointer(&err, g_free);
	if (mo.show_help) {
		main_usage(stdout);
		rc = MAIN_EXIT_OK;
		goto out;
	}
	if (mo.show_version) {
		printf("mailfs %s (libfuse %s, %s)\n", MAILFS_VERSION, fuse_pkgversion(),
		       curl_version());
		rc = MAIN_EXIT_OK;
		goto out;
	}
	main_capture_stderr_begin(&saved_stderr, pipefd);
	prc = fuse_parse_cmdline(&args, &cmd);
	err = main_capture_stderr_end(saved_stderr, pipefd);
	if (prc != 0) {
		rc = main_fail_fuse(MAIN_EXIT_USAGE, err, "cannot parse the options (try mailfs --help)");
		goto out;
	}
	g_clear_pointer(&err, g_free);
	if (!mo.url || !cmd.mountpoint) {
		rc = main_fail(MAIN_EXIT_USAGE, "%s (usage: mailfs [options] URL MOUNTPOINT)",
		               mo.url ? "no mount point given" : "no URL and no mount point given");
		goto out;
	}
	net_global_init();
	if ((rc = main_build_config(&mo, &cfg)) != 0)
		goto out;
	if ((rc = main_get_password(&mo, &cfg)) != 0)
		goto out;
	rc = MAIN_EXIT_FAILURE;
	if (log_setup(mo.logfile, mo.debug) != 0) {
		rc = main_fail(MAIN_EXIT_USAGE, "cannot open the log file %s: %s", mo.logfile, g_strerror(errno));
		goto out;
	}

	/* libfuse checks its own options here: before any connection. What
	 * mount and df show: the user's -o fsname, else user@host[:port],
	 * as sshfs shows user@host:path (two accounts on one server differ). */
	if (!main_has_fsname(&args)) {
		char *who = g_strdup_printf("%s%s%s", cfg.user ? cfg.user : "", cfg.user ? "@" : "",
		                            cfg.host);
		int def = strcmp(cfg.scheme, "imaps") == 0 ? 993 : strcmp(cfg.scheme, "imap") == 0 ? 143
		        : strcmp(cfg.scheme, "pop3s") == 0 ? 995 : 110;
		char *port = cfg.port && cfg.port != def ? g_strdup_printf(":%d", cfg.port)
		                                         : g_strdup("");
		fsname = g_strdup_printf("-ofsname=%s%s", who, port);
		g_strdelimit(fsname + 2, ",", '_');  /* a comma would end the option */
		fuse_opt_add_arg(&args, fsname);
		g_free(who);
		g_free(port);
	}
	fuse_opt_add_arg(&args, "-osubtype=mailfs");
	/* Read-only for the kernel too (-o ro says so itself): a write open
	 * fails there with EROFS, also when no open reaches mailfs (fs.c). */
	if (cfg.readonly && !mo.readonly)
		fuse_opt_add_arg(&args, "-oro");
	if (cmd.debug)
		cmd.foreground = 1;
	main_capture_stderr_begin(&saved_stderr, pipefd);
	fsctx = fs_new(&cfg);
	se = fuse_session_new(&args, fs_operations(), sizeof(struct fuse_lowlevel_ops), fsctx);
	err = main_capture_stderr_end(saved_stderr, pipefd);
	if (!se) {
		rc = main_fail_fuse(MAIN_EXIT_USAGE, err, "bad option: rejected by libfuse");
		goto out;
	}
	if (err && *err)
		fprintf(stderr, "%s\n", err);
	g_clear_pointer(&err, g_free);

	mime_init();
	if (cfg.offline) {
		char *db = g_build_filename(cfg.cache_dir, "cache.sqlite", NULL);
		int have = g_file_test(db, G_FILE_TEST_EXISTS);
		g_free(db);
		if (!have) {
			rc = main_fail(MAIN_EXIT_USAGE, "offline: no cache in %s to serve", cfg.cache_dir);
			goto out;
		}
	}
	store = store_open(cfg.cache_dir, cfg.cache_size, &err);
	if (!store) {
		main_fail(MAIN_EXIT_FAILURE, "cache %s: %s", cfg.cache_dir, err ? err : "cannot open");
		goto out;
	}
	if (!cfg.offline) {
		st = cfg.protocol == MF_PROTO_POP3 ? pop3_mailbox_open(&cfg, &mb, &err)
		                                   : imap_mailbox_open(&cfg, &mb, &err);
		if (st != MF_OK) {
			rc = main_fail(main_exit_for(st), "%s", err ? err : mf_status_str(st));
			goto out;
		}
	}
	sync = sync_new(&cfg, store, mb);
	if (mb) {
		st = sync_folders(sync);
		if (st != MF_OK) {
			rc = main_fail(main_exit_for(st), "cannot list the folders of %s: %s", cfg.host,
			               mf_status_str(st));
			goto out;
		}
	}

	fs_attach(fsctx, store, sync, se);

	main_capture_stderr_begin(&saved_stderr, pipefd);
	prc = fuse_session_mount(se, cmd.mountpoint);
	err = main_capture_stderr_end(saved_stderr, pipefd);
	if (prc != 0) {
		main_fail(MAIN_EXIT_FAILURE, "cannot mount on %s: %s", cmd.mountpoint,
		          err ? err : "fuse_mount failed");
		goto out;
	}
	g_clear_pointer(&err, g_free);
	mounted = 1;
	fs_set_mountpoint(fsctx, cmd.mountpoint);
	if (fuse_daemonize(cmd.foreground) != 0) {
		main_fail(MAIN_EXIT_FAILURE, "cannot daemonize");
		goto out;
	}
	store_claim(store);  /* the cache's lock names the process that stays */
	if (!cmd.foreground && !mo.logfile)
		log_use_syslog();
	log_info("mounted %s://%s on %s", cfg.scheme, cfg.host, cmd.mountpoint);
	if (fuse_set_signal_handlers(se) != 0) {
		log_error("cannot set signal handlers");
		goto out;
	}
	/* Mounted, and in the process that serves it (the daemon, or the
	 * foreground process a Type=notify unit started). */
	main_notify_ready(&cfg, cmd.mountpoint);
	if (cmd.singlethread) {
		prc = fuse_session_loop(se);
	} else {
		/* libfuse's own loop options (-o clone_fd, max_idle_threads,
		 * max_threads), as fuse_parse_cmdline read them. */
		struct fuse_loop_config *lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(lc, cmd.clone_fd);
		/* Unset is UINT_MAX, which libfuse 3.14 logs as "Ignoring
		 * invalid max threads value" at every mount. */
		if (cmd.max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(lc, cmd.max_idle_threads);
		fuse_loop_cfg_set_max_threads(lc, cmd.max_threads);
		prc = fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	notify_send("STOPPING=1");
	fs_stop(fsctx);  /* push and invalidations end while the session exists */
	/* A positive value is the signal (SIGTERM from systemctl stop, ^C)
	 * that asked for the unmount: a clean end, as an unmount is. */
	rc = prc < 0 ? MAIN_EXIT_FAILURE : MAIN_EXIT_OK;
	if (prc < 0)
		log_error("the FUSE loop failed: %s", g_strerror(-prc));
	fuse_remove_signal_handlers(se);
	log_info("unmounted %s", cmd.mountpoint);
out:
	if (mounted)
		fuse_session_unmount(se);
	if (se)
		fuse_session_destroy(se);
	sync_free(sync);
	fs_free(fsctx);
	if (mb)
		mb->ops->destroy(mb);
	if (store)
		store_close(store);
	g_free(err);
	g_free(fsname);
	free(cmd.mountpoint);
	fuse_opt_free_args(&args);
	main_config_clear(&cfg);
	g_free(mo.url);
	g_free(mo.refusal);
	g_free(mo.password_command);
	g_free(mo.password_file);
	g_free(mo.oauth_command);
	g_free(mo.tls);
	g_free(mo.cafile);
	g_free(mo.cache_dir);
	g_free(mo.cache_size);
	g_free(mo.names);
	g_free(mo.trash);
	g_free(mo.logfile);
	g_free(mo.refresh);
	g_free(mo.connections);
	g_free(mo.watch);
	g_free(mo.follow_reader);
	g_free(mo.timeout);
	return rc;
}
