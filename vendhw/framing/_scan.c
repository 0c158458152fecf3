/* The compiled scan of vendhw's stream deframer (optional: vendhw/framing/accel.py falls back
 * to the pure-Python scan in vendhw/framing/base.py when this module is not built).
 *
 * It runs the same loop as Deframer._scan: at each offset a candidate start, its length
 * (each protocol's Framer.measure, ported line for line), then a verdict on the complete
 * candidate (checksum, and the few layout rules parse applies after it). Valid candidates
 * become LazyFrame objects whose fields are decoded by the framer's own parse on first
 * access; garbage spans become Garbage objects whose reason text, when it is a parse error,
 * is also produced by parse on first access. A verdict this file cannot give exactly is
 * asked of parse itself (ASK), so the output is the pure-Python scan's, frame for frame:
 * tests/fuzz/test_fuzz_deframe_fast.py compares the two on random streams.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { P_SSP = 1, P_CCTALK = 2, P_CCTALK_CRC = 3, P_EASIVEND = 4, P_FAFB = 5, P_ID003 = 6,
       P_BOARD101 = 7, P_MDB_PLAIN = 8, P_MDB_9BIT = 9 };
enum { D_NONE = 0, D_HOST = 1, D_DEVICE = 2 };
enum { V_VALID = 0, V_CHECKSUM = 1, V_OTHER = 2, V_ASK = 3 };

/* -- CRC-16 tables (the catalogue of vendhw/framing/checksums.py) ------------------------ */

static uint16_t T_SSP[256], T_XMODEM[256], T_KERMIT[256], T_MODBUS[256];

static void table_msb(uint16_t *t, uint16_t poly) {
    for (int i = 0; i < 256; i++) {
        uint16_t c = (uint16_t)(i << 8);
        for (int k = 0; k < 8; k++)
            c = (c & 0x8000) ? (uint16_t)((c << 1) ^ poly) : (uint16_t)(c << 1);
        t[i] = c;
    }
}

static void table_lsb(uint16_t *t, uint16_t poly_reversed) {
    for (int i = 0; i < 256; i++) {
        uint16_t c = (uint16_t)i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (uint16_t)((c >> 1) ^ poly_reversed) : (uint16_t)(c >> 1);
        t[i] = c;
    }
}

static inline uint16_t crc_msb(const uint16_t *t, uint16_t crc, const uint8_t *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        crc = (uint16_t)((crc << 8) ^ t[((crc >> 8) ^ p[i]) & 0xFF]);
    return crc;
}

static inline uint16_t crc_lsb(const uint16_t *t, uint16_t crc, const uint8_t *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        crc = (uint16_t)((crc >> 8) ^ t[(crc ^ p[i]) & 0xFF]);
    return crc;
}

/* -- the scanner object ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int proto;
    int dir;
    uint8_t can_start[256];  /* Framer.hunt_bytes(direction); all 1 when it says None */
    uint8_t heads[256];      /* MDB: valid address bytes of a VMC block (_HEADS) */
    uint8_t devices[256];    /* MDB: DEVICES, the peripheral addresses */
    PyObject *protocol;      /* str: Frame.protocol / Garbage.protocol */
    PyObject *framer;
    PyObject *parse;         /* framer.parse */
    PyObject *direction;     /* None, "host" or "device", as the Deframer was given */
    PyObject *frame_type;    /* LazyFrame */
    PyObject *garbage_type;  /* Garbage */
    PyObject *checksum_error;
    PyObject *framing_error;
} Scanner;

static PyObject *S_protocol, *S_raw, *S_framer, *S_direction, *S_reason, *S_why;
/* The garbage reasons the scan itself gives (the others are parse's error texts). */
static PyObject *R_nostart, *R_truncated, *R_stale;

static int scanner_traverse(Scanner *self, visitproc visit, void *arg) {
    Py_VISIT(self->protocol); Py_VISIT(self->framer); Py_VISIT(self->parse);
    Py_VISIT(self->direction); Py_VISIT(self->frame_type); Py_VISIT(self->garbage_type);
    Py_VISIT(self->checksum_error); Py_VISIT(self->framing_error);
    return 0;
}

static int scanner_clear(Scanner *self) {
    Py_CLEAR(self->protocol); Py_CLEAR(self->framer); Py_CLEAR(self->parse);
    Py_CLEAR(self->direction); Py_CLEAR(self->frame_type); Py_CLEAR(self->garbage_type);
    Py_CLEAR(self->checksum_error); Py_CLEAR(self->framing_error);
    return 0;
}

static void scanner_dealloc(Scanner *self) {
    PyObject_GC_UnTrack(self);
    scanner_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int copy_table(uint8_t *dst, PyObject *src, const char *what) {
    if (src == Py_None) {
        memset(dst, 1, 256);
        return 0;
    }
    if (!PyBytes_Check(src) || PyBytes_GET_SIZE(src) != 256) {
        PyErr_Format(PyExc_ValueError, "%s must be 256 bytes or None", what);
        return -1;
    }
    memcpy(dst, PyBytes_AS_STRING(src), 256);
    return 0;
}

static int scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"proto", "dir", "can_start", "heads", "devices", "protocol",
                         "framer", "direction", "frame_type", "garbage_type",
                         "checksum_error", "framing_error", NULL};
    int proto, dir;
    PyObject *can_start, *heads, *devices, *protocol, *framer, *direction, *frame_type,
             *garbage_type, *checksum_error, *framing_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiOOOUOOOOOO", kw, &proto, &dir, &can_start,
                                     &heads, &devices, &protocol, &framer, &direction,
                                     &frame_type, &garbage_type, &checksum_error,
                                     &framing_error))
        return -1;
    if (proto < P_SSP || proto > P_MDB_9BIT || dir < D_NONE || dir > D_DEVICE) {
        PyErr_SetString(PyExc_ValueError, "unknown protocol or direction");
        return -1;
    }
    if (!PyType_Check(frame_type) || !PyType_Check(garbage_type)) {
        PyErr_SetString(PyExc_TypeError, "frame_type and garbage_type must be classes");
        return -1;
    }
    if (copy_table(self->can_start, can_start, "can_start") < 0 ||
        copy_table(self->heads, heads, "heads") < 0 ||
        copy_table(self->devices, devices, "devices") < 0)
        return -1;
    PyObject *parse = PyObject_GetAttrString(framer, "parse");
    if (parse == NULL)
        return -1;
    scanner_clear(self);
    self->proto = proto;
    self->dir = dir;
    self->parse = parse;
    Py_INCREF(protocol); self->protocol = protocol;
    Py_INCREF(framer); self->framer = framer;
    Py_INCREF(direction); self->direction = direction;
    Py_INCREF(frame_type); self->frame_type = frame_type;
    Py_INCREF(garbage_type); self->garbage_type = garbage_type;
    Py_INCREF(checksum_error); self->checksum_error = checksum_error;
    Py_INCREF(framing_error); self->framing_error = framing_error;
    return 0;
}

/* -- measure: Framer.measure of each protocol, ported line for line ---------------------- */

static Py_ssize_t measure_ssp(const uint8_t *b, Py_ssize_t n, Py_ssize_t start) {
    Py_ssize_t pos = start + 1, got = 0, need = 4;
    while (got < need) {
        if (pos >= n)
            return 0;
        uint8_t c = b[pos];
        if (c == 0x7F) {
            if (pos + 1 >= n)
                return 0;
            if (b[pos + 1] != 0x7F)
                return -1;
            pos += 2;
        } else {
            pos += 1;
        }
        got += 1;
        if (got == 2) {
            need = 4 + c;
            if (c == 0)
                return -1;
        }
    }
    return pos - start;
}

static Py_ssize_t measure_cctalk(const uint8_t *b, Py_ssize_t n, Py_ssize_t start, int dir,
                                 int simple) {
    if (start + 3 >= n)
        return 0;
    uint8_t header = b[start + 3];
    int reply_header = header == 0 || header == 5 || header == 6;
    if (dir == D_DEVICE) {
        if (!reply_header || (header != 0 && b[start + 1]))
            return -1;
        if (simple && b[start + 2] <= 1)
            return -1;
        return b[start + 1] + 5;
    }
    if (dir == D_HOST && (reply_header || (simple && b[start + 2] != 1)))
        return -1;
    return b[start + 1] + 5;
}

static Py_ssize_t measure_easivend(const Scanner *s, const uint8_t *b, Py_ssize_t n,
                                   Py_ssize_t start) {
    if (start >= n)
        return 0;
    return s->can_start[b[start]] ? 8 : -1;
}

static Py_ssize_t measure_fafb(const uint8_t *b, Py_ssize_t n, Py_ssize_t start) {
    Py_ssize_t m = n - start;
    if (m < 1)
        return 0;
    if (b[start] != 0xFA || (m >= 2 && b[start + 1] != 0xFB))
        return -1;
    if (m < 4)
        return 0;
    return b[start + 3] + 4 + 1;
}

static Py_ssize_t measure_id003(const uint8_t *b, Py_ssize_t n, Py_ssize_t start) {
    if (start + 1 >= n)
        return 0;
    uint8_t length = b[start + 1];
    return length >= 5 ? length : -1;
}

static Py_ssize_t measure_board101(const uint8_t *b, Py_ssize_t n, Py_ssize_t start, int dir) {
    if (dir == D_DEVICE && start < n && b[start] != 0x00)
        return -1;
    return 20;
}

#define MDB_MAX_BLOCK 36
#define MDB_ACK 0x00
#define MDB_RET 0xAA
#define MDB_NAK 0xFF
#define MDB_CONTROL(x) ((x) == MDB_ACK || (x) == MDB_RET || (x) == MDB_NAK)

static Py_ssize_t measure_mdb_plain(const Scanner *s, const uint8_t *b, Py_ssize_t n,
                                    Py_ssize_t start) {
    uint8_t first = b[start];
    if (s->dir != D_DEVICE && !MDB_CONTROL(first) &&
        (!s->devices[first & 0xF8] || (first & 0xF8) == 0))
        return -1;
    unsigned total = first;
    Py_ssize_t end = start + MDB_MAX_BLOCK < n ? start + MDB_MAX_BLOCK : n;
    for (Py_ssize_t i = start + 1; i < end; i++) {
        if (b[i] == (total & 0xFF))
            return i - start + 1;
        total += b[i];
    }
    if (s->dir != D_DEVICE && MDB_CONTROL(first))
        return 1;
    return end - start < MDB_MAX_BLOCK ? 0 : -1;
}

static Py_ssize_t measure_mdb_9bit_host(const uint8_t *b, Py_ssize_t n, Py_ssize_t start) {
    if (start > 0 && b[start - 1] == 0xFF && (b[start] == 0x00 || b[start] == 0xFF))
        return -1;
    uint8_t first = b[start];
    if (first != 0xFF)
        return MDB_CONTROL(first) ? 1 : -1;
    if (start + 1 >= n)
        return 0;
    if (b[start + 1] != 0x00)
        return b[start + 1] == 0xFF ? 2 : -1;
    if (start + 2 >= n)
        return 0;
    unsigned total = b[start + 2];
    Py_ssize_t pos = start + 3, first_match = 0;
    int words = 1;
    while (pos < n) {
        unsigned value;
        Py_ssize_t width;
        if (b[pos] == 0xFF) {
            if (pos + 1 >= n)
                return 0;
            if (b[pos + 1] == 0x00)
                return first_match ? first_match - start : -1;
            value = 0xFF;
            width = 2;
        } else {
            value = b[pos];
            width = 1;
        }
        Py_ssize_t end = pos + width;
        if (value == (total & 0xFF)) {
            if (end >= n || (b[end] == 0xFF && end + 1 < n && b[end + 1] == 0x00))
                return end - start;
            if (!first_match)
                first_match = end;
        }
        total += value;
        pos = end;
        words += 1;
        if (words >= MDB_MAX_BLOCK)
            return first_match ? first_match - start : -1;
    }
    return 0;
}

static Py_ssize_t measure_mdb_9bit(const Scanner *s, const uint8_t *b, Py_ssize_t n,
                                   Py_ssize_t start) {
    if (s->dir != D_DEVICE)
        return measure_mdb_9bit_host(b, n, start);
    Py_ssize_t pos = start;
    int words = 0;
    while (pos < n) {
        if (b[pos] != 0xFF)
            pos += 1;
        else if (pos + 1 >= n)
            return 0;
        else if (b[pos + 1] == 0x00)
            return pos + 2 < n ? pos + 3 - start : 0;
        else
            pos += 2;
        words += 1;
        if (words >= MDB_MAX_BLOCK)
            return -1;
    }
    return 0;
}

static Py_ssize_t measure(const Scanner *s, const uint8_t *b, Py_ssize_t n, Py_ssize_t start) {
    switch (s->proto) {
    case P_SSP: return measure_ssp(b, n, start);
    case P_CCTALK: return measure_cctalk(b, n, start, s->dir, 1);
    case P_CCTALK_CRC: return measure_cctalk(b, n, start, s->dir, 0);
    case P_EASIVEND: return measure_easivend(s, b, n, start);
    case P_FAFB: return measure_fafb(b, n, start);
    case P_ID003: return measure_id003(b, n, start);
    case P_BOARD101: return measure_board101(b, n, start, s->dir);
    case P_MDB_PLAIN: return measure_mdb_plain(s, b, n, start);
    default: return measure_mdb_9bit(s, b, n, start);
    }
}

/* -- verdict: what parse would say of a complete candidate ------------------------------- */

static int verdict_ssp(const uint8_t *p, Py_ssize_t len) {
    /* measure walked it: STX, paired 0x7F only, LEN >= 1 and consistent. Unstuff, then CRC. */
    uint8_t body[2 * 256 + 8];
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 1; i < len; i++) {
        if (m >= (Py_ssize_t)sizeof(body))
            return V_ASK;
        body[m++] = p[i];
        if (p[i] == 0x7F)
            i++;  /* the pair's second byte */
    }
    if (m < 4 || m != body[1] + 4)
        return V_ASK;
    uint16_t crc = crc_msb(T_SSP, 0xFFFF, body, m - 2);
    return crc == (uint16_t)(body[m - 2] | body[m - 1] << 8) ? V_VALID : V_CHECKSUM;
}

static int verdict_cctalk(const uint8_t *p, Py_ssize_t len, int simple) {
    if (len < 5 || p[1] + 5 != len)
        return V_ASK;
    if (simple) {
        unsigned sum = 0;
        for (Py_ssize_t i = 0; i < len; i++)
            sum += p[i];
        return (sum & 0xFF) ? V_CHECKSUM : V_VALID;
    }
    uint16_t crc = crc_msb(T_XMODEM, 0, p, 2);
    crc = crc_msb(T_XMODEM, crc, p + 3, len - 4);
    return crc == (uint16_t)(p[2] | p[len - 1] << 8) ? V_VALID : V_CHECKSUM;
}

static int verdict_xor(const uint8_t *p, Py_ssize_t len) {
    uint8_t x = 0;
    for (Py_ssize_t i = 0; i < len - 1; i++)
        x ^= p[i];
    return x == p[len - 1] ? V_VALID : V_CHECKSUM;
}

static int verdict_id003(const Scanner *s, const uint8_t *p, Py_ssize_t len) {
    if (len < 5 || p[0] != 0xFC || p[1] != len)
        return V_ASK;
    uint16_t crc = crc_lsb(T_KERMIT, 0, p, len - 2);
    if (crc != (uint16_t)(p[len - 2] | p[len - 1] << 8))
        return V_CHECKSUM;
    if (s->dir == D_DEVICE && p[2] == 0x8A)
        return V_ASK;  /* CURRENCY ASSIGN: a table parse of its own */
    return V_VALID;
}

static int verdict_board101(const uint8_t *p, Py_ssize_t len) {
    if (len != 20)
        return V_ASK;
    uint16_t crc = crc_lsb(T_MODBUS, 0xFFFF, p, 18);
    return crc == (uint16_t)(p[18] | p[19] << 8) ? V_VALID : V_CHECKSUM;
}

/* MdbFramer._parse on the decoded words: plain[] values, modes[] marks. */
static int verdict_mdb_words(const Scanner *s, const uint8_t *plain, const uint8_t *modes,
                             Py_ssize_t n, int has_modes, int dir) {
    if (n == 0 || n > MDB_MAX_BLOCK)
        return V_OTHER;
    if (n == 1) {
        uint8_t code = plain[0];
        if (!MDB_CONTROL(code) || (dir == D_DEVICE && code == MDB_RET))
            return V_OTHER;
        return V_VALID;
    }
    unsigned sum = 0;
    for (Py_ssize_t i = 0; i < n - 1; i++)
        sum += plain[i];
    if ((sum & 0xFF) != plain[n - 1])
        return V_CHECKSUM;
    if (has_modes) {
        int ok;
        if (dir == D_HOST) {
            ok = modes[0];
            for (Py_ssize_t i = 1; ok && i < n; i++)
                ok = !modes[i];
        } else {
            ok = modes[n - 1];
            for (Py_ssize_t i = 0; ok && i < n - 1; i++)
                ok = !modes[i];
        }
        if (!ok)
            return V_OTHER;
    }
    if (dir == D_DEVICE)
        return V_VALID;
    return s->heads[plain[0]] ? V_VALID : V_OTHER;
}

static int verdict_mdb(const Scanner *s, const uint8_t *p, Py_ssize_t len) {
    uint8_t plain[MDB_MAX_BLOCK + 1], modes[MDB_MAX_BLOCK + 1];
    Py_ssize_t n = 0, i = 0;
    if (s->proto == P_MDB_PLAIN) {
        if (s->dir == D_NONE)
            return V_ASK;  /* parse tries the VMC's reading, then the peripheral's */
        if (len > MDB_MAX_BLOCK)
            return V_OTHER;
        return verdict_mdb_words(s, p, NULL, len, 0, s->dir);
    }
    /* decode_9bit, then the word count: more than a block holds is refused either way */
    while (i < len) {
        if (n > MDB_MAX_BLOCK)
            return V_OTHER;
        uint8_t c = p[i];
        if (c != 0xFF) {
            plain[n] = c; modes[n++] = 0; i += 1;
            continue;
        }
        if (i + 1 >= len)
            return V_OTHER;  /* incomplete escape at the end */
        uint8_t next = p[i + 1];
        if (next == 0xFF) {
            plain[n] = 0xFF; modes[n++] = 0; i += 2;
        } else if (next == 0x00) {
            if (i + 2 >= len)
                return V_OTHER;
            plain[n] = p[i + 2]; modes[n++] = 1; i += 3;
        } else {
            plain[n] = next; modes[n++] = 0; i += 2;
        }
    }
    int dir = s->dir;
    if (dir == D_NONE)
        dir = (n > 1 && modes[0]) ? D_HOST : D_DEVICE;
    return verdict_mdb_words(s, plain, modes, n, 1, dir);
}

static int verdict(const Scanner *s, const uint8_t *p, Py_ssize_t len) {
    switch (s->proto) {
    case P_SSP: return verdict_ssp(p, len);
    case P_CCTALK: return verdict_cctalk(p, len, 1);
    case P_CCTALK_CRC: return verdict_cctalk(p, len, 0);
    case P_EASIVEND: return len == 8 ? verdict_xor(p, len) : V_ASK;
    case P_FAFB:
        if (len < 5 || p[0] != 0xFA || p[1] != 0xFB || p[3] + 5 != len)
            return V_ASK;
        return verdict_xor(p, len);
    case P_ID003: return verdict_id003(s, p, len);
    case P_BOARD101: return verdict_board101(p, len);
    default: return verdict_mdb(s, p, len);
    }
}

/* -- objects ------------------------------------------------------------------------------ */

static PyObject *new_instance(PyObject *type) {
    PyTypeObject *t = (PyTypeObject *)type;
    return t->tp_alloc(t, 0);
}

static PyObject *make_frame(Scanner *s, const uint8_t *p, Py_ssize_t len) {
    PyObject *obj = new_instance(s->frame_type);
    if (obj == NULL)
        return NULL;
    PyObject *raw = PyBytes_FromStringAndSize((const char *)p, len);
    if (raw == NULL || PyObject_SetAttr(obj, S_raw, raw) < 0 ||
        PyObject_SetAttr(obj, S_protocol, s->protocol) < 0 ||
        PyObject_SetAttr(obj, S_framer, s->framer) < 0 ||
        PyObject_SetAttr(obj, S_direction, s->direction) < 0) {
        Py_XDECREF(raw);
        Py_DECREF(obj);
        return NULL;
    }
    Py_DECREF(raw);
    return obj;
}

/* reason: a str, or NULL with why (the candidate to parse for its error text) */
static PyObject *make_garbage(Scanner *s, const uint8_t *p, Py_ssize_t len, PyObject *reason,
                              PyObject *why) {
    PyObject *obj = new_instance(s->garbage_type);
    if (obj == NULL)
        return NULL;
    PyObject *raw = PyBytes_FromStringAndSize((const char *)p, len);
    int bad = raw == NULL || PyObject_SetAttr(obj, S_raw, raw) < 0 ||
              PyObject_SetAttr(obj, S_protocol, s->protocol) < 0;
    if (!bad && reason != NULL)
        bad = PyObject_SetAttr(obj, S_reason, reason) < 0;
    if (!bad && reason == NULL)
        bad = PyObject_SetAttr(obj, S_why, why) < 0;
    Py_XDECREF(raw);
    if (bad) {
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

/* -- the scan ----------------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t from;      /* -1: no junk span open */
    PyObject *reason;     /* borrowed str, or NULL when why is set */
    PyObject *why;        /* owned (framer, candidate, direction), or NULL */
} Junk;

static void open_junk(Junk *j, Py_ssize_t at, PyObject *reason, PyObject *why) {
    if (j->from >= 0) {
        Py_XDECREF(why);
        return;
    }
    j->from = at;
    j->reason = reason;
    j->why = why;
}

static int close_junk(Scanner *s, Junk *j, const uint8_t *b, Py_ssize_t at, PyObject *out,
                      Py_ssize_t *garbage_bytes) {
    if (j->from < 0)
        return 0;
    int rc = 0;
    if (at > j->from) {
        *garbage_bytes += at - j->from;
        PyObject *g = make_garbage(s, b + j->from, at - j->from, j->reason, j->why);
        rc = (g == NULL || PyList_Append(out, g) < 0) ? -1 : 0;
        Py_XDECREF(g);
    }
    Py_CLEAR(j->why);
    j->from = -1;
    j->reason = NULL;
    return rc;
}

/* Ask parse itself: returns V_VALID with *frame set, or an error verdict with *reason set
 * (a new reference); -1 on an exception that is not a FramingError. */
static int ask_parse(Scanner *s, const uint8_t *p, Py_ssize_t len, PyObject **frame,
                     PyObject **reason) {
    PyObject *cand = PyBytes_FromStringAndSize((const char *)p, len);
    if (cand == NULL)
        return -1;
    PyObject *result = PyObject_CallFunctionObjArgs(s->parse, cand, s->direction, NULL);
    Py_DECREF(cand);
    if (result != NULL) {
        *frame = result;
        return V_VALID;
    }
    int kind;
    if (PyErr_ExceptionMatches(s->checksum_error))
        kind = V_CHECKSUM;
    else if (PyErr_ExceptionMatches(s->framing_error))
        kind = V_OTHER;
    else
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    *reason = value ? PyObject_Str(value) : PyUnicode_FromString("");
    Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
    return *reason ? kind : -1;
}

static PyObject *scanner_scan(Scanner *s, PyObject *args) {
    PyObject *data;
    int final, stale;
    if (!PyArg_ParseTuple(args, "Spp", &data, &final, &stale))
        return NULL;
    const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), i = 0;
    Py_ssize_t frames = 0, garbage_bytes = 0, checksum_errors = 0;
    PyObject *owned_reasons = PyList_New(0);  /* keeps asked reasons alive until used */
    PyObject *out = PyList_New(0);
    if (out == NULL || owned_reasons == NULL)
        goto fail_early;
    Junk junk = {-1, NULL, NULL};
    PyObject *cut_short = stale ? R_stale : R_truncated;
    const uint8_t *can_start = s->can_start;

    while (i < n) {
        if (!can_start[b[i]]) {
            open_junk(&junk, i, R_nostart, NULL);
            while (i < n && !can_start[b[i]])
                i++;
            continue;
        }
        Py_ssize_t length = measure(s, b, n, i);
        if (length <= 0) {
            PyObject *reason;
            if (length == 0) {
                if (!final)
                    break;
                reason = cut_short;
            } else {
                reason = R_nostart;
            }
            open_junk(&junk, i, reason, NULL);
            i++;
            continue;
        }
        if (length > n - i) {
            if (!final)
                break;
            open_junk(&junk, i, cut_short, NULL);
            i++;
            continue;
        }
        PyObject *frame = NULL, *reason = NULL;
        int v = verdict(s, b + i, length);
        if (v == V_ASK) {
            v = ask_parse(s, b + i, length, &frame, &reason);
            if (v < 0)
                goto fail;
        }
        if (v != V_VALID) {
            if (v == V_CHECKSUM)
                checksum_errors++;
            if (junk.from < 0) {
                if (reason != NULL) {
                    if (PyList_Append(owned_reasons, reason) < 0) {
                        Py_DECREF(reason);
                        goto fail;
                    }
                    open_junk(&junk, i, reason, NULL);
                } else {
                    PyObject *why = Py_BuildValue("(Oy#O)", s->framer, (const char *)(b + i),
                                                  length, s->direction);
                    if (why == NULL)
                        goto fail;
                    open_junk(&junk, i, NULL, why);
                }
            }
            Py_XDECREF(reason);
            i++;
            continue;
        }
        if (close_junk(s, &junk, b, i, out, &garbage_bytes) < 0) {
            Py_XDECREF(frame);
            goto fail;
        }
        if (frame == NULL)
            frame = make_frame(s, b + i, length);
        if (frame == NULL || PyList_Append(out, frame) < 0) {
            Py_XDECREF(frame);
            goto fail;
        }
        Py_DECREF(frame);
        frames++;
        i += length;
    }
    if (close_junk(s, &junk, b, i, out, &garbage_bytes) < 0)
        goto fail;
    Py_DECREF(owned_reasons);
    return Py_BuildValue("(Nnnnn)", out, i, frames, garbage_bytes, checksum_errors);

fail:
    Py_CLEAR(junk.why);
fail_early:
    Py_XDECREF(out);
    Py_XDECREF(owned_reasons);
    return NULL;
}

static PyMethodDef scanner_methods[] = {
    {"scan", (PyCFunction)scanner_scan, METH_VARARGS,
     "scan(data, final, stale) -> (items, consumed, frames, garbage_bytes, checksum_errors)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vendhw.framing._scan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One deframer's compiled scan: a protocol, a direction and its tables.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)scanner_init,
    .tp_dealloc = (destructor)scanner_dealloc,
    .tp_traverse = (traverseproc)scanner_traverse,
    .tp_clear = (inquiry)scanner_clear,
    .tp_methods = scanner_methods,
};

/* crc(name, data): the tables above, for the test that checks them against crcmod */
static PyObject *mod_crc(PyObject *self, PyObject *args) {
    const char *name;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "sy*", &name, &data))
        return NULL;
    const uint8_t *p = data.buf;
    Py_ssize_t n = data.len;
    long value;
    if (strcmp(name, "crc16-ssp") == 0)
        value = crc_msb(T_SSP, 0xFFFF, p, n);
    else if (strcmp(name, "crc16-xmodem") == 0)
        value = crc_msb(T_XMODEM, 0, p, n);
    else if (strcmp(name, "crc16-kermit") == 0)
        value = crc_lsb(T_KERMIT, 0, p, n);
    else if (strcmp(name, "crc16-modbus") == 0)
        value = crc_lsb(T_MODBUS, 0xFFFF, p, n);
    else
        value = -1;
    PyBuffer_Release(&data);
    if (value < 0) {
        PyErr_Format(PyExc_ValueError, "unknown CRC %s", name);
        return NULL;
    }
    return PyLong_FromLong(value);
}

static PyMethodDef module_methods[] = {
    {"crc", mod_crc, METH_VARARGS, "crc(name, data) -> int, for the tests"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT, "_scan", "vendhw's compiled stream scan (optional).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__scan(void) {
    table_msb(T_SSP, 0x8005);
    table_msb(T_XMODEM, 0x1021);
    table_lsb(T_KERMIT, 0x8408);
    table_lsb(T_MODBUS, 0xA001);
    S_protocol = PyUnicode_InternFromString("protocol");
    S_raw = PyUnicode_InternFromString("raw");
    S_framer = PyUnicode_InternFromString("_framer");
    S_direction = PyUnicode_InternFromString("_direction");
    S_reason = PyUnicode_InternFromString("_reason");
    S_why = PyUnicode_InternFromString("_why");
    R_nostart = PyUnicode_InternFromString("no frame start");
    R_truncated = PyUnicode_InternFromString("truncated frame");
    R_stale = PyUnicode_InternFromString("stale partial frame");
    if (!S_protocol || !S_raw || !S_framer || !S_direction || !S_reason || !S_why ||
        !R_nostart || !R_truncated || !R_stale)
        return NULL;
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&scan_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0 ||
        PyModule_AddIntConstant(m, "SSP", P_SSP) < 0 ||
        PyModule_AddIntConstant(m, "CCTALK", P_CCTALK) < 0 ||
        PyModule_AddIntConstant(m, "CCTALK_CRC", P_CCTALK_CRC) < 0 ||
        PyModule_AddIntConstant(m, "EASIVEND", P_EASIVEND) < 0 ||
        PyModule_AddIntConstant(m, "FAFB", P_FAFB) < 0 ||
        PyModule_AddIntConstant(m, "ID003", P_ID003) < 0 ||
        PyModule_AddIntConstant(m, "BOARD101", P_BOARD101) < 0 ||
        PyModule_AddIntConstant(m, "MDB_PLAIN", P_MDB_PLAIN) < 0 ||
        PyModule_AddIntConstant(m, "MDB_9BIT", P_MDB_9BIT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
