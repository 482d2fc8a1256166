// GGUF reader and writer against gguf-py (tests/reference/gen_formats.py):
//  - values.gguf (written by gguf-py): every key, type and value, every tensor's type, shape,
//    offset and bytes must equal what gguf.GGUFReader reads from the same file (values.json);
//  - writer_ref*.gguf (written by plain gguf-py): our GGUFWriter, given the same content, must
//    produce identical bytes; re-writing values.gguf through our reader+writer must too;
//  - the shared ggml-vocab-phi-3.gguf (llama.cpp's) against GGUFReader's view of it;
//  - malformed files (hand-built, truncated, mutated) must give hg::Error, never a crash;
//  - files larger than 4 GiB (sparse) keep 64-bit offsets.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half.h"
#include "formats/gguf.h"
#include "formats/inspect.h"
#include "test_util.h"

using hg::GGUFFile;
using hg::GGUFType;
using hg::GGUFValue;
using hg::GGUFWriter;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path gguf_fixture(const std::string& name) { return hgtest::fixture("formats/gguf/" + name); }

json load_json(const fs::path& p) {
    std::ifstream f(p);
    return json::parse(f);
}

GGUFType type_from_name(const std::string& s) {
    for (uint32_t t = 0; t <= 12; ++t)
        if (s == hg::gguf_type_name(static_cast<GGUFType>(t))) return static_cast<GGUFType>(t);
    ADD_FAILURE() << "unknown type name " << s;
    return GGUFType::UINT8;
}

// Compares one value (of stored type t) with gguf-py's reading of it.
void expect_value(const GGUFValue& v, GGUFType t, const json& j, const std::string& where) {
    ASSERT_EQ(v.type, t) << where;
    switch (t) {
        case GGUFType::UINT8: case GGUFType::UINT16: case GGUFType::UINT32: case GGUFType::UINT64:
            EXPECT_EQ(v.as_uint(), j.get<uint64_t>()) << where;
            break;
        case GGUFType::INT8: case GGUFType::INT16: case GGUFType::INT32: case GGUFType::INT64:
            EXPECT_EQ(v.as_int(), j.get<int64_t>()) << where;
            break;
        case GGUFType::FLOAT32: {
            const float f = static_cast<float>(v.as_float());
            uint32_t bits;
            std::memcpy(&bits, &f, 4);
            EXPECT_EQ(bits, j.at("f32bits").get<uint32_t>()) << where;
            break;
        }
        case GGUFType::FLOAT64: {
            const double f = v.as_float();
            uint64_t bits;
            std::memcpy(&bits, &f, 8);
            EXPECT_EQ(bits, j.at("f64bits").get<uint64_t>()) << where;
            break;
        }
        case GGUFType::BOOL: EXPECT_EQ(v.as_bool(), j.get<bool>()) << where; break;
        case GGUFType::STRING: EXPECT_EQ(v.as_string(), j.get<std::string>()) << where; break;
        case GGUFType::ARRAY: {
            const GGUFType elem = type_from_name(j.at("elem").get<std::string>());
            ASSERT_EQ(v.elem_type, elem) << where;
            const auto& items = j.at("items");
            ASSERT_EQ(v.array_size(), items.size()) << where;
            for (size_t i = 0; i < items.size(); ++i) expect_value(v.item(i), elem, items[i], where + "[" + std::to_string(i) + "]");
            break;
        }
    }
}

// Tiny GGUF assembler for hand-built (mostly malformed) files.
struct Bytes {
    std::vector<uint8_t> b;
    Bytes& u8(uint8_t v) { b.push_back(v); return *this; }
    Bytes& u32(uint32_t v) { return raw(&v, 4); }
    Bytes& u64(uint64_t v) { return raw(&v, 8); }
    Bytes& str(const std::string& s) { u64(s.size()); return raw(s.data(), s.size()); }
    Bytes& raw(const void* p, size_t n) {
        const uint8_t* c = static_cast<const uint8_t*>(p);
        b.insert(b.end(), c, c + n);
        return *this;
    }
    Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
        raw("GGUF", 4);
        u32(version);
        u64(n_tensors);
        return u64(n_kv);
    }
    Bytes& kv_u32(const std::string& k, uint32_t v) { str(k); u32(4); return u32(v); }
    Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
        str(name);
        u32(static_cast<uint32_t>(ne.size()));
        for (uint64_t d : ne) u64(d);
        u32(type);
        return u64(offset);
    }
    Bytes& pad_to(size_t align) {
        while (b.size() % align) b.push_back(0);
        return *this;
    }
    Bytes& zeros(size_t n) { b.insert(b.end(), n, 0); return *this; }
};

// Parses from memory; returns the error message ("" when it parsed).
std::string parse_error(const std::vector<uint8_t>& b) {
    try {
        GGUFFile::from_memory(b, "bad.gguf");
        return "";
    } catch (const hg::Error& e) {
        return e.what();
    }
}

#define EXPECT_GGUF_ERROR(bytes, substr)                                          \
    do {                                                                          \
        const std::string msg_ = parse_error(bytes);                              \
        EXPECT_NE(msg_, "") << "parsed without error";                           \
        EXPECT_NE(msg_.find(substr), std::string::npos) << "message: " << msg_;  \
        EXPECT_NE(msg_.find("bad.gguf"), std::string::npos) << "message lacks the file name: " << msg_; \
    } while (0)

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reading gguf-py's files

TEST(GGUF, ReadsEveryValueAndTensorLikeGgufPy) {
    const json ref = load_json(gguf_fixture("values.json"));
    const auto blob = hgtest::read_file(gguf_fixture("values.tensors.bin"));
    auto f = GGUFFile::open(gguf_fixture("values.gguf"));
    EXPECT_EQ(f->version(), 3u);
    EXPECT_EQ(f->alignment(), ref["alignment"].get<size_t>());
    EXPECT_EQ(f->data_offset(), ref["data_offset"].get<uint64_t>());
    EXPECT_EQ(f->file_size(), ref["file_size"].get<uint64_t>());

    const auto& kvs = ref["metadata"];
    ASSERT_EQ(f->metadata().size(), kvs.size());
    for (size_t i = 0; i < kvs.size(); ++i) {
        const auto& kv = f->metadata()[i];
        EXPECT_EQ(kv.key, kvs[i]["key"].get<std::string>());  // file order kept
        expect_value(kv.value, type_from_name(kvs[i]["type"].get<std::string>()), kvs[i]["value"], kv.key);
    }

    const auto& ts = ref["tensors"];
    ASSERT_EQ(f->tensors().size(), ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
        const auto& ti = f->tensors()[i];
        const auto& r = ts[i];
        SCOPED_TRACE(ti.name);
        EXPECT_EQ(ti.name, r["name"].get<std::string>());
        EXPECT_STREQ(hg::dtype_name(ti.type), r["type"].get<std::string>().c_str());
        const auto ne = r["ne"].get<std::vector<int64_t>>();
        ASSERT_EQ(ti.n_dims, (int)ne.size());
        for (size_t d = 0; d < ne.size(); ++d) EXPECT_EQ(ti.ne[d], ne[d]);
        EXPECT_EQ(ti.offset, r["offset"].get<uint64_t>());
        EXPECT_EQ(ti.nbytes, r["nbytes"].get<uint64_t>());
        const auto bytes = f->tensor_bytes(ti);
        const size_t at = r["blob_offset"].get<size_t>();
        ASSERT_LE(at + bytes.size(), blob.size());
        EXPECT_EQ(0, std::memcmp(bytes.data(), blob.data() + at, bytes.size()));

        // the view: PyTorch order (ggml's ne reversed), contiguous, pointing into the mapping
        hg::Tensor t = f->tensor(ti);
        ASSERT_EQ(t.n_dims, ti.n_dims);
        for (int d = 0; d < t.n_dims; ++d) EXPECT_EQ(t.shape[d], ne[ne.size() - 1 - d]);
        EXPECT_TRUE(t.is_contiguous());
        EXPECT_EQ(t.nbytes(), ti.nbytes);
        EXPECT_EQ(static_cast<const uint8_t*>(t.data), bytes.data());
    }
    // a value spot check that does not go through the JSON walker
    EXPECT_EQ(f->tensor("t.f32").shape_str(), "[3, 5]");
    EXPECT_EQ(f->tensor("t.i16").shape_str(), "[2, 2, 2, 3]");
    EXPECT_EQ(f->tensor("t.q6_k").shape_str(), "[1, 512]");
}

TEST(GGUF, TypedGetters) {
    auto f = GGUFFile::open(gguf_fixture("values.gguf"));
    EXPECT_EQ(f->get_string("general.architecture"), "healthgpt-test");
    EXPECT_EQ(f->get_string("s.nul"), std::string("a\0b", 3));
    EXPECT_EQ(f->get_string("s.empty_str"), "");
    EXPECT_EQ(f->get_int("s.u8"), 255);
    EXPECT_EQ(f->get_int("s.i64"), std::numeric_limits<int64_t>::min());
    EXPECT_THROW(f->get_int("s.u64"), hg::Error);  // 2^64-1 does not fit int64
    EXPECT_EQ(f->find("s.u64")->as_uint(), std::numeric_limits<uint64_t>::max());
    EXPECT_THROW(f->find("s.i8")->as_uint(), hg::Error);
    EXPECT_FLOAT_EQ(static_cast<float>(*f->get_float("s.f32")), 3.14159f);
    EXPECT_EQ(f->get_float("s.u16"), 65535.0);
    EXPECT_EQ(f->get_bool("s.true"), true);
    EXPECT_THROW(f->get_bool("s.u8"), hg::Error);
    EXPECT_THROW(f->get_string("s.u8"), hg::Error);
    EXPECT_EQ(f->get_int("missing.key"), std::nullopt);
    EXPECT_EQ(f->get_string_array("a.str"), (std::vector<std::string>{"a", "ümlaut", "", "日本語", "tab\tnew\nline"}));
    EXPECT_EQ(f->get_int_array("a.i8"), (std::vector<int64_t>{-128, -1, 0, 127}));
    EXPECT_EQ(f->get_int_array("a.u32"), (std::vector<int64_t>{0, 4294967295}));
    EXPECT_THROW(f->get_int_array("a.u64"), hg::Error);  // 2^64-1 again
    EXPECT_EQ(f->get_float_array("a.f32"), (std::vector<double>{0.5, -1.25, (double)1e-7f, 65504.0}));
    EXPECT_EQ(f->get_float_array("a.empty_f32"), std::vector<double>{});
    EXPECT_THROW(f->get_int_array("a.str"), hg::Error);
    EXPECT_THROW(f->get_string_array("s.str"), hg::Error);
    try {
        f->get_int("s.str");
        FAIL();
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("s.str"), std::string::npos) << e.what();
    }
    EXPECT_EQ(f->try_tensor("nope"), std::nullopt);
    EXPECT_THROW(f->tensor("nope"), hg::Error);
}

TEST(GGUF, ToStringForInspect) {
    auto f = GGUFFile::open(gguf_fixture("values.gguf"));
    EXPECT_EQ(f->find("s.str")->to_string(), "\"Grüße, 世界 — 🩺 CT/MRI\"");
    EXPECT_EQ(f->find("s.nul")->to_string(), "\"a\\x00b\"");
    EXPECT_EQ(f->find("s.f32")->to_string(), "3.14159");
    EXPECT_EQ(f->find("s.f32_inf")->to_string(), "inf");
    EXPECT_EQ(f->find("s.f32_negzero")->to_string(), "-0.0");
    EXPECT_EQ(f->find("s.f64_nan")->to_string(), "nan");
    EXPECT_EQ(f->find("s.i64")->to_string(), "-9223372036854775808");
    EXPECT_EQ(f->find("a.bool")->to_string(), "[true, false, true]");
    EXPECT_EQ(f->find("a.nested")->to_string(), "[[1, 2], [3], [4, 5, 6]]");
    const std::string longs = f->find("a.long")->to_string(4);
    EXPECT_NE(longs.find(", ... (1000 items)]"), std::string::npos) << longs;
    EXPECT_EQ(std::count(longs.begin(), longs.end(), ','), 4);
}

TEST(GGUF, SharedPhi3VocabLikeGgufPy) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/ggml-vocab-phi-3.gguf");
    if (!fs::exists(gguf_fixture("phi3_vocab.json"))) GTEST_SKIP() << "phi3_vocab.json not generated";
    const json ref = load_json(gguf_fixture("phi3_vocab.json"));
    auto f = GGUFFile::open(hgtest::shared_data() / "tokenizers/phi3/ggml-vocab-phi-3.gguf");
    EXPECT_EQ(f->file_size(), ref["file_size"].get<uint64_t>());
    EXPECT_EQ(f->tensors().size(), ref["n_tensors"].get<size_t>());
    ASSERT_EQ(f->metadata().size(), ref["keys"].size());
    for (size_t i = 0; i < ref["keys"].size(); ++i) {
        const auto& k = ref["keys"][i];
        const auto& kv = f->metadata()[i];
        EXPECT_EQ(kv.key, k["key"].get<std::string>());
        EXPECT_STREQ(hg::gguf_type_name(kv.value.type), k["type"].get<std::string>().c_str());
        if (!k["elem"].is_null()) {
            EXPECT_STREQ(hg::gguf_type_name(kv.value.elem_type), k["elem"].get<std::string>().c_str());
            EXPECT_EQ(kv.value.array_size(), k["count"].get<size_t>());
        }
    }
    const auto tokens = *f->get_string_array("tokenizer.ggml.tokens");
    const auto scores = *f->get_float_array("tokenizer.ggml.scores");
    const auto types = *f->get_int_array("tokenizer.ggml.token_type");
    ASSERT_EQ(tokens.size(), 32064u);
    for (const auto& [id, tok] : ref["tokens"].items()) EXPECT_EQ(tokens[std::stoul(id)], tok.get<std::string>()) << id;
    for (const auto& [id, bits] : ref["scores_f32bits"].items()) {
        const float s = static_cast<float>(scores[std::stoul(id)]);
        uint32_t b;
        std::memcpy(&b, &s, 4);
        EXPECT_EQ(b, bits.get<uint32_t>()) << id;
    }
    for (const auto& [id, t] : ref["token_type"].items()) EXPECT_EQ(types[std::stoul(id)], t.get<int64_t>()) << id;
    EXPECT_EQ(f->get_int("phi3.context_length"), ref["context_length"].get<int64_t>());
    EXPECT_EQ(f->get_string("tokenizer.chat_template"), ref["chat_template"].get<std::string>());
    EXPECT_EQ(tokens[32007], "<|end|>");  // data/README.md
}

// ---------------------------------------------------------------------------------------------
// Writing: byte-identical to gguf-py

namespace {

// Same content as build_writer_ref() in gen_formats.py.
void build_writer_ref(GGUFWriter& w) {
    w.set_u8("test.u8", 200);
    w.set_i8("test.i8", -100);
    w.set_u16("test.u16", 60000);
    w.set_i16("test.i16", -30000);
    w.set_u32("test.u32", 4000000000u);
    w.set_i32("test.i32", -2000000000);
    w.set_u64("test.u64", std::numeric_limits<uint64_t>::max());
    w.set_i64("test.i64", std::numeric_limits<int64_t>::min());
    w.set_f32("test.f32", 0.1f);
    w.set_f64("test.f64", 2.718281828459045);
    w.set_bool("test.bool", true);
    w.set_string("test.string", "Grüße, 世界 🩺");
    w.set_string("test.empty_string", "");
    w.set_i32_array("test.arr_i32", {1, -2, 3});
    w.set_f32_array("test.arr_f32", {0.5f, -1.25f});
    const uint8_t bools[] = {1, 0, 1};
    w.set("test.arr_bool", GGUFValue::make_array(GGUFType::BOOL, std::span<const uint8_t>(bools)));
    w.set_string_array("test.arr_str", {"a", "ümlaut", ""});
    const int32_t n12[] = {1, 2}, n3[] = {3};
    w.set("test.arr_nested", GGUFValue::make_array_of_arrays({GGUFValue::make_array(GGUFType::INT32, std::span<const int32_t>(n12)),
                                                               GGUFValue::make_array(GGUFType::INT32, std::span<const int32_t>(n3))}));
    const uint8_t u8s[] = {0, 1, 255};
    w.set("test.arr_u8", GGUFValue::make_array(GGUFType::UINT8, std::span<const uint8_t>(u8s)));

    std::vector<float> emb(15);
    for (int i = 0; i < 15; ++i) emb[i] = i * 0.5f - 2;
    w.add_tensor("tok_embd.weight", hg::DType::F32, {3, 5}, emb.data());
    std::vector<uint16_t> q(16);
    for (int i = 0; i < 16; ++i) q[i] = hg::fp32_to_fp16(i * 0.25f - 1);  // exact in binary16
    w.add_tensor("blk.0.attn_q.weight", hg::DType::F16, {2, 8}, q.data());
    std::vector<uint8_t> q8(2 * 68), q4k(144);
    for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<uint8_t>((i * 7 + 3) % 256);
    for (size_t i = 0; i < q4k.size(); ++i) q4k[i] = static_cast<uint8_t>((i * 13 + 1) % 256);
    w.add_tensor("blk.0.ffn_up.weight", hg::DType::Q8_0, {2, 64}, q8.data());
    w.add_tensor("blk.0.ffn_down.weight", hg::DType::Q4_K, {1, 256}, q4k.data());
    const int32_t ids[] = {1, -1, 2147483647, std::numeric_limits<int32_t>::min()};
    w.add_tensor("ids", hg::DType::I32, {4}, ids);
    std::vector<uint16_t> bf(6);
    for (int i = 0; i < 6; ++i) bf[i] = static_cast<uint16_t>((i * 1000 + 0x3F80) % 65536);
    w.add_tensor("bf", hg::DType::BF16, {2, 3}, bf.data());
    const float scalar = 42.0f;
    // generated at write time, to cover the streaming path
    w.add_tensor_generated("scalar", hg::DType::F32, {1}, [scalar](uint8_t* dst) { std::memcpy(dst, &scalar, 4); });
}

}  // namespace

TEST(GGUF, WriterMatchesGgufPyByteForByte) {
    for (const auto& [name, align] : {std::pair<std::string, uint32_t>{"writer_ref.gguf", 0}, {"writer_ref_a64.gguf", 64}}) {
        SCOPED_TRACE(name);
        GGUFWriter w;
        w.set_string("general.architecture", "healthgpt-test");  // gguf-py writes it first
        if (align) w.set_u32("general.alignment", align);
        build_writer_ref(w);
        const fs::path out = hgtest::scratch_dir() / name;
        w.write(out);
        const auto ours = hgtest::read_file(out);
        const auto ref = hgtest::read_file(gguf_fixture(name));
        ASSERT_EQ(ours.size(), ref.size());
        size_t first_diff = ours.size();
        for (size_t i = 0; i < ours.size(); ++i)
            if (ours[i] != ref[i]) {
                first_diff = i;
                break;
            }
        EXPECT_EQ(first_diff, ours.size()) << "first differing byte at offset " << first_diff;
        // and it reads back
        auto f = GGUFFile::open(out);
        EXPECT_EQ(f->alignment(), align ? align : 32u);
        EXPECT_EQ(f->tensors().size(), 7u);
        EXPECT_EQ(f->tensor("scalar").ptr<float>()[0], 42.0f);
    }
    // no temporary files left beside the outputs
    for (const auto& e : fs::directory_iterator(hgtest::scratch_dir()))
        EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();
}

TEST(GGUF, RewritingGgufPyFileGivesIdenticalBytes) {
    // Read gguf-py's values.gguf (typed arrays, nested arrays, every tensor type) and write it
    // again with our writer: the result must be the same file.
    auto f = GGUFFile::open(gguf_fixture("values.gguf"));
    GGUFWriter w;
    for (const auto& kv : f->metadata()) w.set(kv.key, kv.value);
    for (const auto& ti : f->tensors()) w.add_tensor_borrowed(ti.name, ti.type, ti.shape(), f->tensor_bytes(ti).data());
    const fs::path out = hgtest::scratch_dir() / "values_rewritten.gguf";
    w.write(out);
    EXPECT_EQ(hgtest::read_file(out), hgtest::read_file(gguf_fixture("values.gguf")));
}

TEST(GGUF, WriterRefusesBadInput) {
    GGUFWriter w;
    const float x[4] = {};
    w.add_tensor("a", hg::DType::F32, {4}, x);
    EXPECT_THROW(w.add_tensor("a", hg::DType::F32, {4}, x), hg::Error);                      // duplicate
    EXPECT_THROW(w.add_tensor("b", hg::DType::F32, {}, x), hg::Error);                       // no dims
    EXPECT_THROW(w.add_tensor("b", hg::DType::F32, {1, 1, 1, 1, 1}, x), hg::Error);          // 5 dims
    EXPECT_THROW(w.add_tensor("b", hg::DType::F32, {-1}, x), hg::Error);                     // negative
    EXPECT_THROW(w.add_tensor("b", hg::DType::Q8_0, {2, 31}, x), hg::Error);                 // not whole blocks
    EXPECT_THROW(w.add_tensor("b", static_cast<hg::DType>(99), {4}, x), hg::Error);          // unknown type
    EXPECT_THROW(w.add_tensor(std::string(64, 'n'), hg::DType::F32, {4}, x), hg::Error);     // llama.cpp name limit
    EXPECT_THROW(w.add_tensor("b", hg::DType::F32, {1LL << 62, 1LL << 62}, x), hg::Error);   // element count overflow
    EXPECT_THROW(w.add_tensor("b", hg::DType::F32, {1LL << 62}, x), hg::Error);              // byte size overflow
    EXPECT_THROW(GGUFWriter(48), hg::Error);                                                 // alignment
    EXPECT_THROW(GGUFValue::make_uint(GGUFType::UINT8, 256), hg::Error);
    EXPECT_THROW(GGUFValue::make_int(GGUFType::INT16, 40000), hg::Error);
    EXPECT_THROW(GGUFValue::make_uint(GGUFType::INT32, 1), hg::Error);
    const uint8_t two[] = {2};
    EXPECT_THROW(GGUFValue::make_array(GGUFType::BOOL, std::span<const uint8_t>(two)), hg::Error);
    w.set_i32("general.alignment", 64);  // must be UINT32
    EXPECT_THROW(w.write(hgtest::scratch_dir() / "bad_align.gguf"), hg::Error);
    GGUFWriter w2;
    EXPECT_THROW(w2.write(hgtest::scratch_dir() / "no/such/dir/x.gguf"), hg::Error);
}

TEST(GGUF, SetReplacesKeyInPlace) {
    GGUFWriter w;
    w.set_u32("a", 1);
    w.set_u32("b", 2);
    w.set_string("a", "x");
    ASSERT_EQ(w.metadata().size(), 2u);
    EXPECT_EQ(w.metadata()[0].key, "a");
    EXPECT_EQ(w.metadata()[0].value.as_string(), "x");
}

// ---------------------------------------------------------------------------------------------
// Malformed input

TEST(GGUF, RefusesBadHeaders) {
    EXPECT_GGUF_ERROR(std::vector<uint8_t>{}, "too short");
    EXPECT_GGUF_ERROR((Bytes().raw("GGML", 4).u32(3).u64(0).u64(0).b), "not a GGUF file");
    EXPECT_GGUF_ERROR((Bytes().header(0, 0, 1).b), "version 1 is not supported");
    EXPECT_GGUF_ERROR((Bytes().header(0, 0, 4).b), "unsupported GGUF version 4");
    EXPECT_GGUF_ERROR((Bytes().header(0, 0, 0).b), "unsupported GGUF version 0");
    EXPECT_GGUF_ERROR((Bytes().header(0, 0, 0x03000000).b), "big-endian");
    EXPECT_GGUF_ERROR((Bytes().raw("GGUF", 4).u32(3).u64(0).b), "truncated");
    EXPECT_EQ(parse_error(Bytes().header(0, 0, 3).b), "");
    EXPECT_EQ(parse_error(Bytes().header(0, 0, 2).b), "");  // v2: same little-endian layout
}

TEST(GGUF, RefusesHostileCountsWithoutAllocating) {
    // counts that a 24-byte file cannot hold are refused before anything is reserved
    EXPECT_GGUF_ERROR((Bytes().header(0, ~0ull).b), "metadata count");
    EXPECT_GGUF_ERROR((Bytes().header(~0ull, 0).b), "tensor count");
    EXPECT_GGUF_ERROR((Bytes().header(0, 1ull << 40).zeros(100).b), "metadata count");
    // a key length beyond the file
    EXPECT_GGUF_ERROR((Bytes().header(0, 1).u64(~0ull).zeros(16).b), "string length");
    // array counts beyond the file, for each element kind
    for (uint32_t elem : {0u, 4u, 10u, 8u, 9u}) {
        Bytes b;
        b.header(0, 1).str("k").u32(9).u32(elem).u64(1ull << 60).zeros(64);
        EXPECT_GGUF_ERROR(b.b, "cannot fit");
    }
    // a string array whose count fits but whose strings do not
    EXPECT_GGUF_ERROR((Bytes().header(0, 1).str("k").u32(9).u32(8).u64(2).u64(1000).zeros(8).b), "string length 1000");
}

TEST(GGUF, RefusesBadValues) {
    EXPECT_GGUF_ERROR((Bytes().header(0, 1).str("k").u32(13).u32(0).b), "unknown value type 13");
    EXPECT_GGUF_ERROR((Bytes().header(0, 1).str("k").u32(9).u32(77).u64(0).b), "unknown value type 77");
    EXPECT_GGUF_ERROR((Bytes().header(0, 1).str("k").u32(7).u8(2).b), "invalid BOOL");
    EXPECT_GGUF_ERROR((Bytes().header(0, 2).kv_u32("k", 1).kv_u32("k", 2).b), "duplicate metadata key \"k\"");
    // nesting deeper than 16 arrays
    Bytes deep;
    deep.header(0, 1).str("k").u32(9);
    for (int i = 0; i < 20; ++i) deep.u32(9).u64(1);
    deep.u32(0).u64(0);
    EXPECT_GGUF_ERROR(deep.b, "nested deeper");
    // 16 levels are fine
    Bytes ok;
    ok.header(0, 1).str("k").u32(9);
    for (int i = 0; i < 15; ++i) ok.u32(9).u64(1);
    ok.u32(0).u64(0);
    EXPECT_EQ(parse_error(ok.b), "");
}

TEST(GGUF, RefusesBadAlignment) {
    EXPECT_GGUF_ERROR((Bytes().header(0, 1).kv_u32("general.alignment", 48).b), "not a power of two");
    EXPECT_GGUF_ERROR((Bytes().header(0, 1).kv_u32("general.alignment", 0).b), "not a power of two");
    EXPECT_GGUF_ERROR((Bytes().header(0, 1).str("general.alignment").u32(5).u32(64).b), "must be UINT32");
    // a legal 64-byte alignment moves the data start and is used for tensor offsets
    Bytes b;
    b.header(1, 1).kv_u32("general.alignment", 64).tensor("t", {4}, 0, 0).pad_to(64);
    const uint64_t data = b.b.size();
    b.zeros(64);
    auto f = GGUFFile::from_memory(b.b, "ok.gguf");
    EXPECT_EQ(f->alignment(), 64u);
    EXPECT_EQ(f->data_offset(), data);
}

TEST(GGUF, RefusesBadTensorInfos) {
    auto one = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data = 4096) {
        Bytes b;
        b.header(1, 0).tensor("w", ne, type, offset).pad_to(32).zeros(data);
        return b.b;
    };
    EXPECT_EQ(parse_error(one({4, 2}, 0, 0)), "");
    EXPECT_GGUF_ERROR(one({}, 0, 0), "n_dims 0");
    EXPECT_GGUF_ERROR(one({1, 1, 1, 1, 1}, 0, 0), "n_dims 5");
    EXPECT_GGUF_ERROR(one({1ull << 63, 1}, 0, 0), "negative as int64");
    EXPECT_GGUF_ERROR(one({1ull << 32, 1ull << 32}, 0, 0), "overflows int64");
    EXPECT_GGUF_ERROR(one({1ull << 61, 2}, 0, 0), "byte size overflows");  // elements fit int64, bytes do not
    EXPECT_GGUF_ERROR(one({4}, 99, 0), "unknown or unsupported ggml type 99");
    EXPECT_GGUF_ERROR(one({4}, 4, 0), "type 4");  // ggml's removed Q4_2
    EXPECT_GGUF_ERROR(one({31}, 8, 0), "not a whole number of Q8_0 blocks");
    EXPECT_GGUF_ERROR(one({4}, 0, 1), "not a multiple of the alignment");
    EXPECT_GGUF_ERROR(one({4}, 0, 4096), "outside the file");
    EXPECT_GGUF_ERROR(one({2048}, 0, 0), "outside the file");         // 8192 bytes > 4096
    EXPECT_GGUF_ERROR(one({4}, 0, ~0ull & ~31ull), "outside the file");  // offset + size wraps
    EXPECT_GGUF_ERROR(one({1ull << 40}, 0, 0), "outside the file");
    // the data section itself starts past the end (no padding, no data)
    Bytes nodata;
    nodata.header(1, 0).tensor("w", {4}, 0, 0);
    EXPECT_GGUF_ERROR(nodata.b, "outside the file");
    // a zero-element tensor needs no data
    nodata = Bytes();
    nodata.header(1, 0).tensor("w", {0}, 0, 0).pad_to(32);
    EXPECT_EQ(parse_error(nodata.b), "");

    Bytes dup;
    dup.header(2, 0).tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).pad_to(32).zeros(64);
    EXPECT_GGUF_ERROR(dup.b, "duplicate tensor name \"w\"");
    Bytes overlap;
    overlap.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad_to(32).zeros(128);
    EXPECT_GGUF_ERROR(overlap.b, "overlap");
    Bytes same;
    same.header(2, 0).tensor("a", {4}, 0, 32).tensor("b", {4}, 0, 32).pad_to(32).zeros(128);
    EXPECT_GGUF_ERROR(same.b, "overlap");
    // out of order but disjoint is fine
    Bytes reordered;
    reordered.header(2, 0).tensor("a", {4}, 0, 32).tensor("b", {8}, 0, 0).pad_to(32).zeros(64);
    EXPECT_EQ(parse_error(reordered.b), "");
}

TEST(GGUF, EveryTruncationIsAnErrorUntilTheDataEnds) {
    for (const char* name : {"values.gguf", "writer_ref_a64.gguf"}) {
        const auto full = hgtest::read_file(gguf_fixture(name));
        auto f = GGUFFile::open(gguf_fixture(name));
        uint64_t data_end = f->data_offset();
        for (const auto& ti : f->tensors()) data_end = std::max(data_end, f->data_offset() + ti.offset + ti.nbytes);
        int errors = 0;
        for (size_t n = 0; n < full.size(); ++n) {
            std::vector<uint8_t> cut(full.begin(), full.begin() + n);
            const std::string msg = parse_error(cut);
            if (n < data_end) {
                EXPECT_NE(msg, "") << name << " cut at " << n << " of " << full.size() << " parsed";
                errors += msg.empty() ? 0 : 1;
            } else {
                EXPECT_EQ(msg, "") << name << " cut at " << n;  // only trailing padding is missing
            }
        }
        EXPECT_EQ(errors, (int)data_end) << name;
    }
}

TEST(GGUF, ByteMutationsNeverCrash) {
    // Every byte of the header region set to a few hostile values: the parser must either
    // accept the file or throw hg::Error (ASan/UBSan watch for the rest).
    const auto full = hgtest::read_file(gguf_fixture("writer_ref.gguf"));
    auto f = GGUFFile::open(gguf_fixture("writer_ref.gguf"));
    const size_t header = static_cast<size_t>(f->data_offset());
    int refused = 0, accepted = 0;
    for (size_t i = 0; i < header; ++i) {
        for (uint8_t v : {uint8_t{0x00}, uint8_t{0xff}, uint8_t{0x7f}, uint8_t{0x80}, static_cast<uint8_t>(full[i] ^ 1)}) {
            if (v == full[i]) continue;
            std::vector<uint8_t> m = full;
            m[i] = v;
            try {
                auto g = GGUFFile::from_memory(m, "mut.gguf");
                for (const auto& ti : g->tensors()) (void)g->tensor(ti);
                for (const auto& kv : g->metadata()) (void)kv.value.to_string();
                ++accepted;
            } catch (const hg::Error&) {
                ++refused;
            }
        }
    }
    EXPECT_GT(refused, 0);
    EXPECT_GT(accepted, 0);
}

TEST(GGUF, FileErrors) {
    EXPECT_THROW(GGUFFile::open(hgtest::scratch_dir() / "does-not-exist.gguf"), hg::Error);
    EXPECT_THROW(GGUFFile::open(hgtest::scratch_dir()), hg::Error);  // a directory
    const fs::path empty = hgtest::scratch_dir() / "empty.gguf";
    std::ofstream(empty).close();
    try {
        GGUFFile::open(empty);
        FAIL();
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("empty.gguf"), std::string::npos) << e.what();
    }
}

// ---------------------------------------------------------------------------------------------
// Big files: 64-bit offsets (sparse files, so nothing big is written to disk)

TEST(GGUF, SparseFileBeyond4GiB) {
    // A tensor whose data starts past 5 GiB and one whose size is above 4 GiB.
    const uint64_t five_gib = 5ull << 30;
    const uint64_t big_elems = (4ull << 30) / 4 + 8;  // F32 elements: 4 GiB + 32 bytes
    Bytes b;
    b.header(3, 0)
        .tensor("small", {8}, 0, 0)
        .tensor("far", {4}, 0, five_gib)
        .tensor("big", {big_elems / 2, 2}, 0, five_gib + 32)
        .pad_to(32);
    const uint64_t data_offset = b.b.size();
    const fs::path p = hgtest::scratch_dir() / "sparse.gguf";
    const int fd = ::open(p.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, b.b.data(), b.b.size(), 0), (ssize_t)b.b.size());
    const float far[4] = {1.5f, -2.5f, 3.5f, 4.5f};
    ASSERT_EQ(::pwrite(fd, far, 16, data_offset + five_gib), 16);
    const float last = 7.25f;
    const uint64_t big_end = data_offset + five_gib + 32 + big_elems * 4;
    ASSERT_EQ(::pwrite(fd, &last, 4, big_end - 4), 4);
    ::close(fd);
    ASSERT_EQ(fs::file_size(p), big_end);

    auto f = GGUFFile::open(p);
    const auto* far_ti = f->find_tensor("far");
    ASSERT_NE(far_ti, nullptr);
    EXPECT_EQ(far_ti->offset, five_gib);
    hg::Tensor t = f->tensor("far");
    for (int i = 0; i < 4; ++i) EXPECT_EQ(t.ptr<float>()[i], far[i]);
    const auto* big = f->find_tensor("big");
    EXPECT_EQ(big->nbytes, big_elems * 4);
    hg::Tensor tb = f->tensor(*big);
    EXPECT_EQ(tb.shape_str(), "[2, " + std::to_string(big_elems / 2) + "]");
    EXPECT_EQ(tb.nbytes(), big_elems * 4);
    EXPECT_EQ(tb.ptr<float>()[big_elems - 1], last);
    EXPECT_EQ(tb.ptr<float>()[0], 0.0f);  // a hole reads as zeros
    fs::remove(p);
}

TEST(GGUF, WriterStreamsBeyond4GiB) {
    // Writes a real 4.2 GiB file. Slow (disk bound), so only with HG_SLOW_TESTS=1.
    if (!std::getenv("HG_SLOW_TESTS")) GTEST_SKIP() << "set HG_SLOW_TESTS=1 to write a 4.2 GiB file";
    const uint64_t big_elems = (4ull << 30) / 2 + 100 * 1024 * 1024;  // F16: 4.2 GiB
    // untouched anonymous pages read as zeros and take no memory
    void* zeros = ::mmap(nullptr, big_elems * 2, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(zeros, MAP_FAILED);
    GGUFWriter w;
    w.set_string("general.architecture", "big");
    w.add_tensor_borrowed("big", hg::DType::F16, {(int64_t)(big_elems / 1024), 1024}, zeros);
    const float tail[3] = {1, 2, 3};
    w.add_tensor("tail", hg::DType::F32, {3}, tail);
    const fs::path p = hgtest::scratch_dir() / "big.gguf";
    w.write(p);
    ::munmap(zeros, big_elems * 2);
    auto f = GGUFFile::open(p);
    const auto* ti = f->find_tensor("tail");
    ASSERT_NE(ti, nullptr);
    EXPECT_GT(f->data_offset() + ti->offset, 4ull << 30);
    EXPECT_EQ(f->tensor(*ti).ptr<float>()[2], 3.0f);
    EXPECT_EQ(f->file_size(), f->data_offset() + ti->offset + 32);
    fs::remove(p);
}

// ---------------------------------------------------------------------------------------------
// `healthgpt inspect` on GGUF (formats/inspect.h)

TEST(GGUF, InspectTextAndJson) {
    const std::string text = hg::inspect(gguf_fixture("values.gguf"), {});
    EXPECT_NE(text.find("GGUF v3, alignment 32"), std::string::npos) << text;
    EXPECT_NE(text.find("metadata: 37 key-value pairs"), std::string::npos);
    EXPECT_NE(text.find("[INT32]    |     1000 | a.long = ["), std::string::npos);
    EXPECT_NE(text.find("... (1000 items)]"), std::string::npos);
    EXPECT_NE(text.find("s.str = \"Grüße, 世界 — 🩺 CT/MRI\""), std::string::npos);
    // tensor lines like gguf-dump: elements | ne padded to 4 dims | type | name
    EXPECT_NE(text.find("        15 |     5,     3,     1,     1 | F32     | t.f32  (offset 0, 60 bytes)"), std::string::npos) << text;
    const json j = json::parse(hg::inspect(gguf_fixture("values.gguf"), {.json = true, .max_array_items = 3}));
    const json ref = load_json(gguf_fixture("values.json"));
    ASSERT_EQ(j["metadata"].size(), ref["metadata"].size());
    for (size_t i = 0; i < ref["metadata"].size(); ++i) EXPECT_EQ(j["metadata"][i]["key"], ref["metadata"][i]["key"]);
    EXPECT_EQ(j["metadata"][1]["value"], 255);
    const auto& along = *std::find_if(j["metadata"].begin(), j["metadata"].end(), [](auto& e) { return e["key"] == "a.long"; });
    EXPECT_EQ(along["count"], 1000);
    EXPECT_EQ(along["value"].size(), 3u);
    ASSERT_EQ(j["tensors"].size(), ref["tensors"].size());
    EXPECT_EQ(j["tensors"][0]["ne"], (std::vector<int64_t>{5, 3}));
    EXPECT_EQ(j["tensors"][0]["shape"], (std::vector<int64_t>{3, 5}));
    EXPECT_EQ(hg::detect_format(gguf_fixture("values.gguf")), "gguf");
    EXPECT_THROW(hg::inspect(gguf_fixture("values.json")), hg::Error);  // unknown format
    EXPECT_THROW(hg::inspect(gguf_fixture("nope.gguf")), hg::Error);
}
