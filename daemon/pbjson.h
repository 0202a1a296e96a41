/*
 * A protobuf-c message as JSON (jansson), walked from the message's own
 * descriptor: every field the proto declares, under its proto name, so
 * the HTTP API shows exactly what gRPC serves and cannot drift from it.
 *
 * Mapping: scalars as JSON numbers (64-bit integers too: the values here,
 * steps and counts, stay below 2^53), a double that is not finite as null,
 * bool as true/false, string as string, an enum as the lowercase name of
 * its value without the enum's prefix (SKETCH_KIND_BLOCK -> "block"),
 * repeated fields as arrays; an unset sub-message is absent. Every other
 * field is written whether or not it holds its default (a reader sees the
 * whole schema).
 */
#ifndef GRIST_PBJSON_H
#define GRIST_PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

/* A new JSON object for m (NULL on ENOMEM); the caller owns it. */
json_t *grist__pb_to_json(const ProtobufCMessage *m);

/* json_dumpb into a malloc'd buffer with a trailing newline; NULL on
 * ENOMEM. Takes (and releases) the reference to v. */
char *grist__json_take_dump(json_t *v, size_t *len);

#endif
