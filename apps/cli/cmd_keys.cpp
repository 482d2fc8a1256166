// healthgpt keys add|list|revoke: API keys of the server's users (docs/SERVER.md, "Store and
// roles"). Thin over service::KeyService; runs as the local operator (whoever can read the data
// directory can read the database anyway), and every call is audited like a server call.
#include <cstdio>
#include <ctime>
#include <memory>
#include <string>

#include "command.h"
#include "service/auth.h"
#include "service/store.h"

namespace {

struct KeysArgs {
    std::string data_dir, role, name, key_id;
};

std::string utc_time(int64_t ms) {
    const std::time_t t = std::time_t(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

void add_data_dir(CLI::App* sub, KeysArgs& a) {
    sub->add_option("--data-dir", a.data_dir, "the server's data directory (holds healthgpt.db)")
        ->required()
        ->envname("HEALTHGPT_DATA_DIR");
}

int run_add(const KeysArgs& a) {
    hg::service::Store store(a.data_dir);
    const auto k = hg::service::KeyService(store).add_key(hg::service::Principal::local_operator(), a.name, a.role);
    std::fprintf(stderr, "key %s for %s '%s' (user %lld); it is shown once and cannot be recovered:\n",
                 k.key_id.c_str(), hg::service::role_name(k.role), k.user_name.c_str(), (long long)k.user_id);
    std::printf("%s\n", k.key.c_str());
    return 0;
}

int run_list(const KeysArgs& a) {
    hg::service::Store store(a.data_dir);
    const auto keys = hg::service::KeyService(store).list_keys(hg::service::Principal::local_operator());
    std::printf("%-16s  %6s  %-9s  %-20s  %-20s  %s\n", "key id", "user", "role", "created", "status", "name");
    for (const auto& k : keys) {
        const std::string status = k.revoked_at_ms ? "revoked " + utc_time(*k.revoked_at_ms) : "active";
        std::printf("%-16s  %6lld  %-9s  %-20s  %-20s  %s\n", k.key_id.c_str(), (long long)k.user_id,
                    hg::service::role_name(k.role), utc_time(k.created_at_ms).c_str(), status.c_str(),
                    k.user_name.c_str());
    }
    return 0;
}

int run_revoke(const KeysArgs& a) {
    hg::service::Store store(a.data_dir);
    hg::service::KeyService(store).revoke_key(hg::service::Principal::local_operator(), a.key_id);
    std::printf("revoked key %s\n", a.key_id.c_str());
    return 0;
}

}  // namespace

HG_COMMAND(keys, "API keys of the server's users: add (prints the key once), list (no secrets), revoke") {
    auto a = std::make_shared<KeysArgs>();
    app.require_subcommand(1);
    CLI::App* add = app.add_subcommand("add", "create a user (if new) and a new API key for it; prints the key once");
    add_data_dir(add, *a);
    add->add_option("--role", a->role, "patient | physician | admin")
        ->required()
        ->check(CLI::IsMember({"patient", "physician", "admin"}));
    add->add_option("--name", a->name, "the user's name (unique; 1..200 bytes, one line)")->required();
    CLI::App* list = app.add_subcommand("list", "every key: id, user, role, created, revoked (never a secret)");
    add_data_dir(list, *a);
    CLI::App* revoke = app.add_subcommand("revoke", "revoke a key by its id (as `keys list` shows it)");
    add_data_dir(revoke, *a);
    revoke->add_option("key_id", a->key_id, "the key's id (16 hex digits)")->required();
    return [=] {
        if (add->parsed()) return run_add(*a);
        if (list->parsed()) return run_list(*a);
        if (revoke->parsed()) return run_revoke(*a);
        return 1;
    };
}
