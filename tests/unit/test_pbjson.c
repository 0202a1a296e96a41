/* Unit tests of daemon/pbjson.c: a protobuf-c message as JSON, walked from
 * its descriptor (the mapping documented in pbjson.h). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grist/v1/grist.pb-c.h"
#include "pbjson.h"
#include "../check_main.h"

START_TEST(test_every_field_under_its_proto_name)
{
    Grist__V1__JobBrief b = GRIST__V1__JOB_BRIEF__INIT;
    b.job_id = (char *)"j\xc3\xa9/1"; /* UTF-8 kept as is */
    b.step = (1ull << 52) + 3; /* exact as a JSON number */
    b.sketch_kind = GRIST__V1__SKETCH_KIND__SKETCH_KIND_BLOCK;
    json_t *o = grist__pb_to_json(&b.base);
    ck_assert_ptr_nonnull(o);
    /* every field, set or at its default */
    for (unsigned i = 0; i < grist__v1__job_brief__descriptor.n_fields; i++)
        ck_assert_msg(json_object_get(o, grist__v1__job_brief__descriptor.fields[i].name),
                      "field %s missing", grist__v1__job_brief__descriptor.fields[i].name);
    ck_assert_uint_eq(json_object_size(o), grist__v1__job_brief__descriptor.n_fields);
    ck_assert_str_eq(json_string_value(json_object_get(o, "job_id")), "j\xc3\xa9/1");
    ck_assert(json_integer_value(json_object_get(o, "step")) == (json_int_t)((1ull << 52) + 3));
    ck_assert_str_eq(json_string_value(json_object_get(o, "sketch_kind")), "block");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "world_size")), 0);
    json_decref(o);
}
END_TEST

START_TEST(test_repeated_non_finite_and_submessages)
{
    Grist__V1__GroupState g = GRIST__V1__GROUP_STATE__INIT;
    double cand[3] = {0.0, 0.9, 0.99}, J[3] = {1.5, NAN, INFINITY};
    g.name = (char *)"conv";
    g.n_candidates = g.n_alignment = 3;
    g.candidates = cand;
    g.alignment = J;
    g.noise = NAN;
    json_t *o = grist__pb_to_json(&g.base);
    ck_assert_ptr_nonnull(o);
    /* an unset sub-message is absent */
    ck_assert_ptr_null(json_object_get(o, "families"));
    ck_assert(json_is_null(json_object_get(o, "noise"))); /* not JSON as a number */
    json_t *a = json_object_get(o, "alignment");
    ck_assert_uint_eq(json_array_size(a), 3);
    ck_assert_double_eq(json_real_value(json_array_get(a, 0)), 1.5);
    ck_assert(json_is_null(json_array_get(a, 1)) && json_is_null(json_array_get(a, 2)));
    ck_assert_uint_eq(json_array_size(json_object_get(o, "alignment_se")), 0);
    json_decref(o);
    /* a set one is an object */
    Grist__V1__FamilyDiagnostics f = GRIST__V1__FAMILY_DIAGNOSTICS__INIT;
    f.trace = 0.1 + 0.2; /* 17 digits: the exact double comes back */
    g.families = &f;
    o = grist__pb_to_json(&g.base);
    size_t len = 0;
    char *s = grist__json_take_dump(o, &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s[len - 1], '\n');
    json_t *back = json_loadb(s, len, 0, NULL);
    free(s);
    ck_assert_ptr_nonnull(back);
    const double t = json_real_value(json_object_get(json_object_get(back, "families"), "trace"));
    ck_assert(t == 0.1 + 0.2);
    json_decref(back);
}
END_TEST

START_TEST(test_oneof_only_the_member_set)
{
    Grist__V1__Welcome w = GRIST__V1__WELCOME__INIT;
    w.job_seed = 7;
    Grist__V1__ServerMessage m = GRIST__V1__SERVER_MESSAGE__INIT;
    m.msg_case = GRIST__V1__SERVER_MESSAGE__MSG_WELCOME;
    m.welcome = &w;
    json_t *o = grist__pb_to_json(&m.base);
    ck_assert_ptr_nonnull(o);
    ck_assert_uint_eq(json_object_size(o), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(o, "welcome"), "job_seed")),
                     7);
    ck_assert_ptr_null(json_object_get(o, "hyperparams"));
    json_decref(o);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("pbjson");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_every_field_under_its_proto_name);
    tcase_add_test(tc, test_repeated_non_finite_and_submessages);
    tcase_add_test(tc, test_oneof_only_the_member_set);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
