// A reader for the subset of YAML that configuration files such as taming-transformers'
// model.yaml (written by OmegaConf / PyYAML) use: block mappings and block sequences by
// indentation, flow sequences of scalars ("[1, 1, 2, 4]"), the empty flow mapping "{}", plain,
// single- and double-quoted scalars, comments, and an optional leading "---".
//
// Everything else (anchors "&a", aliases "*a", tags "!!python/...", block scalars "|" / ">",
// multi-line flow collections, several documents, tabs in indentation, duplicate keys) is refused
// with an hg::Error that names the file and the line. Nothing is ever executed or constructed from
// a tag: the result is an inert tree of strings. Input size and nesting depth are bounded.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hg {

struct YamlEntry;  // a map entry: key and value (defined below; a pair of an incomplete type is not portable)

struct YamlNode {
    enum class Kind { Null, Scalar, Map, Seq };
    Kind kind = Kind::Null;
    std::string scalar;   // Scalar: the text (quotes removed, escapes resolved)
    bool quoted = false;  // Scalar: written in quotes (so "1" is a string, not a number)
    std::vector<YamlEntry> map;                         // Map, in file order
    std::vector<YamlNode> seq;                          // Seq
    int line = 0;         // 1-based line where the node starts (for messages)

    bool is_null() const { return kind == Kind::Null; }
    bool is_map() const { return kind == Kind::Map; }
    bool is_seq() const { return kind == Kind::Seq; }
    bool is_scalar() const { return kind == Kind::Scalar; }

    // Map lookup (nullptr when absent or when this is not a map).
    const YamlNode* get(std::string_view key) const;
    // A dotted path of map keys: "model.params.ddconfig.ch".
    const YamlNode* at_path(std::string_view dotted) const;

    // Typed reads of a scalar; nullopt when the text is not of that type (YAML 1.2 core schema
    // spellings: integers in decimal, floats like 1.0e-06 / .5 / 4.5e-06, true/false, null/~).
    std::optional<int64_t> as_int() const;
    std::optional<double> as_float() const;
    std::optional<bool> as_bool() const;
};

struct YamlEntry {
    std::string key;
    YamlNode value;
};

struct YamlLimits {
    size_t max_bytes = 1 << 20;  // model.yaml files are a few hundred bytes
    int max_depth = 64;
    size_t max_nodes = 100000;
};

// Parses `text`; `name` is used in error messages ("model.yaml:12: ...").
YamlNode parse_yaml(std::string_view text, const std::string& name, const YamlLimits& limits = {});
// Reads and parses a file.
YamlNode read_yaml_file(const std::string& path, const YamlLimits& limits = {});

}  // namespace hg
