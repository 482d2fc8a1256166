// healthgpt: the command-line shell over the library. Verbs register themselves (command.h).
#include <algorithm>
#include <cstdio>
#include <map>

#include "command.h"
#include "core/error.h"

namespace hgcli {

std::vector<CommandDef>& commands() {
    static std::vector<CommandDef> c;
    return c;
}

int add_command(const char* name, const char* description, Setup setup) {
    commands().push_back({name, description, setup});
    return 0;
}

}  // namespace hgcli

int main(int argc, char** argv) {
    CLI::App app{"healthgpt: a native engine for the HealthGPT medical vision-language model\n"
                 "(answers questions about medical images, generates medical images)."};
    app.require_subcommand(1);
    app.set_version_flag("--version", "healthgpt 0.1.0");

    auto& defs = hgcli::commands();
    std::sort(defs.begin(), defs.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    std::map<CLI::App*, hgcli::Runner> runners;
    for (const auto& d : defs) {
        CLI::App* sub = app.add_subcommand(d.name, d.description);
        runners[sub] = d.setup(*sub);
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    try {
        for (auto& [sub, run] : runners)
            if (sub->parsed()) return run();
    } catch (const hg::Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
