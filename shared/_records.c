/* Kafka record batches (message format v2) built in one call: what aiokafka's BatchBuilder
 * does a message at a time in Python, for a whole partition's messages at once.
 *
 *   batches(items, timestamp_ms, batch_size, transactional) -> [(bytearray, count), ...]
 *   seal(batch, producer_id, producer_epoch, base_sequence)  -> None  (and the CRC again)
 *   crc32c(data) -> int
 *
 * The bytes are those aiokafka's DefaultRecordBatchBuilder writes for the same messages with
 * no headers, no compression and one timestamp (a test compares them byte for byte); shared.kafka
 * hands them to aiokafka's producer as a ready batch. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- CRC-32C (Castagnoli) ---------------------------------------------------------------- */

static uint32_t CRC_TABLE[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        CRC_TABLE[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            CRC_TABLE[t][i] = (CRC_TABLE[t - 1][i] >> 8) ^ CRC_TABLE[0][CRC_TABLE[t - 1][i] & 0xff];
}

static uint32_t crc_table(uint32_t crc, const unsigned char *p, size_t n) {
    while (n >= 8) { /* slice-by-8 */
        uint64_t w;
        memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= crc;
        crc = CRC_TABLE[7][w & 0xff] ^ CRC_TABLE[6][(w >> 8) & 0xff] ^
              CRC_TABLE[5][(w >> 16) & 0xff] ^ CRC_TABLE[4][(w >> 24) & 0xff] ^
              CRC_TABLE[3][(w >> 32) & 0xff] ^ CRC_TABLE[2][(w >> 40) & 0xff] ^
              CRC_TABLE[1][(w >> 48) & 0xff] ^ CRC_TABLE[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = CRC_TABLE[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_HW_CRC 1
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                         size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
static int use_hw;
#endif

static uint32_t crc32c(const unsigned char *p, size_t n) {
#ifdef HAVE_HW_CRC
    if (use_hw) return ~crc_hw(0xFFFFFFFFu, p, n);
#endif
    return ~crc_table(0xFFFFFFFFu, p, n);
}

/* ---- the batch ---------------------------------------------------------------------------- */

enum {
    LENGTH_AT = 8,
    CRC_AT = 17,
    ATTRIBUTES_AT = 21,
    PRODUCER_AT = 43,
    HEADER_SIZE = 61,
};

static inline size_t put_varint(unsigned char *o, int64_t v) {
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); /* zigzag */
    size_t n = 0;
    while (u >= 0x80) {
        o[n++] = (unsigned char)(u | 0x80);
        u >>= 7;
    }
    o[n++] = (unsigned char)u;
    return n;
}

static inline size_t varint_size(int64_t v) {
    unsigned char tmp[10];
    return put_varint(tmp, v);
}

static inline void put_be(unsigned char *o, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; i--) {
        o[i] = (unsigned char)v;
        v >>= 8;
    }
}

static void seal_buffer(unsigned char *b, Py_ssize_t len, int64_t producer_id,
                        int producer_epoch, int32_t base_sequence) {
    put_be(b + PRODUCER_AT, (uint64_t)producer_id, 8);
    put_be(b + PRODUCER_AT + 8, (uint64_t)(uint16_t)producer_epoch, 2);
    put_be(b + PRODUCER_AT + 10, (uint64_t)(uint32_t)base_sequence, 4);
    put_be(b + CRC_AT, crc32c(b + ATTRIBUTES_AT, (size_t)(len - ATTRIBUTES_AT)), 4);
}

/* one item's key or value: bytes, or None */
static int blob(PyObject *o, const char **p, Py_ssize_t *n) {
    if (o == Py_None) {
        *p = NULL;
        *n = -1;
        return 0;
    }
    if (!PyBytes_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "keys and values must be bytes or None");
        return -1;
    }
    *p = PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

static PyObject *finish(PyObject *out, unsigned char *b, Py_ssize_t len, int count,
                        int64_t timestamp_ms, int transactional) {
    put_be(b, 0, 8);                                /* base offset: the broker's */
    put_be(b + LENGTH_AT, (uint64_t)(len - 12), 4); /* from here to the end */
    put_be(b + 12, 0xFFFFFFFFu, 4);                 /* partition leader epoch: none (-1) */
    b[16] = 2;                                      /* magic */
    put_be(b + ATTRIBUTES_AT, transactional ? 0x10 : 0, 2);
    put_be(b + 23, (uint64_t)(count - 1), 4); /* last offset delta */
    put_be(b + 27, (uint64_t)timestamp_ms, 8);
    put_be(b + 35, (uint64_t)timestamp_ms, 8);
    put_be(b + 57, (uint64_t)count, 4);
    seal_buffer(b, len, -1, -1, 0); /* as aiokafka's builder: no producer state yet */
    PyObject *ba = PyByteArray_FromStringAndSize((const char *)b, len);
    if (ba == NULL) return NULL;
    PyObject *pair = Py_BuildValue("(Ni)", ba, count);
    if (pair == NULL || PyList_Append(out, pair) < 0) {
        Py_XDECREF(pair);
        return NULL;
    }
    Py_DECREF(pair);
    return out;
}

static PyObject *batches(PyObject *self, PyObject *args) {
    PyObject *items;
    long long timestamp_ms;
    Py_ssize_t batch_size;
    int transactional;
    if (!PyArg_ParseTuple(args, "O!Lnp:batches", &PyList_Type, &items, &timestamp_ms,
                          &batch_size, &transactional))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t cap = HEADER_SIZE + 1024, len = HEADER_SIZE;
    unsigned char *b = PyMem_Malloc((size_t)cap);
    int count = 0;
    if (b == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        const char *key, *value;
        Py_ssize_t nk, nv;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "an item is (key, value)");
            goto fail;
        }
        if (blob(PyTuple_GET_ITEM(item, 0), &key, &nk) < 0 ||
            blob(PyTuple_GET_ITEM(item, 1), &value, &nv) < 0)
            goto fail;
        /* attributes, timestamp delta (0), offset delta, key, value, headers (0) */
        Py_ssize_t body = 1 + 1 + (Py_ssize_t)varint_size(count) + (Py_ssize_t)varint_size(nk) +
                          (nk > 0 ? nk : 0) + (Py_ssize_t)varint_size(nv) + (nv > 0 ? nv : 0) + 1;
        Py_ssize_t need = (Py_ssize_t)varint_size(body) + body;
        /* full (as aiokafka's compiled builder judges it: not even up to the size exactly) */
        if (count > 0 && len + need >= batch_size) {
            if (finish(out, b, len, count, timestamp_ms, transactional) == NULL) goto fail;
            len = HEADER_SIZE;
            count = 0;
            body = 1 + 1 + 1 + (Py_ssize_t)varint_size(nk) + (nk > 0 ? nk : 0) +
                   (Py_ssize_t)varint_size(nv) + (nv > 0 ? nv : 0) + 1;
            need = (Py_ssize_t)varint_size(body) + body;
        }
        if (len + need > cap) {
            while (len + need > cap) cap *= 2;
            unsigned char *grown = PyMem_Realloc(b, (size_t)cap);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            b = grown;
        }
        unsigned char *o = b + len;
        o += put_varint(o, body);
        *o++ = 0; /* attributes */
        *o++ = 0; /* timestamp delta: one timestamp for the batch */
        o += put_varint(o, count);
        o += put_varint(o, nk);
        if (nk > 0) {
            memcpy(o, key, (size_t)nk);
            o += nk;
        }
        o += put_varint(o, nv);
        if (nv > 0) {
            memcpy(o, value, (size_t)nv);
            o += nv;
        }
        *o++ = 0; /* no headers */
        len = o - b;
        count++;
    }
    if (count > 0 && finish(out, b, len, count, timestamp_ms, transactional) == NULL) goto fail;
    PyMem_Free(b);
    return out;
fail:
    PyMem_Free(b);
    Py_DECREF(out);
    return NULL;
}

static PyObject *seal(PyObject *self, PyObject *args) {
    PyObject *batch;
    long long producer_id;
    int producer_epoch, base_sequence;
    if (!PyArg_ParseTuple(args, "O!Lii:seal", &PyByteArray_Type, &batch, &producer_id,
                          &producer_epoch, &base_sequence))
        return NULL;
    Py_ssize_t len = PyByteArray_GET_SIZE(batch);
    if (len < HEADER_SIZE) {
        PyErr_SetString(PyExc_ValueError, "not a record batch");
        return NULL;
    }
    seal_buffer((unsigned char *)PyByteArray_AS_STRING(batch), len, producer_id, producer_epoch,
                base_sequence);
    Py_RETURN_NONE;
}

static PyObject *crc(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c = crc32c(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(c);
}

/* ---- consumed records as Messages -------------------------------------------------------- */

static PyObject *S_TOPIC, *S_PARTITION, *S_OFFSET, *S_KEY, *S_VALUE, *S_TIMESTAMP,
    *S_TIMESTAMP_TYPE, *S_HEADERS;

/* message_record(tp, record) -> Message, its type the function's self (message_maker) */
static PyObject *make_message(PyObject *message_type, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "message_record(tp, record)");
        return NULL;
    }
    PyObject *tp = args[0], *record = args[1];
    PyObject *fields[8] = {NULL};
    PyObject *names[8] = {S_TOPIC,     S_PARTITION,      S_OFFSET, S_KEY,
                          S_VALUE,     S_TIMESTAMP,      S_TIMESTAMP_TYPE, S_HEADERS};
    PyObject *msg = NULL;
    for (int k = 0; k < 8; k++) {
        PyObject *src = k < 2 ? tp : record;
        if ((fields[k] = PyObject_GetAttr(src, names[k])) == NULL) goto done;
    }
    if (!PyTuple_CheckExact(fields[7])) { /* the headers, as a tuple */
        PyObject *t = PySequence_Tuple(fields[7]);
        if (t == NULL) goto done;
        Py_SETREF(fields[7], t);
    }
    PyTypeObject *type = (PyTypeObject *)message_type;
    if ((msg = type->tp_alloc(type, 8)) == NULL) goto done;
    for (int k = 0; k < 8; k++) {
        PyTuple_SET_ITEM(msg, k, fields[k]);
        fields[k] = NULL;
    }
done:
    for (int k = 0; k < 8; k++) Py_XDECREF(fields[k]);
    return msg;
}

static PyMethodDef MESSAGE_DEF = {"message_record", (PyCFunction)(void (*)(void))make_message,
                                  METH_FASTCALL,
                                  "message_record(tp, record) -> a Message of the record"};

static PyObject *message_maker(PyObject *self, PyObject *message_type) {
    if (!PyType_Check(message_type) ||
        !PyType_IsSubtype((PyTypeObject *)message_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "a tuple type of 8 fields");
        return NULL;
    }
    return PyCFunction_NewEx(&MESSAGE_DEF, message_type, NULL);
}

static PyMethodDef methods[] = {
    {"message_maker", message_maker, METH_O,
     "message_maker(Message) -> message_record(tp, record), in C"},
    {"batches", batches, METH_VARARGS,
     "batches(items, timestamp_ms, batch_size, transactional) -> [(bytearray, count)]"},
    {"seal", seal, METH_VARARGS,
     "seal(batch, producer_id, producer_epoch, base_sequence): set them, and the CRC"},
    {"crc32c", crc, METH_O, "crc32c(data) -> int"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_records",
    .m_doc = "Kafka record batches (v2) built in one call.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__records(void) {
    crc_init();
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {{&S_TOPIC, "topic"},         {&S_PARTITION, "partition"},
                 {&S_OFFSET, "offset"},       {&S_KEY, "key"},
                 {&S_VALUE, "value"},         {&S_TIMESTAMP, "timestamp"},
                 {&S_TIMESTAMP_TYPE, "timestamp_type"}, {&S_HEADERS, "headers"}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        if ((*names[k].slot = PyUnicode_InternFromString(names[k].text)) == NULL) return NULL;
    }
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    use_hw = __builtin_cpu_supports("sse4.2");
#endif
    return PyModule_Create(&module);
}
