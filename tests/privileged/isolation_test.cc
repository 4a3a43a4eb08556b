// Real sandboxes, each isolation property checked from inside.
#include <fstream>

#include "fixture.h"

namespace km::testing {
namespace {

class Isolation : public SandboxTest {};

TEST_F(Isolation, SmokeRunsACommand) {
  std::string id;
  auto st = start(kProfile, &id);
  ASSERT_TRUE(st) << st.error().to_string();
  auto r = sh(id, "echo hello; id -u; exit 3");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->out, "hello\n1000\n") << r->err;
  EXPECT_EQ(r->status.code, 3);
}

}  // namespace
}  // namespace km::testing
