/* imap_parse.c — the IMAP response parser: bytes in, struct imap_response
 * out. Pure: no sockets, no globals, no I/O, never reads past len.
 *
 * The engine calls it again on a response that is still arriving, so the
 * same code runs twice: a first pass only checks the bytes and finds the
 * response's end (literal bytes are skipped by count, nothing is
 * allocated), and only when the response is complete and valid does a
 * second pass build the values. Decisions are taken on whole lines only,
 * so a prefix of a valid response is always INCOMPLETE, never ERROR. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "imap_parse.h"
#include "civil.h"

#define IMAP_MAX_DEPTH 64
/* The fuzz build lowers these (Makefile, FUZZ_DEFS_*) so that inputs of
 * 64 KiB reach the paths past them. */
#ifndef IMAP_MAX_LINE
#define IMAP_MAX_LINE ((size_t)1024 * 1024)
#endif
#ifndef IMAP_MAX_LITERAL
#define IMAP_MAX_LITERAL ((uint64_t)1024 * 1024 * 1024)
#endif

struct imap_parser {
	const char *buf;
	size_t len;
	size_t pos;
	size_t line_end;      /* index of the CR or LF that ends the current line */
	size_t line_next;     /* index just after that line's LF */
	size_t no_close_from; /* no ']' after this index on the current line */
	int build;            /* 0: check and measure only; 1: build values */
	size_t need;          /* INCOMPLETE: total length that could complete it */
	size_t error_end;     /* ERROR: end of the offending line */
};

static enum imap_parse_result imap_parser_fail(struct imap_parser *p)
{
	p->error_end = p->line_next;
	return IMAP_PARSE_ERROR;
}

/* Finds the end of the line starting at p->pos. */
static enum imap_parse_result imap_parser_next_line(struct imap_parser *p)
{
	size_t avail = p->len - p->pos;
	size_t window = avail < IMAP_MAX_LINE + 2 ? avail : IMAP_MAX_LINE + 2;
	const char *lf = memchr(p->buf + p->pos, '\n', window);
	size_t lf_at;

	if (!lf) {
		if (window < IMAP_MAX_LINE + 2) {
			p->need = p->len + 1;
			return IMAP_PARSE_INCOMPLETE;
		}
		/* Too long: still tell the caller where that line ends. */
		lf = memchr(p->buf + p->pos + window, '\n', avail - window);
		p->error_end = lf ? (size_t)(lf - p->buf) + 1 : p->len;
		return IMAP_PARSE_ERROR;
	}
	lf_at = (size_t)(lf - p->buf);
	p->line_next = lf_at + 1;
	p->line_end = lf_at;
	if (lf_at > p->pos && p->buf[lf_at - 1] == '\r')
		p->line_end--;
	p->no_close_from = SIZE_MAX;
	if (p->line_end - p->pos > IMAP_MAX_LINE)
		return imap_parser_fail(p);
	/* NUL is never valid outside a literal; refusing it here keeps every
	 * atom, quoted string and text a plain C string. */
	if (memchr(p->buf + p->pos, '\0', p->line_end - p->pos))
		return imap_parser_fail(p);
	return IMAP_PARSE_OK;
}

static void imap_ascii_upper(char *s)
{
	for (; *s; s++)
		*s = g_ascii_toupper(*s);
}

static void imap_value_set_bytes(struct imap_parser *p, struct imap_value *v,
                                 enum imap_value_type type, const char *s,
                                 size_t len)
{
	v->type = type;
	v->len = len;
	if (!p->build)
		return;
	v->str = g_malloc(len + 1);
	memcpy(v->str, s, len);
	v->str[len] = '\0';
}

static void imap_skip_spaces(struct imap_parser *p)
{
	while (p->pos < p->line_end && p->buf[p->pos] == ' ')
		p->pos++;
}

/* Index of the first ']' after open on the current line, or SIZE_MAX.
 * Remembers a miss so that a line full of '[' stays linear. */
static size_t imap_find_close_bracket(struct imap_parser *p, size_t open)
{
	const char *close;

	if (open >= p->no_close_from)
		return SIZE_MAX;
	close = memchr(p->buf + open + 1, ']', p->line_end - open - 1);
	if (!close) {
		p->no_close_from = open;
		return SIZE_MAX;
	}
	return (size_t)(close - p->buf);
}

/* After "BODY[...]": skips a "<n>" or "<n.m>" partial, if there is one. */
static size_t imap_skip_partial(const struct imap_parser *p, size_t i)
{
	size_t j;

	if (i >= p->line_end || p->buf[i] != '<')
		return i;
	for (j = i + 1; j < p->line_end; j++) {
		char c = p->buf[j];
		if (!g_ascii_isdigit(c) && c != '.')
			break;
	}
	if (j > i + 1 && j < p->line_end && p->buf[j] == '>')
		return j + 1;
	return i;
}

static enum imap_parse_result imap_parse_atom(struct imap_parser *p,
                                              struct imap_value *v, int in_code)
{
	size_t i = p->pos;

	while (i < p->line_end) {
		unsigned char c = (unsigned char)p->buf[i];
		if (c == ' ' || c == '(' || c == ')' || c == '"' || c < 0x20 || c == 0x7f)
			break;
		if (c == ']' && in_code)
			break;
		if (c == '[') {
			/* A section runs to its ']' whatever it holds:
			 * "BODY[HEADER.FIELDS (DATE FROM)]<0>" is one atom. */
			size_t close = imap_find_close_bracket(p, i);
			if (close != SIZE_MAX) {
				i = imap_skip_partial(p, close + 1);
				continue;
			}
		}
		i++;
	}
	if (i == p->pos)
		return imap_parser_fail(p);
	if (i - p->pos == 3 && g_ascii_strncasecmp(p->buf + p->pos, "NIL", 3) == 0)
		v->type = IMAP_VALUE_NIL;
	else
		imap_value_set_bytes(p, v, IMAP_VALUE_ATOM, p->buf + p->pos, i - p->pos);
	p->pos = i;
	return IMAP_PARSE_OK;
}

static enum imap_parse_result imap_parse_quoted(struct imap_parser *p,
                                                struct imap_value *v)
{
	size_t start = p->pos + 1, i, n = 0;
	char *dst;

	for (i = start; i < p->line_end && p->buf[i] != '"'; i++, n++) {
		if (p->buf[i] == '\\' && ++i >= p->line_end)
			break;
	}
	if (i >= p->line_end)
		return imap_parser_fail(p);
	v->type = IMAP_VALUE_STRING;
	v->len = n;
	p->pos = i + 1;
	if (!p->build)
		return IMAP_PARSE_OK;
	dst = v->str = g_malloc(n + 1);
	for (i = start; p->buf[i] != '"'; i++) {
		if (p->buf[i] == '\\')
			i++;
		*dst++ = p->buf[i];
	}
	*dst = '\0';
	return IMAP_PARSE_OK;
}

/* "{n}", "{n+}" or "~{n}" at the end of a line, then n raw bytes. */
static enum imap_parse_result imap_parse_literal(struct imap_parser *p,
                                                 struct imap_value *v)
{
	size_t i = p->pos, start;
	uint64_t n = 0;
	int digits = 0;

	if (p->buf[i] == '~')
		i++;
	for (i++; i < p->line_end && g_ascii_isdigit(p->buf[i]); i++, digits++) {
		n = n * 10 + (uint64_t)(p->buf[i] - '0');
		if (n > IMAP_MAX_LITERAL)
			return imap_parser_fail(p);
	}
	if (digits == 0)
		return imap_parser_fail(p);
	if (i < p->line_end && p->buf[i] == '+')
		i++;
	if (i >= p->line_end || p->buf[i] != '}' || i + 1 != p->line_end)
		return imap_parser_fail(p);
	start = p->line_next;
	if (n > p->len - start) {
		/* At least one more byte follows the literal: the line's end. */
		p->need = start + (size_t)n + 1;
		return IMAP_PARSE_INCOMPLETE;
	}
	imap_value_set_bytes(p, v, IMAP_VALUE_STRING, p->buf + start, (size_t)n);
	p->pos = start + (size_t)n;
	return imap_parser_next_line(p);
}

static enum imap_parse_result imap_parse_items(struct imap_parser *p,
                                               struct imap_value *list,
                                               int depth, char close,
                                               int in_code,
                                               enum imap_value_type *first_type);

static enum imap_parse_result imap_parse_value(struct imap_parser *p,
                                               struct imap_value *v,
                                               int depth, int in_code)
{
	char c = p->buf[p->pos];

	if (c == '(') {
		if (depth >= IMAP_MAX_DEPTH)
			return imap_parser_fail(p);
		p->pos++;
		return imap_parse_items(p, v, depth + 1, ')', in_code, NULL);
	}
	if (c == '"')
		return imap_parse_quoted(p, v);
	if (c == '{' || (c == '~' && p->pos + 1 < p->line_end && p->buf[p->pos + 1] == '{')) {
		/* A response code must fit on its line. */
		if (in_code)
			return imap_parser_fail(p);
		return imap_parse_literal(p, v);
	}
	return imap_parse_atom(p, v, in_code);
}

/* Parses values up to close (')' or ']'), or up to the end of the line
 * (possibly after literals) when close is 0. Fills list as a LIST; on
 * failure list is cleared. In the checking pass list->count is counted
 * but list->items stays NULL. */
static enum imap_parse_result imap_parse_items(struct imap_parser *p,
                                               struct imap_value *list,
                                               int depth, char close,
                                               int in_code,
                                               enum imap_value_type *first_type)
{
	enum imap_parse_result rc;
	size_t capacity = 0;

	list->type = IMAP_VALUE_LIST;
	for (;;) {
		struct imap_value item = { 0 };
		char c;

		imap_skip_spaces(p);
		if (p->pos == p->line_end) {
			if (close == 0)
				return IMAP_PARSE_OK;
			rc = imap_parser_fail(p);
			goto out;
		}
		c = p->buf[p->pos];
		if (close != 0 && c == close) {
			p->pos++;
			return IMAP_PARSE_OK;
		}
		if (c == ')') {
			rc = imap_parser_fail(p);
			goto out;
		}
		rc = imap_parse_value(p, &item, depth, in_code);
		if (rc != IMAP_PARSE_OK)
			goto out;
		if (first_type && list->count == 0)
			*first_type = item.type;
		if (p->build) {
			if (list->count == capacity) {
				capacity = capacity ? capacity * 2 : 4;
				list->items = g_renew(struct imap_value, list->items, capacity);
			}
			list->items[list->count] = item;
		}
		list->count++;
	}
out:
	imap_value_clear(list);
	return rc;
}

/* "[...]" after a status word or "+": a list whose first item is an atom,
 * upper-cased. A code that does not parse is kept as one raw atom rather
 * than failing the response; "[]" or a '[' without ']' is just text. */
static void imap_parse_code(struct imap_parser *p, struct imap_value *code)
{
	size_t open = p->pos;
	enum imap_value_type first = IMAP_VALUE_NIL;
	const char *close;
	struct imap_value *raw;

	p->pos = open + 1;
	if (imap_parse_items(p, code, 0, ']', 1, &first) == IMAP_PARSE_OK &&
	    code->count > 0 && first == IMAP_VALUE_ATOM) {
		if (p->build)
			imap_ascii_upper(code->items[0].str);
		return;
	}
	imap_value_clear(code);
	close = memchr(p->buf + open + 1, ']', p->line_end - open - 1);
	if (!close || close == p->buf + open + 1) {
		p->pos = open;
		return;
	}
	code->type = IMAP_VALUE_LIST;
	code->count = 1;
	p->pos = (size_t)(close - p->buf) + 1;
	if (!p->build)
		return;
	raw = code->items = g_new0(struct imap_value, 1);
	imap_value_set_bytes(p, raw, IMAP_VALUE_ATOM, p->buf + open + 1,
	                     (size_t)(close - p->buf) - open - 1);
	imap_ascii_upper(raw->str);
}

/* Optional "[code]", then the rest of the line as text. */
static void imap_parse_resp_text(struct imap_parser *p, struct imap_response *r)
{
	imap_skip_spaces(p);
	if (p->pos < p->line_end && p->buf[p->pos] == '[') {
		imap_parse_code(p, &r->code);
		imap_skip_spaces(p);
	}
	if (p->build)
		r->text = g_strndup(p->buf + p->pos, p->line_end - p->pos);
	p->pos = p->line_end;
}

/* End of a tag (is_tag) or keyword starting at i. */
static size_t imap_token_end(const struct imap_parser *p, size_t i, int is_tag)
{
	for (; i < p->line_end; i++) {
		unsigned char c = (unsigned char)p->buf[i];
		if (c <= 0x20 || c >= 0x7f || strchr("(){\"%*\\", c))
			break;
		if (is_tag ? c == '+' : (c == '[' || c == ']'))
			break;
	}
	return i;
}

static enum imap_parse_result imap_parse_untagged(struct imap_parser *p,
                                                  struct imap_response *r)
{
	static const char *const status_words[] = { "OK", "NO", "BAD", "PREAUTH", "BYE" };
	static const enum imap_status_word status_values[] = {
		IMAP_STATUS_OK, IMAP_STATUS_NO, IMAP_STATUS_BAD,
		IMAP_STATUS_PREAUTH, IMAP_STATUS_BYE,
	};
	size_t i, end;

	r->kind = IMAP_RESPONSE_UNTAGGED;
	if (p->pos + 1 >= p->line_end || p->buf[p->pos + 1] != ' ')
		return imap_parser_fail(p);
	p->pos += 2;
	for (i = p->pos; i < p->line_end && g_ascii_isdigit(p->buf[i]); i++)
		;
	if (i > p->pos && i < p->line_end && p->buf[i] == ' ') {
		uint64_t n = 0;
		for (; p->pos < i; p->pos++) {
			n = n * 10 + (uint64_t)(p->buf[p->pos] - '0');
			if (n > UINT32_MAX)
				return imap_parser_fail(p);
		}
		r->has_number = 1;
		r->number = (uint32_t)n;
		p->pos++;
	}
	end = imap_token_end(p, p->pos, 0);
	if (end == p->pos || !g_ascii_isalpha(p->buf[p->pos]) ||
	    (end < p->line_end && p->buf[end] != ' '))
		return imap_parser_fail(p);
	if (p->build) {
		r->keyword = g_strndup(p->buf + p->pos, end - p->pos);
		imap_ascii_upper(r->keyword);
	}
	r->args.type = IMAP_VALUE_LIST;
	if (!r->has_number) {
		for (i = 0; i < G_N_ELEMENTS(status_words); i++) {
			if (end - p->pos == strlen(status_words[i]) &&
			    g_ascii_strncasecmp(p->buf + p->pos, status_words[i], end - p->pos) == 0) {
				r->status = status_values[i];
				p->pos = end;
				imap_parse_resp_text(p, r);
				return IMAP_PARSE_OK;
			}
		}
	}
	p->pos = end;
	return imap_parse_items(p, &r->args, 0, 0, 0, NULL);
}

static enum imap_parse_result imap_parse_tagged(struct imap_parser *p,
                                                struct imap_response *r)
{
	size_t tag_end = imap_token_end(p, p->pos, 1), end;
	size_t word_len;

	r->kind = IMAP_RESPONSE_TAGGED;
	if (tag_end == p->pos || tag_end >= p->line_end || p->buf[tag_end] != ' ')
		return imap_parser_fail(p);
	end = imap_token_end(p, tag_end + 1, 0);
	word_len = end - (tag_end + 1);
	if (end < p->line_end && p->buf[end] != ' ')
		return imap_parser_fail(p);
	if (word_len == 2 && g_ascii_strncasecmp(p->buf + tag_end + 1, "OK", 2) == 0)
		r->status = IMAP_STATUS_OK;
	else if (word_len == 2 && g_ascii_strncasecmp(p->buf + tag_end + 1, "NO", 2) == 0)
		r->status = IMAP_STATUS_NO;
	else if (word_len == 3 && g_ascii_strncasecmp(p->buf + tag_end + 1, "BAD", 3) == 0)
		r->status = IMAP_STATUS_BAD;
	else
		return imap_parser_fail(p);
	if (p->build) {
		r->tag = g_strndup(p->buf + p->pos, tag_end - p->pos);
		r->keyword = g_strndup(p->buf + tag_end + 1, word_len);
		imap_ascii_upper(r->keyword);
	}
	r->args.type = IMAP_VALUE_LIST;
	p->pos = end;
	imap_parse_resp_text(p, r);
	return IMAP_PARSE_OK;
}

static enum imap_parse_result imap_parse_one(struct imap_parser *p,
                                             struct imap_response *r)
{
	enum imap_parse_result rc = imap_parser_next_line(p);

	if (rc != IMAP_PARSE_OK)
		return rc;
	if (p->line_end == 0)
		return imap_parser_fail(p);
	if (p->buf[0] == '+') {
		r->kind = IMAP_RESPONSE_CONTINUATION;
		r->args.type = IMAP_VALUE_LIST;
		p->pos = 1;
		imap_parse_resp_text(p, r);
		return IMAP_PARSE_OK;
	}
	if (p->buf[0] == '*')
		return imap_parse_untagged(p, r);
	return imap_parse_tagged(p, r);
}

enum imap_parse_result imap_parse_response(const char *buf, size_t len,
                                           size_t *consumed, size_t *need,
                                           struct imap_response *out)
{
	struct imap_parser check = { .buf = buf, .len = len };
	struct imap_parser build = { .buf = buf, .len = len, .build = 1 };
	struct imap_response scratch = { 0 };
	enum imap_parse_result rc;
	size_t unused_consumed, unused_need;

	if (!consumed)
		consumed = &unused_consumed;
	if (!need)
		need = &unused_need;
	*consumed = 0;
	*need = 0;
	memset(out, 0, sizeof *out);
	if (!buf || len == 0) {
		*need = 1;
		return IMAP_PARSE_INCOMPLETE;
	}

	rc = imap_parse_one(&check, &scratch);
	imap_response_free(&scratch); /* owns nothing: the checking pass allocates nothing */
	if (rc == IMAP_PARSE_INCOMPLETE) {
		*need = check.need;
		return rc;
	}
	if (rc == IMAP_PARSE_ERROR) {
		*consumed = check.error_end;
		return rc;
	}
	rc = imap_parse_one(&build, out);
	if (rc != IMAP_PARSE_OK) {
		/* Both passes run the same code on the same bytes; never here. */
		imap_response_free(out);
		*consumed = check.line_next;
		return IMAP_PARSE_ERROR;
	}
	*consumed = build.line_next;
	return IMAP_PARSE_OK;
}

void imap_frame_init(struct imap_frame *f)
{
	memset(f, 0, sizeof *f);
}

/* Whether the first line, buf[0..end), is a status response or a
 * continuation, whose text runs to the line's end (no literals): the
 * same decision imap_parse_one and imap_parse_untagged take. */
static int imap_frame_is_status(const char *buf, size_t end)
{
	static const char *const words[] = { "OK", "NO", "BAD", "PREAUTH", "BYE" };

	if (end == 0)
		return 1;  /* an error for the parser: nothing more to wait for */
	if (buf[0] == '+')
		return 1;
	if (buf[0] != '*')
		return 1;  /* tagged */
	if (end < 2 || buf[1] != ' ')
		return 1;
	for (size_t i = 0; i < G_N_ELEMENTS(words); i++) {
		size_t n = strlen(words[i]);
		if (end >= 2 + n && g_ascii_strncasecmp(buf + 2, words[i], n) == 0 &&
		    (end == 2 + n || buf[2 + n] == ' ' || buf[2 + n] == '['))
			return 1;
	}
	return 0;
}

/* The literal announced at the end of line buf[start..end): its size in
 * *n and the index of its '{' (or '~') in *at; 0 when there is none. */
static int imap_frame_announcement(const char *buf, size_t start, size_t end,
                                   uint64_t *n, size_t *at)
{
	size_t i = end, digits_end;
	uint64_t value = 0;

	if (i == start || buf[i - 1] != '}')
		return 0;
	i--;
	if (i > start && buf[i - 1] == '+')
		i--;
	digits_end = i;
	while (i > start && g_ascii_isdigit(buf[i - 1]))
		i--;
	if (i == digits_end || i == start || buf[i - 1] != '{')
		return 0;
	for (size_t k = i; k < digits_end; k++) {
		value = value * 10 + (uint64_t)(buf[k] - '0');
		if (value > IMAP_MAX_LITERAL) {
			value = IMAP_MAX_LITERAL + 1;  /* too big, however many digits follow */
			break;
		}
	}
	i--;
	if (i > start && buf[i - 1] == '~')
		i--;
	*n = value;
	*at = i;
	return 1;
}

enum imap_frame_event imap_frame_scan(struct imap_frame *f, const char *buf, size_t len)
{
	while (f->scanned < len) {
		const char *lf;
		size_t end;

		if (f->literal_left > 0) {
			size_t have = len - f->scanned;
			size_t skip = f->literal_left < have ? (size_t)f->literal_left : have;
			f->scanned += skip;
			f->literal_left -= skip;
			if (f->literal_left == 0)
				f->line_start = f->scanned;
			continue;
		}
		lf = memchr(buf + f->scanned, '\n', len - f->scanned);
		if (!lf) {
			f->scanned = len;
			break;
		}
		end = (size_t)(lf - buf);
		f->scanned = end + 1;
		if (end - f->line_start > IMAP_MAX_LINE + 1)
			return IMAP_FRAME_TOO_BIG;
		if (end > f->line_start && buf[end - 1] == '\r')
			end--;
		if (f->line_start == 0 && imap_frame_is_status(buf, end))
			f->no_literals = 1;
		if (f->no_literals ||
		    !imap_frame_announcement(buf, f->line_start, end, &f->announced, &f->announce_at))
			return IMAP_FRAME_COMPLETE;
		if (f->announced > IMAP_MAX_LITERAL || ++f->literals > IMAP_FRAME_MAX_LITERALS)
			return IMAP_FRAME_TOO_BIG;
		f->literal_left = f->announced;
		f->line_start = f->scanned;
		return IMAP_FRAME_LITERAL;
	}
	if (f->literal_left == 0 && f->scanned - f->line_start > IMAP_MAX_LINE + 2)
		return IMAP_FRAME_TOO_BIG;
	return IMAP_FRAME_MORE;
}

void imap_frame_skip_literal(struct imap_frame *f)
{
	f->literal_left = 0;
	f->line_start = f->scanned;
}

void imap_frame_empty_announcement(const struct imap_frame *f, char *buf)
{
	char *p = buf + f->announce_at;

	if (*p == '~')
		p++;
	for (p++; g_ascii_isdigit(*p); p++)
		*p = '0';
}

void imap_value_clear(struct imap_value *v)
{
	size_t i;

	if (!v)
		return;
	g_free(v->str);
	if (v->items) {
		for (i = 0; i < v->count; i++)
			imap_value_clear(&v->items[i]);
		g_free(v->items);
	}
	memset(v, 0, sizeof *v);
}

void imap_response_free(struct imap_response *r)
{
	if (!r)
		return;
	g_free(r->tag);
	g_free(r->keyword);
	g_free(r->text);
	imap_value_clear(&r->args);
	imap_value_clear(&r->code);
	memset(r, 0, sizeof *r);
}

int imap_value_is_atom(const struct imap_value *v, const char *word)
{
	size_t n;

	if (!v || v->type != IMAP_VALUE_ATOM || !v->str || !word)
		return 0;
	n = strlen(word);
	return v->len == n && g_ascii_strncasecmp(v->str, word, n) == 0;
}

int imap_value_number(const struct imap_value *v, uint64_t *n)
{
	uint64_t value = 0;
	size_t i;

	if (!v || (v->type != IMAP_VALUE_ATOM && v->type != IMAP_VALUE_STRING) ||
	    !v->str || v->len == 0)
		return -1;
	for (i = 0; i < v->len; i++) {
		unsigned digit;
		if (!g_ascii_isdigit(v->str[i]))
			return -1;
		digit = (unsigned)(v->str[i] - '0');
		if (value > (UINT64_MAX - digit) / 10)
			return -1;
		value = value * 10 + digit;
	}
	if (n)
		*n = value;
	return 0;
}

static const struct imap_value *imap_fetch_find(const struct imap_value *list,
                                                const char *name, int prefix,
                                                const struct imap_value **name_out)
{
	size_t n, i;

	if (name_out)
		*name_out = NULL;
	if (!list || list->type != IMAP_VALUE_LIST || !list->items || !name)
		return NULL;
	n = strlen(name);
	for (i = 0; i + 1 < list->count; i += 2) {
		const struct imap_value *key = &list->items[i];
		if (key->type != IMAP_VALUE_ATOM || key->len < n || (!prefix && key->len != n))
			continue;
		if (g_ascii_strncasecmp(key->str, name, n) == 0) {
			if (name_out)
				*name_out = key;
			return &list->items[i + 1];
		}
	}
	return NULL;
}

const struct imap_value *imap_fetch_get(const struct imap_value *list,
                                        const char *name)
{
	return imap_fetch_find(list, name, 0, NULL);
}

const struct imap_value *imap_fetch_get_prefix(const struct imap_value *list,
                                               const char *prefix,
                                               const struct imap_value **name_out)
{
	return imap_fetch_find(list, prefix, 1, name_out);
}

void imap_value_format(GString *out, const struct imap_value *v)
{
	size_t i;

	if (!out || !v)
		return;
	switch (v->type) {
	case IMAP_VALUE_NIL:
		g_string_append(out, "NIL");
		break;
	case IMAP_VALUE_ATOM:
		g_string_append_len(out, v->str ? v->str : "", v->str ? (gssize)v->len : 0);
		break;
	case IMAP_VALUE_STRING:
		if (v->str && (memchr(v->str, '\r', v->len) || memchr(v->str, '\n', v->len) ||
		               memchr(v->str, '\0', v->len))) {
			g_string_append_printf(out, "{%zu}\r\n", v->len);
			g_string_append_len(out, v->str, (gssize)v->len);
			break;
		}
		g_string_append_c(out, '"');
		for (i = 0; v->str && i < v->len; i++) {
			if (v->str[i] == '"' || v->str[i] == '\\')
				g_string_append_c(out, '\\');
			g_string_append_c(out, v->str[i]);
		}
		g_string_append_c(out, '"');
		break;
	case IMAP_VALUE_LIST:
		g_string_append_c(out, '(');
		for (i = 0; v->items && i < v->count; i++) {
			if (i > 0)
				g_string_append_c(out, ' ');
			imap_value_format(out, &v->items[i]);
		}
		g_string_append_c(out, ')');
		break;
	}
}

int imap_quote(GString *out, const char *s)
{
	const char *c;

	if (!out || !s)
		return -1;
	for (c = s; *c; c++) {
		if (*c == '\r' || *c == '\n' || (unsigned char)*c > 0x7f)
			return -1;
	}
	g_string_append_c(out, '"');
	for (c = s; *c; c++) {
		if (*c == '"' || *c == '\\')
			g_string_append_c(out, '\\');
		g_string_append_c(out, *c);
	}
	g_string_append_c(out, '"');
	return 0;
}

struct imap_uid_range {
	uint32_t lo, hi;
};

static int imap_uid_range_cmp(const void *a, const void *b)
{
	const struct imap_uid_range *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Reads a UID (1..4294967295) at *s, advancing it. */
static int imap_parse_uid(const char **s, uint32_t *uid)
{
	uint64_t n = 0;
	const char *c = *s;

	if (!g_ascii_isdigit(*c))
		return -1;
	for (; g_ascii_isdigit(*c); c++) {
		n = n * 10 + (uint64_t)(*c - '0');
		if (n > UINT32_MAX)
			return -1;
	}
	if (n == 0)
		return -1;
	*uid = (uint32_t)n;
	*s = c;
	return 0;
}

int imap_parse_uid_set(const char *s, uint32_t **uids, size_t *count,
                       size_t max_count)
{
	struct imap_uid_range *ranges = NULL;
	size_t n_ranges = 0, capacity = 0, merged = 0, total = 0, i;
	uint32_t *result = NULL;
	int rc = -1;

	if (uids)
		*uids = NULL;
	if (count)
		*count = 0;
	if (!s || !uids || !count)
		goto out;
	for (;;) {
		struct imap_uid_range r;
		if (imap_parse_uid(&s, &r.lo) < 0)
			goto out;
		r.hi = r.lo;
		if (*s == ':') {
			s++;
			if (imap_parse_uid(&s, &r.hi) < 0)
				goto out;
			if (r.hi < r.lo) {
				uint32_t t = r.lo;
				r.lo = r.hi;
				r.hi = t;
			}
		}
		if (n_ranges == capacity) {
			capacity = capacity ? capacity * 2 : 8;
			ranges = g_renew(struct imap_uid_range, ranges, capacity);
		}
		ranges[n_ranges++] = r;
		if (*s == '\0')
			break;
		if (*s++ != ',')
			goto out;
	}
	/* Merge overlapping and adjacent ranges before expanding, so that a
	 * huge range is refused by its size, not by exhausting memory. */
	qsort(ranges, n_ranges, sizeof *ranges, imap_uid_range_cmp);
	for (i = 1; i < n_ranges; i++) {
		if ((uint64_t)ranges[i].lo <= (uint64_t)ranges[merged].hi + 1) {
			if (ranges[i].hi > ranges[merged].hi)
				ranges[merged].hi = ranges[i].hi;
		} else {
			ranges[++merged] = ranges[i];
		}
	}
	n_ranges = merged + 1;
	for (i = 0; i < n_ranges; i++) {
		uint64_t size = (uint64_t)ranges[i].hi - ranges[i].lo + 1;
		if (size > max_count - total)
			goto out;
		total += (size_t)size;
	}
	result = g_new(uint32_t, total);
	total = 0;
	for (i = 0; i < n_ranges; i++) {
		uint64_t uid;
		for (uid = ranges[i].lo; uid <= ranges[i].hi; uid++)
			result[total++] = (uint32_t)uid;
	}
	*uids = result;
	*count = total;
	result = NULL;
	rc = 0;
out:
	g_free(ranges);
	g_free(result);
	return rc;
}

/* INTERNALDATE the lenient way: sscanf and GDateTime. */
static int64_t imap_internaldate_slow(const char *s)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	int day, year, hh, mm, ss, zone;
	char mon[4], sign;
	GDateTime *dt;
	int64_t t;

	if (sscanf(s, " %d-%3s-%d %d:%d:%d %c%4d", &day, mon, &year, &hh, &mm, &ss, &sign, &zone) != 8)
		return -1;
	const char *m = strstr(months, mon);
	if (!m || (m - months) % 3 != 0 || (sign != '+' && sign != '-'))
		return -1;
	dt = g_date_time_new_utc(year, (int)((m - months) / 3) + 1, day, hh, mm, ss);
	if (!dt)
		return -1;
	t = g_date_time_to_unix(dt);
	g_date_time_unref(dt);
	int offset = (zone / 100) * 3600 + (zone % 100) * 60;
	return sign == '+' ? t - offset : t + offset;
}

int64_t imap_parse_internaldate(const char *s)
{
	int day, month, year, hh, mm, ss, zh, zm;
	const char *p = s;

	/* What servers send: "DD-Mon-YYYY HH:MM:SS +HHMM", the day maybe
	 * " D"; anything else goes the lenient way. Every character is
	 * looked at only once those before it were found to be no NUL. */
	if (p[0] == ' ')
		p++;
	int n = p[0] && p[1] == '-' ? 1 : 2;
	if (!civil_digits(p, n, &day) || p[n] != '-')
		return imap_internaldate_slow(s);
	p += n + 1;
	month = civil_month(p);
	if (!month || p[3] != '-' || !civil_digits(p + 4, 4, &year) || p[8] != ' ' ||
	    !civil_digits(p + 9, 2, &hh) || p[11] != ':' || !civil_digits(p + 12, 2, &mm) ||
	    p[14] != ':' || !civil_digits(p + 15, 2, &ss) || p[17] != ' ' ||
	    (p[18] != '+' && p[18] != '-') || !civil_digits(p + 19, 2, &zh) ||
	    !civil_digits(p + 21, 2, &zm) || p[23] != '\0' ||
	    year < 1 || day < 1 || day > civil_days_in_month(year, month) || hh > 23 || mm > 59 ||
	    ss > 59)
		return imap_internaldate_slow(s);
	int64_t t = civil_days_from(year, month, day) * 86400 + hh * 3600 + mm * 60 + ss;
	int offset = zh * 3600 + zm * 60;
	return p[18] == '+' ? t - offset : t + offset;
}
