#include "km/yaml/parse.h"

#include <gtest/gtest.h>

#include "km/yaml/emit.h"

namespace km::yaml {
namespace {

Node ok(std::string_view text, const Limits& limits = {}) {
  auto r = parse(text, "t.yaml", limits);
  EXPECT_TRUE(r) << (r ? "" : r.error().to_string());
  return r ? std::move(r).value() : Node{};
}

ParseError bad(std::string_view text, const Limits& limits = {}) {
  auto r = parse(text, "t.yaml", limits);
  EXPECT_FALSE(r) << "parsed unexpectedly: " << text.substr(0, 80);
  return r ? ParseError{} : std::move(r).error();
}

TEST(Parse, MarksAreOneBasedLineAndColumn) {
  Node n = ok("a: 1\nspec:\n  lifecycle:\n    ttl: 8h\n");
  const Node* ttl = at_path(n, "spec.lifecycle.ttl");
  ASSERT_NE(ttl, nullptr);
  EXPECT_EQ(ttl->value, "8h");
  EXPECT_EQ(ttl->mark.line, 4);
  EXPECT_EQ(ttl->mark.col, 10);
  EXPECT_EQ(ttl->mark.file_name(), "t.yaml");
  const Entry* e = n.find("spec")->find("lifecycle")->find_entry("ttl");
  EXPECT_EQ(e->key_mark.line, 4);
  EXPECT_EQ(e->key_mark.col, 5);
}

TEST(Parse, CoreSchemaTyping) {
  Node n = ok("b: true\nq: 'true'\ni: 42\nf: 0.5\ns: 8h\nz: ~\ne:\noff: off\nstr: !!str 12\n");
  EXPECT_EQ(n.find("b")->scalar_type(), ScalarType::kBool);
  EXPECT_EQ(n.find("q")->scalar_type(), ScalarType::kString);
  EXPECT_EQ(n.find("i")->as_int().value(), 42);
  EXPECT_DOUBLE_EQ(n.find("f")->as_number().value(), 0.5);
  EXPECT_EQ(n.find("s")->scalar_type(), ScalarType::kString);
  EXPECT_TRUE(n.find("z")->is_null());
  EXPECT_TRUE(n.find("e")->is_null());
  // YAML 1.2: `off` is a string, not a boolean.
  EXPECT_EQ(n.find("off")->scalar_type(), ScalarType::kString);
  EXPECT_EQ(n.find("str")->scalar_type(), ScalarType::kString);
  EXPECT_FALSE(n.find("str")->as_int());
}

TEST(Parse, IntOverflowIsNotAnInt) {
  Node n = ok("i: 99999999999999999999999\n");
  EXPECT_FALSE(n.find("i")->as_int());
}

TEST(Parse, DuplicateKeyIsAnErrorNamingTheFirst) {
  ParseError e = bad("a: 1\nb: 2\na: 3\n");
  EXPECT_EQ(e.mark.line, 3);
  EXPECT_NE(e.message.find("duplicate key \"a\" (first at line 1)"), std::string::npos);
}

TEST(Parse, AliasesAndMergeKeys) {
  Node n = ok("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\nl: [*b, *b]\n");
  const Node* c = n.find("c");
  EXPECT_EQ(c->find("x")->value, "1");
  EXPECT_EQ(c->find("y")->value, "3");  // explicit key wins over merged
  EXPECT_EQ(c->find("<<"), nullptr);
  EXPECT_EQ(n.find("l")->items.size(), 2u);
}

TEST(Parse, AliasBombFailsFast) {
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  std::string prev = "a";
  for (char c = 'b'; c <= 'j'; ++c) {
    bomb += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) bomb += (i ? ", *" : "*") + prev;
    bomb += "]\n";
    prev = std::string(1, c);
  }
  ParseError e = bad(bomb);
  EXPECT_NE(e.message.find("alias bomb"), std::string::npos);
}

TEST(Parse, DeepNestingIsRefused) {
  std::string deep(100000, '[');
  ParseError e = bad(deep);
  EXPECT_NE(e.message.find("deeper than 64"), std::string::npos);
  std::string ok_depth;
  for (int i = 0; i < 60; ++i) ok_depth += "[";
  for (int i = 0; i < 60; ++i) ok_depth += "]";
  ok(ok_depth);
}

TEST(Parse, SizeLimits) {
  Limits l;
  l.max_scalar_bytes = 10;
  EXPECT_NE(bad("a: " + std::string(11, 'x'), l).message.find("exceeds"), std::string::npos);
  l = Limits{};
  l.max_input_bytes = 8;
  EXPECT_NE(bad("a: 123456789", l).message.find("limit"), std::string::npos);
}

TEST(Parse, RejectsWhatLibyamlRejectsWithLocation) {
  ParseError e = bad("a: [1, 2\nb: 3\n");
  EXPECT_GT(e.mark.line, 0);
  bad(std::string("a: \xff\xfe\n"));
  bad(std::string("a: b\0c\n", 7));
  bad("a: 1\n---\nb: 2\n");
  bad("? [a]\n: 1\n");
  bad("a: !custom 1\n");
  bad("a: *nope\n");
  bad("a: &x [*x]\n");
}

TEST(Parse, EmptyInputIsNull) {
  EXPECT_TRUE(ok("").is_null());
  EXPECT_TRUE(ok("# only a comment\n").is_null());
}

TEST(Emit, RoundTripKeepsTypesAndText) {
  const char* src =
      "apiVersion: klankermaker.ai/v1alpha2\n"
      "spec:\n"
      "  ttl: \"0\"\n"
      "  n: 0\n"
      "  b: true\n"
      "  s: 'true'\n"
      "  colon: \"a: b\"\n"
      "  multi: |\n    line1\n    line2\n"
      "  empty: []\n"
      "  m: {}\n"
      "  list:\n  - a\n  - {x: 1}\n"
      "  \"true\": key-that-looks-like-bool\n"
      "  nul: ~\n";
  Node a = ok(src);
  auto text = emit(a);
  ASSERT_TRUE(text) << text.error().to_string();
  Node b = ok(*text);
  EXPECT_TRUE(deep_equal(a, b)) << *text;
  EXPECT_EQ(b.find("spec")->find("ttl")->scalar_type(), ScalarType::kString);
  EXPECT_EQ(b.find("spec")->find("n")->scalar_type(), ScalarType::kInt);
  EXPECT_EQ(b.find("spec")->find("multi")->value, "line1\nline2\n");
}

}  // namespace
}  // namespace km::yaml

namespace km::yaml {
namespace {

TEST(ParseLimits, AliasesOfBigScalarsCountBytesNotNodes) {
  std::string doc = "k: &a \"" + std::string(900000, 'x') + "\"\nl:\n";
  for (int i = 0; i < 40; ++i) doc += "- *a\n";
  auto r = parse(doc, "t.yaml");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("bytes of text after expanding aliases"), std::string::npos) << r.error().message;
}

TEST(ParseLimits, NestedAnchorsCountTheirRetainedCopies) {
  // 60 nested anchored lists around 150000 items: each anchor keeps a copy of everything inside.
  std::string doc = "x: ";
  for (int i = 0; i < 60; ++i) doc += "&a" + std::to_string(i) + " [";
  for (int i = 0; i < 150000; ++i) doc += i ? ",1" : "1";
  for (int i = 0; i < 60; ++i) doc += "]";
  auto r = parse(doc, "t.yaml");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("alias bomb"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace km::yaml
