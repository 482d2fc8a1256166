// HealthGPT prompts: the conversation templates of llava/conversation.py, the chunk-wise tokenisation
// around "<image>" of llava/mm_utils.py tokenizer_image_token, the VQ vocabulary extension of
// llava/demo/utils.py, and the stop tokens of each base model (healthgpt-reference.md §3.2-3.4, §5.2).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace hg::text {

constexpr int32_t kImageTokenId = -200;       // IMAGE_TOKEN_INDEX: one slot for the 576 visual embeddings
constexpr const char* kImageToken = "<image>";  // DEFAULT_IMAGE_TOKEN
constexpr const char* kStartIndexToken = "<start_index>";

enum class ChatTemplate : uint8_t { phi3_instruct, phi4_instruct, qwen_2 };

const char* chat_template_name(ChatTemplate t);
std::optional<ChatTemplate> chat_template_from_name(std::string_view name);

// What the runtime needs to know about each base model family.
struct ChatModel {
    ChatTemplate tmpl;
    const char* base_model;          // the Hugging Face model HealthGPT builds on
    std::vector<int32_t> stop_ids;   // eos ids of the base model's generation_config.json
    bool vq_vocabulary;              // HealthGPT adds <start_index>, <idx_k>, ... (not for Qwen)
};
const ChatModel& chat_model(ChatTemplate t);

// One user turn: the question, how many images precede it ("<image>\n" each), and the assistant's
// answer when the turn is already answered (the last turn normally has none).
struct ChatTurn {
    std::string question;
    int n_images = 0;
    std::optional<std::string> answer;
};

// The prompt string exactly as Conversation.get_prompt builds it (MPT style for phi3/phi4,
// QWEN_2 style for qwen_2): system + sep, then role + message + sep per message, and the bare
// assistant role for the unanswered last turn. `generation` appends "<start_index>".
std::string build_prompt(ChatTemplate t, std::span<const ChatTurn> turns, bool generation = false);

// tokenizer_image_token: split on "<image>", tokenise each chunk on its own with the tokenizer's
// special tokens (add_special_tokens=True), keep a single BOS, join with kImageTokenId.
std::vector<int32_t> tokenize_with_images(const Tokenizer& tok, std::string_view prompt,
                                          Semantics semantics = Semantics::slow);

// Ids of the VQ tokens of HealthGPT's vocabulary extension.
struct VqVocabulary {
    int32_t start_index = -1;    // <start_index>
    int32_t idx0 = -1;           // <idx_0>; <idx_k> = idx0 + k
    int32_t n_idx = 0;           // 8192
    int32_t end_index = -1;      // <end_index>
    int32_t pixel_newline = -1;  // <pixel_newline>
    bool valid() const { return start_index >= 0 && idx0 >= 0 && n_idx > 0 && end_index >= 0; }
    bool is_index(int32_t id) const { return id >= idx0 && id < idx0 + n_idx; }
};

// add_special_tokens_and_resize_model (tokenizer half): appends <start_index>, <idx_0>..<idx_{n-1}>,
// <end_index>, <pixel_newline> as additional special tokens from len(tokenizer) on -- unless the
// tokenizer already lists additional special tokens, in which case it adds nothing (as the
// reference does). Returns the number of new ids.
int32_t add_vq_vocabulary(Tokenizer& tok, int32_t n_idx = 8192);

// The ids of the extension in `tok`, looked up by name (invalid() if absent or not contiguous).
VqVocabulary vq_vocabulary(const Tokenizer& tok, int32_t n_idx = 8192);

}  // namespace hg::text
