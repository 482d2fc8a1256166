// The service's typed errors. All derive from hg::Error (so the CLI prints them as any other
// error); the HTTP shell maps them to status codes: Unauthenticated -> 401, AccessDenied -> 403,
// BadInput -> 400, anything else -> 500. Messages name ids and actions, never an API key or
// secret, and never the medical text of a request.
#pragma once
#include "core/error.h"

namespace hg::service {

// No valid API key: missing, malformed, unknown, wrong secret or revoked (one message for all,
// so a caller cannot tell which; the audit row says which).
class Unauthenticated : public hg::Error {
public:
    using hg::Error::Error;
};

// An authenticated principal asked for something its role or ownership does not allow. Thrown
// only after the refusal's audit row is committed.
class AccessDenied : public hg::Error {
public:
    using hg::Error::Error;
};

// The request itself is wrong: an empty or oversize field, invalid UTF-8, an unknown role, a
// reference to a row of the wrong kind.
class BadInput : public hg::Error {
public:
    using hg::Error::Error;
};

}  // namespace hg::service
