// core/base64: the test vectors of RFC 4648 §10 both ways, and the strict refusals.
#include <gtest/gtest.h>

#include "core/base64.h"

TEST(Base64, Rfc4648VectorsBothWays) {
    const std::pair<const char*, const char*> v[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                     {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                     {"foobar", "Zm9vYmFy"}};
    for (const auto& [plain, coded] : v) {
        const std::string p = plain;
        EXPECT_EQ(hg::base64_encode({reinterpret_cast<const uint8_t*>(p.data()), p.size()}), coded);
        std::string out;
        ASSERT_TRUE(hg::base64_decode(coded, out)) << coded;
        EXPECT_EQ(out, p);
    }
}

TEST(Base64, RefusesWithTheReason) {
    std::string out, why;
    EXPECT_FALSE(hg::base64_decode("Zm9", out, &why));
    EXPECT_EQ(why, "length 3 is not a multiple of 4");
    EXPECT_FALSE(hg::base64_decode("Zm=v", out, &why));  // padding inside
    EXPECT_EQ(why, "bad character at offset 2");
    EXPECT_FALSE(hg::base64_decode("Zm 9", out, &why));
    EXPECT_TRUE(out.empty());
}
