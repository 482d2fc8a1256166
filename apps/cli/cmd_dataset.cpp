// healthgpt dataset export|list|approve|reject: the curated training records of the update loop
// (docs/UPDATES.md, "Curation"). Thin over update::CurationService, as the local operator (an
// admin: whoever can read the data directory can read the database anyway); every call audited.
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "service/store.h"
#include "update/curation.h"

namespace {

struct DatasetArgs {
    std::string data_dir, out, since, status, note;
    int64_t id = 0;
};

void add_data_dir(CLI::App* sub, DatasetArgs& a) {
    sub->add_option("--data-dir", a.data_dir, "the server's data directory (holds healthgpt.db)")
        ->required()
        ->envname("HEALTHGPT_DATA_DIR");
}

int run_export(const DatasetArgs& a) {
    hg::service::Store store(a.data_dir);
    hg::update::CurationService cur(store);
    const auto op = hg::service::Principal::local_operator();
    cur.sync(op);
    const int64_t since = a.since.empty() ? 0 : hg::update::parse_iso_time_ms(a.since);
    const auto r = cur.export_dataset(op, a.out, since);
    std::fprintf(stderr, "dataset: %zu approved records to %s (%zu new images in %s/images)\n", r.records.size(),
                 a.out.c_str(), r.images_written, r.json_path.parent_path().empty() ? "." : r.json_path.parent_path().c_str());
    return 0;
}

int run_list(const DatasetArgs& a) {
    hg::service::Store store(a.data_dir);
    hg::update::CurationService cur(store);
    const auto op = hg::service::Principal::local_operator();
    cur.sync(op);
    std::printf("%6s  %-9s  %6s  %-12s  %s\n", "id", "status", "author", "image", "question -> answer");
    for (const auto& c : cur.list(op, a.status))
        std::printf("%6lld  %-9s  %6lld  %-12s  %s -> %s%s\n", (long long)c.id, c.status.c_str(), (long long)c.author_id,
                    c.image_sha256.substr(0, 12).c_str(), c.question.c_str(), c.answer.c_str(),
                    c.note.empty() ? "" : ("  [" + c.note + "]").c_str());
    return 0;
}

}  // namespace

HG_COMMAND(dataset, "Curated training records of the update loop: export (LLaVA JSON), list, approve, reject") {
    auto a = std::make_shared<DatasetArgs>();
    app.require_subcommand(1);
    CLI::App* ex = app.add_subcommand("export", "write the approved records as LLaVA JSON (what `healthgpt train` reads), "
                                                "images by content hash in images/ beside it");
    add_data_dir(ex, *a);
    ex->add_option("-o,--out", a->out, "the JSON file to write")->required();
    ex->add_option("--since", a->since, "only records approved at or after this time (2026-12-07 or 2026-12-07T10:00:00Z)");
    CLI::App* list = app.add_subcommand("list", "the candidates and their status (corrections are collected first)");
    add_data_dir(list, *a);
    list->add_option("--status", a->status, "candidate | approved | rejected | flagged | merged");
    CLI::App* approve = app.add_subcommand("approve", "approve a candidate (as an admin)");
    add_data_dir(approve, *a);
    approve->add_option("id", a->id, "the candidate's id")->required();
    CLI::App* reject = app.add_subcommand("reject", "reject a candidate (as an admin)");
    add_data_dir(reject, *a);
    reject->add_option("id", a->id, "the candidate's id")->required();
    reject->add_option("--note", a->note, "why");
    return [=] {
        if (ex->parsed()) return run_export(*a);
        if (list->parsed()) return run_list(*a);
        hg::service::Store store(a->data_dir);
        hg::update::CurationService cur(store);
        const auto op = hg::service::Principal::local_operator();
        const auto c = approve->parsed() ? cur.approve(op, a->id) : cur.reject(op, a->id, a->note);
        std::printf("candidate %lld: %s%s\n", (long long)c.id, c.status.c_str(), c.note.empty() ? "" : (" (" + c.note + ")").c_str());
        return 0;
    };
}
