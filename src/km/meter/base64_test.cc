#include "km/meter/base64.h"

#include <gtest/gtest.h>

#include "km/meter/test_payloads.h"

namespace km::meter {
namespace {

TEST(Base64, Rfc4648Vectors) {
  std::string out;
  const std::pair<const char*, const char*> vectors[] = {{"", ""},         {"Zg==", "f"},       {"Zm8=", "fo"},
                                                         {"Zm9v", "foo"},  {"Zm9vYg==", "foob"}, {"Zm9vYmE=", "fooba"},
                                                         {"Zm9vYmFy", "foobar"}};
  for (const auto& [enc, dec] : vectors) {
    ASSERT_TRUE(base64_decode(enc, out)) << enc;
    EXPECT_EQ(out, dec);
    EXPECT_EQ(testing::base64_encode(dec), enc);
  }
}

TEST(Base64, PaddingMayBeLeftOut) {
  std::string out;
  ASSERT_TRUE(base64_decode("Zm9vYg", out));
  EXPECT_EQ(out, "foob");
}

TEST(Base64, Malformed) {
  std::string out;
  for (const char* bad : {"Z", "Zm9vY", "Zm=9", "Zm9v\n", "Zm9v====", "Zm9vYg=", "Zh==", "Zm+/Yg==!", "=", "A==="}) {
    EXPECT_FALSE(base64_decode(bad, out)) << bad;
  }
}

TEST(Base64, BinaryRoundTrip) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  std::string out;
  ASSERT_TRUE(base64_decode(testing::base64_encode(all), out));
  EXPECT_EQ(out, all);
}

}  // namespace
}  // namespace km::meter
