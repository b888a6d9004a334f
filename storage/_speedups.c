/* storage/_speedups.c -- the compiled twin of the record format's per-record loops.
 *
 * storage/records.py is the reference implementation of records inside a RecordBatch v2, used by
 * the broker, the storage engine and the client alike. Its three loops that run once per record
 * have the same code in C here, used when this module was built and RINGLOG_NO_SPEEDUPS=1 is not
 * set:
 *
 *   walk_records    the broker's produce check: the record length prefixes must tile the block
 *                   (storage.records._walk_records_py). Only the fast path: on damage it returns
 *                   None and the Python walk raises with its message.
 *   decode_records  every field of every record into instances of a slotted class
 *                   (storage.records._decode_records_py): the same records, and on malformed
 *                   input the same exception (storage.errors.CorruptBatchError) with the same
 *                   message.
 *   encode_records  a records block from (key, value, headers, timestamp) tuples
 *                   (storage.records._encode_records_py): the same bytes. Returns None for input
 *                   it does not take, which the caller then encodes in Python.
 *
 * Format (Kafka's DefaultRecord, RecordBatch v2), zig-zag varints:
 *
 *     length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
 *     | keyLength varint (-1 null) | key | valueLength varint (-1 null) | value
 *     | headerCount varint | (headerKeyLength varint | key utf-8 | headerValueLength varint | value)*
 *
 * decode_records parses bytes off the network and the disk: every read is bounds-checked against
 * the buffer and a varint takes at most 10 bytes. Python's varint decoder accepts a 10th byte
 * carrying bits beyond 64 (values up to 2**70); to stay identical, such values (and sums that
 * overflow int64) are computed with Python ints on a slow path instead of being truncated.
 *
 * Plain CPython C API, no dependency beyond the interpreter.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static PyObject *corrupt_error = NULL;  /* storage.errors.CorruptBatchError, looked up at import */

/* --- the produce check's walk ------------------------------------------------------------------ */

PyDoc_STRVAR(walk_records_doc,
"walk_records(records_block, count) -> int | None\n"
"--\n\n"
"The position after walking `count` record length prefixes from the start of the (decompressed)\n"
"records block (possibly past its end), or None when the walk finds damage (then\n"
"storage.records._walk_records_py raises the error).");

static PyObject *
walk_records(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*n:walk_records", &view, &count))
        return NULL;
    const uint8_t *b = (const uint8_t *)view.buf;
    const Py_ssize_t n = view.len;
    Py_ssize_t pos = 0;
    int ok = 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t result = 0;
        unsigned shift = 0;
        for (;;) {
            if (pos >= n) {  /* "record length runs past the end of the batch" */
                ok = 0;
                break;
            }
            uint8_t c = b[pos++];
            result |= (uint64_t)(c & 0x7F) << shift;
            if (!(c & 0x80))
                break;
            shift += 7;
            if (shift > 28) {  /* "record length varint longer than 5 bytes" */
                ok = 0;
                break;
            }
        }
        if (!ok)
            break;
        /* zig-zag: at most 35 bits here, so the signed value fits easily */
        int64_t length = (int64_t)(result >> 1) ^ -(int64_t)(result & 1);
        if (length < 6) {  /* "record length ... is impossible" */
            ok = 0;
            break;
        }
        /* The Python loop lets pos run past the end and reports it after the loop (or at the
         * next record's prefix); clamp only to keep the arithmetic in range. */
        if (length > n - pos + 1) {
            pos = n + 1;
        } else {
            pos += (Py_ssize_t)length;
        }
    }
    PyBuffer_Release(&view);
    if (!ok)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(pos);
}

/* --- record shapes: which class decode_records builds and where its slots live ---------------- */

/* The first N_FIELDS names of a shape are storage.records.RECORD_FIELDS, in that order; the rest
 * are slots that take one value per batch (`batch_values`). */
enum { F_OFFSET, F_TIMESTAMP, F_KEY, F_VALUE, F_HEADERS, N_FIELDS };

typedef struct {
    PyTypeObject *cls;
    Py_ssize_t nslots;
    Py_ssize_t offset[1];  /* nslots of them */
} Shape;

static const char SHAPE_NAME[] = "ringlog.storage._speedups.shape";

static void
shape_free(PyObject *capsule)
{
    Shape *s = PyCapsule_GetPointer(capsule, SHAPE_NAME);
    if (s != NULL) {
        Py_XDECREF(s->cls);
        PyMem_Free(s);
    }
}

PyDoc_STRVAR(record_shape_doc,
"record_shape(cls, names) -> shape\n"
"--\n\n"
"The slot layout decode_records fills: `names` are storage.records.RECORD_FIELDS followed by\n"
"the slots set once per batch. Raises TypeError unless each is a plain writable __slots__\n"
"member of cls or of a base class.");

static PyObject *
record_shape(PyObject *self, PyObject *args)
{
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(args, "O!O!:record_shape", &PyType_Type, &cls, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n < N_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "record_shape: names must start with the record fields");
        return NULL;
    }
    Shape *s = PyMem_Malloc(sizeof(Shape) + sizeof(Py_ssize_t) * (size_t)n);
    if (s == NULL)
        return PyErr_NoMemory();
    s->cls = NULL;
    s->nslots = n;
    /* Records are built as object.__new__(cls) plus slot stores, as the Python loop does. The
     * stores write straight into the instance at the member descriptors' offsets, so every name
     * must be a plain object slot of cls itself or of a base class (else the offset means
     * nothing). */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "record_shape: slot names must be str");
            PyMem_Free(s);
            return NULL;
        }
        PyObject *d = PyObject_GetAttr(cls, name);
        if (d == NULL) {
            PyMem_Free(s);
            return NULL;
        }
        int ok = PyObject_TypeCheck(d, &PyMemberDescr_Type)
                 && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX
                 && !(((PyMemberDescrObject *)d)->d_member->flags & READONLY)
                 && PyType_IsSubtype((PyTypeObject *)cls, PyDescr_TYPE(d));
        if (ok) {
            s->offset[i] = ((PyMemberDescrObject *)d)->d_member->offset;
            ok = s->offset[i] > 0
                 && s->offset[i] + (Py_ssize_t)sizeof(PyObject *) <= ((PyTypeObject *)cls)->tp_basicsize;
        }
        Py_DECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "record_shape: %R.%U is not a __slots__ member", cls, name);
            PyMem_Free(s);
            return NULL;
        }
    }
    s->cls = (PyTypeObject *)Py_NewRef(cls);
    PyObject *capsule = PyCapsule_New(s, SHAPE_NAME, shape_free);
    if (capsule == NULL) {
        Py_DECREF(s->cls);
        PyMem_Free(s);
    }
    return capsule;
}

/* --- decoding -------------------------------------------------------------------------------- */

static const char TRUNCATED[] = "record data truncated";

typedef struct {
    const uint8_t *b;
    Py_ssize_t n;    /* buffer length */
    Py_ssize_t pos;  /* next byte to read; never above n */
} Reader;

static void
corrupt(const char *msg)
{
    PyErr_SetString(corrupt_error, msg);
}

/* An unsigned varint, as storage.records._uvarint: 7 bits a byte, at most 10 bytes. *raw gets the low 64
 * bits and *hi the bits 64..69 that a 10th byte can carry (0 for every value that fits). */
static int
read_uvarint(Reader *r, uint64_t *raw, unsigned *hi)
{
    uint64_t v = 0;
    unsigned shift = 0;
    *hi = 0;
    for (;;) {
        if (r->pos >= r->n) {
            corrupt(TRUNCATED);
            return -1;
        }
        uint8_t c = r->b[r->pos++];
        if (shift < 63) {
            v |= (uint64_t)(c & 0x7F) << shift;
        } else {  /* 10th byte: its lowest bit is bit 63, the rest overflow 64 bits */
            v |= (uint64_t)(c & 1) << 63;
            *hi = (c & 0x7F) >> 1;
        }
        if (!(c & 0x80))
            break;
        shift += 7;
        if (shift > 63) {
            corrupt("varint longer than 10 bytes");
            return -1;
        }
    }
    *raw = v;
    return 0;
}

static inline int64_t
zigzag(uint64_t raw)
{
    return (int64_t)((raw >> 1) ^ (0 - (raw & 1)));
}

/* The zig-zag value of a varint wider than 64 bits as a Python int: (full >> 1) ^ -(full & 1),
 * with full = raw + (hi << 64). Built from its hex digits: rare, so simple beats fast. */
static PyObject *
wide_value(uint64_t raw, unsigned hi)
{
    uint64_t lo = (raw >> 1) | ((uint64_t)(hi & 1) << 63);  /* full >> 1, low 64 bits */
    unsigned top = hi >> 1;                                  /* full >> 1, bits 64.. */
    int negative = (int)(raw & 1);
    char text[48];
    if (negative) {  /* x ^ -1 == -(x + 1) */
        lo += 1;
        if (lo == 0)
            top += 1;
    }
    snprintf(text, sizeof(text), "%s0x%x%016llx", negative ? "-" : "", top, (unsigned long long)lo);
    return PyLong_FromString(text, NULL, 0);
}

/* base + the zig-zag value of the varint, exactly as Python computes it (no int64 wrap-around). */
static PyObject *
base_plus(int64_t base, uint64_t raw, unsigned hi)
{
    if (!hi) {
        int64_t d = zigzag(raw);
        if (!((d > 0 && base > INT64_MAX - d) || (d < 0 && base < INT64_MIN - d)))
            return PyLong_FromLongLong(base + d);
    }
    PyObject *b = PyLong_FromLongLong(base);
    PyObject *d = hi ? wide_value(raw, hi) : PyLong_FromLongLong(zigzag(raw));
    PyObject *sum = (b && d) ? PyNumber_Add(b, d) : NULL;
    Py_XDECREF(b);
    Py_XDECREF(d);
    return sum;
}

/* A length-prefixed byte string, as storage.records._read_bytes: -1 is null (None), another negative
 * length is an error, and the bytes must lie inside the buffer. *out gets a new reference. */
static int
read_bytes(Reader *r, PyObject **out)
{
    uint64_t raw;
    unsigned hi;
    if (read_uvarint(r, &raw, &hi) < 0)
        return -1;
    if (raw & 1) {  /* odd zig-zag: negative */
        if (raw == 1 && !hi) {
            *out = Py_NewRef(Py_None);
            return 0;
        }
        if (hi) {
            PyObject *v = wide_value(raw, hi);
            if (v != NULL) {
                PyErr_Format(corrupt_error, "negative length %S", v);
                Py_DECREF(v);
            }
        } else {
            PyErr_Format(corrupt_error, "negative length %lld", (long long)zigzag(raw));
        }
        return -1;
    }
    uint64_t len = raw >> 1;
    if (hi || len > (uint64_t)(r->n - r->pos)) {
        corrupt(TRUNCATED);
        return -1;
    }
    *out = PyBytes_FromStringAndSize((const char *)r->b + r->pos, (Py_ssize_t)len);
    if (*out == NULL)
        return -1;
    r->pos += (Py_ssize_t)len;
    return 0;
}

/* The headers of one record: () or a tuple of (str, bytes | None). New reference or NULL. */
static PyObject *
read_headers(Reader *r)
{
    uint64_t raw, count;
    unsigned hi;
    if (r->pos >= r->n) {
        corrupt(TRUNCATED);
        return NULL;
    }
    if (r->b[r->pos] == 0) {  /* most records have none */
        r->pos++;
        return PyTuple_New(0);
    }
    if (read_uvarint(r, &raw, &hi) < 0)
        return NULL;
    if (raw & 1) {
        corrupt("negative header count");
        return NULL;
    }
    /* An absurd count needs no special case: every header takes two bytes at least, so the loop
     * ends at the end of the buffer with "truncated". Nothing is sized by the count. */
    count = hi ? UINT64_MAX : raw >> 1;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (uint64_t h = 0; h < count; h++) {
        PyObject *hk = NULL, *hv = NULL, *ks = NULL, *pair = NULL;
        if (read_bytes(r, &hk) < 0)
            goto fail;
        if (hk == Py_None) {
            corrupt("null header key");
            goto fail;
        }
        if (read_bytes(r, &hv) < 0)  /* read before the key is decoded, as the Python loop does */
            goto fail;
        ks = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(hk), PyBytes_GET_SIZE(hk), NULL);
        if (ks == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                corrupt("header key is not UTF-8");
            }
            goto fail;
        }
        pair = PyTuple_Pack(2, ks, hv);
        if (pair == NULL || PyList_Append(list, pair) < 0)
            goto fail;
        PyObject_GC_UnTrack(pair);  /* holds a str and bytes/None: no cycle can pass through it */
        Py_DECREF(hk);
        Py_DECREF(hv);
        Py_DECREF(ks);
        Py_DECREF(pair);
        continue;
    fail:
        Py_XDECREF(hk);
        Py_XDECREF(hv);
        Py_XDECREF(ks);
        Py_XDECREF(pair);
        Py_DECREF(list);
        return NULL;
    }
    PyObject *t = PyList_AsTuple(list);
    Py_DECREF(list);
    if (t != NULL)
        PyObject_GC_UnTrack(t);  /* holds only the untracked pairs above */
    return t;
}

#define SLOT(obj, s, i) (*(PyObject **)((char *)(obj) + (s)->offset[i]))

PyDoc_STRVAR(decode_records_doc,
"decode_records(body, count, base_offset, base_ts, max_ts, log_append, shape, batch_values, start)\n"
"--\n\n"
"(records, end): `count` records of a (decompressed) records block from byte `start`, built as\n"
"`shape` (from record_shape) says, and the position after the last one:\n"
"storage.records._decode_records_py in C. Raises CorruptBatchError on malformed records.");

static PyObject *
decode_records(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t count, start;
    long long base_offset, base_ts;
    PyObject *max_ts, *capsule, *values;
    int log_append;
    if (!PyArg_ParseTuple(args, "y*nLLOpOO!n:decode_records", &view, &count, &base_offset, &base_ts,
                          &max_ts, &log_append, &capsule, &PyTuple_Type, &values, &start))
        return NULL;
    PyObject *out = NULL;
    Shape *shape = PyCapsule_GetPointer(capsule, SHAPE_NAME);
    if (shape == NULL)
        goto fail;
    Py_ssize_t nvalues = shape->nslots - N_FIELDS;
    if (PyTuple_GET_SIZE(values) != nvalues) {
        PyErr_Format(PyExc_TypeError, "decode_records: the shape takes %zd batch values, got %zd",
                     nvalues, PyTuple_GET_SIZE(values));
        goto fail;
    }
    if (start < 0 || start > view.len) {
        PyErr_SetString(PyExc_ValueError, "decode_records: start outside the buffer");
        goto fail;
    }
    Reader r = {(const uint8_t *)view.buf, view.len, start};
    PyTypeObject *cls = shape->cls;
    /* Preallocate only a count the buffer can hold (a record takes 7 bytes at least): the count
     * comes off the network too. */
    Py_ssize_t cap = (count > 0 && count <= view.len - start) ? count : 0;
    out = PyList_New(cap);
    if (out == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t raw, ts_raw, off_raw;
        unsigned hi, ts_hi, off_hi;
        Py_ssize_t end;
        PyObject *key = NULL, *value = NULL, *headers = NULL, *offset = NULL, *timestamp = NULL, *rec;

        if (read_uvarint(&r, &raw, &hi) < 0)
            goto fail;
        if (raw & 1) {
            corrupt("negative record length");
            goto fail;
        }
        /* -1: a length reaching past the buffer can never match the fields read below */
        end = (hi || (raw >> 1) > (uint64_t)(r.n - r.pos)) ? -1 : r.pos + (Py_ssize_t)(raw >> 1);
        if (r.pos >= r.n) {  /* the attributes byte: unused */
            corrupt(TRUNCATED);
            goto fail;
        }
        r.pos++;
        if (read_uvarint(&r, &ts_raw, &ts_hi) < 0 || read_uvarint(&r, &off_raw, &off_hi) < 0)
            goto fail;
        if (read_bytes(&r, &key) < 0)
            goto fail;
        /* A one-byte negative value length other than -1 has its own message in the Python loop */
        if (r.pos < r.n && !(r.b[r.pos] & 0x80) && (r.b[r.pos] & 1) && r.b[r.pos] != 1) {
            corrupt("negative value length");
            goto fail_record;
        }
        if (read_bytes(&r, &value) < 0)
            goto fail_record;
        headers = read_headers(&r);
        if (headers == NULL)
            goto fail_record;
        if (r.pos != end) {
            corrupt("record length does not match its fields");
            goto fail_record;
        }
        offset = base_plus(base_offset, off_raw, off_hi);
        timestamp = log_append ? Py_NewRef(max_ts) : base_plus(base_ts, ts_raw, ts_hi);
        if (offset == NULL || timestamp == NULL)
            goto fail_record;
        rec = cls->tp_alloc(cls, 0);
        if (rec == NULL)
            goto fail_record;
        /* the new instance's slots are all NULL: store the references we own or take */
        SLOT(rec, shape, F_OFFSET) = offset;
        SLOT(rec, shape, F_TIMESTAMP) = timestamp;
        SLOT(rec, shape, F_KEY) = key;
        SLOT(rec, shape, F_VALUE) = value;
        SLOT(rec, shape, F_HEADERS) = headers;
        for (Py_ssize_t k = 0; k < nvalues; k++)
            SLOT(rec, shape, N_FIELDS + k) = Py_NewRef(PyTuple_GET_ITEM(values, k));
        /* Every field is an int, bytes, None, the untracked header tuple or a batch value (the
         * consumer's are a str and ints): no reference cycle can pass through the record, so
         * the cycle collector need not follow it. Tracked, the records of one batch (thousands,
         * all alive in `out`) set off several collections that walk every one of them, which
         * cost more than decoding them. Python-level stores into a record of a mutable class
         * should track it again (client.consumer sets __setattr__ to call track()). */
        PyObject_GC_UnTrack(rec);
        if (i < cap) {
            PyList_SET_ITEM(out, i, rec);
        } else {
            int rc = PyList_Append(out, rec);
            Py_DECREF(rec);
            if (rc < 0)
                goto fail;
        }
        continue;
    fail_record:
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(headers);
        Py_XDECREF(offset);
        Py_XDECREF(timestamp);
        goto fail;
    }
    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("(Nn)", out, r.pos);
    return result;
fail:
    Py_XDECREF(out);  /* a preallocated list's unfilled NULL items are fine to drop */
    PyBuffer_Release(&view);
    return NULL;
}

/* --- encoding -------------------------------------------------------------------------------- */

static inline uint64_t
zz_encode(int64_t v)
{
    return ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));
}

static inline Py_ssize_t
uvarint_size(uint64_t v)
{
    Py_ssize_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *
put_uvarint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Encoded size of a nullable byte string with its length prefix. */
static inline Py_ssize_t
blob_size(PyObject *b)
{
    if (b == Py_None)
        return 1;
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    return uvarint_size(zz_encode(n)) + n;
}

static inline uint8_t *
put_blob(uint8_t *p, PyObject *b)
{
    if (b == Py_None) {
        *p++ = 0x01;  /* varint(-1) */
        return p;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    p = put_uvarint(p, zz_encode(n));
    memcpy(p, PyBytes_AS_STRING(b), (size_t)n);
    return p + n;
}

static inline int
is_blob(PyObject *b)
{
    return b == Py_None || PyBytes_CheckExact(b);
}

/* Fills *body with the size of one record's body (everything after its length), or returns 0 when
 * the record is not one this encoder takes: anything but a (bytes|None, bytes|None,
 * tuple|list of (bytes, bytes|None), int) tuple. */
static int
record_body_size(PyObject *item, int64_t delta, Py_ssize_t index, Py_ssize_t *body)
{
    PyObject *key = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
    PyObject *headers = PyTuple_GET_ITEM(item, 2);
    if (!is_blob(key) || !is_blob(value) || !(PyTuple_CheckExact(headers) || PyList_CheckExact(headers)))
        return 0;
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(headers);
    Py_ssize_t size = 1 + uvarint_size(zz_encode(delta)) + uvarint_size(zz_encode(index))
                      + blob_size(key) + blob_size(value) + uvarint_size(zz_encode(nh));
    for (Py_ssize_t h = 0; h < nh; h++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(headers, h);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
            return 0;
        PyObject *hk = PyTuple_GET_ITEM(pair, 0), *hv = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(hk) || !is_blob(hv))
            return 0;
        size += blob_size(hk) + blob_size(hv);
    }
    *body = size;
    return 1;
}

PyDoc_STRVAR(encode_records_doc,
"encode_records(records, base_ts, first_offset_delta=0) -> (bytearray, max_ts) or None\n"
"--\n\n"
"storage.records._encode_records_py in C: the records block of a batch from a list of\n"
"(key, value, headers, ts) tuples, offset deltas from first_offset_delta. Returns None for input\n"
"it does not take (other types, or timestamps outside int64), which the caller then encodes in\n"
"Python.");

static PyObject *
encode_records(PyObject *self, PyObject *args)
{
    PyObject *records, *base_obj;
    Py_ssize_t first = 0;
    if (!PyArg_ParseTuple(args, "OO|n:encode_records", &records, &base_obj, &first))
        return NULL;
    if (!PyList_CheckExact(records) || !PyLong_CheckExact(base_obj))
        Py_RETURN_NONE;
    int overflow;
    long long base_ts = PyLong_AsLongLongAndOverflow(base_obj, &overflow);
    if (overflow)
        Py_RETURN_NONE;
    if (base_ts == -1 && PyErr_Occurred())
        return NULL;

    /* Pass 1: check every record and size it; no Python code runs until pass 2 is done, so the
     * list cannot change between the passes. */
    Py_ssize_t n = PyList_GET_SIZE(records);
    Py_ssize_t total = 0;
    /* offset deltas first .. first + n - 1 must fit int64 (they are Py_ssize_t here) */
    if ((first > 0 && n > PY_SSIZE_T_MAX - first))
        Py_RETURN_NONE;
    Py_ssize_t *sizes = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    int64_t *deltas = PyMem_Malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    PyObject *max_obj = base_obj;
    long long max_ts = base_ts;
    if (sizes == NULL || deltas == NULL) {
        PyMem_Free(sizes);
        PyMem_Free(deltas);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(records, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 4)
            goto fallback;
        PyObject *ts_obj = PyTuple_GET_ITEM(item, 3);
        if (!PyLong_CheckExact(ts_obj))
            goto fallback;
        long long ts = PyLong_AsLongLongAndOverflow(ts_obj, &overflow);
        if (overflow)
            goto fallback;
        /* ts - base_ts must fit int64: Python's encode_varint masks wider values its own way */
        if ((base_ts < 0 && ts > INT64_MAX + base_ts) || (base_ts > 0 && ts < INT64_MIN + base_ts))
            goto fallback;
        deltas[i] = ts - base_ts;
        if (ts > max_ts) {
            max_ts = ts;
            max_obj = ts_obj;
        }
        if (!record_body_size(item, deltas[i], first + i, &sizes[i]))
            goto fallback;
        total += uvarint_size(zz_encode(sizes[i])) + sizes[i];
    }

    /* Pass 2: write */
    PyObject *out = PyByteArray_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto error;
    uint8_t *p = (uint8_t *)PyByteArray_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(records, i);
        PyObject *headers = PyTuple_GET_ITEM(item, 2);
        Py_ssize_t nh = PySequence_Fast_GET_SIZE(headers);
        p = put_uvarint(p, zz_encode(sizes[i]));
        *p++ = 0;  /* attributes */
        p = put_uvarint(p, zz_encode(deltas[i]));
        p = put_uvarint(p, zz_encode(first + i));
        p = put_blob(p, PyTuple_GET_ITEM(item, 0));
        p = put_blob(p, PyTuple_GET_ITEM(item, 1));
        p = put_uvarint(p, zz_encode(nh));
        for (Py_ssize_t h = 0; h < nh; h++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(headers, h);
            p = put_blob(p, PyTuple_GET_ITEM(pair, 0));
            p = put_blob(p, PyTuple_GET_ITEM(pair, 1));
        }
    }
    PyMem_Free(sizes);
    PyMem_Free(deltas);
    if (p != (uint8_t *)PyByteArray_AS_STRING(out) + total) {  /* cannot happen: sizes are exact */
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "encode_records: size mismatch");
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, out, max_obj);
    Py_DECREF(out);
    return result;
fallback:
    PyMem_Free(sizes);
    PyMem_Free(deltas);
    Py_RETURN_NONE;
error:
    PyMem_Free(sizes);
    PyMem_Free(deltas);
    return NULL;
}

static PyObject *
track(PyObject *self, PyObject *obj)
{
    if (PyType_IS_GC(Py_TYPE(obj)) && !PyObject_GC_IsTracked(obj))
        PyObject_GC_Track(obj);
    Py_RETURN_NONE;
}

/* --- module ---------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"walk_records", walk_records, METH_VARARGS, walk_records_doc},
    {"record_shape", record_shape, METH_VARARGS, record_shape_doc},
    {"decode_records", decode_records, METH_VARARGS, decode_records_doc},
    {"encode_records", encode_records, METH_VARARGS, encode_records_doc},
    {"track", track, METH_O,
     "track(obj): hand an object that decode_records left untracked back to the cycle collector."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ringlog.storage._speedups",
    "Compiled twin of the record format's per-record loops (see storage/_speedups.c).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *errors = PyImport_ImportModule("ringlog.storage.errors");
    if (errors == NULL)
        return NULL;
    Py_XSETREF(corrupt_error, PyObject_GetAttrString(errors, "CorruptBatchError"));
    Py_DECREF(errors);
    if (corrupt_error == NULL)
        return NULL;
    return PyModule_Create(&module);
}
