// Model benchmarks behind `healthgpt bench -m FILE` (llama-bench style), and the writer of the
// random-weight benchmark models that `scripts/bench-vs-llamacpp.sh` runs through both engines.
//
// Tests (each: untimed warm-up, then `reps` timed repetitions; mean ± stddev reported):
//   ppN         prefill of N tokens from an empty KV cache in one batch (llama-bench's pp):
//               tokens/s = N / seconds. Random token ids (BOS first), logits of the last row.
//   tgN         N single-token forwards from position 0, each with its logits (llama-bench's tg):
//               tokens/s = N / seconds.
//   img         one CLIP ViT-L/14-336 encode (random F16 weights unless a tower is given), up to
//               hidden_states[-2] (23 of 24 blocks, HealthGPT's comprehension layer): ms.
//   ttft-image  time to the first answer token of an image question through the Generator:
//               prompt = 32 system-prefix ids + 576 image embedding rows + 24 question ids,
//               prefill + greedy pick of the first token, from an empty cache: ms. Reported
//               with ttft-image-reuse: a second question (other 24 ids) about the same image,
//               whose system prefix + image positions come from the cache.
//   vqgan       one full-size VQGAN decode (1,024 codes -> 256x256, random F16 weights): ms.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "model/decoder.h"

namespace hg {

// ---------------------------------------------------------------------------------------------
// Benchmark models

// A decoder shape for random-weight benchmark files (general.architecture = phi3, fused qkv and
// gate|up, no sliding window, the real Phi-3 vocabulary of 32,064 tokens).
struct BenchModelShape {
    std::string name;
    int64_t n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_vocab = 32064, n_ctx = 4096;
};
// "phi3-mini": 3,072 hidden, 32 layers, 32 heads, 8,192 FFN (Phi-3-mini, HealthGPT-M3's decoder).
// "1b":        2,048 hidden, 16 layers, 32 heads, 8,192 FFN (1.2 B parameters, for quick runs).
BenchModelShape bench_model_shape(const std::string& name);

// Writes a GGUF that llama.cpp loads: phi3 metadata for `shape`, every tokenizer.* key copied
// from `vocab_gguf` (e.g. ggml-vocab-phi-3.gguf), norms F32 = 1, every matrix (token_embd and
// output included) random (uniform in ±0.05, seeded per tensor) quantized with our quantizer
// to `type` (F16, Q8_0 or Q4_K; all matrices the same type, like llama-quantize --pure).
void write_bench_model(const std::string& path, const BenchModelShape& shape, DType type,
                       const std::string& vocab_gguf, uint64_t seed, ThreadPool& pool);

// ---------------------------------------------------------------------------------------------
// Measurements

struct BenchRep {
    double wall = 0;  // seconds
    double cpu = 0;   // process CPU seconds (all threads)
};

struct BenchTest {
    std::string name;      // "pp512", "tg128", "img", "ttft-image", "ttft-image-reuse", "vqgan"
    int64_t n_tokens = 0;  // > 0: reported as tokens/s; 0: reported as ms
    std::vector<BenchRep> reps;
    std::string note;      // what exactly was timed

    // Per-repetition values: tokens/s or ms, from wall time or (cpu_clock) from CPU time / threads.
    std::vector<double> values(bool cpu_clock, int threads) const;
    const char* unit() const { return n_tokens > 0 ? "t/s" : "ms"; }
};

// mean and sample standard deviation (0 for one value)
void mean_stddev(const std::vector<double>& v, double* mean, double* stddev);

struct BenchEnv {
    std::string command;
    std::string model;        // file (or "random ...")
    std::string model_type;   // weight type of the matrices ("Q4_K", "mixed: ...")
    uint64_t model_bytes = 0; // all tensor bytes of the file
    uint64_t weight_bytes_per_token = 0;  // bytes a decode step reads: every matrix but token_embd
    int64_t n_params = 0;
    std::string shape;        // hparams line
    int threads = 0;
    std::string kernels, cpu, cpu_flags;
    double load_start = 0, load_end = 0;  // 1-minute load average before and after
    double peak_rss_mib = 0;
    double read_gbps = 0;     // measured streaming read bandwidth (0: not measured)
    bool cpu_clock = false;
    int64_t n_ctx = 0;
    std::string kv_type;
};

struct DecoderBenchOptions {
    int64_t n_prompt = 512;
    int64_t n_gen = 128;
    int reps = 5;
    int64_t n_ctx = 0;        // KV capacity; 0: what the tests need
    DType kv_type = DType::F16;
    uint32_t seed = 1234;
};

// llama-bench's pp and tg on one decoder.
BenchTest bench_prompt(const Decoder& model, const DecoderBenchOptions& o, ThreadPool& pool);
BenchTest bench_generate(const Decoder& model, const DecoderBenchOptions& o, ThreadPool& pool);
// First question and follow-up about the same image (see the top of this file).
std::vector<BenchTest> bench_ttft_image(std::shared_ptr<const Decoder> model, const DecoderBenchOptions& o,
                                        ThreadPool& pool);
// One image through a random-weight ViT-L/14-336 (weights: F16, F32 or BF16).
BenchTest bench_vision(int reps, DType weights, ThreadPool& pool);
// One full-size VQGAN decode with random weights (conv weights: F16, F32 or BF16).
BenchTest bench_vqgan(int reps, DType weights, ThreadPool& pool);

double peak_rss_mib();
double load_average_1min();

// Reports. The JSON has the same shape as tools/bench/llamacpp_bench.py's, so that
// tools/bench/compare.py reads both.
std::string format_bench_markdown(const BenchEnv& env, const std::vector<BenchTest>& tests);
std::string format_bench_json(const BenchEnv& env, const std::vector<BenchTest>& tests);

}  // namespace hg
