// The YAML subset reader (formats/yaml.h) on the files it is for (taming's model.yaml as OmegaConf and
// PyYAML write it) and on what it must refuse.
#include <gtest/gtest.h>

#include "core/error.h"
#include "formats/yaml.h"
#include "test_util.h"

using hg::parse_yaml;
using hg::YamlNode;

namespace {

void expect_error(const std::string& text, const std::string& what) {
    try {
        parse_yaml(text, "t.yaml");
        ADD_FAILURE() << "accepted: " << text;
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("t.yaml"), std::string::npos) << e.what();
    }
}

}  // namespace

// tests/fixtures/convert/vqgan/model_f8.yaml: the released OpenImages f8 config written by OmegaConf
// (gen_convert.py), the layout of taming_transformers/ckpt/model.yaml.
TEST(Yaml, ReleasedVqganConfig) {
    const YamlNode y = hg::read_yaml_file(hgtest::fixture("convert/vqgan/model_f8.yaml").string());
    ASSERT_TRUE(y.is_map());
    EXPECT_EQ(y.at_path("model.target")->scalar, "taming.models.vqgan.GumbelVQ");
    EXPECT_EQ(y.at_path("model.params.embed_dim")->as_int(), 256);
    EXPECT_EQ(y.at_path("model.params.n_embed")->as_int(), 8192);
    EXPECT_DOUBLE_EQ(*y.at_path("model.params.kl_weight")->as_float(), 1e-8);
    EXPECT_DOUBLE_EQ(*y.at_path("model.base_learning_rate")->as_float(), 4.5e-6);
    const YamlNode* dd = y.at_path("model.params.ddconfig");
    ASSERT_NE(dd, nullptr);
    EXPECT_EQ(dd->get("double_z")->as_bool(), false);
    const YamlNode* cm = dd->get("ch_mult");
    ASSERT_TRUE(cm && cm->is_seq());
    ASSERT_EQ(cm->seq.size(), 4u);
    EXPECT_EQ(cm->seq[3].as_int(), 4);
    EXPECT_EQ(dd->get("attn_resolutions")->seq.at(0).as_int(), 32);
    EXPECT_DOUBLE_EQ(*dd->get("dropout")->as_float(), 0.0);
    EXPECT_EQ(y.at_path("model.params.lossconfig.target")->scalar, "taming.modules.losses.vqperceptual.DummyLoss");
}

TEST(Yaml, BlockAndFlowForms) {
    const YamlNode y = parse_yaml(
        "---\n"
        "# comment\n"
        "a: 1\n"
        "b:\n"
        "- 1\n"
        "- 2   # PyYAML puts block sequences at the key's indentation\n"
        "c:\n"
        "    - x: 1\n"
        "      y: [1, 2, 'three, 3']\n"
        "    - - 5\n"
        "d: {}\n"
        "e: \"quoted # not a comment\\n\"\n"
        "'f g': it's plain\n"
        "h: ~\n"
        "i:\n"
        "j: -3\n",
        "t.yaml");
    EXPECT_EQ(y.get("a")->as_int(), 1);
    EXPECT_EQ(y.get("b")->seq.size(), 2u);
    const YamlNode* c = y.get("c");
    ASSERT_TRUE(c && c->is_seq() && c->seq.size() == 2);
    EXPECT_EQ(c->seq[0].get("x")->as_int(), 1);
    EXPECT_EQ(c->seq[0].get("y")->seq[2].scalar, "three, 3");
    EXPECT_TRUE(c->seq[0].get("y")->seq[2].quoted);
    EXPECT_EQ(c->seq[1].seq[0].as_int(), 5);
    EXPECT_TRUE(y.get("d")->is_map());
    EXPECT_EQ(y.get("e")->scalar, "quoted # not a comment\n");
    EXPECT_EQ(y.get("f g")->scalar, "it's plain");
    EXPECT_TRUE(y.get("h")->is_null());
    EXPECT_TRUE(y.get("i")->is_null());
    EXPECT_EQ(y.get("j")->as_int(), -3);
    EXPECT_FALSE(y.get("e")->as_int().has_value());
}

TEST(Yaml, RefusesWhatIsOutsideTheSubset) {
    expect_error("a: !!python/object/apply:os.system ['echo hi']\n", "tags are not supported");
    expect_error("a: &x 1\nb: *x\n", "anchors");
    expect_error("b: *x\n", "aliases");
    expect_error("a: |\n  text\n", "block scalars");
    expect_error("a: 1\na: 2\n", "duplicate key");
    expect_error("a:\n\t- 1\n", "tab");
    expect_error("a: [1, [2]]\n", "nested flow");
    expect_error("a: [1, 2\n", "must end on its line");
    expect_error("a: {b: 1}\n", "flow mappings");
    expect_error("a: 'unterminated\n", "unterminated");
    expect_error("a: 1\n  b: 2\n", "unexpected indentation");
    expect_error("a: 1\n---\nb: 2\n", "several documents");
    expect_error("- 1\na: 2\n", "unexpected indentation or content");
    expect_error("a: b: c\n", "mapping inside a plain scalar");
    expect_error("? a\n", "expected \"key: value\"");
    expect_error(std::string("a: \x01\n"), "control character");
}

TEST(Yaml, BoundsDepthAndSize) {
    std::string deep;
    for (int i = 0; i < 100; ++i) deep += std::string(2 * i, ' ') + "k:\n";
    expect_error(deep, "nesting too deep");
    hg::YamlLimits lim;
    lim.max_bytes = 16;
    EXPECT_THROW(parse_yaml("a: 1\nb: 2\nc: 3\nd: 4\n", "t.yaml", lim), hg::Error);
}
