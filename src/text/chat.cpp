#include "text/chat.h"

#include "core/error.h"

namespace hg::text {

namespace {

// llava/conversation.py, verbatim strings (healthgpt-reference.md §3.3).
struct TemplateDef {
    ChatTemplate id;
    const char* name;
    bool qwen_style;     // SeparatorStyle.QWEN_2 (sep per message parity) instead of MPT
    const char* system;
    const char* role_user;
    const char* role_assistant;
    const char* sep;
    const char* sep2;
};

const TemplateDef kTemplates[] = {
    {ChatTemplate::phi3_instruct, "phi3_instruct", false, "<|system|>\nYou are a helpful AI assistant.",
     "\n<|user|>\n", "\n<|assistant|>\n", "<|end|>", "<|end|>"},
    // The Phi-4 system text really is the model card's medieval knight; do not "fix" it.
    {ChatTemplate::phi4_instruct, "phi4_instruct", false,
     "<|im_start|>system<|im_sep|>\nYou are a medieval knight and must provide explanations to modern people.",
     "\n<|im_start|>user<|im_sep|>\n", "\n<|im_start|>assistant<|im_sep|>\n", "<|im_end|>", "<|im_end|>"},
    {ChatTemplate::qwen_2, "qwen_2", true,
     "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
     "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n", "<|im_end|>\n"},
};

const TemplateDef& def(ChatTemplate t) {
    for (const TemplateDef& d : kTemplates)
        if (d.id == t) return d;
    hg::fail("unknown chat template %d", static_cast<int>(t));
}

}  // namespace

const char* chat_template_name(ChatTemplate t) { return def(t).name; }

std::optional<ChatTemplate> chat_template_from_name(std::string_view name) {
    for (const TemplateDef& d : kTemplates)
        if (name == d.name) return d.id;
    return std::nullopt;
}

const ChatModel& chat_model(ChatTemplate t) {
    // Stop ids: each base model's generation_config.json (the reference passes no eos_token_id).
    static const ChatModel kModels[] = {
        {ChatTemplate::phi3_instruct, "microsoft/Phi-3-mini-4k-instruct", {32000, 32001, 32007}, true},
        {ChatTemplate::phi4_instruct, "microsoft/phi-4", {100265}, true},
        {ChatTemplate::qwen_2, "Qwen/Qwen2.5-32B-Instruct", {151645, 151643}, false},
    };
    for (const ChatModel& m : kModels)
        if (m.tmpl == t) return m;
    hg::fail("unknown chat template %d", static_cast<int>(t));
}

std::string build_prompt(ChatTemplate t, std::span<const ChatTurn> turns, bool generation) {
    const TemplateDef& d = def(t);
    // messages: (role, message or none), user and assistant alternating, as append_message builds them
    std::vector<std::pair<const char*, std::optional<std::string>>> messages;
    for (const ChatTurn& turn : turns) {
        HG_CHECK(turn.n_images >= 0, "negative image count in a chat turn");
        std::string content;
        for (int k = 0; k < turn.n_images; ++k) content += std::string(kImageToken) + "\n";
        content += turn.question;
        messages.emplace_back(d.role_user, std::move(content));
        messages.emplace_back(d.role_assistant, turn.answer);
    }
    std::string ret = std::string(d.system) + d.sep;
    for (size_t i = 0; i < messages.size(); ++i) {
        const auto& [role, message] = messages[i];
        // Python truthiness: an empty message counts as none and leaves the bare role.
        if (message && !message->empty()) ret += std::string(role) + *message + (d.qwen_style && i % 2 ? d.sep2 : d.sep);
        else ret += role;
    }
    if (generation) ret += kStartIndexToken;
    return ret;
}

std::vector<int32_t> tokenize_with_images(const Tokenizer& tok, std::string_view prompt, Semantics semantics) {
    // prompt.split("<image>")
    std::vector<std::vector<int32_t>> chunks;
    const std::string_view marker = kImageToken;
    size_t pos = 0;
    EncodeOptions opt;
    opt.semantics = semantics;
    opt.add_special_tokens = true;
    while (true) {
        const size_t k = prompt.find(marker, pos);
        const std::string_view chunk = prompt.substr(pos, k == std::string_view::npos ? std::string_view::npos : k - pos);
        chunks.push_back(tok.encode(chunk, opt));
        if (k == std::string_view::npos) break;
        pos = k + marker.size();
    }
    // If the first chunk starts with BOS, keep one BOS and drop the first token of every chunk.
    std::vector<int32_t> ids;
    const int32_t bos = tok.vocab().bos_id;
    size_t offset = 0;
    if (!chunks[0].empty() && bos >= 0 && chunks[0][0] == bos) {
        offset = 1;
        ids.push_back(bos);
    }
    for (size_t c = 0; c < chunks.size(); ++c) {
        if (c > 0) ids.push_back(kImageTokenId);  // the separator [-200] * (offset + 1), minus its first element
        for (size_t i = offset; i < chunks[c].size(); ++i) ids.push_back(chunks[c][i]);
    }
    return ids;
}

int32_t add_vq_vocabulary(Tokenizer& tok, int32_t n_idx) {
    HG_CHECK(n_idx > 0 && n_idx <= (1 << 20), "VQ codebook size %d out of range", n_idx);
    if (!tok.vocab().additional_special.empty()) return 0;  // the reference returns early
    std::vector<AddedToken> tokens;
    tokens.reserve(static_cast<size_t>(n_idx) + 3);
    auto special = [](std::string s) {
        AddedToken a;
        a.content = std::move(s);
        a.special = true;
        a.normalized = false;
        return a;
    };
    tokens.push_back(special(kStartIndexToken));
    for (int32_t k = 0; k < n_idx; ++k) tokens.push_back(special("<idx_" + std::to_string(k) + ">"));
    tokens.push_back(special("<end_index>"));
    tokens.push_back(special("<pixel_newline>"));
    return tok.add_tokens(tokens, /*special_map=*/true);
}

VqVocabulary vq_vocabulary(const Tokenizer& tok, int32_t n_idx) {
    VqVocabulary q;
    q.start_index = tok.token_to_id(kStartIndexToken);
    q.idx0 = tok.token_to_id("<idx_0>");
    q.end_index = tok.token_to_id("<end_index>");
    q.pixel_newline = tok.token_to_id("<pixel_newline>");
    q.n_idx = n_idx;
    if (q.idx0 < 0 || tok.token_to_id("<idx_" + std::to_string(n_idx - 1) + ">") != q.idx0 + n_idx - 1) return VqVocabulary{};
    return q;
}

}  // namespace hg::text
