// Constrained decoding of VQ image tokens (healthgpt-reference.md §5.3, §9 trap 12).
//
// HealthGPT generates an image as <start_index>, 1,024 <idx_k> tokens in raster order (the 32x32
// latent grid of the VQGAN), <end_index>. The reference decodes greedily without constraint and
// parses the text afterwards, so any stray token makes its reshape fail. Here, after
// <start_index>, only <idx_*> ids can be chosen, for exactly n_tokens steps, and <end_index> is
// appended: the output always has the right count. When the model itself picks <idx_*> tokens
// (a working generation plugin), the result equals the reference's greedy output, since the
// argmax over the <idx_*> columns is then the overall argmax (ties to the lowest id, as
// torch.argmax). `n_overridden` counts the steps where the unconstrained choice was another id.
//
//   hg::VqDecodeOptions vo;
//   vo.on_progress = [](int64_t done, int64_t total) { draw_bar(done, total); return true; };
//   hg::AskOptions ao;
//   ao.plugin = "gen";
//   ao.generation_prompt = true;                     // the prompt ends with <start_index>
//   hg::VqDecodeResult r = hg::generate_vq(session, ids, pixels, ao, vo);
//   // r.indices: 1,024 codebook indices for the VQGAN decoder
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/sampler.h"
#include "text/chat.h"

namespace hg {

class Session;
struct AskOptions;

struct VqDecodeOptions {
    int64_t n_tokens = 1024;  // 32 x 32 latent grid
    // After each index: done of total. Returning false stops (result.cancelled).
    std::function<bool(int64_t done, int64_t total)> on_progress;
};

struct VqDecodeResult {
    std::vector<int32_t> indices;  // codebook indices k (<idx_k> = vq.idx0 + k), n_tokens of them
    std::vector<int32_t> tokens;   // the ids emitted: [<start_index> if forced], <idx_*>..., <end_index>
    bool forced_start = false;     // the prompt did not end with <start_index>, so it was fed first
    int64_t n_overridden = 0;      // steps where the unconstrained choice was not an <idx_*> id
    int64_t n_forward = 0;         // single-token forward passes run
    bool cancelled = false;        // on_progress returned false (indices is then short)
    double seconds = 0;            // the decoding loop (not the prefill)
};

// The loop over any logits source: `logits` holds the scores after the prompt ([n_vocab]);
// step(id) feeds one token and returns the next scores. `prompt_last` is the prompt's last id
// (to see whether it already is <start_index>). `sampler` applies the sampling settings (greedy
// by default) to the scores restricted to the <idx_*> columns. Throws hg::Error when the
// vocabulary has no VQ tokens or the scores do not cover them.
VqDecodeResult decode_vq(std::span<float> logits, int32_t prompt_last,
                         const std::function<std::span<float>(int32_t)>& step, const text::VqVocabulary& vq,
                         Sampler& sampler, const VqDecodeOptions& opt = {});

// A Session request (token ids with image slots and their CLIP pixels, as Session::run takes),
// prefilled with the options' plugin, then decode_vq with the options' sampling settings.
VqDecodeResult generate_vq(Session& session, std::span<const int32_t> ids, std::span<const std::vector<float>> pixels,
                           const AskOptions& ask, const VqDecodeOptions& opt = {});

}  // namespace hg
