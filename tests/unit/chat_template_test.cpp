// HealthGPT prompts against the reference: conversation templates (llava/conversation.py),
// chunk-wise tokenisation around <image> (llava/mm_utils.py tokenizer_image_token, re-implemented in
// gen_tokenizers.py and checked against the function text), and the VQ vocabulary extension
// (llava/demo/utils.py), with the slow tokenizers HealthGPT loads.
#include <gtest/gtest.h>

#include <map>

#include "text/chat.h"
#include "text_test_util.h"

using namespace hg::text;
using hgtest::ids_of;
using hgtest::show_ids;

namespace {

// The reference tokenizer for a fixture `vocab` name, with the extension where HealthGPT applies it.
Tokenizer load_for(const std::string& vocab) {
    if (vocab == "phi3") return Tokenizer(hgtest::phi3_from_model());
    if (vocab == "phi3_bos") return Tokenizer(hgtest::phi3_from_model("phi3/tokenizer_config.add_bos.json"));
    if (vocab == "cl100k") return Tokenizer(hgtest::phi4_from_json());
    if (vocab == "qwen2") return Tokenizer(hgtest::qwen2_from_json());
    throw std::runtime_error("unknown vocab " + vocab);
}

class Prompts : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (hgtest::shared_data().empty()) return;
        for (const char* name : {"phi3", "phi3_bos", "cl100k", "qwen2"}) {
            auto tok = std::make_unique<Tokenizer>(load_for(name));
            if (std::string(name) != "qwen2") add_vq_vocabulary(*tok);
            toks_[name] = std::move(tok);
        }
    }
    static void TearDownTestSuite() { toks_.clear(); }
    static std::map<std::string, std::unique_ptr<Tokenizer>> toks_;
};
std::map<std::string, std::unique_ptr<Tokenizer>> Prompts::toks_;

TEST_F(Prompts, MatchTheReferenceIds) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    const auto rows = hgtest::read_jsonl_gz(hgtest::tok_fixture("prompts.jsonl.gz"));
    ASSERT_GE(rows.size(), 100u);
    int bad_prompt = 0, bad_ids = 0, images = 0;
    std::map<std::string, int> per_vocab;
    for (const auto& r : rows) {
        const std::string vocab = r["vocab"];
        const auto tmpl = chat_template_from_name(r["template"].get<std::string>());
        ASSERT_TRUE(tmpl.has_value());
        std::vector<ChatTurn> turns;
        for (const auto& t : r["turns"]) {
            ChatTurn turn;
            turn.question = t[0];
            turn.n_images = t[1];
            if (!t[2].is_null()) turn.answer = t[2].get<std::string>();
            turns.push_back(turn);
        }
        const std::string prompt = build_prompt(*tmpl, turns, r["generation"]);
        if (prompt != r["prompt"].get<std::string>() && ++bad_prompt <= 5)
            ADD_FAILURE() << vocab << " prompt " << nlohmann::json(prompt).dump() << " want " << r["prompt"].dump();
        const auto got = tokenize_with_images(*toks_[vocab], r["prompt"].get<std::string>(), Semantics::slow);
        const auto want = ids_of(r["ids"]);
        if (got != want && ++bad_ids <= 5)
            ADD_FAILURE() << vocab << " " << r["prompt"].dump() << "\n got  " << show_ids(got) << "\n want " << show_ids(want);
        images += static_cast<int>(std::count(want.begin(), want.end(), kImageTokenId));
        ++per_vocab[vocab];
    }
    for (auto& [v, n] : per_vocab) std::printf("    %-9s %d prompts\n", v.c_str(), n);
    std::printf("    %zu prompts (%d image slots): %d prompt-string and %d id mismatches\n", rows.size(), images,
                bad_prompt, bad_ids);
    EXPECT_GT(images, 50);
    EXPECT_EQ(bad_prompt, 0);
    EXPECT_EQ(bad_ids, 0);
}

TEST_F(Prompts, VqVocabularyExtension) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    int checked = 0;
    for (const auto& r : hgtest::read_jsonl_gz(hgtest::tok_fixture("extension.jsonl.gz"))) {
        const Tokenizer& tok = *toks_[r["vocab"].get<std::string>()];
        if (r.contains("base_len")) {
            EXPECT_EQ(tok.size(), r["len"].get<int>());
            const VqVocabulary q = vq_vocabulary(tok);
            ASSERT_TRUE(q.valid());
            EXPECT_EQ(q.start_index, r["base_len"].get<int>());  // appended from len(tokenizer)
            EXPECT_EQ(q.start_index, r["ids"]["<start_index>"].get<int>());
            EXPECT_EQ(q.idx0, r["ids"]["<idx_0>"].get<int>());
            EXPECT_EQ(q.idx0 + 8191, r["ids"]["<idx_8191>"].get<int>());
            EXPECT_EQ(q.end_index, r["ids"]["<end_index>"].get<int>());
            EXPECT_EQ(q.pixel_newline, r["ids"]["<pixel_newline>"].get<int>());
        } else if (r.contains("gen_ids")) {
            const auto ids = ids_of(r["gen_ids"]);
            EXPECT_EQ(tok.decode(ids, {Semantics::slow, false}), r["slow_dec"].get<std::string>());
            EXPECT_EQ(tok.decode(ids, {Semantics::slow, true}), r["slow_dec_skip"].get<std::string>());
        } else {
            const std::string text = r["text"];
            EXPECT_EQ(tok.encode(text, {Semantics::slow}), ids_of(r["slow"])) << r["vocab"] << " " << text;
            EXPECT_EQ(tok.encode(text, {Semantics::fast}), ids_of(r["fast"])) << r["vocab"] << " " << text;
        }
        ++checked;
    }
    EXPECT_GT(checked, 40);
    // Phi-3 (§5.2): 32011 / 32012..40203 / 40204 / 40205, 40206 rows; Phi-4: from 100352.
    const VqVocabulary p3 = vq_vocabulary(*toks_["phi3"]);
    EXPECT_EQ(p3.start_index, 32011);
    EXPECT_EQ(p3.idx0, 32012);
    EXPECT_EQ(p3.end_index, 40204);
    EXPECT_EQ(p3.pixel_newline, 40205);
    EXPECT_EQ(toks_["phi3"]->size(), 40206);
    EXPECT_EQ(vq_vocabulary(*toks_["cl100k"]).start_index, 100352);
    EXPECT_EQ(toks_["cl100k"]->size(), 108547);
    // "<start_index>" in text is the single id; a second extension adds nothing (additional tokens exist).
    EXPECT_EQ(toks_["phi3"]->encode("<start_index>"), std::vector<int32_t>{32011});
    EXPECT_EQ(add_vq_vocabulary(*toks_["phi3"]), 0);
    // Qwen's tokenizer_config lists additional_special_tokens, so the reference adds nothing there either.
    Tokenizer qwen = load_for("qwen2");
    EXPECT_EQ(add_vq_vocabulary(qwen), 0);
    EXPECT_FALSE(vq_vocabulary(qwen).valid());
}

TEST(ChatTemplate, VerbatimStrings) {
    const ChatTurn q[] = {{"What is shown?", 1, std::nullopt}};
    EXPECT_EQ(build_prompt(ChatTemplate::phi3_instruct, q),
              "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n<image>\nWhat is shown?<|end|>\n<|assistant|>\n");
    EXPECT_EQ(build_prompt(ChatTemplate::phi4_instruct, q),
              "<|im_start|>system<|im_sep|>\nYou are a medieval knight and must provide explanations to modern people."
              "<|im_end|>\n<|im_start|>user<|im_sep|>\n<image>\nWhat is shown?<|im_end|>\n<|im_start|>assistant<|im_sep|>\n");
    EXPECT_EQ(build_prompt(ChatTemplate::qwen_2, q),
              "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
              "<|im_start|>user\n<image>\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(build_prompt(ChatTemplate::phi3_instruct, q, true).substr(build_prompt(ChatTemplate::phi3_instruct, q).size()),
              "<start_index>");
    for (ChatTemplate t : {ChatTemplate::phi3_instruct, ChatTemplate::phi4_instruct, ChatTemplate::qwen_2})
        EXPECT_EQ(chat_template_from_name(chat_template_name(t)), t);
    EXPECT_FALSE(chat_template_from_name("llama_2").has_value());
}

TEST(ChatTemplate, StopTokensNameTheRightTokens) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    EXPECT_EQ(chat_model(ChatTemplate::phi3_instruct).stop_ids, (std::vector<int32_t>{32000, 32001, 32007}));
    EXPECT_EQ(chat_model(ChatTemplate::phi4_instruct).stop_ids, (std::vector<int32_t>{100265}));
    EXPECT_EQ(chat_model(ChatTemplate::qwen_2).stop_ids, (std::vector<int32_t>{151645, 151643}));
    const Tokenizer phi3 = load_for("phi3"), phi4 = load_for("cl100k"), qwen = load_for("qwen2");
    EXPECT_EQ(phi3.id_to_token(32000), "<|endoftext|>");
    EXPECT_EQ(phi3.id_to_token(32001), "<|assistant|>");
    EXPECT_EQ(phi3.id_to_token(32007), "<|end|>");
    EXPECT_EQ(phi4.id_to_token(100265), "<|im_end|>");
    EXPECT_EQ(qwen.id_to_token(151645), "<|im_end|>");
    EXPECT_EQ(qwen.id_to_token(151643), "<|endoftext|>");
    EXPECT_TRUE(chat_model(ChatTemplate::phi3_instruct).vq_vocabulary);
    EXPECT_FALSE(chat_model(ChatTemplate::qwen_2).vq_vocabulary);
}

TEST(ChatTemplate, ImageSlotsAndBosLogic) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    // With add_bos_token the first chunk starts with BOS: one BOS is kept, every chunk loses its first token.
    const Tokenizer bos(hgtest::phi3_from_model("phi3/tokenizer_config.add_bos.json"));
    const auto a = tokenize_with_images(bos, "A<image>B<image>");
    const auto chunk_a = bos.encode("A"), chunk_b = bos.encode("B");
    ASSERT_EQ(chunk_a[0], 1);
    std::vector<int32_t> want = {1};
    want.insert(want.end(), chunk_a.begin() + 1, chunk_a.end());
    want.push_back(kImageTokenId);
    want.insert(want.end(), chunk_b.begin() + 1, chunk_b.end());
    want.push_back(kImageTokenId);
    EXPECT_EQ(a, want);
    // Without BOS nothing is stripped; "<image>" at the start gives an empty first chunk.
    const Tokenizer plain(hgtest::phi3_from_model());
    const auto b = tokenize_with_images(plain, "<image>\nx");
    ASSERT_FALSE(b.empty());
    EXPECT_EQ(b[0], kImageTokenId);
    EXPECT_EQ(std::count(b.begin(), b.end(), kImageTokenId), 1);
}

}  // namespace
