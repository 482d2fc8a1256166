// Roles and the principal a service call acts for.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace hg::service {

enum class Role { patient, physician, admin };

const char* role_name(Role r);
// "patient" | "physician" | "admin"; anything else throws BadInput.
Role parse_role(std::string_view s);

// Who makes a call: the user behind an authenticated API key (KeyService::authenticate), or the
// local operator (the CLI run by someone with access to the data directory, which is as good as
// access to the database file itself). Only the service makes Principals from keys.
struct Principal {
    int64_t user_id = 0;   // 0: the local operator (no users row)
    std::string name;      // the user's name, or "local-operator"
    Role role = Role::patient;
    std::string key_id;    // the public id of the key used (never the secret); empty for the operator

    static Principal local_operator();
    bool is_local_operator() const { return user_id == 0; }
};

}  // namespace hg::service
