// safetensors reader against files written by the safetensors package and by transformers'
// save_pretrained (tests/reference/gen_formats.py): every tensor's dtype, shape and bytes must
// equal what torch holds (single.json/.bin, hf_model.json/.bin); hostile headers, indexes and
// truncations must give hg::Error.
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half.h"
#include "formats/inspect.h"
#include "formats/safetensors.h"
#include "test_util.h"

using hg::SafetensorsFile;
using hg::SafetensorsModel;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path st_fixture(const std::string& name) { return hgtest::fixture("formats/safetensors/" + name); }

json load_json(const fs::path& p) {
    std::ifstream f(p);
    return json::parse(f);
}

// Checks one tensor against its description and the reference bytes from torch.
void expect_tensor(const hg::CkptTensor& t, const json& e, const std::vector<uint8_t>& blob) {
    SCOPED_TRACE(t.name);
    EXPECT_STREQ(hg::elem_type_name(t.type), e["dtype"].get<std::string>().c_str());
    EXPECT_EQ(t.shape, e["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.stride, e["stride"].get<std::vector<int64_t>>());
    EXPECT_TRUE(t.is_contiguous());
    const size_t at = e["blob_offset"].get<size_t>(), n = e["nbytes"].get<size_t>();
    ASSERT_EQ(t.nbytes, n);
    ASSERT_LE(at + n, blob.size());
    EXPECT_EQ(0, std::memcmp(t.data, blob.data() + at, n));
    EXPECT_EQ(t.contiguous_bytes(), std::vector<uint8_t>(blob.begin() + at, blob.begin() + at + n));
}

std::string st_error(const std::vector<uint8_t>& b) {
    try {
        SafetensorsFile::from_memory(b, "bad.safetensors");
        return "";
    } catch (const hg::Error& e) {
        return e.what();
    }
}

std::vector<uint8_t> make_st(const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> b(8 + header.size() + data_bytes, 0);
    const uint64_t n = header.size();
    std::memcpy(b.data(), &n, 8);
    if (!header.empty()) std::memcpy(b.data() + 8, header.data(), header.size());
    return b;
}

#define EXPECT_ST_ERROR(bytes, substr)                                           \
    do {                                                                         \
        const std::string msg_ = st_error(bytes);                                \
        EXPECT_NE(msg_, "") << "parsed without error";                          \
        EXPECT_NE(msg_.find(substr), std::string::npos) << "message: " << msg_; \
    } while (0)

}  // namespace

TEST(Safetensors, SingleFileLikeTorch) {
    const json ref = load_json(st_fixture("single.json"));
    const auto blob = hgtest::read_file(st_fixture("single.bin"));
    auto f = SafetensorsFile::open(st_fixture("single.safetensors"));
    ASSERT_EQ(f->tensors().size(), ref["tensors"].size());
    for (const auto& e : ref["tensors"]) {
        const hg::CkptTensor* t = f->find(e["name"].get<std::string>());
        ASSERT_NE(t, nullptr) << e["name"];
        expect_tensor(*t, e, blob);
    }
    // __metadata__
    std::map<std::string, std::string> md(f->metadata().begin(), f->metadata().end());
    EXPECT_EQ(md, (ref["metadata"].get<std::map<std::string, std::string>>()));
    // tensors are kept in data order and tile the data section
    for (size_t i = 1; i < f->tensors().size(); ++i)
        EXPECT_EQ(f->tensors()[i - 1].data + f->tensors()[i - 1].nbytes, f->tensors()[i].data);

    // views: engine dtypes yes (zero copy), others and > 4 dims no
    hg::Tensor v = f->get("bf16").view();
    EXPECT_EQ(v.type, hg::DType::BF16);
    EXPECT_EQ(v.shape_str(), "[4, 6]");
    EXPECT_EQ(static_cast<const uint8_t*>(v.data), f->get("bf16").data);
    EXPECT_EQ(f->get("scalar").view().shape_str(), "[1]");  // 0-d seen as [1]
    EXPECT_EQ(f->get("scalar").to_f32(), std::vector<float>{3.25f});
    EXPECT_THROW(f->get("bool").view(), hg::Error);
    EXPECT_THROW(f->get("u8").view(), hg::Error);
    EXPECT_THROW(f->get("five_d").view(), hg::Error);
    EXPECT_EQ(f->get("empty").numel(), 0);
    EXPECT_THROW(f->get("missing"), hg::Error);

    // to_f32 of BF16 equals the widened reference bits
    const auto& e_bf = *std::find_if(ref["tensors"].begin(), ref["tensors"].end(), [](auto& e) { return e["name"] == "bf16"; });
    const auto vals = f->get("bf16").to_f32();
    for (size_t i = 0; i < vals.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, blob.data() + e_bf["blob_offset"].get<size_t>() + 2 * i, 2);
        EXPECT_EQ(vals[i], hg::bf16_to_fp32(h));
    }
}

TEST(Safetensors, HuggingFaceFoldersLikeTorch) {
    const json ref = load_json(st_fixture("hf_model.json"));
    const auto blob = hgtest::read_file(st_fixture("hf_model.bin"));
    for (const fs::path& p : {st_fixture("hf_sharded"), st_fixture("hf_sharded/model.safetensors.index.json"), st_fixture("hf_single"),
                             st_fixture("hf_single/model.safetensors")}) {
        SCOPED_TRACE(p.string());
        auto m = SafetensorsModel::open(p);
        ASSERT_EQ(m->tensors().size(), ref["tensors"].size());
        for (const auto& e : ref["tensors"]) {
            const hg::CkptTensor* t = m->find(e["name"].get<std::string>());
            ASSERT_NE(t, nullptr) << e["name"];
            expect_tensor(*t, e, blob);
        }
        if (p.string().find("sharded") != std::string::npos) {
            EXPECT_EQ(m->shards().size(), ref["shards"].size());
            EXPECT_FALSE(m->index_path().empty());
            ASSERT_FALSE(m->index_metadata().empty());
            EXPECT_EQ(m->index_metadata()[0].first, "total_size");
        } else {
            EXPECT_EQ(m->shards().size(), 1u);
        }
    }
}

TEST(Safetensors, HostileFixtures) {
    const std::pair<const char*, const char*> cases[] = {
        {"outside.safetensors", "outside"},
        {"dup_keys.safetensors", "duplicate key \"w\""},
        {"wrong_size.safetensors", "needs 12"},
        {"overlap.safetensors", "overlap"},
        {"gap.safetensors", "gap"},
        {"unknown_dtype.safetensors", "unknown dtype \"Q4\""},
        {"bad_json.safetensors", "invalid JSON"},
        {"metadata_not_str.safetensors", "__metadata__"},
        {"huge_header.safetensors", "exceeds the 100000000-byte limit"},
    };
    for (const auto& [name, substr] : cases) {
        const fs::path p = st_fixture(std::string("hostile/") + name);
        try {
            SafetensorsFile::open(p);
            ADD_FAILURE() << name << " parsed";
        } catch (const hg::Error& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find(substr), std::string::npos) << name << ": " << msg;
            EXPECT_NE(msg.find(name), std::string::npos) << "message lacks the file name: " << msg;
        }
    }
}

TEST(Safetensors, RefusesMalformedHeaders) {
    const std::string ok = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    EXPECT_EQ(st_error(make_st(ok, 8)), "");
    EXPECT_EQ(st_error(make_st(ok + "    ", 8)), "");  // space padding, as the crate writes
    EXPECT_EQ(st_error(make_st("{}", 0)), "");
    EXPECT_ST_ERROR(std::vector<uint8_t>(7, 0), "too short");
    EXPECT_ST_ERROR(make_st(ok, 9), "file holds 9");  // trailing bytes
    EXPECT_ST_ERROR(make_st(ok, 4), "outside");
    auto too_long = make_st(ok, 8);
    const uint64_t big = 1000;
    std::memcpy(too_long.data(), &big, 8);
    EXPECT_ST_ERROR(too_long, "exceeds the file");
    EXPECT_ST_ERROR(make_st(" {}", 0), "does not start with '{'");
    EXPECT_ST_ERROR(make_st("", 0), "does not start with '{'");
    EXPECT_ST_ERROR(make_st(R"({"w":[1]})", 0), "unexpected an array");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "negative");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8), "non-integer");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", 8), "[begin, end]");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", 8), "[begin, end]");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8), "missing shape");
    EXPECT_ST_ERROR(make_st(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8), "missing dtype");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8), "unknown field \"x\"");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8), "duplicate field");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "end before");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "overflow");
    EXPECT_ST_ERROR(make_st(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8), "overflow");
    EXPECT_ST_ERROR(make_st(R"({"__metadata__":{"a":"x","a":"y"}})", 0), "duplicate key \"a\"");
    EXPECT_ST_ERROR(make_st(R"({"__metadata__":{"a":{"b":"c"}}})", 0), "__metadata__");
    EXPECT_ST_ERROR(make_st("{\"w\xff\":1}", 0), "invalid JSON");  // invalid UTF-8
    std::string dims = R"({"w":{"dtype":"F32","shape":[)";
    for (int i = 0; i < 65; ++i) dims += (i ? ",1" : "1");
    EXPECT_ST_ERROR(make_st(dims + R"(],"data_offsets":[0,4]}})", 4), "more than 64 dims");
    // deep nesting is refused at the first level that does not belong (no recursion, no DOM)
    std::string deep = "{\"w\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
    EXPECT_ST_ERROR(make_st(deep, 0), "unexpected an array");
    std::string deep_meta = "{\"__metadata__\":" + std::string(100000, '{');
    EXPECT_ST_ERROR(make_st(deep_meta, 0), "");
}

TEST(Safetensors, EveryTruncationIsAnError) {
    const auto full = hgtest::read_file(st_fixture("single.safetensors"));
    for (size_t n = 0; n < full.size(); ++n)
        EXPECT_NE(st_error(std::vector<uint8_t>(full.begin(), full.begin() + n)), "") << "cut at " << n;
    EXPECT_EQ(st_error(full), "");
}

TEST(Safetensors, ByteMutationsNeverCrash) {
    const auto full = hgtest::read_file(st_fixture("single.safetensors"));
    uint64_t hlen;
    std::memcpy(&hlen, full.data(), 8);
    int refused = 0, accepted = 0;
    for (size_t i = 0; i < 8 + hlen; ++i)
        for (uint8_t v : {uint8_t{'0'}, uint8_t{'9'}, uint8_t{'"'}, uint8_t{'['}, uint8_t{0xff}, uint8_t{' '}}) {
            if (full[i] == v) continue;
            auto m = full;
            m[i] = v;
            try {
                auto f = SafetensorsFile::from_memory(m, "mut.safetensors");
                for (const auto& t : f->tensors()) (void)t.contiguous_bytes();
                ++accepted;
            } catch (const hg::Error&) {
                ++refused;
            }
        }
    EXPECT_GT(refused, 0);
    EXPECT_GT(accepted, 0);  // e.g. a changed digit inside a metadata string
}

TEST(Safetensors, HostileIndexes) {
    const fs::path dir = hgtest::scratch_dir() / "hf_bad";
    fs::create_directories(dir);
    fs::copy_file(st_fixture("hf_single/model.safetensors"), dir / "a.safetensors", fs::copy_options::overwrite_existing);
    fs::copy_file(st_fixture("hf_single/model.safetensors"), dir / "b.safetensors", fs::copy_options::overwrite_existing);
    auto write_index = [&](const std::string& text) {
        std::ofstream(dir / "model.safetensors.index.json") << text;
        try {
            SafetensorsModel::open(dir);
            return std::string();
        } catch (const hg::Error& e) {
            return std::string(e.what());
        }
    };
    EXPECT_EQ(write_index(R"({"weight_map":{"model.norm.weight":"a.safetensors"}})"), "");
    EXPECT_NE(write_index(R"({"weight_map":{"model.norm.weight":"../a.safetensors"}})").find("not a plain file name"), std::string::npos);
    EXPECT_NE(write_index(R"({"weight_map":{"model.norm.weight":"/etc/passwd"}})").find("not a plain file name"), std::string::npos);
    EXPECT_NE(write_index(R"({"weight_map":{"nope":"a.safetensors"}})").find("does not hold it"), std::string::npos);
    EXPECT_NE(write_index(R"({"weight_map":{"model.norm.weight":"a.safetensors","lm_head.weight":"b.safetensors"}})").find("in two shards"),
              std::string::npos);
    EXPECT_NE(write_index(R"({"weight_map":{"x":"missing.safetensors"}})").find("cannot open"), std::string::npos);
    EXPECT_NE(write_index(R"({"metadata":{}})").find("weight_map"), std::string::npos);
    EXPECT_NE(write_index(R"({"weight_map":{"x":"a.safetensors","x":"b.safetensors"}})").find("duplicate key"), std::string::npos);
    EXPECT_NE(write_index("not json").find("invalid JSON"), std::string::npos);
    EXPECT_THROW(SafetensorsModel::open(hgtest::scratch_dir() / "no_such_folder_or_file"), hg::Error);
}

TEST(Safetensors, InspectHuggingFaceFolder) {
    const std::string text = hg::inspect(st_fixture("hf_sharded"));
    EXPECT_NE(text.find("model_type = \"llama\""), std::string::npos) << text;
    EXPECT_NE(text.find("4 files listed by model.safetensors.index.json"), std::string::npos) << text;
    EXPECT_NE(text.find("| model.embed_tokens.weight"), std::string::npos);
    EXPECT_NE(text.find("F32     | [64, 16]"), std::string::npos) << text;
    const json j = json::parse(hg::inspect(st_fixture("single.safetensors"), {.json = true}));
    EXPECT_EQ(j["format"], "safetensors");
    EXPECT_EQ(j["tensors"].size(), 13u);
    EXPECT_EQ(j["shards"][0]["metadata"]["format"], "pt");
    EXPECT_EQ(hg::detect_format(st_fixture("hf_single")), "hf-folder");
    EXPECT_EQ(hg::detect_format(st_fixture("single.safetensors")), "safetensors");
}
