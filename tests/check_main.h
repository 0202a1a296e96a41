/* The main() every Check test executable shares: run the suite (fork mode
 * unless CK_FORK=no), exit non-zero when a case failed. */
#ifndef GRIST_TEST_CHECK_MAIN_H
#define GRIST_TEST_CHECK_MAIN_H

#include <check.h>
#include <stdlib.h>

#define GRIST_CHECK_MAIN(suite_fn)                                                                 \
    int main(void)                                                                                 \
    {                                                                                              \
        SRunner *sr = srunner_create(suite_fn());                                                  \
        srunner_run_all(sr, CK_NORMAL);                                                            \
        const int failed = srunner_ntests_failed(sr);                                              \
        srunner_free(sr);                                                                          \
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;                                               \
    }

#endif
