/*
 * DESIGN: error texts. The project range comes from GRIST_ERRNO_MAP; any
 * other negative value is a negated errno and goes to strerror's table.
 */
#include <errno.h>
#include <string.h>

#include "grist/error.h"

const char *grist_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define GRIST__ERR_STR(name, val, msg)                                                             \
    case (val):                                                                                    \
        return (msg);
        GRIST_ERRNO_MAP(GRIST__ERR_STR)
#undef GRIST__ERR_STR
    default:
        break;
    }
    if (err < 0 && err > -4000)
        return strerror(-err);
    return "unknown error";
}

const char *grist_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define GRIST__ERR_NAME(name, val, msg)                                                            \
    case (val):                                                                                    \
        return "GRIST_E" #name;
        GRIST_ERRNO_MAP(GRIST__ERR_NAME)
#undef GRIST__ERR_NAME
    case -ENOMEM:
        return "ENOMEM";
    case -EINVAL:
        return "EINVAL";
    case -ENOENT:
        return "ENOENT";
    case -EEXIST:
        return "EEXIST";
    case -EAGAIN:
        return "EAGAIN";
    case -ENOSPC:
        return "ENOSPC";
    default:
        return "EUNKNOWN";
    }
}
