#include "service/auth.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/sha256.h"
#include "service/access.h"
#include "service/audit.h"
#include "service/errors.h"
#include "service/validate.h"

namespace hg::service {

namespace {

constexpr std::string_view kPrefix = "hgk_";
constexpr size_t kIdHex = 16, kSecretBytes = 32, kSaltBytes = 16;
constexpr size_t kKeyLength = kPrefix.size() + kIdHex + 1 + 2 * kSecretBytes;

bool is_lower_hex(std::string_view s) {
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

int hex_value(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

// Salted digest of the secret's bytes (the secret as hex has been validated).
Sha256Digest key_hash(std::span<const uint8_t> salt, std::string_view secret_hex) {
    uint8_t secret[kSecretBytes];
    for (size_t i = 0; i < kSecretBytes; ++i)
        secret[i] = uint8_t(hex_value(secret_hex[2 * i]) << 4 | hex_value(secret_hex[2 * i + 1]));
    Sha256 h;
    h.update(salt);
    h.update(secret, sizeof secret);
    auto d = h.finish();
    // Best effort: do not leave the secret on the stack (volatile so it is not optimised out).
    volatile uint8_t* v = secret;
    for (size_t i = 0; i < sizeof secret; ++i) v[i] = 0;
    return d;
}

// Constant time in the contents: every byte is compared, no early exit.
bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b) {
    if (a.size() != b.size()) return false;
    uint8_t diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff |= uint8_t(a[i] ^ b[i]);
    return diff == 0;
}

const char* kUnauthenticated = "invalid or revoked API key";

}  // namespace

void random_bytes(void* out, size_t n) {
    auto* p = static_cast<uint8_t*>(out);
    while (n > 0) {
        const ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            fail("getrandom: %s", std::strerror(errno));
        }
        p += got;
        n -= size_t(got);
    }
}

bool is_key_id(std::string_view s) { return s.size() == kIdHex && is_lower_hex(s); }

NewKey KeyService::add_key(const Principal& by, std::string_view name, std::string_view role_text) {
    check_text("name", name, Limits::name, /*allow_newlines=*/false);
    const Role role = parse_role(role_text);
    const std::string target = "user:" + std::string(name);
    return guarded(store_, by, "keys.add", target, [&](Db& db) { return Access(db).can_manage_keys(by); },
                   [&](Db& db, std::string& detail) {
                       NewKey k;
                       k.user_name = std::string(name);
                       k.role = role;
                       Stmt find(db, "SELECT id, role FROM users WHERE name = ?");
                       find.bind(name);
                       if (find.step()) {
                           k.user_id = find.int64(0);
                           if (find.text(1) != role_name(role))
                               throw BadInput("user '" + std::string(name) + "' exists with role " + find.text(1) +
                                              ", not " + role_name(role));
                       } else {
                           Stmt ins(db, "INSERT INTO users (name, role, created_at) VALUES (?, ?, ?)");
                           ins.bind(name).bind(role_name(role)).bind(now_ms());
                           ins.run();
                           k.user_id = db.last_insert_id();
                       }
                       uint8_t id_bytes[kIdHex / 2], secret[kSecretBytes], salt[kSaltBytes];
                       random_bytes(id_bytes, sizeof id_bytes);
                       random_bytes(secret, sizeof secret);
                       random_bytes(salt, sizeof salt);
                       k.key_id = to_hex(id_bytes);
                       const std::string secret_hex = to_hex(secret);
                       const Sha256Digest hash = key_hash(salt, secret_hex);
                       Stmt ins(db, "INSERT INTO api_keys (key_id, user_id, salt, hash, created_at) VALUES (?, ?, ?, ?, ?)");
                       ins.bind(k.key_id).bind(k.user_id).bind(std::span<const uint8_t>(salt))
                           .bind(std::span<const uint8_t>(hash)).bind(now_ms());
                       ins.run();  // a (2^-64 likely) key_id collision fails the UNIQUE constraint: retry by the caller
                       k.key = std::string(kPrefix) + k.key_id + "_" + secret_hex;
                       detail = "key " + k.key_id + " for user " + std::to_string(k.user_id) + " (" + role_name(role) + ")";
                       volatile uint8_t* v = secret;
                       for (size_t i = 0; i < sizeof secret; ++i) v[i] = 0;
                       return k;
                   });
}

std::vector<KeyInfo> KeyService::list_keys(const Principal& by) {
    return guarded(store_, by, "keys.list", "api_keys", [&](Db& db) { return Access(db).can_manage_keys(by); },
                   [&](Db& db, std::string& detail) {
                       std::vector<KeyInfo> out;
                       Stmt s(db,
                              "SELECT k.key_id, u.id, u.name, u.role, k.created_at, k.revoked_at "
                              "FROM api_keys k JOIN users u ON u.id = k.user_id ORDER BY k.id");
                       while (s.step()) {
                           KeyInfo k;
                           k.key_id = s.text(0);
                           k.user_id = s.int64(1);
                           k.user_name = s.text(2);
                           k.role = parse_role(s.text(3));
                           k.created_at_ms = s.int64(4);
                           k.revoked_at_ms = s.opt_int64(5);
                           out.push_back(std::move(k));
                       }
                       detail = std::to_string(out.size()) + " keys";
                       return out;
                   });
}

void KeyService::revoke_key(const Principal& by, std::string_view key_id) {
    if (!is_key_id(key_id)) throw BadInput("key id: must be 16 lower-case hex digits (as `healthgpt keys list` shows)");
    guarded(store_, by, "keys.revoke", "key:" + std::string(key_id), [&](Db& db) { return Access(db).can_manage_keys(by); },
            [&](Db& db, std::string& detail) {
                Stmt s(db, "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL");
                s.bind(now_ms()).bind(key_id);
                s.run();
                if (db.changes() != 1) throw BadInput("key " + std::string(key_id) + ": no such active key");
                detail = "revoked";
            });
}

Principal KeyService::authenticate(std::string_view key) {
    // Parse without ever copying the secret part into anything that outlives this call.
    const bool well_formed = key.size() == kKeyLength && key.substr(0, kPrefix.size()) == kPrefix &&
                             key[kPrefix.size() + kIdHex] == '_' && is_lower_hex(key.substr(kPrefix.size(), kIdHex)) &&
                             is_lower_hex(key.substr(kPrefix.size() + kIdHex + 1));
    if (!well_formed) {
        store_.transaction([&](Db& db) { audit_append_anonymous(db, "", "authenticate", "key", "malformed key"); });
        throw Unauthenticated(kUnauthenticated);
    }
    const std::string key_id(key.substr(kPrefix.size(), kIdHex));
    const std::string_view secret_hex = key.substr(kPrefix.size() + kIdHex + 1);
    std::optional<Principal> principal;
    store_.transaction([&](Db& db) {
        Stmt s(db,
               "SELECT k.salt, k.hash, k.revoked_at, u.id, u.name, u.role FROM api_keys k "
               "JOIN users u ON u.id = k.user_id WHERE k.key_id = ?");
        s.bind(key_id);
        const char* why = nullptr;
        if (!s.step()) {
            // Hash anyway, so an unknown id costs what a known one does.
            const uint8_t no_salt[kSaltBytes] = {};
            (void)key_hash(no_salt, secret_hex);
            why = "unknown key";
        } else {
            const std::vector<uint8_t> salt = s.blob(0), stored = s.blob(1);
            const Sha256Digest got = key_hash(salt, secret_hex);
            if (!equal_constant_time(got, stored)) why = "wrong secret";
            else if (!s.is_null(2)) why = "revoked key";
            else {
                Principal p;
                p.user_id = s.int64(3);
                p.name = s.text(4);
                p.role = parse_role(s.text(5));
                p.key_id = key_id;
                principal = std::move(p);
            }
        }
        if (why) audit_append_anonymous(db, key_id, "authenticate", "key:" + key_id, why);
    });
    if (!principal) throw Unauthenticated(kUnauthenticated);
    return *principal;
}

}  // namespace hg::service
