#include "km/yaml/emit.h"

#include <gtest/gtest.h>

#include "km/yaml/parse.h"

namespace km::yaml {
namespace {

TEST(Emit, BuiltTreesAreReadable) {
  Node root = Node::mapping();
  root.set("name", Node::scalar("demo"));
  Node list = Node::sequence();
  list.items.push_back(Node::scalar("- not a list item"));
  list.items.push_back(Node::scalar("#not a comment"));
  list.items.push_back(Node::scalar("", Style::kDoubleQuoted));
  root.set("items", list);
  auto text = emit(root);
  ASSERT_TRUE(text);
  auto back = parse(*text, "x");
  ASSERT_TRUE(back) << back.error().to_string() << "\n" << *text;
  EXPECT_TRUE(deep_equal(root, *back)) << *text;
}

}  // namespace
}  // namespace km::yaml
