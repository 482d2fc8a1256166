// healthgpt plugins list|promote|rollback: the plugin versions of the update loop (docs/UPDATES.md,
// "Registry"). Thin over update::VersionRegistry as the local operator (an admin), audited. A
// running server swaps at once only through its admin API (POST /v1/admin/plugins/...); a change
// made here is what the server serves from its next start.
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "service/store.h"
#include "update/registry.h"

namespace {

struct PluginsArgs {
    std::string data_dir, plugin = "com";
    int64_t id = 0, to = -1;
};

void add_data_dir(CLI::App* sub, PluginsArgs& a) {
    sub->add_option("--data-dir", a.data_dir, "the server's data directory (holds healthgpt.db)")
        ->required()
        ->envname("HEALTHGPT_DATA_DIR");
}

}  // namespace

HG_COMMAND(plugins, "Plugin versions of the update loop: list, promote, rollback") {
    auto a = std::make_shared<PluginsArgs>();
    app.require_subcommand(1);
    CLI::App* list = app.add_subcommand("list", "every version: parent, status, gate verdict, file hash");
    add_data_dir(list, *a);
    CLI::App* promote = app.add_subcommand("promote", "make a version whose gate passed the served one (from the next start)");
    add_data_dir(promote, *a);
    promote->add_option("id", a->id, "the version id")->required();
    CLI::App* rollback = app.add_subcommand("rollback", "back to the version served before (or --to ID; 0: the folder's file)");
    add_data_dir(rollback, *a);
    rollback->add_option("--plugin", a->plugin, "the plugin")->capture_default_str();
    rollback->add_option("--to", a->to, "a retired version id, or 0 for the model folder's own file");
    return [=] {
        hg::service::Store store(a->data_dir);
        hg::update::VersionRegistry reg(store);
        const auto op = hg::service::Principal::local_operator();
        if (list->parsed()) {
            std::printf("%5s  %-10s  %-9s  %6s  %-5s  %-16s  %s\n", "id", "name", "status", "parent", "gate", "sha256", "path");
            for (const auto& v : reg.list(op))
                std::printf("%5lld  %-10s  %-9s  %6s  %-5s  %-16s  %s\n", (long long)v.id, v.name().c_str(), v.status.c_str(),
                            v.parent_id ? std::to_string(*v.parent_id).c_str() : "-", v.gate_passed ? "pass" : "fail",
                            v.sha256.substr(0, 16).c_str(), v.path.c_str());
            return 0;
        }
        if (promote->parsed()) {
            const auto v = reg.promote(op, a->id);
            std::printf("promoted %s\n", v.name().c_str());
            return 0;
        }
        const auto now = reg.rollback(op, a->plugin, a->to >= 0 ? std::optional<int64_t>(a->to) : std::nullopt);
        std::printf("serving %s\n", now ? now->name().c_str() : (a->plugin + " (the model folder's file)").c_str());
        return 0;
    };
}
