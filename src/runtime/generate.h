// The generation loop: prefill (batched over the prompt) + token-by-token decode over one
// sequence, with a KV cache that is reused across calls.
//
//   auto model = hg::Decoder::load("text.gguf");
//   hg::Generator gen(model, /*n_ctx=*/4096);
//   hg::Prompt prompt;
//   prompt.add_tokens(ids_before_image);
//   prompt.add_embeddings(image_vectors, 576);       // projector output, [576, n_embd]
//   prompt.add_tokens(ids_after_image);
//   hg::GenerateOptions opt;                          // greedy by default
//   opt.stop_ids = {32000, 32001, 32007};
//   opt.on_token = [&](int32_t id) { std::cout << detok(id); return true; };
//   hg::GenerateResult r = gen.generate(prompt, opt);
//
// A follow-up request whose prompt starts with the same inputs (same system prompt, same
// image, same adapter) reuses the cached positions: only the new suffix is prefilled. A shared
// PrefixCache additionally keeps snapshots of chosen prefixes across sequences.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/arena.h"
#include "model/decoder.h"
#include "runtime/kv_cache.h"
#include "runtime/sampler.h"

namespace hg {

// The input sequence: token ids and embedding rows in order (an image's projected vectors
// sit between two text segments). Positions are contiguous across segments.
class Prompt {
public:
    struct Segment {
        std::vector<int32_t> ids;     // token segment
        std::vector<float> embeds;    // or n rows of embeddings
        int64_t n = 0;
        bool is_tokens() const { return !ids.empty(); }
    };

    void add_tokens(std::span<const int32_t> ids);
    void add_embeddings(const float* rows, int64_t n_rows, int64_t n_embd);  // copied

    int64_t size() const { return n_; }
    const std::vector<Segment>& segments() const { return segs_; }
    std::vector<int32_t> token_ids() const;  // the text tokens, in order

private:
    std::vector<Segment> segs_;
    int64_t n_ = 0;
    int64_t n_embd_ = 0;
};

// Which ids the repetition penalty sees (HF semantics, see sampler.h):
//   PromptAndOutput  generate(input_ids=prompt)          the prompt's text tokens + the output
//   OutputOnly       generate(inputs_embeds=...)         only the output: the LLaVA/HealthGPT path
enum class PenaltyScope { PromptAndOutput, OutputOnly };

enum class StopReason { MaxTokens, StopToken, StopString, Callback, ContextFull };
const char* stop_reason_name(StopReason r);

struct GenerateOptions {
    int64_t max_new_tokens = 512;
    SamplingParams sampling;                       // greedy by default
    PenaltyScope penalty_scope = PenaltyScope::PromptAndOutput;
    std::vector<int32_t> stop_ids;                 // e.g. the model's eos ids; not emitted
    std::vector<std::string> stop_strings;         // stop once the output text contains one
    std::function<std::string(int32_t)> token_text;  // detokenize one id (needed for stop_strings)
    std::function<bool(int32_t)> on_token;         // streaming; return false to stop
    int64_t n_batch = 512;                         // prefill chunk (positions per forward)
    const AdapterSet* adapters = nullptr;          // e.g. an H-LoRA plugin
    uint64_t adapter_key = 0;                      // identity of `adapters` for cache reuse
                                                   // (0: the pointer value)
    int64_t save_prefix = 0;                       // > 0: store the first save_prefix prompt
                                                   // positions in the PrefixCache (if set)
};

struct GenerateResult {
    std::vector<int32_t> tokens;       // generated ids (a stop id is not included)
    StopReason reason = StopReason::MaxTokens;
    int32_t stop_token = -1;           // the stop id that ended it
    std::string stop_string;           // the stop string that ended it
    std::string text;                  // concatenated token_text of the output (if token_text is set)
    int64_t n_prompt = 0;              // prompt positions
    int64_t n_prompt_reused = 0;       // of which taken from the cache
    int64_t n_decoded = 0;             // single-token forward passes
    double prompt_seconds = 0;         // prefill of the positions not reused
    double decode_seconds = 0;         // decode forwards + sampling
    double prompt_tokens_per_second() const;
    double generate_tokens_per_second() const;
};

class Generator {
public:
    // n_ctx: KV capacity in positions (allocated once).
    Generator(std::shared_ptr<const Decoder> model, int64_t n_ctx, DType kv_type = DType::F16,
              ThreadPool* pool = nullptr);

    GenerateResult generate(const Prompt& prompt, const GenerateOptions& opt);

    // The two halves of generate(), for callers that drive the loop themselves. prefill()
    // brings the cache to `prompt` (reusing what matches) and returns the logits of its last
    // position; decode() appends one token and returns the next logits. The returned span is
    // valid until the next call.
    std::span<float> prefill(const Prompt& prompt, const GenerateOptions& opt, int64_t* n_reused = nullptr);
    std::span<float> decode(int32_t token, const GenerateOptions& opt);

    void set_prefix_cache(std::shared_ptr<PrefixCache> pc) { prefix_cache_ = std::move(pc); }
    void set_kernels(const Kernels* k) { fwd_.kernels = k; }  // tests: pin the scalar reference

    const Decoder& model() const { return *model_; }
    KVCache& cache() { return cache_; }

private:
    uint64_t hash_seed(const GenerateOptions& opt) const;

    std::shared_ptr<const Decoder> model_;
    KVCache cache_;
    Arena arena_;
    ForwardOptions fwd_;
    std::vector<float> embeds_;  // [n_batch, n_embd] input rows of one forward
    std::vector<float> logits_;  // [n_vocab]
    std::vector<uint64_t> hashes_;
    std::shared_ptr<PrefixCache> prefix_cache_;
};

}  // namespace hg
