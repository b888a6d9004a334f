/* storage/_speedups.c -- optional compiled version of the broker's per-record produce check.
 *
 * storage.records.check_records walks the length prefix of every record of a produced batch: the
 * lengths of `recordsCount` records must tile the records block exactly. At 100-byte records that
 * Python loop was over half of the broker's CPU. walk_records is the same walk in C.
 *
 * It only says where the walk ends, or None when the walk hits anything wrong (a length prefix
 * running past the buffer, a varint longer than 5 bytes, an impossible length). Then the caller
 * runs the pure-Python loop (storage.records._walk_records_py) on the same bytes, which raises
 * with its message; so the errors are the Python ones by construction and only the fast path
 * lives here.
 *
 * Plain CPython C API, no dependency beyond the interpreter.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

static PyMethodDef methods[] = {
    {"walk_records", walk_records, METH_VARARGS, walk_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "storage._speedups",
    "Optional compiled produce-path record walk of ringlog's storage (see storage/_speedups.c).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
