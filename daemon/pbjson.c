/*
 * DESIGN: one generic walk over protobuf-c descriptors instead of a JSON
 * writer per message. A field added to the proto appears in the HTTP API
 * with no code here; tests/integration/test_http.py checks every field of
 * GetJobResponse against the gRPC answer.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pbjson.h"

/* SKETCH_KIND_BLOCK of enum SketchKind -> "block": the enum value's name
 * without the longest prefix it shares with the enum's other values,
 * lowercased. */
static json_t *enum_json(const ProtobufCEnumDescriptor *ed, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
    if (!ev)
        return json_integer(v);
    size_t pre = strlen(ev->name);
    for (unsigned i = 0; i < ed->n_values; i++) {
        const char *o = ed->values[i].name;
        size_t k = 0;
        while (k < pre && o[k] == ev->name[k])
            k++;
        if (o != ev->name && ed->n_values > 1)
            pre = k;
    }
    while (pre > 0 && ev->name[pre - 1] != '_') /* cut at a word boundary */
        pre--;
    char buf[128];
    size_t n = 0;
    for (const char *p = ev->name + pre; *p && n + 1 < sizeof(buf); p++)
        buf[n++] = (char)tolower((unsigned char)*p);
    buf[n] = '\0';
    return json_string(n ? buf : ev->name);
}

static json_t *real_json(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

/* One value of field f at p (an element of a repeated field, or the field). */
static json_t *value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return real_json(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return real_json(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM:
        return enum_json(f->descriptor, *(const int *)p);
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_string(s ? s : ""); /* NULL for text that is not UTF-8 */
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        return json_stringn_nocheck((const char *)b->data, b->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? grist__pb_to_json(m) : json_null();
    }
    }
    return json_null();
}

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

json_t *grist__pb_to_json(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m + f->offset;
        json_t *v;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            /* a member of a oneof: only the one that is set */
            const uint32_t which = *(const uint32_t *)((const char *)m + f->quantifier_offset);
            if (which != f->id)
                continue;
            v = value_json(f, base);
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            const size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            const char *arr = *(char *const *)base;
            v = json_array();
            for (size_t k = 0; v && k < n; k++)
                if (json_array_append_new(v, value_json(f, arr + k * elem_size(f))) < 0) {
                    json_decref(v);
                    v = NULL;
                }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && !*(void *const *)base) {
            continue; /* an unset sub-message is absent (as proto3's JSON mapping has it) */
        } else {
            v = value_json(f, base);
        }
        if (!v || json_object_set_new(o, f->name, v) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

char *grist__json_take_dump(json_t *v, size_t *len)
{
    if (!v)
        return NULL;
    const size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_REAL_PRECISION(17));
    char *s = n ? malloc(n + 1) : NULL;
    if (s) {
        json_dumpb(v, s, n, JSON_COMPACT | JSON_REAL_PRECISION(17));
        s[n] = '\n';
        *len = n + 1;
    }
    json_decref(v);
    return s;
}
