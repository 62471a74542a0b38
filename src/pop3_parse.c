/* pop3_parse.c — the POP3 reply parser: bytes in, status lines, unstuffed
 * multi-line payloads and the fields of UIDL/LIST/CAPA lines out.
 * Pure: no sockets, no globals, no I/O, never reads past len.
 *
 * Status lines are decided on whole lines only, so a prefix of a valid
 * reply is INCOMPLETE, never ERROR. Multi-line bodies are streamed: the
 * caller keeps a struct pop3_multiline between pieces and only the start
 * of a line beginning with "." is ever held back. */
#include <string.h>
#include "pop3_parse.h"

void pop3_status_clear(struct pop3_status *s)
{
	g_free(s->text);
	g_free(s->code);
	*s = (struct pop3_status){ 0 };
}

static int pop3_is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Does the line start with word (ASCII case ignored), followed by a blank
 * or the end of the line? */
static int pop3_line_has_word(const char *line, size_t len, const char *word)
{
	size_t n = strlen(word);

	if (len < n || g_ascii_strncasecmp(line, word, n) != 0)
		return 0;
	return len == n || line[n] == ' ' || line[n] == '\t';
}

/* "[IN-USE] text" -> code "IN-USE", *rest after the code; NULL if none. */
static char *pop3_response_code(const char *text, const char **rest)
{
	const char *close;
	char *code;

	*rest = text;
	if (text[0] != '[')
		return NULL;
	close = strchr(text, ']');
	if (!close || close == text + 1)
		return NULL;
	for (const char *p = text + 1; p < close; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return NULL;
	code = g_ascii_strup(text + 1, close - text - 1);
	*rest = close + 1;
	return code;
}

enum pop3_parse_result pop3_parse_status(const char *buf, size_t len, size_t *consumed,
                                         struct pop3_status *out)
{
	size_t window = len < POP3_MAX_STATUS_LINE + 2 ? len : POP3_MAX_STATUS_LINE + 2;
	const char *lf = window ? memchr(buf, '\n', window) : NULL;
	size_t line_len, next, skip;
	const char *rest;
	char *text;

	*out = (struct pop3_status){ 0 };
	*consumed = 0;
	if (!lf) {
		if (window < POP3_MAX_STATUS_LINE + 2)
			return POP3_PARSE_INCOMPLETE;
		/* Too long: still tell the caller where that line ends. */
		lf = memchr(buf + window, '\n', len - window);
		*consumed = lf ? (size_t)(lf - buf) + 1 : len;
		return POP3_PARSE_ERROR;
	}
	next = (size_t)(lf - buf) + 1;
	line_len = next - 1;
	if (line_len > 0 && buf[line_len - 1] == '\r')
		line_len--;
	*consumed = next;
	if (line_len > POP3_MAX_STATUS_LINE || memchr(buf, '\0', line_len))
		return POP3_PARSE_ERROR;
	if (pop3_line_has_word(buf, line_len, "+OK")) {
		out->ok = 1;
		skip = 3;
	} else if (pop3_line_has_word(buf, line_len, "-ERR")) {
		out->ok = 0;
		skip = 4;
	} else {
		return POP3_PARSE_ERROR;
	}
	while (skip < line_len && (buf[skip] == ' ' || buf[skip] == '\t'))
		skip++;
	text = g_strndup(buf + skip, line_len - skip);
	g_strchomp(text);
	out->code = pop3_response_code(text, &rest);
	if (out->code) {
		while (*rest == ' ' || *rest == '\t')
			rest++;
		out->text = g_strdup(rest);
		g_free(text);
	} else {
		out->text = text;
	}
	return POP3_PARSE_OK;
}

void pop3_multiline_init(struct pop3_multiline *m)
{
	*m = (struct pop3_multiline){ .at_line_start = 1 };
}

enum pop3_parse_result pop3_parse_multiline(struct pop3_multiline *m, const char *buf,
                                            size_t len, size_t *consumed, GString *out)
{
	size_t pos = 0;

	*consumed = 0;
	if (m->done)
		return POP3_PARSE_OK;
	if (m->line_len > POP3_MAX_BODY_LINE)
		return POP3_PARSE_ERROR;
	while (pos < len) {
		if (m->at_line_start && buf[pos] == '.') {
			/* A "." line ends the body; any other line starting with "."
			 * was stuffed by the server: drop that first dot. */
			size_t end = 0;
			if (pos + 1 >= len)
				break;
			if (buf[pos + 1] == '\n') {
				end = pos + 2;
			} else if (buf[pos + 1] == '\r') {
				if (pos + 2 >= len)
					break;
				if (buf[pos + 2] == '\n')
					end = pos + 3;
			}
			if (end) {
				m->done = 1;
				m->at_line_start = 0;
				*consumed = end;
				return POP3_PARSE_OK;
			}
			pos++;
			m->line_len = 1;
		}
		m->at_line_start = 0;
		const char *lf = memchr(buf + pos, '\n', len - pos);
		size_t end = lf ? (size_t)(lf - buf) + 1 : len;
		size_t n = end - pos;
		/* The line end (up to CRLF) does not count against the limit. */
		if (m->line_len + n > POP3_MAX_BODY_LINE + 2) {
			m->line_len = POP3_MAX_BODY_LINE + 1;
			*consumed = pos;
			return POP3_PARSE_ERROR;
		}
		g_string_append_len(out, buf + pos, (gssize)n);
		m->bytes += n;
		if (lf) {
			m->at_line_start = 1;
			m->line_len = 0;
		} else {
			m->line_len += n;
		}
		pos = end;
	}
	*consumed = pos;
	return POP3_PARSE_INCOMPLETE;
}

int pop3_next_line(const char *buf, size_t len, size_t *pos, const char **line,
                   size_t *line_len)
{
	const char *lf;
	size_t start = *pos, end;

	if (start >= len)
		return 0;
	lf = memchr(buf + start, '\n', len - start);
	end = lf ? (size_t)(lf - buf) : len;
	*pos = lf ? end + 1 : len;
	if (lf && end > start && buf[end - 1] == '\r')
		end--;
	*line = buf + start;
	*line_len = end - start;
	return 1;
}

/* Reads a decimal number of at most max; *p advanced. Returns 0 or -1. */
static int pop3_number(const char *s, size_t len, size_t *p, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t start = *p;

	while (*p < len && g_ascii_isdigit(s[*p])) {
		unsigned d = (unsigned)(s[*p] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
		(*p)++;
	}
	if (*p == start)
		return -1;
	*out = v;
	return 0;
}

static void pop3_skip_blanks(const char *s, size_t len, size_t *p)
{
	while (*p < len && pop3_is_blank(s[*p]))
		(*p)++;
}

/* "<msgno><blanks>" at the start of a scan line. */
static int pop3_scan_msgno(const char *line, size_t len, size_t *p, uint32_t *msgno)
{
	uint64_t n;

	*p = 0;
	pop3_skip_blanks(line, len, p);
	if (pop3_number(line, len, p, UINT32_MAX, &n) != 0 || n == 0)
		return -1;
	if (*p >= len || !pop3_is_blank(line[*p]))
		return -1;
	pop3_skip_blanks(line, len, p);
	*msgno = (uint32_t)n;
	return 0;
}

int pop3_parse_uidl_line(const char *line, size_t len, uint32_t *msgno,
                         const char **uidl, size_t *uidl_len)
{
	size_t p, start;

	if (pop3_scan_msgno(line, len, &p, msgno) != 0)
		return -1;
	start = p;
	while (p < len && (unsigned char)line[p] > 0x20 && (unsigned char)line[p] < 0x7f)
		p++;
	if (p == start || p - start > 512)
		return -1;
	*uidl = line + start;
	*uidl_len = p - start;
	pop3_skip_blanks(line, len, &p);
	return p == len ? 0 : -1;
}

int pop3_parse_list_line(const char *line, size_t len, uint32_t *msgno, uint64_t *size)
{
	size_t p;

	if (pop3_scan_msgno(line, len, &p, msgno) != 0)
		return -1;
	if (pop3_number(line, len, &p, UINT64_MAX, size) != 0)
		return -1;
	return p == len || pop3_is_blank(line[p]) ? 0 : -1;
}

unsigned pop3_parse_capa(const char *buf, size_t len)
{
	static const struct { const char *name; unsigned bit; } known[] = {
		{ "TOP", POP3_CAPA_TOP }, { "UIDL", POP3_CAPA_UIDL },
		{ "PIPELINING", POP3_CAPA_PIPELINING }, { "USER", POP3_CAPA_USER },
		{ "SASL", POP3_CAPA_SASL }, { "STLS", POP3_CAPA_STLS },
		{ "RESP-CODES", POP3_CAPA_RESP_CODES },
	};
	const char *line;
	size_t pos = 0, line_len;
	unsigned caps = 0;

	while (pop3_next_line(buf, len, &pos, &line, &line_len)) {
		size_t p = 0;
		pop3_skip_blanks(line, line_len, &p);
		for (size_t k = 0; k < G_N_ELEMENTS(known); k++)
			if (pop3_line_has_word(line + p, line_len - p, known[k].name))
				caps |= known[k].bit;
	}
	return caps;
}

size_t pop3_header_block_len(const char *buf, size_t len)
{
	const char *line;
	size_t pos = 0, line_len;

	while (pop3_next_line(buf, len, &pos, &line, &line_len))
		if (line_len == 0)
			return pos;  /* an empty line, with its line end */
	return len;
}
