// Reading the update loop's rows (curation.cpp: training_candidates, registry.cpp: plugin_versions):
// one SELECT of a table's columns, a WHERE/ORDER tail per query, each row made into its struct by
// the table's reader. The values are bound (service/sqlite.h), never built into the SQL.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "service/roles.h"
#include "service/sqlite.h"

namespace hg::update {

template <class Row>
struct RowQuery {
    const char* select;                  // "SELECT <columns> FROM <table> " (ends with a space)
    Row (*read)(const service::Stmt& s);  // the columns of the current row, in the select's order

    // The first row of `select + tail` with the values bound in order, if any.
    template <class... Values>
    std::optional<Row> one(service::Db& db, const char* tail, const Values&... values) const {
        service::Stmt s(db, (std::string(select) + tail).c_str());
        (s.bind(values), ...);
        if (!s.step()) return std::nullopt;
        return read(s);
    }
    // Every row of `select + tail`.
    template <class... Values>
    std::vector<Row> all(service::Db& db, const char* tail, const Values&... values) const {
        service::Stmt s(db, (std::string(select) + tail).c_str());
        (s.bind(values), ...);
        std::vector<Row> out;
        while (s.step()) out.push_back(read(s));
        return out;
    }
};

// Binds who acts as a users.id column: NULL for the CLI's local operator (no user row).
inline void bind_user(service::Stmt& s, const service::Principal& p) {
    if (p.is_local_operator()) s.bind(std::nullopt);
    else s.bind(p.user_id);
}

}  // namespace hg::update
