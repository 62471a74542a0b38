/* civil.h — calendar arithmetic and the pieces of a date the readers
 * share (mime.c for Date headers and names, imap_parse.c for
 * INTERNALDATE): days since 1970-01-01 of the proleptic Gregorian
 * calendar, without a GDateTime per date. */
#ifndef MAILFS_CIVIL_H
#define MAILFS_CIVIL_H

#include <stdint.h>
#include <string.h>

/* Days from 1970-01-01 to y-m-d (m 1..12, d 1..31). */
static inline int64_t civil_days_from(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static inline int civil_days_in_month(int64_t y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
		return 29;
	return days[m - 1];
}

/* y-m-d of the day z days after 1970-01-01 (the inverse of civil_days_from). */
static inline void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;

	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

/* The n decimal digits at p as *value; 0 when one is not a digit. Stops
 * at the first that is not, so p need not hold n bytes past a NUL. */
static inline int civil_digits(const char *p, int n, int *value)
{
	*value = 0;
	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return 0;
		*value = *value * 10 + (p[i] - '0');
	}
	return 1;
}

/* The month named by the English abbreviation at p ("Jan" 1 .. "Dec" 12),
 * 0 for none; case as written, at most 3 bytes read, none past a NUL. */
static inline int civil_month(const char *p)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

	for (int i = 0; i < 12; i++)
		if (strncmp(p, months + 3 * i, 3) == 0)
			return i + 1;
	return 0;
}

#endif
