/* status.c — the one place that turns mailfs status codes into errno. */
#include <errno.h>
#include "status.h"

int mf_status_to_errno(enum mf_status st)
{
	switch (st) {
	case MF_OK:           return 0;
	case MF_ERR_NOTFOUND: return ENOENT;
	case MF_ERR_QUOTA:    return EDQUOT;
	case MF_ERR_EXISTS:   return EEXIST;
	case MF_ERR_NOTEMPTY: return ENOTEMPTY;
	case MF_ERR_INVAL:    return EINVAL;
	case MF_ERR_NOMEM:    return ENOMEM;
	case MF_ERR_READONLY: return EROFS;
	case MF_ERR_PERM:     return EPERM;
	case MF_ERR_AUTH:     return EACCES;
	case MF_ERR_TOOBIG:   return EFBIG;
	case MF_ERR_TIMEOUT:
	case MF_ERR_IO:
	case MF_ERR_REFUSED:
	case MF_ERR_PROTOCOL:
	case MF_ERR_TLS:
	case MF_ERR_OFFLINE:
		return EIO;
	}
	return EIO;
}

const char *mf_status_str(enum mf_status st)
{
	switch (st) {
	case MF_OK:           return "success";
	case MF_ERR_IO:       return "connection failed";
	case MF_ERR_TIMEOUT:  return "the server did not answer in time";
	case MF_ERR_NOTFOUND: return "not found";
	case MF_ERR_REFUSED:  return "refused by the server";
	case MF_ERR_PROTOCOL: return "malformed reply from the server";
	case MF_ERR_AUTH:     return "login failed";
	case MF_ERR_TLS:      return "TLS or certificate check failed";
	case MF_ERR_QUOTA:    return "over quota";
	case MF_ERR_EXISTS:   return "already exists";
	case MF_ERR_NOTEMPTY: return "folder not empty";
	case MF_ERR_INVAL:    return "invalid argument";
	case MF_ERR_NOMEM:    return "out of memory";
	case MF_ERR_OFFLINE:  return "offline: not in the cache";
	case MF_ERR_READONLY: return "read-only";
	case MF_ERR_PERM:     return "not permitted";
	case MF_ERR_TOOBIG:   return "larger than the server takes";
	}
	return "unknown error";
}
