// PyTorch checkpoint reader against files written by torch.save (tests/reference/gen_formats.py):
// zip and legacy formats, shared storages with offsets, a transposed (non-contiguous) tensor,
// a real module state_dict (BUILD with _metadata, 0-d tensors), Lightning-style checkpoints with
// objects of arbitrary classes, and hostile files (os.system / eval / subprocess via __reduce__,
// unknown globals, truncation, compression, missing or short storages, bad CRC).
// Expected values are torch's own tensor bytes (.values) and pickletools' list of globals.
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "formats/inspect.h"
#include "formats/torch_checkpoint.h"
#include "test_util.h"

using hg::TorchCheckpoint;
using hg::TorchLoadMode;
using hg::TorchLoadOptions;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path pt_fixture(const std::string& name) { return hgtest::fixture("formats/torch/" + name); }

json load_json(const fs::path& p) {
    std::ifstream f(p);
    return json::parse(f);
}

TorchLoadOptions mode(TorchLoadMode m) {
    TorchLoadOptions o;
    o.mode = m;
    return o;
}

// Every state-dict tensor equals torch's: name order, dtype, shape, strides, storage offset, bytes.
void expect_like_torch(const TorchCheckpoint& c, const fs::path& json_path) {
    const json ref = load_json(json_path);
    const auto blob = hgtest::read_file(fs::path(json_path).replace_extension(".values"));
    ASSERT_EQ(c.tensors().size(), ref["tensors"].size());
    for (size_t i = 0; i < ref["tensors"].size(); ++i) {
        const auto& e = ref["tensors"][i];
        const hg::CkptTensor& t = c.tensors()[i];
        SCOPED_TRACE(t.name);
        EXPECT_EQ(t.name, e["name"].get<std::string>());
        EXPECT_STREQ(hg::elem_type_name(t.type), e["dtype"].get<std::string>().c_str());
        EXPECT_EQ(t.shape, e["shape"].get<std::vector<int64_t>>());
        EXPECT_EQ(t.stride, e["stride"].get<std::vector<int64_t>>());
        EXPECT_EQ(t.is_contiguous(), e["contiguous"].get<bool>());
        EXPECT_EQ(t.storage_offset, e["storage_offset"].get<int64_t>());
        const size_t at = e["blob_offset"].get<size_t>(), n = e["nbytes"].get<size_t>();
        ASSERT_EQ(t.nbytes, n);
        EXPECT_EQ(t.contiguous_bytes(), std::vector<uint8_t>(blob.begin() + at, blob.begin() + at + n));
    }
}

std::string open_error(const fs::path& p, TorchLoadMode m, bool crc = true) {
    try {
        TorchLoadOptions o = mode(m);
        o.verify_crc = crc;
        TorchCheckpoint::open(p, o);
        return "";
    } catch (const hg::Error& e) {
        return e.what();
    }
}

std::string mem_error(const std::vector<uint8_t>& b, TorchLoadMode m) {
    try {
        TorchCheckpoint::from_memory(b, "bad.pt", mode(m));
        return "";
    } catch (const hg::Error& e) {
        return e.what();
    }
}

}  // namespace

TEST(Torch, ZipStateDictLikeTorch) {
    for (const char* name : {"tensors.pt", "tensors_legacy.pt", "hostile/restored.pt"}) {
        SCOPED_TRACE(name);
        auto c = TorchCheckpoint::open(pt_fixture(name));
        EXPECT_EQ(c->format(), std::string(name).find("legacy") != std::string::npos ? TorchCheckpoint::Format::Legacy
                                                                                       : TorchCheckpoint::Format::Zip);
        expect_like_torch(*c, pt_fixture("tensors.json"));
        // views of one storage share memory: shared_view starts 2 floats into shared_full
        const auto& full = c->get("shared_full");
        EXPECT_EQ(c->get("shared_view").data, full.data + 2 * 4);
        EXPECT_EQ(c->get("transposed").data, full.data);
        EXPECT_EQ(c->get("shared_view").storage, full.storage);
        EXPECT_NE(c->get("f32").storage, full.storage);
        EXPECT_FALSE(c->get("transposed").is_contiguous());
        EXPECT_THROW(c->get("transposed").view(), hg::Error);
        // contiguous with an offset: a zero-copy view when the data is aligned (always in files
        // from torch.save's zip writer, which aligns records to 64 bytes; legacy files and
        // archives re-zipped by other tools place storages anywhere)
        const auto& sv = c->get("shared_view");
        if (std::string(name) == "tensors.pt") {
            EXPECT_EQ(reinterpret_cast<uintptr_t>(sv.data) % 64, 8u);  // 64-aligned record + 2 floats
        }
        if (reinterpret_cast<uintptr_t>(sv.data) % 4 == 0) {
            hg::Tensor v = sv.view();
            EXPECT_EQ(v.shape_str(), "[2, 3]");
            EXPECT_EQ(v.ptr<float>()[0], 2.0f);
        } else {
            EXPECT_THROW(sv.view(), hg::Error);
        }
        EXPECT_EQ(sv.to_f32()[0], 2.0f);
        EXPECT_EQ(c->get("scalar").shape, std::vector<int64_t>{});
        EXPECT_EQ(c->get("scalar").to_f32(), std::vector<float>{2.5f});
        EXPECT_EQ(c->get("transposed").to_f32(), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
        EXPECT_TRUE(c->opaque_globals().empty());
        EXPECT_THROW(c->get("nope"), hg::Error);
    }
}

TEST(Torch, ModuleStateDictWithMetadata) {
    auto c = TorchCheckpoint::open(pt_fixture("module_state_dict.bin"));
    expect_like_torch(*c, pt_fixture("module_state_dict.json"));
    EXPECT_EQ(c->get("1.num_batches_tracked").shape, std::vector<int64_t>{});
    EXPECT_EQ(c->get("0.weight").view().type, hg::DType::BF16);
    ASSERT_NE(c->root()->state, nullptr);  // the _metadata that state_dict() attaches, kept inert
    EXPECT_NE(c->root()->state->get("_metadata"), nullptr);
}

TEST(Torch, LightningCheckpoint) {
    for (const char* name : {"lightning.ckpt", "lightning_legacy.ckpt"}) {
        SCOPED_TRACE(name);
        const json ref = load_json(pt_fixture(std::string(name).replace(std::string(name).find(".ckpt"), 5, ".json")));
        // the strict state-dict mode refuses the first unknown global
        const std::string err = open_error(pt_fixture(name), TorchLoadMode::StateDict);
        EXPECT_NE(err.find("__main__.ModelCheckpoint is not allowed"), std::string::npos) << err;

        auto c = TorchCheckpoint::open(pt_fixture(name), mode(TorchLoadMode::Lightning));
        expect_like_torch(*c, pt_fixture(std::string(name).replace(std::string(name).find(".ckpt"), 5, ".json")));
        EXPECT_EQ(c->root()->get("epoch")->i, ref["epoch"].get<int64_t>());
        EXPECT_EQ(c->root()->get("global_step")->i, ref["global_step"].get<int64_t>());
        EXPECT_EQ(c->root()->get("pytorch-lightning_version")->s, "1.0.8");
        // opaque globals: exactly the globals pickletools lists that are not torch's own
        std::vector<std::string> want;
        for (const auto& g : ref["globals"]) {
            const std::string s = g.get<std::string>();
            if (s.starts_with("torch.") || s == "collections.OrderedDict" || s == "_codecs.encode" || s == "__builtin__.set") continue;
            if (std::find(want.begin(), want.end(), s) == want.end()) want.push_back(s);
        }
        EXPECT_EQ(c->opaque_globals(), want);
        // every tensor in the file (optimizer state, callbacks) with its path
        std::map<std::string, std::pair<std::string, std::vector<int64_t>>> got;
        for (const auto& t : c->all_tensors()) got[t.name] = {hg::elem_type_name(t.type), t.shape};
        ASSERT_EQ(got.size(), ref["all_tensors"].size());
        for (const auto& e : ref["all_tensors"]) {
            const auto it = got.find(e["path"].get<std::string>());
            ASSERT_NE(it, got.end()) << e["path"];
            EXPECT_EQ(it->second.first, e["dtype"].get<std::string>());
            EXPECT_EQ(it->second.second, e["shape"].get<std::vector<int64_t>>());
        }
        // hparams objects are inert nodes with their class and state
        const hg::PyObj* hp = c->root()->get("hyper_parameters");
        ASSERT_NE(hp, nullptr);
        const hg::PyObj* custom = hp->get("custom");
        ASSERT_NE(custom, nullptr);
        EXPECT_EQ(custom->kind, hg::PyKind::Object);
        EXPECT_EQ(custom->callable->s, "__main__.Custom");
        ASSERT_NE(custom->state, nullptr);
        EXPECT_EQ(custom->state->get("lr")->f, 0.1);
        EXPECT_EQ(hp->get("bytes")->s, std::string("\x00\xff", 2));
        EXPECT_EQ(hp->get("big")->kind, hg::PyKind::BigInt);
        EXPECT_NE(hg::py_repr(hp).find("<__main__.Custom"), std::string::npos) << hg::py_repr(hp);
    }
}

TEST(Torch, RefusesCodeExecutionInEveryMode) {
    // The global each file names (pickletools, in the .globals file) must appear in the error.
    for (const char* name : {"os_system.pt", "builtins_eval.pt", "subprocess.pt", "os_system_legacy.pt"}) {
        std::ifstream g(pt_fixture(std::string("hostile/") + name + ".globals"));
        std::string evil, line;
        while (std::getline(g, line))
            if (!line.starts_with("torch.") && line != "collections.OrderedDict") evil = line;
        ASSERT_FALSE(evil.empty());
        for (TorchLoadMode m : {TorchLoadMode::StateDict, TorchLoadMode::Lightning, TorchLoadMode::Inspect}) {
            const std::string err = open_error(pt_fixture(std::string("hostile/") + name), m);
            EXPECT_NE(err.find(evil), std::string::npos) << name << " mode " << int(m) << ": " << err;
            EXPECT_NE(err.find(name), std::string::npos) << err;
        }
    }
}

TEST(Torch, UnknownGlobalStrictVersusLenient) {
    const fs::path p = pt_fixture("hostile/unknown_global.pt");
    EXPECT_NE(open_error(p, TorchLoadMode::StateDict).find("global __main__.Custom is not allowed"), std::string::npos);
    auto c = TorchCheckpoint::open(p, mode(TorchLoadMode::Inspect));
    EXPECT_EQ(c->opaque_globals(), std::vector<std::string>{"__main__.Custom"});
    EXPECT_EQ(c->all_tensors().size(), 1u);
    EXPECT_EQ(c->root()->get("x")->kind, hg::PyKind::Object);
    // Lightning mode wants a state_dict entry
    EXPECT_NE(open_error(p, TorchLoadMode::Lightning).find("no \"state_dict\""), std::string::npos);
}

TEST(Torch, RefusesBrokenFiles) {
    const std::pair<const char*, const char*> cases[] = {
        {"truncated.pt", "end-of-central-directory"},
        {"deflated.pt", "compressed"},
        {"missing_storage.pt", "storage record tensors/data/0 is missing"},
        {"short_storage.pt", "holds"},
        {"truncated_pickle.pt", "truncated"},
        {"bad_crc.pt", "CRC-32"},
    };
    for (const auto& [name, substr] : cases) {
        const std::string err = open_error(pt_fixture(std::string("hostile/") + name), TorchLoadMode::StateDict);
        EXPECT_NE(err.find(substr), std::string::npos) << name << ": " << err;
        EXPECT_NE(err.find(name), std::string::npos) << err;
    }
    // without the CRC check the corrupted byte is simply read
    auto c = TorchCheckpoint::open(pt_fixture("hostile/bad_crc.pt"), [] { TorchLoadOptions o; o.verify_crc = false; return o; }());
    EXPECT_EQ(c->tensors().size(), 15u);
    EXPECT_NE(mem_error({}, TorchLoadMode::StateDict).find("not a PyTorch checkpoint"), std::string::npos);
    EXPECT_NE(mem_error({'h', 'e', 'l', 'l', 'o'}, TorchLoadMode::StateDict).find("not a PyTorch checkpoint"), std::string::npos);
    // a plain pickle (no torch.save magic number)
    EXPECT_NE(mem_error({0x80, 2, 'K', 1, '.'}, TorchLoadMode::StateDict).find("magic number"), std::string::npos);
    EXPECT_THROW(TorchCheckpoint::open(hgtest::scratch_dir() / "missing.pt"), hg::Error);
}

TEST(Torch, EveryTruncationIsAnError) {
    for (const char* name : {"tensors.pt", "tensors_legacy.pt", "lightning_legacy.ckpt"}) {
        const auto full = hgtest::read_file(pt_fixture(name));
        const TorchLoadMode m = std::string(name).find("lightning") != std::string::npos ? TorchLoadMode::Lightning : TorchLoadMode::StateDict;
        for (size_t n = 0; n < full.size(); ++n)
            EXPECT_NE(mem_error(std::vector<uint8_t>(full.begin(), full.begin() + n), m), "") << name << " cut at " << n;
        EXPECT_EQ(mem_error(full, m), "") << name;
    }
}

TEST(Torch, ByteMutationsNeverCrash) {
    for (const char* name : {"tensors.pt", "tensors_legacy.pt"}) {
        const auto full = hgtest::read_file(pt_fixture(name));
        int refused = 0, accepted = 0;
        for (size_t i = 0; i < full.size(); ++i)
            for (uint8_t v : {uint8_t{0}, uint8_t{0xff}, static_cast<uint8_t>(full[i] + 1)}) {
                if (v == full[i]) continue;
                auto m = full;
                m[i] = v;
                try {
                    TorchLoadOptions o = mode(TorchLoadMode::Inspect);
                    auto c = TorchCheckpoint::from_memory(m, "mut.pt", o);
                    for (const auto& t : c->all_tensors()) (void)t.contiguous_bytes();
                    (void)hg::py_repr(c->root());
                    ++accepted;
                } catch (const hg::Error&) {
                    ++refused;
                }
            }
        EXPECT_GT(refused, 0) << name;
        EXPECT_GT(accepted, 0) << name;
    }
}

TEST(Torch, InspectLightningAndHostile) {
    const std::string text = hg::inspect(pt_fixture("lightning.ckpt"));
    EXPECT_NE(text.find("PyTorch Lightning checkpoint"), std::string::npos) << text;
    EXPECT_NE(text.find("epoch = 3"), std::string::npos) << text;
    EXPECT_NE(text.find("NOT constructed or called"), std::string::npos);
    EXPECT_NE(text.find("  __main__.Custom\n"), std::string::npos);
    EXPECT_NE(text.find("tensors:  9 in the state dict"), std::string::npos) << text;
    EXPECT_NE(text.find("| 0.weight\n"), std::string::npos) << text;
    EXPECT_NE(text.find("other tensors: 19 outside the state dict"), std::string::npos) << text;
    EXPECT_NE(text.find("loads as a plain state dict: no:"), std::string::npos);
    const json j = json::parse(hg::inspect(pt_fixture("tensors.pt"), {.json = true, .max_array_items = 8, .all_tensors = true}));
    EXPECT_EQ(j["format"], "torch-zip");
    EXPECT_EQ(j["loads_as_state_dict"], true);
    EXPECT_EQ(j["tensors"].size(), 15u);
    const auto& tr = *std::find_if(j["tensors"].begin(), j["tensors"].end(), [](auto& e) { return e["name"] == "transposed"; });
    EXPECT_EQ(tr["stride"], (std::vector<int64_t>{1, 4}));
    // a file that calls os.system is refused by inspect as well
    EXPECT_THROW(hg::inspect(pt_fixture("hostile/os_system.pt")), hg::Error);
    EXPECT_EQ(hg::detect_format(pt_fixture("tensors_legacy.pt")), "torch-legacy");
}
