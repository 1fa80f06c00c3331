/* The ingest consumer's per-batch kernel: what it costs Python several objects a reading to do,
 * done in one pass over the batch.
 *
 *   plan_batch(topics, recs, stations, entries, get_plan) -> each reading's check plan
 *   check_batch(recs, plans, latest, recent, keep, seen, row_type) -> the checked rows
 *   copy_rows(rows)                          -> (PostgreSQL binary COPY stream, keys unique?)
 *   reading_events(rows, stations, produced) -> [(station_id, readings.v1 JSON bytes), ...]
 *
 * The quality checks are written here only, driven by the plans that
 * services/ingest/domain/validation.py computes from its rule tables and each station's
 * attributes. A row is services.ingest.domain.rows.Row: (station_id, metric, ts, value, unit,
 * quality, checks, source). services/ingest/domain/kernel.py also holds a Python writer of the
 * COPY stream and of the events; tests check that the two give the same bytes (COPY) and the
 * same events (ids and parsed content), and anything this code is not written for (a naive
 * timestamp, an offset with seconds, a value of the wrong type) goes to it. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <blake2.h>
#include <datetime.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- a growable byte buffer ------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *src, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

static inline int buf_u16(Buf *b, uint16_t v) {
    unsigned char s[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    return buf_put(b, s, 2);
}

static inline int buf_u32(Buf *b, uint32_t v) {
    unsigned char s[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    return buf_put(b, s, 4);
}

static inline int buf_u64(Buf *b, uint64_t v) {
    unsigned char s[8];
    for (int i = 7; i >= 0; i--) {
        s[i] = (unsigned char)v;
        v >>= 8;
    }
    return buf_put(b, s, 8);
}

/* ---- timestamps ------------------------------------------------------------------------- */

static PyTypeObject *TimezoneType; /* datetime.timezone: a fixed offset, whatever the instant */
static PyObject *STR_REGION_CODE, *STR_KIND;

/* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil) */
static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The offsets of the fixed-offset tzinfos seen lately: a batch has one or two (its readings'
 * own, and UTC from the database's history). */
#define TZ_SLOTS 4
typedef struct {
    PyObject *tz[TZ_SLOTS]; /* owned (tz_release), compared by identity */
    int64_t offset_us[TZ_SLOTS];
    int next; /* the slot to fill next, round robin */
} TzCache;

static int utc_offset_us(PyObject *dt, TzCache *cache, int64_t *out) {
    PyObject *tz = PyDateTime_DATE_GET_TZINFO(dt);
    if (tz == Py_None) {
        PyErr_SetString(PyExc_ValueError, "a naive timestamp has no instant");
        return -1;
    }
    for (int k = 0; k < TZ_SLOTS; k++) {
        if (cache->tz[k] == tz) {
            *out = cache->offset_us[k];
            return 0;
        }
    }
    PyObject *delta = PyObject_CallMethod(tz, "utcoffset", "O", dt);
    if (delta == NULL) return -1;
    if (!PyDelta_Check(delta)) {
        Py_DECREF(delta);
        PyErr_SetString(PyExc_ValueError, "a timestamp whose tzinfo gives no offset");
        return -1;
    }
    int64_t us = ((int64_t)PyDateTime_DELTA_GET_DAYS(delta) * 86400 +
                  PyDateTime_DELTA_GET_SECONDS(delta)) * 1000000 +
                 PyDateTime_DELTA_GET_MICROSECONDS(delta);
    Py_DECREF(delta);
    if (Py_TYPE(tz) == TimezoneType) { /* constant: remember it */
        Py_INCREF(tz);
        Py_XSETREF(cache->tz[cache->next], tz);
        cache->offset_us[cache->next] = us;
        cache->next = (cache->next + 1) % TZ_SLOTS;
    }
    *out = us;
    return 0;
}

static void tz_release(TzCache *cache) {
    for (int k = 0; k < TZ_SLOTS; k++) Py_CLEAR(cache->tz[k]);
}

/* microseconds since 1970-01-01T00:00Z of an aware datetime; its offset in *offset_us */
static int unix_us(PyObject *dt, TzCache *cache, int64_t *out, int64_t *offset_us) {
    if (!PyDateTime_Check(dt)) {
        PyErr_SetString(PyExc_TypeError, "a row's ts must be a datetime");
        return -1;
    }
    if (utc_offset_us(dt, cache, offset_us) < 0) return -1;
    int64_t days = days_from_civil(PyDateTime_GET_YEAR(dt), PyDateTime_GET_MONTH(dt),
                                   PyDateTime_GET_DAY(dt));
    int64_t secs = days * 86400 + PyDateTime_DATE_GET_HOUR(dt) * 3600 +
                   PyDateTime_DATE_GET_MINUTE(dt) * 60 + PyDateTime_DATE_GET_SECOND(dt);
    *out = secs * 1000000 + PyDateTime_DATE_GET_MICROSECOND(dt) - *offset_us;
    return 0;
}

#define PG_EPOCH_US (INT64_C(946684800) * 1000000) /* 2000-01-01T00:00Z */

/* ---- rows --------------------------------------------------------------------------------- */

enum { F_STATION, F_METRIC, F_TS, F_VALUE, F_UNIT, F_QUALITY, F_CHECKS, F_SOURCE, N_FIELDS };

static PyObject *row_at(PyObject *rows, Py_ssize_t i) {
    PyObject *row = PyList_GET_ITEM(rows, i);
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != N_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "a row must be a tuple of 8 fields");
        return NULL;
    }
    return row;
}

static const char *utf8(PyObject *s, Py_ssize_t *n, const char *what) {
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "a row's %s must be a str", what);
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(s, n);
}

static int quality_code(PyObject *q) {
    Py_ssize_t n;
    const char *s = utf8(q, &n, "quality");
    if (s == NULL) return -1;
    if (n == 4 && memcmp(s, "good", 4) == 0) return 0;
    if (n == 8 && memcmp(s, "doubtful", 8) == 0) return 1;
    if (n == 3 && memcmp(s, "bad", 3) == 0) return 2;
    PyErr_Format(PyExc_ValueError, "unknown quality %R", q);
    return -1;
}

static int copy_text(Buf *b, PyObject *s, const char *what) {
    Py_ssize_t n;
    const char *p = utf8(s, &n, what);
    if (p == NULL || buf_u32(b, (uint32_t)n) < 0) return -1;
    return buf_put(b, p, n);
}

#define TEXT_OID 25

static int copy_checks(Buf *b, PyObject *checks) {
    PyObject *seq = PySequence_Fast(checks, "a row's checks must be a sequence");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t size = n ? 20 : 12;
    Py_ssize_t at = b->len;
    if (buf_u32(b, 0) < 0) goto fail; /* the length, filled in below */
    if (buf_u32(b, n ? 1 : 0) < 0 || buf_u32(b, 0) < 0 || buf_u32(b, TEXT_OID) < 0) goto fail;
    if (n && (buf_u32(b, (uint32_t)n) < 0 || buf_u32(b, 1) < 0)) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t before = b->len;
        if (copy_text(b, items[i], "check") < 0) goto fail;
        size += b->len - before;
    }
    Py_DECREF(seq);
    unsigned char *len = (unsigned char *)b->data + at;
    len[0] = (unsigned char)(size >> 24);
    len[1] = (unsigned char)(size >> 16);
    len[2] = (unsigned char)(size >> 8);
    len[3] = (unsigned char)size;
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

static int copy_row(Buf *b, PyObject *row, TzCache *tz, int64_t *us) {
    int64_t offset;
    double value;
    int quality;
    if (unix_us(PyTuple_GET_ITEM(row, F_TS), tz, us, &offset) < 0) return -1;
    value = PyFloat_AsDouble(PyTuple_GET_ITEM(row, F_VALUE));
    if (value == -1.0 && PyErr_Occurred()) return -1;
    if ((quality = quality_code(PyTuple_GET_ITEM(row, F_QUALITY))) < 0) return -1;
    uint64_t bits;
    memcpy(&bits, &value, 8);
    if (buf_u16(b, N_FIELDS) < 0 || copy_text(b, PyTuple_GET_ITEM(row, F_STATION), "station_id") < 0 ||
        copy_text(b, PyTuple_GET_ITEM(row, F_METRIC), "metric") < 0 || buf_u32(b, 8) < 0 ||
        buf_u64(b, (uint64_t)(*us - PG_EPOCH_US)) < 0 || buf_u32(b, 8) < 0 ||
        buf_u64(b, bits) < 0 || copy_text(b, PyTuple_GET_ITEM(row, F_UNIT), "unit") < 0 ||
        buf_u32(b, 2) < 0 || buf_u16(b, (uint16_t)quality) < 0 ||
        copy_checks(b, PyTuple_GET_ITEM(row, F_CHECKS)) < 0 ||
        copy_text(b, PyTuple_GET_ITEM(row, F_SOURCE), "source") < 0)
        return -1;
    return 0;
}

/* Whether no two rows share (station_id, metric, ts): open addressing over the row indices. */
static int keys_unique(PyObject *rows, const int64_t *us, Py_ssize_t n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap <<= 1;
    Py_ssize_t *slots = PyMem_Malloc(cap * sizeof(Py_ssize_t));
    Py_hash_t *hashes = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_hash_t));
    int unique = 1;
    if (slots == NULL || hashes == NULL) {
        PyErr_NoMemory();
        unique = -1;
        goto done;
    }
    memset(slots, 0xff, cap * sizeof(Py_ssize_t)); /* -1: empty */
    for (Py_ssize_t i = 0; i < n && unique == 1; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        PyObject *s = PyTuple_GET_ITEM(row, F_STATION), *m = PyTuple_GET_ITEM(row, F_METRIC);
        Py_hash_t hs = PyObject_Hash(s), hm = PyObject_Hash(m);
        if (hs == -1 || hm == -1) {
            unique = -1;
            break;
        }
        uint64_t h = ((uint64_t)hs * UINT64_C(1000003)) ^ (uint64_t)hm ^
                     ((uint64_t)us[i] * UINT64_C(0x9E3779B97F4A7C15));
        h ^= h >> 29;
        hashes[i] = (Py_hash_t)h;
        for (size_t j = (size_t)h & (cap - 1);; j = (j + 1) & (cap - 1)) {
            Py_ssize_t k = slots[j];
            if (k < 0) {
                slots[j] = i;
                break;
            }
            if (hashes[k] != (Py_hash_t)h || us[k] != us[i]) continue;
            PyObject *other = PyList_GET_ITEM(rows, k);
            int same = PyUnicode_Compare(s, PyTuple_GET_ITEM(other, F_STATION)) == 0 &&
                       PyUnicode_Compare(m, PyTuple_GET_ITEM(other, F_METRIC)) == 0;
            if (PyErr_Occurred()) {
                unique = -1;
                break;
            }
            if (same) {
                unique = 0;
                break;
            }
        }
    }
done:
    PyMem_Free(slots);
    PyMem_Free(hashes);
    return unique;
}

static PyObject *copy_rows(PyObject *self, PyObject *rows) {
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "rows must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    Buf b = {0};
    int64_t *us = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    PyObject *payload = NULL;
    TzCache tz = {{NULL}, {0}, 0};
    int unique;
    if (us == NULL) return PyErr_NoMemory();
    if (buf_reserve(&b, 21 + n * 96) < 0) goto done;
    buf_put(&b, "PGCOPY\n\377\r\n\0", 11);
    buf_u32(&b, 0); /* flags */
    buf_u32(&b, 0); /* header extension */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = row_at(rows, i);
        if (row == NULL || copy_row(&b, row, &tz, &us[i]) < 0) goto done;
    }
    if (buf_u16(&b, 0xffff) < 0) goto done; /* the trailer */
    if ((unique = keys_unique(rows, us, n)) < 0) goto done;
    PyObject *bytes = PyBytes_FromStringAndSize(b.data, b.len);
    if (bytes != NULL) payload = Py_BuildValue("(NO)", bytes, unique ? Py_True : Py_False);
done:
    tz_release(&tz);
    PyMem_Free(us);
    PyMem_Free(b.data);
    return payload;
}

/* ---- BLAKE2b: libb2, the reference implementation (Debian's libb2) ------------------------- */

/* BLAKE2b with a 16-byte digest, as hashlib.blake2b(data, digest_size=16) */
static void blake2b_16(const unsigned char *data, size_t len, unsigned char out[16]) {
    /* the streaming calls: their arguments are the same in every libb2 release (the one-shot
     * blake2b() changed its argument order between releases) */
    blake2b_state state;
    blake2b_init(&state, 16);
    blake2b_update(&state, data, len);
    blake2b_final(&state, out, 16);
}

/* ---- readings.v1 events -------------------------------------------------------------------- */

static int json_string(Buf *b, const char *s, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t plain = 0;
    while (plain < n) {
        unsigned char c = (unsigned char)s[plain];
        if (c < 0x20 || c == '"' || c == '\\') break;
        plain++;
    }
    if (plain == n) { /* nothing to escape: the usual case */
        if (buf_reserve(b, n + 2) < 0) return -1;
        char *o = b->data + b->len;
        *o = '"';
        memcpy(o + 1, s, (size_t)n);
        o[n + 1] = '"';
        b->len += n + 2;
        return 0;
    }
    if (buf_reserve(b, n * 6 + 2) < 0) return -1;
    char *o = b->data + b->len;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    b->len = o - b->data;
    return 0;
}

static int json_str(Buf *b, PyObject *s, const char *what) {
    Py_ssize_t n;
    const char *p = utf8(s, &n, what);
    return p == NULL ? -1 : json_string(b, p, n);
}

static inline char *digits(char *o, int v, int width) {
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

/* RFC 3339 in the datetime's own offset, as msgspec writes it: Z for UTC, microseconds when
 * there are any. */
static int json_datetime(Buf *b, PyObject *dt, int64_t offset_us) {
    if (offset_us % 60000000 != 0) {
        PyErr_SetString(PyExc_ValueError, "an offset with seconds");
        return -1;
    }
    char s[40], *o = s;
    *o++ = '"';
    o = digits(o, PyDateTime_GET_YEAR(dt), 4);
    *o++ = '-';
    o = digits(o, PyDateTime_GET_MONTH(dt), 2);
    *o++ = '-';
    o = digits(o, PyDateTime_GET_DAY(dt), 2);
    *o++ = 'T';
    o = digits(o, PyDateTime_DATE_GET_HOUR(dt), 2);
    *o++ = ':';
    o = digits(o, PyDateTime_DATE_GET_MINUTE(dt), 2);
    *o++ = ':';
    o = digits(o, PyDateTime_DATE_GET_SECOND(dt), 2);
    int us = PyDateTime_DATE_GET_MICROSECOND(dt);
    if (us) {
        *o++ = '.';
        o = digits(o, us, 6);
    }
    if (offset_us == 0) {
        *o++ = 'Z';
    } else {
        int64_t minutes = offset_us / 60000000;
        *o++ = minutes < 0 ? '-' : '+';
        if (minutes < 0) minutes = -minutes;
        o = digits(o, (int)(minutes / 60), 2);
        *o++ = ':';
        o = digits(o, (int)(minutes % 60), 2);
    }
    *o++ = '"';
    return buf_put(b, s, o - s);
}

/* the decimal digits of v, as "%lld" writes them; returns how many (at most 20) */
static size_t format_int(char *out, int64_t v) {
    char tmp[20];
    size_t n = 0, at = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[at++] = '-';
    while (n) out[at++] = tmp[--n];
    return at;
}

static const double POW10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6};

static int json_float(Buf *b, double v) {
    if (!isfinite(v)) return buf_put(b, "null", 4); /* as msgspec encodes nan and inf */
    /* The usual reading has a few decimals: the fewest k for which round(v * 10^k) / 10^k
     * gives v back is a shortest round-tripping notation, written without dtoa's bignums.
     * Anything else (tiny, huge, -0.0, many digits) is written by Python's repr. */
    double a = fabs(v);
    if (a >= 1e-4 && a < 1e9) {
        for (int k = 0; k <= 6; k++) {
            double r = nearbyint(v * POW10[k]);
            if (r / POW10[k] != v) continue;
            char s[40], *o = s;
            int64_t u = (int64_t)fabs(r);
            char digs[24];
            size_t n = format_int(digs, u);
            if (v < 0) *o++ = '-';
            if ((int)n <= k) { /* 0.00ddd */
                *o++ = '0';
                *o++ = '.';
                for (int z = 0; z < k - (int)n; z++) *o++ = '0';
                memcpy(o, digs, n);
                o += n;
            } else {
                memcpy(o, digs, n - (size_t)k);
                o += n - (size_t)k;
                *o++ = '.';
                if (k == 0) {
                    *o++ = '0';
                } else {
                    memcpy(o, digs + n - k, (size_t)k);
                    o += k;
                }
            }
            return buf_put(b, s, o - s);
        }
    }
    char *s = PyOS_double_to_string(v, 'r', 0, 0, NULL);
    if (s == NULL) return -1;
    int rc = buf_put(b, s, (Py_ssize_t)strlen(s));
    PyMem_Free(s);
    return rc;
}

#define LIT(b, s) buf_put(b, s, (Py_ssize_t)(sizeof(s) - 1))

/* stable_id("reading", station, metric, <µs since the epoch>) as hex, into out[32] */
static int event_id(PyObject *station, PyObject *metric, int64_t us, char out[32]) {
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t ns, nm;
    const char *s = utf8(station, &ns, "station_id"), *m;
    if (s == NULL || (m = utf8(metric, &nm, "metric")) == NULL) return -1;
    unsigned char stack[256], digest[16];
    size_t len = 8 + (size_t)ns + 1 + (size_t)nm + 1 + 21;
    unsigned char *msg = len <= sizeof stack ? stack : PyMem_Malloc(len);
    if (msg == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t at = 0;
    memcpy(msg, "reading\x1f", 8);
    at = 8;
    memcpy(msg + at, s, (size_t)ns);
    at += (size_t)ns;
    msg[at++] = 0x1f;
    memcpy(msg + at, m, (size_t)nm);
    at += (size_t)nm;
    msg[at++] = 0x1f;
    at += format_int((char *)msg + at, us);
    blake2b_16(msg, at, digest);
    if (msg != stack) PyMem_Free(msg);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    return 0;
}

/* Each station's part of the event, `,"region_code":"…","station_kind":"…"`, made once a
 * call and kept by station id (the ids' hashes are cached in the strings). */
typedef struct {
    PyObject *parts;      /* dict: station id -> bytes */
    PyObject *station_id; /* borrowed: the last row's, whose part is `part` */
    PyObject *part;       /* borrowed from parts */
} StationCache;

static int station_of(StationCache *c, PyObject *stations, PyObject *station_id) {
    if (station_id == c->station_id) return 0;
    PyObject *part = PyDict_GetItemWithError(c->parts, station_id);
    if (part == NULL) {
        if (PyErr_Occurred()) return -1;
        PyObject *station = PyObject_GetItem(stations, station_id);
        if (station == NULL) return -1;
        PyObject *region = PyObject_GetAttr(station, STR_REGION_CODE);
        PyObject *kind = region ? PyObject_GetAttr(station, STR_KIND) : NULL;
        Py_DECREF(station);
        Buf b = {0};
        int rc = kind == NULL || LIT(&b, ",\"region_code\":") < 0 ||
                         json_str(&b, region, "region_code") < 0 ||
                         LIT(&b, ",\"station_kind\":") < 0 || json_str(&b, kind, "kind") < 0
                     ? -1
                     : 0;
        Py_XDECREF(region);
        Py_XDECREF(kind);
        if (rc == 0) {
            part = PyBytes_FromStringAndSize(b.data, b.len);
            rc = part == NULL || PyDict_SetItem(c->parts, station_id, part) < 0 ? -1 : 0;
            Py_XDECREF(part); /* the dict holds it */
        }
        PyMem_Free(b.data);
        if (rc < 0) return -1;
    }
    c->station_id = station_id;
    c->part = part;
    return 0;
}

static int event_json(Buf *b, PyObject *row, StationCache *st, TzCache *tz,
                      const char *produced, Py_ssize_t produced_len) {
    PyObject *station = PyTuple_GET_ITEM(row, F_STATION), *metric = PyTuple_GET_ITEM(row, F_METRIC);
    PyObject *ts = PyTuple_GET_ITEM(row, F_TS);
    int64_t us, offset;
    char id[32];
    if (unix_us(ts, tz, &us, &offset) < 0 || event_id(station, metric, us, id) < 0) return -1;
    double value = PyFloat_AsDouble(PyTuple_GET_ITEM(row, F_VALUE));
    if (value == -1.0 && PyErr_Occurred()) return -1;
    PyObject *checks = PySequence_Fast(PyTuple_GET_ITEM(row, F_CHECKS), "checks: a sequence");
    if (checks == NULL) return -1;
    int rc = -1;
    if (LIT(b, "{\"event_id\":\"") < 0 || buf_put(b, id, 32) < 0 ||
        LIT(b, "\",\"produced_at\":") < 0 || buf_put(b, produced, produced_len) < 0 ||
        LIT(b, ",\"station_id\":") < 0 || json_str(b, station, "station_id") < 0 ||
        buf_put(b, PyBytes_AS_STRING(st->part), PyBytes_GET_SIZE(st->part)) < 0 ||
        LIT(b, ",\"metric\":") < 0 || json_str(b, metric, "metric") < 0 ||
        LIT(b, ",\"ts\":") < 0 || json_datetime(b, ts, offset) < 0 ||
        LIT(b, ",\"value\":") < 0 || json_float(b, value) < 0 ||
        LIT(b, ",\"unit\":") < 0 || json_str(b, PyTuple_GET_ITEM(row, F_UNIT), "unit") < 0 ||
        LIT(b, ",\"quality\":") < 0 ||
        json_str(b, PyTuple_GET_ITEM(row, F_QUALITY), "quality") < 0 ||
        LIT(b, ",\"quality_checks\":[") < 0)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(checks);
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((i && LIT(b, ",") < 0) ||
            json_str(b, PySequence_Fast_GET_ITEM(checks, i), "check") < 0)
            goto done;
    }
    if (LIT(b, "],\"source\":") < 0 ||
        json_str(b, PyTuple_GET_ITEM(row, F_SOURCE), "source") < 0 ||
        LIT(b, ",\"kind\":\"observation\",\"issued_at\":null}") < 0)
        goto done;
    rc = 0;
done:
    Py_DECREF(checks);
    return rc;
}

static PyObject *reading_events(PyObject *self, PyObject *args) {
    PyObject *rows, *stations, *produced_at;
    if (!PyArg_ParseTuple(args, "O!OO:reading_events", &PyList_Type, &rows, &stations,
                          &produced_at))
        return NULL;
    if (!PyDateTime_Check(produced_at)) {
        PyErr_SetString(PyExc_TypeError, "produced_at must be a datetime");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    Buf b = {0}, produced = {0};
    StationCache st = {PyDict_New(), NULL, NULL};
    if (st.parts == NULL) return NULL;
    TzCache tz = {{NULL}, {0}, 0};
    int64_t ignored, offset;
    PyObject *out = NULL, *events = PyList_New(n);
    if (events == NULL) {
        Py_DECREF(st.parts);
        return NULL;
    }
    if (unix_us(produced_at, &tz, &ignored, &offset) < 0 ||
        json_datetime(&produced, produced_at, offset) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = row_at(rows, i);
        if (row == NULL) goto done;
        PyObject *station = PyTuple_GET_ITEM(row, F_STATION);
        b.len = 0;
        if (station_of(&st, stations, station) < 0 ||
            event_json(&b, row, &st, &tz, produced.data, produced.len) < 0)
            goto done;
        PyObject *bytes = PyBytes_FromStringAndSize(b.data, b.len);
        if (bytes == NULL) goto done;
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(bytes);
            goto done;
        }
        Py_INCREF(station);
        PyTuple_SET_ITEM(pair, 0, station);
        PyTuple_SET_ITEM(pair, 1, bytes);
        if (PyUnicode_CheckExact(station)) PyObject_GC_UnTrack(pair); /* str and bytes */
        PyList_SET_ITEM(events, i, pair);
    }
    out = events;
    events = NULL;
done:
    tz_release(&tz);
    Py_XDECREF(events);
    Py_DECREF(st.parts);
    PyMem_Free(b.data);
    PyMem_Free(produced.data);
    return out;
}

/* ---- checks: plans and judging of a batch (services.ingest.domain.validation, in one pass each) --- */

/* a plan's packed form (CheckPlan.packed): canonical, converters, hard, soft, maintenance,
 * max_rate_per_h, stuck_count, judged, key */
#define PACKED_SIZE 9

static PyObject *S_VALUE, *S_UNIT, *S_KIND, *S_TS, *S_STATION_ID, *S_METRIC, *S_SOURCE,
    *S_PACKED, *S_STRIP, *S_LOWER, *S_GOOD, *S_DOUBTFUL, *S_SOFT_RANGE,
    *S_FUTURE, *S_MAINTENANCE, *S_SPIKE, *S_STUCK, *S_UNKNOWN_STATION, *S_MISSING_UNIT,
    *S_BAD_UNIT, *S_OUT_OF_HARD_RANGE, *EMPTY_TUPLE;

/* A reading's fields, read straight from the slots of its struct type (msgspec keeps them as
 * member descriptors) instead of by attribute lookup; any other object, or an unset field, is
 * asked by name. Each call returns a new reference. */
enum { R_VALUE, R_UNIT, R_KIND, R_TS, R_STATION_ID, R_METRIC, R_SOURCE, N_RFIELDS };

typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset[N_RFIELDS];
} Fields;

static PyObject **RFIELD_NAMES[N_RFIELDS] = {&S_VALUE, &S_UNIT, &S_KIND, &S_TS,
                                              &S_STATION_ID, &S_METRIC, &S_SOURCE};

static void fields_of(Fields *f, PyObject *recs) {
    f->type = NULL;
    if (PyList_GET_SIZE(recs) == 0) return;
    f->type = Py_TYPE(PyList_GET_ITEM(recs, 0));
    for (int k = 0; k < N_RFIELDS; k++) {
        f->offset[k] = -1;
        PyObject *d = PyObject_GetAttr((PyObject *)f->type, *RFIELD_NAMES[k]);
        if (d == NULL) {
            PyErr_Clear();
            continue;
        }
        if (Py_IS_TYPE(d, &PyMemberDescr_Type) &&
            ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX)
            f->offset[k] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
    }
}

static inline PyObject *field(const Fields *f, PyObject *rec, int k) {
    if (Py_TYPE(rec) == f->type && f->offset[k] >= 0) {
        PyObject *v = *(PyObject **)((char *)rec + f->offset[k]);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(rec, *RFIELD_NAMES[k]);
}

static int is_observation(PyObject *kind) {
    return PyUnicode_Check(kind) && PyUnicode_CompareWithASCIIString(kind, "observation") == 0;
}

static int add_count(PyObject *sources, PyObject *source, PyObject *topic, Py_ssize_t n) {
    PyObject *origin = PyTuple_Pack(2, source, topic);
    if (origin == NULL) return -1;
    PyObject *count = PyDict_GetItemWithError(sources, origin);
    PyObject *more = count == NULL && PyErr_Occurred()
                         ? NULL
                         : PyLong_FromSsize_t(count ? PyLong_AsSsize_t(count) + n : n);
    int rc = more == NULL ? -1 : PyDict_SetItem(sources, origin, more);
    Py_XDECREF(more);
    Py_DECREF(origin);
    return rc;
}

/* plan_batch(topics, recs, stations, entries, get_plan)
 *   -> (plans: [CheckPlan | None], judged: {(station, metric)}, sources: {(source, topic): n})
 * entries is PlanCache's dict station_id -> metric -> (StationInfo, CheckPlan); a miss, or an
 * entry made for another StationInfo, is asked of get_plan(station, metric). */
static PyObject *plan_batch(PyObject *self, PyObject *args) {
    PyObject *topics, *recs, *stations, *entries, *get_plan;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O:plan_batch", &PyList_Type, &topics, &PyList_Type,
                          &recs, &PyDict_Type, &stations, &PyDict_Type, &entries, &get_plan))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(recs);
    if (PyList_GET_SIZE(topics) != n) {
        PyErr_SetString(PyExc_ValueError, "topics and recs differ in length");
        return NULL;
    }
    PyObject *plans = PyList_New(n), *judged = PySet_New(NULL), *sources = PyDict_New();
    PyObject *out = NULL, *run_source = NULL, *run_topic = NULL;
    Py_ssize_t run = 0;
    Fields fields;
    fields_of(&fields, recs);
    if (plans == NULL || judged == NULL || sources == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *raw = PyList_GET_ITEM(recs, i);
        PyObject *sid = NULL, *metric = NULL, *source = NULL, *kind = NULL, *plan = NULL,
                 *packed = NULL;
        int ok = 0;
        if ((sid = field(&fields, raw, R_STATION_ID)) == NULL ||
            (metric = field(&fields, raw, R_METRIC)) == NULL ||
            (source = field(&fields, raw, R_SOURCE)) == NULL ||
            (kind = field(&fields, raw, R_KIND)) == NULL)
            goto next;
        /* the message count of (source, topic): counted in runs, a batch coming from one
         * source on one topic more often than not */
        PyObject *topic = PyList_GET_ITEM(topics, i);
        int same = run > 0 && (source == run_source || PyUnicode_Compare(source, run_source) == 0) &&
                   (topic == run_topic || PyUnicode_Compare(topic, run_topic) == 0);
        if (PyErr_Occurred()) goto next;
        if (same) {
            run++;
        } else {
            if (run > 0 && add_count(sources, run_source, run_topic, run) < 0) goto next;
            Py_INCREF(source);
            Py_XSETREF(run_source, source);
            Py_INCREF(topic);
            Py_XSETREF(run_topic, topic);
            run = 1;
        }
        PyObject *station = PyDict_GetItemWithError(stations, sid);
        if (station == NULL) {
            if (PyErr_Occurred()) goto next;
            Py_INCREF(Py_None);
            PyList_SET_ITEM(plans, i, Py_None); /* unknown station */
            ok = 1;
            goto next;
        }
        /* entries: station id -> metric -> (StationInfo, CheckPlan), looked up by the strings
         * in hand, with no key to build */
        PyObject *by_metric = PyDict_GetItemWithError(entries, sid), *hit = NULL;
        if (by_metric == NULL && PyErr_Occurred()) goto next;
        if (by_metric != NULL && PyDict_Check(by_metric)) {
            hit = PyDict_GetItemWithError(by_metric, metric);
            if (hit == NULL && PyErr_Occurred()) goto next;
        }
        if (hit != NULL && PyTuple_Check(hit) && PyTuple_GET_SIZE(hit) == 2 &&
            PyTuple_GET_ITEM(hit, 0) == station) {
            plan = PyTuple_GET_ITEM(hit, 1);
            Py_INCREF(plan);
        } else if ((plan = PyObject_CallFunctionObjArgs(get_plan, station, metric, NULL)) == NULL) {
            goto next;
        }
        if ((packed = PyObject_GetAttr(plan, S_PACKED)) == NULL) goto next;
        if (!PyTuple_Check(packed) || PyTuple_GET_SIZE(packed) != PACKED_SIZE) {
            PyErr_SetString(PyExc_TypeError, "a plan's packed form is a tuple of 9");
            goto next;
        }
        /* the plan's own key, one object for all its readings */
        if (PyTuple_GET_ITEM(packed, 7) == Py_True && is_observation(kind) &&
            PySet_Add(judged, PyTuple_GET_ITEM(packed, 8)) < 0)
            goto next;
        PyList_SET_ITEM(plans, i, plan);
        plan = NULL;
        ok = 1;
    next:
        Py_XDECREF(sid);
        Py_XDECREF(metric);
        Py_XDECREF(source);
        Py_XDECREF(kind);
        Py_XDECREF(plan);
        Py_XDECREF(packed);
        if (!ok) goto done;
    }
    if (run > 0 && add_count(sources, run_source, run_topic, run) < 0) goto done;
    out = PyTuple_Pack(3, plans, judged, sources);
done:
    Py_XDECREF(run_source);
    Py_XDECREF(run_topic);
    Py_XDECREF(plans);
    Py_XDECREF(judged);
    Py_XDECREF(sources);
    return out;
}

/* a reading's quality flags, the interned names (borrowed): soft range, future, maintenance,
 * spike, stuck at most */
typedef struct {
    PyObject *names[5];
    Py_ssize_t n;
} Flags;

static inline void flag(Flags *f, PyObject *name) {
    if (f->n < 5) f->names[f->n++] = name;
}

static PyObject *flags_tuple(const Flags *f) {
    if (f->n == 0) {
        Py_INCREF(EMPTY_TUPLE);
        return EMPTY_TUPLE;
    }
    PyObject *out = PyTuple_New(f->n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < f->n; i++) {
        Py_INCREF(f->names[i]);
        PyTuple_SET_ITEM(out, i, f->names[i]);
    }
    PyObject_GC_UnTrack(out); /* strings only */
    return out;
}

static int range_of(PyObject *r, double *lo, double *hi) {
    /* 0: no range; 1: [lo, hi]; -1: error */
    if (r == Py_None) return 0;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
        PyErr_SetString(PyExc_TypeError, "a range is a pair");
        return -1;
    }
    *lo = PyFloat_AsDouble(PyTuple_GET_ITEM(r, 0));
    if (*lo == -1.0 && PyErr_Occurred()) return -1;
    *hi = PyFloat_AsDouble(PyTuple_GET_ITEM(r, 1));
    if (*hi == -1.0 && PyErr_Occurred()) return -1;
    return 1;
}

/* The spike and stuck checks against a key's summary of its trusted readings, () or
 * (ts, value, run) (validation.Recent); adds the flags' names to *flags
 * (a list). Returns the summary's ts in *last_us, value in *last_value and run in *run, and
 * whether it has any, in *has_last. */
static int history(PyObject *last, int64_t ts_us, double value, PyObject *rate,
                   PyObject *stuck, Flags *flags, TzCache *tz, int64_t *last_us,
                   double *last_value, Py_ssize_t *run, int *has_last) {
    *has_last = 0;
    if (!PyTuple_Check(last) || (PyTuple_GET_SIZE(last) != 0 && PyTuple_GET_SIZE(last) != 3)) {
        PyErr_SetString(PyExc_TypeError, "a history summary is () or (ts, value, run)");
        return -1;
    }
    if (PyTuple_GET_SIZE(last) == 0) return 0;
    int64_t offset;
    if (unix_us(PyTuple_GET_ITEM(last, 0), tz, last_us, &offset) < 0) return -1;
    *last_value = PyFloat_AsDouble(PyTuple_GET_ITEM(last, 1));
    if (*last_value == -1.0 && PyErr_Occurred()) return -1;
    *run = PyLong_AsSsize_t(PyTuple_GET_ITEM(last, 2));
    if (*run == -1 && PyErr_Occurred()) return -1;
    *has_last = 1;
    if (ts_us <= *last_us) return 0; /* late: not judged */
    if (rate != Py_None) {
        double limit = PyFloat_AsDouble(rate);
        if (limit == -1.0 && PyErr_Occurred()) return -1;
        double hours = ((double)(ts_us - *last_us) / 1e6) / 3600.0;
        if (fabs(value - *last_value) > limit * hours) flag(flags, S_SPIKE);
    }
    if (stuck != Py_None) {
        long count = PyLong_AsLong(stuck);
        if (count == -1 && PyErr_Occurred()) return -1;
        /* this reading and the count - 1 before it, all one value */
        if (count >= 2 && *last_value == value && *run >= count - 1) flag(flags, S_STUCK);
    }
    return 0;
}

/* check_batch(recs, plans, latest, recent, keep, seen, row_type)
 *   -> (rows, forecasts: [(index, row)], rejected: [(index, reason, value)], seen)
 * seen ({station: newest ts}) is updated in place with the rows.
 * The one implementation of the quality checks (services.ingest.domain.validation holds the
 * rules as data: each plan's converters, ranges, rate and stuck count). A refused reading comes
 * back as (its index, the reason: unknown_station, missing_unit, bad_unit or out_of_hard_range,
 * and for the last the value as converted), for the caller to say why in words. */
static PyObject *check_batch(PyObject *self, PyObject *args) {
    PyObject *recs, *plans, *latest, *recent, *seen;
    Py_ssize_t keep;
    PyTypeObject *row_type;
    if (!PyArg_ParseTuple(args, "O!O!OO!nO!O!:check_batch", &PyList_Type, &recs, &PyList_Type,
                          &plans, &latest, &PyDict_Type, &recent, &keep, &PyDict_Type, &seen,
                          &PyType_Type, &row_type))
        return NULL;
    if (keep < 1) {
        PyErr_SetString(PyExc_ValueError, "keep must be at least 1");
        return NULL;
    }
    if (!PyType_IsSubtype(row_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "row_type must be a tuple type");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(recs);
    if (PyList_GET_SIZE(plans) != n) {
        PyErr_SetString(PyExc_ValueError, "recs and plans differ in length");
        return NULL;
    }
    TzCache tz = {{NULL}, {0}, 0};
    int64_t latest_us, offset;
    if (unix_us(latest, &tz, &latest_us, &offset) < 0) {
        tz_release(&tz);
        return NULL;
    }
    int judging = PyDict_GET_SIZE(recent) > 0;
    Fields fields;
    fields_of(&fields, recs);
    PyObject *rows = PyList_New(0), *forecasts = PyList_New(0), *rejected = PyList_New(0);
    PyObject *out = NULL;
    if (rows == NULL || forecasts == NULL || rejected == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *raw = PyList_GET_ITEM(recs, i), *plan = PyList_GET_ITEM(plans, i);
        PyObject *packed = NULL, *value = NULL, *unit = NULL, *kind = NULL, *ts = NULL,
                 *sid = NULL, *metric = NULL, *source = NULL, *converted = NULL,
                 *checks = NULL, *key = NULL, *row = NULL, *index = NULL;
        Flags flags = {{NULL}, 0};
        PyObject *quality = S_GOOD, *canonical_unit = NULL;
        int ok = 0;
        PyObject *reject = NULL; /* the reason a reading is refused (a borrowed constant) */
        if (plan == Py_None) {
            reject = S_UNKNOWN_STATION;
            ok = 1;
            goto next;
        }
        if ((packed = PyObject_GetAttr(plan, S_PACKED)) == NULL) goto next;
        if (!PyTuple_Check(packed) || PyTuple_GET_SIZE(packed) != PACKED_SIZE) {
            PyErr_SetString(PyExc_TypeError, "a plan's packed form is a tuple of 9");
            goto next;
        }
        PyObject *canonical = PyTuple_GET_ITEM(packed, 0), *converters = PyTuple_GET_ITEM(packed, 1);
        if ((value = field(&fields, raw, R_VALUE)) == NULL ||
            (unit = field(&fields, raw, R_UNIT)) == NULL ||
            (kind = field(&fields, raw, R_KIND)) == NULL ||
            (ts = field(&fields, raw, R_TS)) == NULL)
            goto next;
        /* the unit */
        if (canonical == Py_None) {
            if (unit == Py_None) {
                reject = S_MISSING_UNIT;
                ok = 1;
                goto next;
            }
            converted = value;
            Py_INCREF(converted);
            canonical_unit = unit;
        } else if (unit == Py_None) {
            converted = value;
            Py_INCREF(converted);
            canonical_unit = canonical;
        } else {
            if (!PyDict_Check(converters)) {
                PyErr_SetString(PyExc_TypeError, "a plan's converters are a dict");
                goto next;
            }
            PyObject *conv = PyDict_GetItemWithError(converters, unit);
            if (conv == NULL && PyErr_Occurred()) goto next;
            if (conv == NULL) { /* as sent, then trimmed and lower-cased */
                PyObject *stripped = PyObject_CallMethodNoArgs(unit, S_STRIP);
                PyObject *lowered = stripped ? PyObject_CallMethodNoArgs(stripped, S_LOWER) : NULL;
                Py_XDECREF(stripped);
                if (lowered == NULL) goto next;
                conv = PyDict_GetItemWithError(converters, lowered);
                Py_DECREF(lowered);
                if (conv == NULL && PyErr_Occurred()) goto next;
            }
            if (conv == NULL) {
                reject = S_BAD_UNIT;
                ok = 1;
                goto next;
            }
            if (PyFloat_CheckExact(conv)) { /* validation.Scale: value * factor */
                double raw_value = PyFloat_AsDouble(value);
                if (raw_value == -1.0 && PyErr_Occurred()) goto next;
                converted = PyFloat_FromDouble(raw_value * PyFloat_AS_DOUBLE(conv));
            } else {
                converted = PyObject_CallOneArg(conv, value);
            }
            if (converted == NULL) goto next;
            canonical_unit = canonical;
        }
        double v = PyFloat_AsDouble(converted), lo, hi;
        if (v == -1.0 && PyErr_Occurred()) goto next;
        int has = range_of(PyTuple_GET_ITEM(packed, 2), &lo, &hi);
        if (has < 0) goto next;
        if (has && !(lo <= v && v <= hi)) {
            reject = S_OUT_OF_HARD_RANGE;
            ok = 1;
            goto next;
        }
        has = range_of(PyTuple_GET_ITEM(packed, 3), &lo, &hi);
        if (has < 0) goto next;
        int soft_out = has && !(lo <= v && v <= hi);
        int observation = is_observation(kind);
        int64_t ts_us;
        if (unix_us(ts, &tz, &ts_us, &offset) < 0) goto next;
        int future = observation && ts_us > latest_us;
        int maintenance = PyTuple_GET_ITEM(packed, 4) == Py_True;
        if (soft_out) flag(&flags, S_SOFT_RANGE);
        if (future) flag(&flags, S_FUTURE);
        if (maintenance) flag(&flags, S_MAINTENANCE);
        if (soft_out || future) quality = S_DOUBTFUL;
        if ((sid = field(&fields, raw, R_STATION_ID)) == NULL ||
            (metric = field(&fields, raw, R_METRIC)) == NULL ||
            (source = field(&fields, raw, R_SOURCE)) == NULL)
            goto next;
        if (observation && judging) {
            key = PyTuple_GET_ITEM(packed, 8); /* the plan's (station, metric) */
            Py_INCREF(key);
            PyObject *last = PyDict_GetItemWithError(recent, key);
            if (last == NULL && PyErr_Occurred()) goto next;
            if (last != NULL) {
                Py_ssize_t before = flags.n, run = 0;
                int64_t last_us = 0;
                double last_value = 0.0;
                int has_last;
                if (history(last, ts_us, v, PyTuple_GET_ITEM(packed, 5),
                            PyTuple_GET_ITEM(packed, 6), &flags, &tz, &last_us, &last_value, &run,
                            &has_last) < 0)
                    goto next;
                if (flags.n > before) quality = S_DOUBTFUL;
                if (quality == S_GOOD && (!has_last || ts_us > last_us)) {
                    /* validation.joined: the run goes on with the same value, or starts anew */
                    run = has_last && last_value == v ? (run + 1 < keep ? run + 1 : keep) : 1;
                    PyObject *count = PyLong_FromSsize_t(run);
                    PyObject *joined = count ? PyTuple_Pack(3, ts, converted, count) : NULL;
                    Py_XDECREF(count);
                    if (joined == NULL) goto next;
                    PyObject_GC_UnTrack(joined); /* a datetime, a float, an int: no cycle */
                    int set = PyDict_SetItem(recent, key, joined); /* `last` is not read after */
                    Py_DECREF(joined);
                    if (set < 0) goto next;
                }
            }
        }
        if ((checks = flags_tuple(&flags)) == NULL) goto next;
        if ((row = row_type->tp_alloc(row_type, 8)) == NULL) goto next;
        PyObject *fields[8] = {sid, metric, ts, converted, canonical_unit, quality, checks, source};
        for (int f = 0; f < 8; f++) {
            Py_INCREF(fields[f]);
            PyTuple_SET_ITEM(row, f, fields[f]);
        }
        /* strings, a datetime, a float and a tuple of strings: no cycle can pass through a
         * row, so the collector need not walk the batch's rows (as it would untrack them
         * itself, but only after walking them once) */
        PyObject_GC_UnTrack(row);
        if (!observation) {
            if ((index = PyLong_FromSsize_t(i)) == NULL) goto next;
            PyObject *pair = PyTuple_Pack(2, index, row);
            if (pair == NULL || PyList_Append(forecasts, pair) < 0) {
                Py_XDECREF(pair);
                goto next;
            }
            Py_DECREF(pair);
            ok = 1;
            goto next;
        }
        if (PyList_Append(rows, row) < 0) goto next;
        PyObject *newest = PyDict_GetItemWithError(seen, sid);
        if (newest == NULL && PyErr_Occurred()) goto next;
        int64_t newest_us = 0;
        if (newest != NULL && unix_us(newest, &tz, &newest_us, &offset) < 0) goto next;
        if ((newest == NULL || ts_us > newest_us) && PyDict_SetItem(seen, sid, ts) < 0) goto next;
        ok = 1;
    next:
        if (ok && reject != NULL) {
            PyObject *refused = NULL;
            index = PyLong_FromSsize_t(i);
            if (index != NULL)
                refused = PyTuple_Pack(3, index, reject,
                                       reject == S_OUT_OF_HARD_RANGE && converted ? converted
                                                                               : Py_None);
            if (refused == NULL || PyList_Append(rejected, refused) < 0) ok = 0;
            Py_XDECREF(refused);
        }
        Py_XDECREF(packed);
        Py_XDECREF(value);
        Py_XDECREF(unit);
        Py_XDECREF(kind);
        Py_XDECREF(ts);
        Py_XDECREF(sid);
        Py_XDECREF(metric);
        Py_XDECREF(source);
        Py_XDECREF(converted);
        Py_XDECREF(checks);
        Py_XDECREF(key);
        Py_XDECREF(row);
        Py_XDECREF(index);
        if (!ok) goto done;
    }
    out = PyTuple_Pack(4, rows, forecasts, rejected, seen);
done:
    tz_release(&tz);
    Py_XDECREF(rows);
    Py_XDECREF(forecasts);
    Py_XDECREF(rejected);
    return out;
}

static PyObject *event_ids(PyObject *self, PyObject *rows) {
    /* each row's event id alone: for tests against hashlib and stable_id */
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "rows must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(n);
    TzCache tz = {{NULL}, {0}, 0};
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = row_at(rows, i);
        int64_t us, offset;
        char id[32];
        PyObject *s = NULL;
        if (row == NULL || unix_us(PyTuple_GET_ITEM(row, F_TS), &tz, &us, &offset) < 0 ||
            event_id(PyTuple_GET_ITEM(row, F_STATION), PyTuple_GET_ITEM(row, F_METRIC), us,
                     id) < 0 ||
            (s = PyUnicode_FromStringAndSize(id, 32)) == NULL) {
            tz_release(&tz);
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, s);
    }
    tz_release(&tz);
    return out;
}

static PyObject *blake2b_digest(PyObject *self, PyObject *arg) {
    /* blake2b(data, digest_size=16).digest(): for tests against hashlib */
    Py_buffer view;
    unsigned char digest[16];
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    blake2b_16(view.buf, (size_t)view.len, digest);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)digest, 16);
}

static PyMethodDef methods[] = {
    {"copy_rows", copy_rows, METH_O,
     "copy_rows(rows) -> (binary COPY stream of the rows, whether no key repeats)"},
    {"reading_events", reading_events, METH_VARARGS,
     "reading_events(rows, stations, produced_at) -> [(station_id, readings.v1 JSON)]"},
    {"plan_batch", plan_batch, METH_VARARGS,
     "plan_batch(topics, recs, stations, entries, get_plan) -> (plans, judged, sources)"},
    {"check_batch", check_batch, METH_VARARGS,
     "check_batch(recs, plans, latest, recent, keep, seen, row_type)"
     " -> (rows, forecasts, rejected, seen)"},
    {"event_ids", event_ids, METH_O, "event_ids(rows) -> each row's readings.v1 event id"},
    {"blake2b_16", blake2b_digest, METH_O, "blake2b_16(data) -> 16-byte BLAKE2b digest"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_native",
    .m_doc = "The ingest consumer's per-batch kernel.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    TimezoneType = Py_TYPE(PyDateTime_TimeZone_UTC);
    STR_REGION_CODE = PyUnicode_InternFromString("region_code");
    STR_KIND = PyUnicode_InternFromString("kind");
    if (STR_REGION_CODE == NULL || STR_KIND == NULL) return NULL;
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {{&S_VALUE, "value"}, {&S_UNIT, "unit"}, {&S_KIND, "kind"}, {&S_TS, "ts"},
                 {&S_STATION_ID, "station_id"}, {&S_METRIC, "metric"}, {&S_SOURCE, "source"},
                 {&S_PACKED, "packed"}, {&S_STRIP, "strip"},
                 {&S_LOWER, "lower"}, {&S_GOOD, "good"}, {&S_DOUBTFUL, "doubtful"},
                 {&S_SOFT_RANGE, "soft_range"}, {&S_FUTURE, "future_timestamp"},
                 {&S_MAINTENANCE, "maintenance"}, {&S_SPIKE, "spike"}, {&S_STUCK, "stuck"},
                 {&S_UNKNOWN_STATION, "unknown_station"}, {&S_MISSING_UNIT, "missing_unit"},
                 {&S_BAD_UNIT, "bad_unit"}, {&S_OUT_OF_HARD_RANGE, "out_of_hard_range"}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        if ((*names[k].slot = PyUnicode_InternFromString(names[k].text)) == NULL) return NULL;
    }
    if ((EMPTY_TUPLE = PyTuple_New(0)) == NULL) return NULL;
    return PyModule_Create(&module);
}
