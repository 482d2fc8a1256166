// API keys: the key's shape, authentication of a good key, refusal (one message, audited with
// the cause) of wrong, unknown, malformed and revoked keys; the secret is nowhere in the
// database file, the WAL, the audit table, the key list or any error text; salts differ;
// only admins manage keys.
#include <regex>

#include "core/sha256.h"
#include "service_test_util.h"

using namespace svctest;

namespace {

std::string secret_of(const std::string& key) { return key.substr(key.rfind('_') + 1); }

std::string file_bytes(const fs::path& p) {
    if (!fs::exists(p)) return {};
    const auto v = hgtest::read_file(p);
    return std::string(v.begin(), v.end());
}

// Expects authenticate(key) to fail with the uniform message, and returns that message.
std::string refused_message(KeyService& keys, const std::string& key) {
    try {
        keys.authenticate(key);
    } catch (const Unauthenticated& e) {
        EXPECT_STREQ(e.what(), "invalid or revoked API key");
        return e.what();
    }
    ADD_FAILURE() << "key accepted";
    return {};
}

}  // namespace

TEST(ServiceAuth, KeyHasItsShapeAndAuthenticates) {
    Store store(fresh_dir("auth"));
    KeyService keys(store);
    const NewKey k = keys.add_key(Principal::local_operator(), "Dr Grey", "physician");
    EXPECT_TRUE(std::regex_match(k.key, std::regex("hgk_[0-9a-f]{16}_[0-9a-f]{64}"))) << "bad key shape";
    EXPECT_EQ(k.key.substr(4, 16), k.key_id);
    const Principal p = keys.authenticate(k.key);
    EXPECT_EQ(p.user_id, k.user_id);
    EXPECT_EQ(p.name, "Dr Grey");
    EXPECT_EQ(p.role, Role::physician);
    EXPECT_EQ(p.key_id, k.key_id);
    // A second key for the same user: same user, another id, another salt and hash.
    const NewKey k2 = keys.add_key(Principal::local_operator(), "Dr Grey", "physician");
    EXPECT_EQ(k2.user_id, k.user_id);
    EXPECT_NE(k2.key_id, k.key_id);
    EXPECT_EQ(keys.authenticate(k2.key).user_id, k.user_id);
    EXPECT_EQ(query_int(store, "SELECT count(DISTINCT salt) FROM api_keys"), 2);
    EXPECT_EQ(query_int(store, "SELECT count(DISTINCT hash) FROM api_keys"), 2);
}

TEST(ServiceAuth, StoredHashIsSaltedSha256OfTheSecretBytes) {
    Store store(fresh_dir("hash"));
    const NewKey k = KeyService(store).add_key(Principal::local_operator(), "u", "patient");
    const auto [salt, hash] = store.transaction([&](Db& db) {
        Stmt s(db, "SELECT salt, hash FROM api_keys WHERE key_id = ?");
        s.bind(k.key_id);
        EXPECT_TRUE(s.step());
        return std::make_pair(s.blob(0), s.blob(1));
    });
    const std::string hex = secret_of(k.key);
    std::vector<uint8_t> secret;
    for (size_t i = 0; i < hex.size(); i += 2) secret.push_back(uint8_t(std::stoi(hex.substr(i, 2), nullptr, 16)));
    hg::Sha256 h;
    h.update(salt);
    h.update(secret);
    const auto d = h.finish();
    EXPECT_EQ(std::vector<uint8_t>(d.begin(), d.end()), hash);
}

TEST(ServiceAuth, WrongUnknownMalformedAndRevokedKeysAreRefusedAndAudited) {
    const fs::path dir = fresh_dir("refuse");
    Store store(dir);
    KeyService keys(store);
    const NewKey k = keys.add_key(Principal::local_operator(), "pat", "patient");
    const std::string secret = secret_of(k.key);

    std::string wrong = k.key;
    wrong.back() = wrong.back() == '0' ? '1' : '0';
    refused_message(keys, wrong);
    AuditEntry e = last_audit(store);
    EXPECT_FALSE(e.allowed);
    EXPECT_EQ(e.action, "authenticate");
    EXPECT_EQ(e.actor, "anonymous");
    EXPECT_EQ(e.key_id, k.key_id);
    EXPECT_EQ(e.detail, "wrong secret");

    const std::string unknown = "hgk_0123456789abcdef_" + secret;
    refused_message(keys, unknown);
    EXPECT_EQ(last_audit(store).detail, "unknown key");

    for (const std::string& bad : {std::string(), std::string("hgk_"), k.key + "0", k.key.substr(0, k.key.size() - 1),
                                   "HGK_" + k.key.substr(4), "Bearer " + k.key, std::string(10000, 'a'),
                                   std::string("hgk_zzzzzzzzzzzzzzzz_") + secret}) {
        const int64_t before = audit_rows(store);
        refused_message(keys, bad);
        EXPECT_EQ(audit_rows(store), before + 1);
        e = last_audit(store);
        EXPECT_EQ(e.detail, "malformed key");
        EXPECT_EQ(e.key_id, "") << "a malformed key's text was recorded";
    }

    keys.revoke_key(Principal::local_operator(), k.key_id);
    refused_message(keys, k.key);
    EXPECT_EQ(last_audit(store).detail, "revoked key");
    EXPECT_THROW(keys.revoke_key(Principal::local_operator(), k.key_id), BadInput);  // already revoked
    EXPECT_THROW(keys.revoke_key(Principal::local_operator(), "not-a-key-id"), BadInput);

    // The secret (as hex, and the raw bytes) is nowhere: not in the database, the WAL, the
    // audit rows, the key list or the error texts.
    std::string raw_secret;
    for (size_t i = 0; i < secret.size(); i += 2) raw_secret += char(std::stoi(secret.substr(i, 2), nullptr, 16));
    for (const auto& f : {Store::db_file(dir), fs::path(Store::db_file(dir).string() + "-wal")}) {
        const std::string bytes = file_bytes(f);
        EXPECT_EQ(bytes.find(secret), std::string::npos) << f;
        EXPECT_EQ(bytes.find(raw_secret), std::string::npos) << f;
    }
    for (const auto& row : AuditService(store).read(Principal::local_operator())) {
        for (const std::string& field : {row.actor, row.key_id, row.action, row.target, row.detail}) {
            EXPECT_EQ(field.find(secret), std::string::npos);
            EXPECT_EQ(field.find(secret.substr(0, 16)), std::string::npos);
        }
    }
    for (const auto& info : keys.list_keys(Principal::local_operator())) EXPECT_EQ(info.key_id.find(secret), std::string::npos);
    try {
        keys.authenticate(wrong);
    } catch (const hg::Error& err) {
        EXPECT_EQ(std::string(err.what()).find(secret.substr(0, 8)), std::string::npos);
    }
}

TEST(ServiceAuth, OnlyAdminsManageKeys) {
    Store store(fresh_dir("keyadmin"));
    KeyService keys(store);
    const Principal admin = make_user(store, "root", "admin");
    const Principal doc = make_user(store, "doc", "physician");
    const Principal pat = make_user(store, "pat", "patient");
    const NewKey k = keys.add_key(admin, "pat2", "patient");  // an admin may
    EXPECT_EQ(keys.list_keys(admin).size(), 4u);
    for (const Principal* p : {&doc, &pat}) {
        int64_t before = audit_rows(store);
        EXPECT_THROW(keys.add_key(*p, "intruder", "admin"), AccessDenied);
        EXPECT_THROW(keys.list_keys(*p), AccessDenied);
        EXPECT_THROW(keys.revoke_key(*p, k.key_id), AccessDenied);
        EXPECT_EQ(audit_rows(store), before + 3) << "each refusal writes one audit row";
        const AuditEntry e = last_audit(store);
        EXPECT_FALSE(e.allowed);
        EXPECT_EQ(e.action, "keys.revoke");
        EXPECT_EQ(e.actor, p->name);
        EXPECT_EQ(e.user_id, p->user_id);
        EXPECT_EQ(e.key_id, p->key_id);
    }
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM users WHERE name = 'intruder'"), 0);
    EXPECT_EQ(keys.authenticate(k.key).name, "pat2") << "a refused revoke revoked nothing";
    keys.revoke_key(admin, k.key_id);
    EXPECT_THROW(keys.authenticate(k.key), Unauthenticated);
}
