// healthgpt consultations share: the operator's way to assign a consultation to a physician
// (docs/SERVER.md, "Store and roles"). Thin over ConsultationService::share as the local operator
// (an admin without a user row: whoever can read the data directory can read the database), so
// the same checks apply (the target must be a physician) and the call is audited like a server's.
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "service/consultations.h"
#include "service/errors.h"
#include "service/store.h"

namespace {

struct ConsultationsArgs {
    std::string data_dir, physician;
    int64_t consultation = 0;
};

// A physician's user id, or the id of the physician of that name (the list a patient sees).
int64_t physician_id_of(hg::service::ConsultationService& cs, const std::string& s) {
    const auto physicians = cs.list_physicians(hg::service::Principal::local_operator());
    for (const auto& p : physicians)
        if (p.name == s) return p.id;
    const bool digits = !s.empty() && s.size() <= 18 && s.find_first_not_of("0123456789") == std::string::npos;
    if (digits) return std::stoll(s);
    throw hg::service::BadInput("--physician: no physician named '" + s + "' (give a user id or a physician's name)");
}

int run_share(const ConsultationsArgs& a) {
    hg::service::Store store(a.data_dir);
    hg::service::ConsultationService cs(store);
    const int64_t pid = physician_id_of(cs, a.physician);
    const auto ids = cs.share(hg::service::Principal::local_operator(), a.consultation, pid);
    std::string list;
    for (int64_t id : ids) list += (list.empty() ? "" : ", ") + std::to_string(id);
    std::printf("consultation %lld is shared with physician(s) %s\n", (long long)a.consultation, list.c_str());
    return 0;
}

}  // namespace

HG_COMMAND(consultations, "Consultations in the server's store: share one with a physician (operator/admin)") {
    auto a = std::make_shared<ConsultationsArgs>();
    app.require_subcommand(1);
    CLI::App* share = app.add_subcommand("share", "share a consultation with a physician (audited as local-operator)");
    share->add_option("--data-dir", a->data_dir, "the server's data directory (holds healthgpt.db)")
        ->required()
        ->envname("HEALTHGPT_DATA_DIR");
    share->add_option("--consultation", a->consultation, "the consultation's id")->required();
    share->add_option("--physician", a->physician, "the physician's user id or name")->required();
    return [=] { return run_share(*a); };
}
