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

#include "imaging/image.h"

namespace hg {

struct DemoModelOptions {
    uint64_t seed = 2025;
    bool write_example_image = true;
};

// Creates DIR (and DIR/plugins) and writes the files above. Throws hg::Error on I/O problems.
void write_demo_model(const std::filesystem::path& dir, const DemoModelOptions& opt = {});

// The synthetic radiograph (grey, `size` x `size`): dark background, two lung fields, spine, ribs.
imaging::RgbImage synthetic_radiograph(int size = 384);

}  // namespace hg
