/* fuzz_imap_response.c — libFuzzer target for the IMAP response parser.
 * Consumes responses from the input the way the engine does, checks that
 * a prefix never parses differently from the whole, and runs the value
 * helpers on every result; frames the input as the engine does (in pieces,
 * literal bytes taken away or kept) and checks the framer against the
 * parser. Calls only imap_parse.h, so it links alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "imap_parse.h"

/* Every string is NUL-terminated at len; a code starts with an atom. */
static void fuzz_check_value(const struct imap_value *v)
{
	size_t i;

	switch (v->type) {
	case IMAP_VALUE_NIL:
		if (v->str || v->items)
			abort();
		break;
	case IMAP_VALUE_ATOM:
	case IMAP_VALUE_STRING:
		if (!v->str || v->str[v->len] != '\0')
			abort();
		if (v->type == IMAP_VALUE_ATOM && (v->len == 0 || strlen(v->str) != v->len))
			abort();
		break;
	case IMAP_VALUE_LIST:
		if (v->count > 0 && !v->items)
			abort();
		for (i = 0; i < v->count; i++)
			fuzz_check_value(&v->items[i]);
		break;
	default:
		abort();
	}
}

static void fuzz_exercise(const struct imap_response *r)
{
	GString *out = g_string_new(NULL);
	const struct imap_value *v, *name;
	uint64_t n;

	if (r->args.type != IMAP_VALUE_LIST)
		abort();
	fuzz_check_value(&r->args);
	fuzz_check_value(&r->code);
	if (r->code.type != IMAP_VALUE_NIL &&
	    (r->code.type != IMAP_VALUE_LIST || r->code.count == 0 ||
	     r->code.items[0].type != IMAP_VALUE_ATOM))
		abort();
	if (r->kind == IMAP_RESPONSE_TAGGED && (!r->tag || !r->keyword || !r->text))
		abort();
	if (r->kind == IMAP_RESPONSE_CONTINUATION && (r->keyword || !r->text))
		abort();
	if (r->kind == IMAP_RESPONSE_UNTAGGED && !r->keyword)
		abort();

	imap_value_format(out, &r->args);
	imap_value_format(out, &r->code);
	if (r->args.count > 0) {
		const struct imap_value *attrs = &r->args.items[0];
		v = imap_fetch_get(attrs, "UID");
		if (v)
			(void)imap_value_number(v, &n);
		v = imap_fetch_get(attrs, "BODY[]");
		if (v)
			imap_value_format(out, v);
		v = imap_fetch_get_prefix(attrs, "BODY[", &name);
		if (v && (!name || !imap_value_is_atom(name, name->str)))
			abort();
		(void)imap_fetch_get(attrs, "BODY[HEADER.FIELDS (DATE FROM)]");
		v = imap_fetch_get(attrs, "INTERNALDATE");
		if (v && v->type == IMAP_VALUE_STRING)
			(void)imap_parse_internaldate(v->str);
		(void)imap_value_is_atom(attrs, "NIL");
	}
	if (r->code.type == IMAP_VALUE_LIST && r->code.count > 1)
		(void)imap_value_number(&r->code.items[1], &n);
	g_string_free(out, TRUE);
}

/* The same response, compared through its rendering. */
static int fuzz_same_response(const struct imap_response *a, const struct imap_response *b)
{
	GString *x = g_string_new(NULL), *y = g_string_new(NULL);
	int same;

	imap_value_format(x, &a->args);
	imap_value_format(x, &a->code);
	imap_value_format(y, &b->args);
	imap_value_format(y, &b->code);
	same = a->kind == b->kind && a->status == b->status && a->number == b->number &&
	       g_strcmp0(a->tag, b->tag) == 0 && g_strcmp0(a->keyword, b->keyword) == 0 &&
	       g_strcmp0(a->text, b->text) == 0 && x->len == y->len &&
	       memcmp(x->str, y->str, x->len) == 0;
	g_string_free(x, TRUE);
	g_string_free(y, TRUE);
	return same;
}

/* A prefix must be INCOMPLETE, or give the same first response as the
 * whole. A copy of exactly cut bytes lets ASan catch any over-read. */
static void fuzz_check_prefix(const char *buf, size_t size, size_t cut)
{
	char *prefix = g_memdup2(buf, cut);
	struct imap_response whole, part;
	size_t whole_consumed, part_consumed, need;
	enum imap_parse_result whole_rc, part_rc;

	whole_rc = imap_parse_response(buf, size, &whole_consumed, &need, &whole);
	part_rc = imap_parse_response(prefix, cut, &part_consumed, &need, &part);
	if (part_rc == IMAP_PARSE_INCOMPLETE) {
		if (need <= cut)
			abort();
		if (whole_rc == IMAP_PARSE_OK && need > whole_consumed)
			abort();
	} else if (part_rc == IMAP_PARSE_OK) {
		if (whole_rc != IMAP_PARSE_OK || whole_consumed != part_consumed ||
		    !fuzz_same_response(&whole, &part))
			abort();
	} else if (whole_rc != IMAP_PARSE_ERROR) {
		abort();
	}
	imap_response_free(&whole);
	imap_response_free(&part);
	g_free(prefix);
}

/* Frames the first response of buf fed in pieces of step bytes; returns
 * the event that ended it and the frame. */
static enum imap_frame_event fuzz_frame(const char *buf, size_t size, size_t step,
                                        struct imap_frame *f)
{
	enum imap_frame_event ev = IMAP_FRAME_MORE;
	size_t len = 0;

	imap_frame_init(f);
	while (len < size) {
		char *piece;
		len = size - len < step ? size : len + step;
		piece = g_memdup2(buf, len);  /* exactly len bytes: ASan sees over-reads */
		do
			ev = imap_frame_scan(f, piece, len);
		while (ev == IMAP_FRAME_LITERAL);
		g_free(piece);
		if (f->scanned > len)
			abort();
		if (ev != IMAP_FRAME_MORE)
			break;
		if (f->scanned != len)
			abort();
	}
	return ev;
}

/* The framer, however the bytes come, ends a response where it did with
 * all of them at once; the parser of a framed response never wants more,
 * nor goes past its frame. */
static void fuzz_check_framer(const char *buf, size_t size, size_t step)
{
	struct imap_frame whole, pieces;
	enum imap_frame_event a = fuzz_frame(buf, size, size ? size : 1, &whole);
	enum imap_frame_event b = fuzz_frame(buf, size, step, &pieces);

	if (a != b || (a == IMAP_FRAME_COMPLETE && whole.scanned != pieces.scanned))
		abort();
	if (a == IMAP_FRAME_COMPLETE) {
		struct imap_response r;
		size_t consumed = 0;
		char *framed = g_memdup2(buf, whole.scanned);
		enum imap_parse_result rc = imap_parse_response(framed, whole.scanned, &consumed,
		                                                NULL, &r);
		if (rc == IMAP_PARSE_INCOMPLETE || consumed > whole.scanned)
			abort();
		imap_response_free(&r);
		g_free(framed);
	}
}

/* The engine's way with a body: each literal's bytes are taken out of
 * the buffer and its announcement made empty; the parser must then read
 * the response without them. */
static void fuzz_check_taken_literals(const char *buf, size_t size)
{
	char *copy = g_memdup2(buf, size);
	size_t len = size;
	struct imap_frame f;
	enum imap_frame_event ev;

	imap_frame_init(&f);
	while ((ev = imap_frame_scan(&f, copy, len)) == IMAP_FRAME_LITERAL) {
		size_t take = f.announced < len - f.scanned ? (size_t)f.announced : len - f.scanned;
		imap_frame_empty_announcement(&f, copy);
		imap_frame_skip_literal(&f);
		memmove(copy + f.scanned, copy + f.scanned + take, len - f.scanned - take);
		len -= take;
		if (take < f.announced)
			break;  /* the literal runs past the input */
	}
	if (ev == IMAP_FRAME_COMPLETE) {
		struct imap_response r;
		size_t consumed = 0;
		char *framed = g_memdup2(copy, f.scanned);
		enum imap_parse_result rc = imap_parse_response(framed, f.scanned, &consumed, NULL, &r);
		if (rc == IMAP_PARSE_INCOMPLETE || consumed > f.scanned)
			abort();
		if (rc == IMAP_PARSE_OK)
			fuzz_exercise(&r);
		imap_response_free(&r);
		g_free(framed);
	}
	g_free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t off = 0;

	while (off < size) {
		struct imap_response r;
		size_t consumed = 0, need = 0;
		enum imap_parse_result rc = imap_parse_response(buf + off, size - off,
		                                                &consumed, &need, &r);
		if (rc == IMAP_PARSE_INCOMPLETE) {
			if (need <= size - off || r.keyword || r.args.items)
				abort();
			break;
		}
		/* Without progress the engine would loop forever. */
		if (consumed == 0 || consumed > size - off)
			abort();
		if (rc == IMAP_PARSE_OK)
			fuzz_exercise(&r);
		else if (r.keyword || r.tag || r.args.items)
			abort();
		imap_response_free(&r);
		off += consumed;
	}

	if (size > 0) {
		fuzz_check_prefix(buf, size, (size_t)data[0] * size / 256);
		size_t step = 1 + (size_t)data[size - 1] * 61;
		if (size / step > 64)
			step = size / 64 + 1;  /* at most 65 pieces: each is a copy */
		fuzz_check_framer(buf, size, step);
		fuzz_check_taken_literals(buf, size);
	}

	/* The other pure helpers, on the input as a C string. */
	if (size < 4096) {
		char *s = g_strndup(buf, size);
		GString *out = g_string_new(NULL);
		uint32_t *uids = NULL;
		size_t count = 0, i;

		if (imap_parse_uid_set(s, &uids, &count, 100000) == 0) {
			for (i = 1; i < count; i++)
				if (uids[i] <= uids[i - 1])
					abort();
		} else if (uids || count) {
			abort();
		}
		g_free(uids);
		if (imap_quote(out, s) == 0 && (strchr(s, '\r') || strchr(s, '\n')))
			abort();
		g_string_free(out, TRUE);
		g_free(s);
	}
	return 0;
}
