// healthgpt vqgan: the taming GumbelVQ image tokenizer (model/vqgan.h).
//   vqgan bench   time one full-size decode (and/or encode) with random weights; peak memory
//   vqgan decode  VQ indices -> PNG with converted weights (MODEL/vqgan.gguf)
//   vqgan encode  image -> VQ indices with converted weights
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "imaging/image.h"
#include "imaging/load.h"
#include "imaging/resample.h"
#include "model/vqgan.h"

namespace {

struct BenchOptions {
    std::string dtype = "f32";
    std::string part = "decoder";
    int runs = 1;
    int resolution = 256;
};

double peak_rss_mib() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // Linux: kilobytes
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_bench(const BenchOptions& o) {
    const auto type = hg::dtype_from_name(o.dtype);
    HG_CHECK(type && (*type == hg::DType::F32 || *type == hg::DType::F16 || *type == hg::DType::BF16),
             "--dtype must be f32, f16 or bf16, not '%s'", o.dtype.c_str());
    HG_CHECK(o.part == "decoder" || o.part == "encoder", "--part must be decoder or encoder, not '%s'",
             o.part.c_str());
    HG_CHECK(o.runs >= 1, "--runs must be at least 1");
    const bool enc = o.part == "encoder";

    hg::VqganConfig cfg;  // the released OpenImages f8 / 8192 GumbelVQ
    cfg.resolution = o.resolution;
    cfg.validate("--resolution");
    hg::TensorStore store;
    hg::vqgan_random_weights(cfg, *type, 42, store, enc);
    hg::Vqgan model = hg::Vqgan::load(store, "random weights");
    hg::ThreadPool& pool = hg::default_pool();

    std::printf("VQGAN %s, %s convolution weights (random), %s\n", o.part.c_str(), hg::dtype_name(*type),
                cfg.to_string().c_str());
    std::printf("kernels %s, %d threads\n", hg::kernels().name, pool.size());

    const int64_t R = cfg.resolution, n = cfg.n_tokens();
    std::vector<int32_t> idx(n);
    for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>((i * 2654435761u) % cfg.n_embed);
    std::vector<float> image(3 * R * R);
    for (int64_t i = 0; i < 3 * R * R; ++i) image[i] = static_cast<float>((i * 37) % 255) / 127.5f - 1.0f;

    std::vector<double> times;
    for (int r = 0; r < o.runs; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        if (enc) {
            model.encode(image.data(), idx, pool);
        } else {
            model.decode(idx, image.data(), pool);
        }
        times.push_back(seconds_since(t0));
    }
    const double best = *std::min_element(times.begin(), times.end());
    std::printf("\n| part | weights | weight MiB | scratch MiB | first run s | best of %d s | peak RSS MiB |\n", o.runs);
    std::printf("|---|---|---:|---:|---:|---:|---:|\n");
    std::printf("| %s | %s | %.1f | %.1f | %.2f | %.2f | %.1f |\n", o.part.c_str(), hg::dtype_name(*type),
                store.nbytes() / 1048576.0, model.scratch_bytes() / 1048576.0, times[0], best, peak_rss_mib());
    return 0;
}

struct RunOptions {
    std::string model, indices, image, out;
};

// MODEL/vqgan.gguf, or a model folder holding one.
std::unique_ptr<hg::GGUFFile> open_vqgan(const std::string& model) {
    std::filesystem::path p = model;
    if (std::filesystem::is_directory(p)) p /= "vqgan.gguf";
    HG_CHECK(std::filesystem::exists(p), "%s: no such file (convert the VQGAN with `healthgpt convert --vqgan last.ckpt -o MODEL`)",
             p.c_str());
    return hg::GGUFFile::open(p);
}

int run_decode(const RunOptions& o) {
    auto f = open_vqgan(o.model);
    hg::Vqgan model = hg::Vqgan::load(*f, f->path().string());
    const hg::VqganConfig& cfg = model.config();
    std::ifstream in(o.indices, std::ios::binary);
    HG_CHECK(in.good(), "%s: cannot open", o.indices.c_str());
    std::string text((std::istreambuf_iterator<char>(in)), {});
    HG_CHECK(text.size() <= (size_t(16) << 20), "%s: %zu bytes; an index list is expected", o.indices.c_str(), text.size());
    const std::vector<int32_t> idx = hg::parse_vq_indices(text, cfg.n_tokens(), cfg.n_embed, o.indices);
    const int64_t R = cfg.resolution;
    std::vector<float> x(size_t(cfg.out_ch * R * R));
    const auto t0 = std::chrono::steady_clock::now();
    model.decode(idx, x.data(), hg::default_pool());
    const double secs = seconds_since(t0);
    HG_CHECK(cfg.out_ch == 3, "%s: %d output channels; a PNG needs 3", f->path().c_str(), cfg.out_ch);
    hg::imaging::RgbImage img((int)R, (int)R);
    hg::vqgan_to_pixels(x.data(), 3, R, img.rgb.data());
    hg::imaging::write_png(o.out, img);
    std::printf("decoded %lld indices -> %lldx%lld in %.2f s -> %s\n", (long long)cfg.n_tokens(), (long long)R, (long long)R,
                secs, o.out.c_str());
    return 0;
}

int run_encode(const RunOptions& o) {
    auto f = open_vqgan(o.model);
    hg::Vqgan model = hg::Vqgan::load(*f, f->path().string());
    const hg::VqganConfig& cfg = model.config();
    HG_CHECK(model.has_encoder(), "%s: this file has no encoder (a decoder-only conversion)", f->path().c_str());
    HG_CHECK(cfg.in_channels == 3, "%s: %d input channels; RGB images have 3", f->path().c_str(), cfg.in_channels);
    const std::vector<hg::imaging::RgbImage> imgs = hg::imaging::load_medical_image(o.image);
    HG_CHECK(imgs.size() == 1, "%s: %zu images; encode takes one (pick a slice with `healthgpt view`)", o.image.c_str(),
             imgs.size());
    const int R = cfg.resolution;
    // The reference: PIL resize to resolution x resolution with LANCZOS (skipped when already that size).
    const hg::imaging::RgbImage img = imgs[0].width == R && imgs[0].height == R
                                 ? imgs[0]
                                 : hg::imaging::resize_pil(imgs[0], R, R, hg::imaging::ResampleFilter::Lanczos);
    std::vector<float> x(size_t(3) * R * R);
    hg::vqgan_from_pixels(img.rgb.data(), 3, R, x.data());
    std::vector<int32_t> idx(cfg.n_tokens());
    const auto t0 = std::chrono::steady_clock::now();
    model.encode(x.data(), idx, hg::default_pool());
    const double secs = seconds_since(t0);
    const std::string text = hg::format_vq_indices(idx, cfg.latent_size());
    if (o.out.empty() || o.out == "-") {
        std::fwrite(text.data(), 1, text.size(), stdout);
    } else {
        std::ofstream out(o.out, std::ios::binary);
        out << text;
        HG_CHECK(out.good(), "%s: cannot write", o.out.c_str());
        std::printf("encoded %dx%d -> %lld indices (argmax codes) in %.2f s -> %s\n", R, R, (long long)cfg.n_tokens(), secs,
                    o.out.c_str());
    }
    return 0;
}

}  // namespace

HG_COMMAND(vqgan, "VQGAN image tokenizer (taming GumbelVQ f8/8192): decode, encode, benchmark") {
    app.require_subcommand(1);
    auto o = std::make_shared<BenchOptions>();
    CLI::App* bench = app.add_subcommand(
        "bench", "Time one full-size (256x256, 1,024 codes) decode or encode with random weights; peak memory");
    bench->add_option("--dtype", o->dtype, "convolution weight type: f32, f16, bf16 (default f32)");
    bench->add_option("--part", o->part, "decoder (1,024 indices -> image) or encoder (image -> indices)");
    bench->add_option("--runs", o->runs, "number of timed runs (default 1)");
    bench->add_option("--resolution", o->resolution, "image side (default 256, the released model's)");
    bench->footer("Peak RSS is the whole process's (weights + activations + code). Threads: HEALTHGPT_THREADS.\n"
                  "Run one dtype per process so each peak is its own.\n");
    auto r = std::make_shared<RunOptions>();
    CLI::App* dec = app.add_subcommand("decode", "VQ indices -> PNG (HealthGPT's idx2img.decode_to_img + custom_to_pil)");
    dec->add_option("-m,--model", r->model, "vqgan.gguf written by `healthgpt convert --vqgan`, or its model folder")->required();
    dec->add_option("indices", r->indices, "text file of n_tokens indices (1,024 for the released model), row-major, "
                                           "separated by spaces, commas or newlines; '#' comments")
        ->required();
    dec->add_option("-o,--output", r->out, "the PNG to write")->required();
    CLI::App* enc = app.add_subcommand("encode", "image -> VQ indices (idx2img.img2idx; the argmax code, without Gumbel noise)");
    enc->add_option("-m,--model", r->model, "vqgan.gguf with the encoder, or its model folder")->required();
    enc->add_option("image", r->image, "PNG/JPEG/... or DICOM; resized to the model's resolution with LANCZOS")->required();
    enc->add_option("-o,--output", r->out, "text file for the indices, one latent row per line (default: stdout)");
    return [=] {
        if (dec->parsed()) return run_decode(*r);
        if (enc->parsed()) return run_encode(*r);
        return run_bench(*o);
    };
}
