// SHA-256 against the FIPS 180-4 / NIST CSRC example vectors ("abc", the two-block 448-bit
// message, the 896-bit message, one million 'a') and the empty message, in one call and fed in
// awkward pieces (1, 3, 63, 64, 65 bytes) so the block boundary handling is covered.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "core/error.h"
#include "core/sha256.h"
#include "test_util.h"

namespace {

std::string hex(std::string_view s) { return hg::to_hex(hg::sha256(s)); }

std::string hex_in_pieces(const std::string& s, size_t piece) {
    hg::Sha256 h;
    for (size_t i = 0; i < s.size(); i += piece) h.update(std::string_view(s).substr(i, piece));
    return hg::to_hex(h.finish());
}

struct Vector {
    std::string msg, digest;
};

std::vector<Vector> vectors() {
    return {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
         "mnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
        {std::string(1000000, 'a'), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
    };
}

}  // namespace

TEST(Sha256, Fips180Vectors) {
    for (const auto& v : vectors()) EXPECT_EQ(hex(v.msg), v.digest) << "length " << v.msg.size();
}

TEST(Sha256, StreamingInPiecesMatchesOneCall) {
    for (const auto& v : vectors()) {
        if (v.msg.empty()) continue;
        for (size_t piece : {1, 3, 55, 56, 63, 64, 65, 1000})
            EXPECT_EQ(hex_in_pieces(v.msg, piece), v.digest) << "length " << v.msg.size() << " piece " << piece;
    }
}

TEST(Sha256, PaddingBoundaryLengths) {
    // 55 bytes fit the padding in one block, 56..63 need a second one; all must differ from
    // their neighbours and be stable between the streaming and one-shot paths.
    std::string prev;
    for (size_t n = 50; n <= 70; ++n) {
        const std::string m(n, 'x');
        const std::string d = hex(m);
        EXPECT_EQ(d.size(), 64u);
        EXPECT_NE(d, prev);
        EXPECT_EQ(hex_in_pieces(m, 7), d);
        prev = d;
    }
}

TEST(Sha256, FileHashAndMissingFile) {
    // FIPS 180-4's "abc" example, read from a file in chunks
    const auto p = hgtest::scratch_dir() / "abc.txt";
    { std::ofstream f(p, std::ios::binary); f << "abc"; }
    EXPECT_EQ(hg::sha256_file(p), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_THROW(hg::sha256_file(hgtest::scratch_dir() / "none"), hg::Error);
}
