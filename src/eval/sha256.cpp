// See sha256.h.
#include "eval/sha256.h"

#include <fstream>
#include <vector>

#include "core/error.h"
#include "core/sha256.h"

namespace hg::eval {

std::string sha256_hex(std::span<const uint8_t> bytes) {
    const Sha256Digest d = hg::sha256(bytes);
    return hg::to_hex(d);
}

std::string sha256_file(const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    HG_CHECK(f.good(), "%s: cannot open for hashing", path.string().c_str());
    Sha256 h;
    std::vector<uint8_t> chunk(size_t(1) << 20);
    while (f) {
        f.read(reinterpret_cast<char*>(chunk.data()), (std::streamsize)chunk.size());
        if (const auto got = (size_t)f.gcount()) h.update(chunk.data(), got);
    }
    HG_CHECK(f.eof(), "%s: read error while hashing", path.string().c_str());
    const Sha256Digest d = h.finish();
    return hg::to_hex(d);
}

}  // namespace hg::eval
