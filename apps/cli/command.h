// Each verb of `healthgpt <verb>` lives in its own apps/cli/cmd_<verb>.cpp and registers
// itself with HG_COMMAND. The body declares the verb's options on `app` (a CLI11 subcommand)
// and returns the function that runs it (returning the process exit status).
//
//   HG_COMMAND(info, "Print build and CPU information") {
//       auto verbose = std::make_shared<bool>(false);
//       app.add_flag("-v,--verbose", *verbose, "more detail");
//       return [=] { ...; return 0; };
//   }
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace hgcli {

using Runner = std::function<int()>;
using Setup = Runner (*)(CLI::App& app);

struct CommandDef {
    std::string name, description;
    Setup setup;
};

std::vector<CommandDef>& commands();
int add_command(const char* name, const char* description, Setup setup);

}  // namespace hgcli

#define HG_COMMAND(name, description)                                                        \
    static hgcli::Runner hg_setup_##name(CLI::App& app);                                    \
    [[maybe_unused]] static const int hg_registered_##name = hgcli::add_command(#name, description, hg_setup_##name); \
    static hgcli::Runner hg_setup_##name(CLI::App& app)
