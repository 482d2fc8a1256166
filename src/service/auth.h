// Users and API keys.
//
// A key is "hgk_" + key_id (16 hex digits, public: it names the key in lists and audit rows) +
// "_" + secret (64 hex digits = 32 bytes from getrandom()). The store keeps key_id, a 16-byte
// random salt and SHA-256(salt || secret bytes); the secret itself is returned once by add_key
// and never stored, logged or put in an error or audit text. A salted fast hash is enough here
// (a slow password hash is for low-entropy secrets): guessing a 256-bit secret is infeasible,
// and the salt keeps equal secrets (there are none in practice) from having equal hashes.
// The digest comparison is constant time.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "service/roles.h"
#include "service/store.h"

namespace hg::service {

// n bytes from the kernel's CSPRNG (getrandom, retried on EINTR and short reads).
void random_bytes(void* out, size_t n);

struct NewKey {
    int64_t user_id = 0;
    std::string user_name;
    Role role = Role::patient;
    std::string key_id;
    std::string key;   // the whole key ("hgk_<id>_<secret>"): show once, then forget
};

struct KeyInfo {
    std::string key_id;
    int64_t user_id = 0;
    std::string user_name;
    Role role = Role::patient;
    int64_t created_at_ms = 0;
    std::optional<int64_t> revoked_at_ms;
};

class KeyService {
public:
    explicit KeyService(Store& store) : store_(store) {}

    // Admins (and the local operator) only. Creates the user `name` with `role` if absent, then a
    // new key for it; an existing user with another role is refused (BadInput).
    NewKey add_key(const Principal& by, std::string_view name, std::string_view role);
    std::vector<KeyInfo> list_keys(const Principal& by);
    // Revokes an active key by its public id; BadInput if there is no active key with that id.
    void revoke_key(const Principal& by, std::string_view key_id);

    // The principal behind a presented key. Throws Unauthenticated (one message whatever the
    // cause) for a malformed, unknown, wrong or revoked key, after auditing the failure with
    // the key's public id (only when well-formed) and the cause.
    Principal authenticate(std::string_view presented_key);

private:
    Store& store_;
};

// Whether s is a well-formed public key id (16 lower-case hex digits).
bool is_key_id(std::string_view s);

}  // namespace hg::service
