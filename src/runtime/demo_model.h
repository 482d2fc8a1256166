// The project's own tiny HealthGPT-shaped model, written entirely by our code: what the main job
// (scripts/run.sh) and a fresh clone without downloads run end to end.
//
//   DIR/text.gguf         phi3 decoder (2 layers, hidden 64) with random weights, a small real
//                         SentencePiece-BPE vocabulary (byte fallback, ~500 English/medical word
//                         pieces, the Phi-3 chat tokens), the phi3_instruct template and stop ids,
//                         and healthgpt.notice saying the model is random and not medical
//   DIR/vision.gguf       CLIP tower of the real geometry (336 px, patch 14 -> 576 vectors) but
//                         tiny width (64) and 3 blocks
//   DIR/plugins/com.gguf  a comprehension H-LoRA plugin (rank 8, 4 experts, vision layer -2) with
//                         its projector
//   DIR/plugins/gen.gguf  a generation plugin (rank 8, vision layer 1, its projector, its own embedding
//                         and head rows for all len(tokenizer) + 8,195 ids)
//   DIR/vqgan.gguf        a taming GumbelVQ of the released geometry (256 px, f8, 32 x 32 = 1,024
//                         tokens, 8,192 codes) but width 32 and one ResNet block per level
//   DIR/example.png       a synthetic chest-radiograph-like picture (ellipses and arcs; no patient)
//
// The answers are random text and the generated images random patterns. Everything else is the
// real path: the same loaders, tokenizer, preprocessing, vision tower, projector, H-LoRA, vocabulary
// extension, constrained VQ decoding and VQGAN decoder as a converted HealthGPT-M3.
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "imaging/image.h"
#include "text/vocab.h"

namespace hg {

struct DemoModelOptions {
    uint64_t seed = 2025;
    bool write_example_image = true;
};

// The sizes of a HealthGPT-shaped model (phi3 decoder, CLIP-style tower, H-LoRA plugin); the
// defaults are the demo model's.
struct RandomModelShape {
    std::string name = "healthgpt-demo-tiny";
    std::string notice = "tiny random demo model written by `healthgpt make-demo-model`: its answers are random text "
                         "and its generated images random patterns, not medical";
    int64_t embd = 64, ff = 128, layers = 2, heads = 4, ctx = 4096;             // decoder
    int image = 336, patch = 14, vis_hidden = 64, vis_ff = 128, vis_layers = 3, vis_heads = 4;  // tower
    int64_t rank = 8, experts = 4;                                             // demo plugins
    float alpha = 16.0f;
};

// Demo: weights that give O(1) activations and well separated logits (a random model whose
// answers vary). Training: a from-scratch run's start (GPT-2's N(0, 0.02), residual outputs
// scaled by 1/sqrt(2 layers), norms 1, biases 0).
enum class RandomInit { Demo, Training };

// A SentencePiece-BPE vocabulary (byte fallback, the Phi-3 chat tokens as added tokens) in which
// each of `words` is one piece "▁word", reachable by merges through its prefixes.
text::Vocab word_vocab(std::span<const std::string> words, const std::string& source);

// DIR/text.gguf and DIR/vision.gguf of `shape` with random weights (no plugins). Throws on an
// inconsistent shape or an I/O error.
void write_random_model(const std::filesystem::path& dir, const RandomModelShape& shape, const text::Vocab& vocab,
                        RandomInit kind, uint64_t seed);

// Creates DIR (and DIR/plugins) and writes the files above. Throws hg::Error on I/O problems.
void write_demo_model(const std::filesystem::path& dir, const DemoModelOptions& opt = {});

// The synthetic radiograph (grey, `size` x `size`): dark background, two lung fields, spine, ribs.
imaging::RgbImage synthetic_radiograph(int size = 384);

}  // namespace hg
