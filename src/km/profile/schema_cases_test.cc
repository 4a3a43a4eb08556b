// Cases generated from the schema itself: every field, at its exact path and position.
//  - a wrong-typed value gives exactly one error, at that path and at the value's line:col;
//  - a valid value (every enum member, a sample per checked string) gives no error there;
//  - an unknown key at every object level is reported at the key, with a suggestion;
//  - every required key, when removed, is reported as missing.
#include <gtest/gtest.h>

#include <functional>
#include <map>

#include "km/base/strings.h"
#include "km/profile/checks.h"
#include "km/profile/schema.h"
#include "km/profile/testing.h"
#include "km/yaml/emit.h"
#include "km/yaml/parse.h"

namespace km::profile {
namespace {

using schema::Type;

struct Case {
  std::string name;  // gtest-safe
  std::string path;  // dotted path of the field
  yaml::Node value;  // value to place there
  bool expect_error;
  std::string expect_message;  // substring, when expect_error
};

std::string gtest_name(std::string s) {
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

yaml::Node base_tree() {
  auto r = yaml::parse(testing::kMinimal, "t.yaml");
  return std::move(r).value();
}

yaml::Node scalar(const char* v) { return yaml::Node::scalar(v); }

// Some fields are only valid in a context (ec2-only runtime settings, Slack sub-features).
void add_context(yaml::Node& root, const std::string& path) {
  auto starts = [&](const char* prefix) { return path.rfind(prefix, 0) == 0; };
  yaml::Node* spec = root.find("spec");
  if (starts("spec.runtime") && !starts("spec.runtime.resources") && !starts("spec.runtime.image")) {
    yaml::Node rt = yaml::Node::mapping();
    rt.set("substrate", scalar("ec2"));
    rt.set("instanceType", scalar("t3.medium"));
    rt.set("region", scalar("us-east-1"));
    spec->set("runtime", rt);
  }
  if (starts("spec.notification.slack.")) {
    yaml::Node sl = yaml::Node::mapping();
    sl.set("enabled", scalar("true"));
    if (!starts("spec.notification.slack.channelOverride")) sl.set("perSandbox", scalar("true"));
    yaml::Node n = yaml::Node::mapping();
    n.set("slack", sl);
    spec->set("notification", n);
  }
}

// Valid samples that depend on the field rather than on its type.
std::optional<yaml::Node> special_valid(const std::string& path) {
  if (path == "spec.filesystem.unprotect") {
    yaml::Node l = yaml::Node::sequence();
    l.items.push_back(scalar("~/.bashrc"));
    return l;
  }
  return std::nullopt;
}

yaml::Node valid_value(const schema::Node& s);

// Sets `value` at a dotted path (no list indices). Missing objects on the way are created with
// their required keys filled, so the only finding is about `value`.
void set_path(yaml::Node& root, const std::string& path, yaml::Node value) {
  yaml::Node* cur = &root;
  const schema::Node* s = &schema::profile_schema();
  size_t start = 0;
  for (;;) {
    size_t dot = path.find('.', start);
    std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const schema::Field* f = s ? s->field(key) : nullptr;
    s = f ? f->node.get() : nullptr;
    if (dot == std::string::npos) {
      cur->set(key, std::move(value));
      return;
    }
    yaml::Node* next = cur->find(key);
    if (!next || !next->is_mapping()) {
      cur->set(key, s ? valid_value(*s) : yaml::Node::mapping());
      next = cur->find(key);
    }
    cur = next;
    start = dot + 1;
  }
}

const std::map<schema::StringCheck, std::string>& samples() {
  static const std::map<schema::StringCheck, std::string> m = {
      {checks::api_version, "example.org/v1alpha2"},
      {checks::kind, "SandboxProfile"},
      {checks::profile_name, "my-profile"},
      {checks::id_prefix, "abc"},
      {checks::extends_name, "open-dev"},
      {checks::dns_suffix, ".example.com"},
      {checks::host_rule, "api.example.com:443"},
      {checks::cidr_rule, "192.0.2.0/24:443"},
      {checks::byte_size, "512Mi"},
      {checks::abs_path, "/opt/tool"},
      {checks::sandbox_path, "~/.cache"},
      {checks::sandbox_path_glob, "/workspace/**/*.log"},
      {checks::user_name, "agent"},
      {checks::github_repo, "my-org/my-repo"},
      {checks::git_ref_glob, "feature/*"},
      {checks::email_alias, "team.bot"},
      {checks::email_sender, "self"},
      {checks::email_address, "ops@example.org"},
      {checks::aws_region, "us-east-1"},
      {checks::aws_az, "us-east-1a"},
      {checks::instance_type, "t3.medium"},
      {checks::ami, "ubuntu-24.04"},
      {checks::snapshot_id, "snap-0123456789abcdef0"},
      {checks::ebs_device, "/dev/sdh"},
      {checks::slack_channel_id, "C0123ABCD"},
      {checks::slack_user_id, "U012ABCDE"},
      {checks::geometry, "1920x1080"},
      {checks::sops_file, "secrets/x.enc.yaml"},
      {checks::url, "http://localhost:8001/v1"},
      {checks::image, "host"},
  };
  return m;
}

yaml::Node valid_value(const schema::Node& s) {
  switch (s.type) {
    case Type::kObject: {
      yaml::Node m = yaml::Node::mapping();
      for (const auto& f : s.fields) {
        if (f.required) m.set(f.name, valid_value(*f.node));
      }
      return m;
    }
    case Type::kBool: return yaml::Node::scalar("true");
    case Type::kInt: return yaml::Node::scalar(std::to_string(static_cast<long long>(s.min.value_or(1) + (s.exclusive_min ? 1 : 0))));
    case Type::kNumber: return yaml::Node::scalar(s.max && *s.max <= 1 ? "0.5" : "1");
    case Type::kDuration: return yaml::Node::scalar(s.allow_zero ? "0" : "1h");
    case Type::kEnum: return yaml::Node::scalar(s.values.front());
    case Type::kString: {
      auto it = samples().find(s.check);
      if (s.check && it == samples().end()) ADD_FAILURE() << "no sample for a checked string";
      return yaml::Node::scalar(it == samples().end() ? "x" : it->second, yaml::Style::kDoubleQuoted);
    }
    case Type::kList: {
      yaml::Node l = yaml::Node::sequence();
      if (s.items->type != Type::kObject) l.items.push_back(valid_value(*s.items));
      return l;
    }
    case Type::kMap: {
      yaml::Node m = yaml::Node::mapping();
      if (!s.key_check) m.set("k", valid_value(*s.items));
      return m;
    }
    case Type::kStringOrList: return valid_value(*s.items);
    default: return yaml::Node::mapping();
  }
}

// A value of the wrong type for `s`, and the message expected.
std::pair<yaml::Node, std::string> wrong_value(const schema::Node& s) {
  switch (s.type) {
    case Type::kObject:
    case Type::kMap: return {yaml::Node::scalar("x"), "expected a mapping"};
    case Type::kList: return {yaml::Node::scalar("x"), "expected a list"};
    case Type::kString: {
      yaml::Node m = yaml::Node::mapping();
      m.set("a", yaml::Node::scalar("b"));
      return {m, "expected a string"};
    }
    case Type::kBool: return {yaml::Node::scalar("maybe"), "expected a boolean"};
    case Type::kInt: return {yaml::Node::scalar("many"), "expected an integer"};
    case Type::kNumber: return {yaml::Node::scalar("lots"), "expected a number"};
    case Type::kDuration: return {yaml::Node::scalar("8 hours"), "unit"};
    case Type::kEnum: return {yaml::Node::scalar("zzzzzz"), "is not one of"};
    case Type::kStringOrList: {
      yaml::Node m = yaml::Node::mapping();
      m.set("a", yaml::Node::scalar("b"));
      return {m, "expected a string or a list"};
    }
    case Type::kAny: break;
  }
  return {yaml::Node::null(), ""};
}

void collect(const schema::Node& s, const std::string& path, std::vector<Case>& out) {
  if (s.type != Type::kObject) return;
  for (const schema::Field& f : s.fields) {
    std::string p = path.empty() ? f.name : path + "." + f.name;
    const schema::Node& n = *f.node;
    if (p == "extends") continue;  // resolution handles extends; see inherit_test.cc
    if (n.type != Type::kAny) {
      auto [bad, msg] = wrong_value(n);
      out.push_back(Case{gtest_name("wrong_" + p), p, bad, true, msg});
      if (n.type != Type::kObject) {
        out.push_back(Case{gtest_name("valid_" + p), p, special_valid(p).value_or(valid_value(n)), false, ""});
      }
    }
    if (n.type == Type::kEnum) {
      for (size_t i = 1; i < n.values.size(); ++i) {
        out.push_back(Case{gtest_name("enum_" + p + "_" + n.values[i]), p, yaml::Node::scalar(n.values[i]), false, ""});
      }
    }
    if (n.type == Type::kObject) {
      // The value is a bare key; the test merges it into whatever the context has there.
      out.push_back(Case{gtest_name("unknown_key_in_" + p), p + ".bogusKey", scalar("1"), true, "unknown key \"bogusKey\""});
      out.push_back(Case{gtest_name("valid_" + p), p, valid_value(n), false, ""});
      collect(n, p, out);
    }
    if (n.type == Type::kList && n.items->type == Type::kObject) {
      // Object items: check one wrong-typed list element.
      yaml::Node l = yaml::Node::sequence();
      l.items.push_back(yaml::Node::scalar("x"));
      out.push_back(Case{gtest_name("wrong_item_" + p), p + "[0]", l, true, "expected a mapping"});
    }
  }
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  collect(schema::profile_schema(), "", out);
  return out;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.path; }

class SchemaCase : public ::testing::TestWithParam<Case> {};

TEST_P(SchemaCase, ReportsExactlyAtThePath) {
  const Case& c = GetParam();
  yaml::Node root = base_tree();
  add_context(root, c.path);
  std::string set_at = c.path;
  bool unknown_key = c.path.size() > 9 && c.path.substr(c.path.size() - 9) == ".bogusKey";
  if (c.path.size() > 3 && c.path.substr(c.path.size() - 3) == "[0]") set_at = c.path.substr(0, c.path.size() - 3);
  const yaml::Node* existing = yaml::at_path(root, unknown_key ? set_at.substr(0, set_at.size() - 9) : set_at);
  if (unknown_key || (existing && existing->is_mapping() && c.value.is_mapping())) {
    // Keep what the context has there (required keys) and add to it.
    set_at = unknown_key ? set_at.substr(0, set_at.size() - 9) : set_at;
    yaml::Node merged = existing && existing->is_mapping() ? *existing : yaml::Node::mapping();
    if (unknown_key) {
      if (!existing) {
        // Fill the object's required keys so the only error is the unknown key.
        const schema::Node* s = &schema::profile_schema();
        for (const std::string& part : split(set_at, '.')) s = s->field(part)->node.get();
        merged = valid_value(*s);
      }
      merged.set("bogusKey", c.value);
    } else {
      for (const auto& e : c.value.entries) {
        if (!merged.find(e.key)) merged.set(e.key, e.value);
      }
    }
    set_path(root, set_at, merged);
  } else {
    set_path(root, set_at, c.value);
  }
  auto text = yaml::emit(root);
  ASSERT_TRUE(text);
  auto reparsed = yaml::parse(*text, "t.yaml");
  ASSERT_TRUE(reparsed) << reparsed.error().to_string() << "\n" << *text;
  Findings f = testing::check(*text);

  // Errors at (or under) this path; nothing else in the document may break.
  std::vector<const Finding*> here, elsewhere;
  for (const auto& i : f.items()) {
    if (i.severity != Severity::kError) continue;
    (i.path == c.path ? here : elsewhere).push_back(&i);
  }
  if (!c.expect_error) {
    EXPECT_TRUE(here.empty() && elsewhere.empty()) << testing::dump(f) << *text;
    return;
  }
  ASSERT_EQ(here.size(), 1u) << testing::dump(f) << *text;
  EXPECT_TRUE(elsewhere.empty()) << testing::dump(f) << *text;
  EXPECT_NE(here[0]->message.find(c.expect_message), std::string::npos) << here[0]->message;
  // Position: the key for unknown keys, the value otherwise.
  const yaml::Node* at = yaml::at_path(*reparsed, c.path);
  if (unknown_key) {
    const yaml::Entry* e = yaml::at_path(*reparsed, set_at)->find_entry("bogusKey");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(here[0]->mark.line, e->key_mark.line);
    EXPECT_EQ(here[0]->mark.col, e->key_mark.col);
  } else {
    ASSERT_NE(at, nullptr);
    EXPECT_EQ(here[0]->mark.line, at->mark.line) << *text;
    EXPECT_EQ(here[0]->mark.col, at->mark.col) << *text;
  }
}

INSTANTIATE_TEST_SUITE_P(AllFields, SchemaCase, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& p) { return p.param.name; });

// Removing each required key (where its parent exists in the minimal profile) is reported.
TEST(SchemaRequired, EveryRequiredKeyIsReportedWhenMissing) {
  std::vector<std::string> required = {"apiVersion", "kind", "metadata", "spec", "metadata.name",
                                       "spec.lifecycle", "spec.network", "spec.lifecycle.ttl",
                                       "spec.lifecycle.idleTimeout", "spec.network.egress",
                                       "spec.network.egress.allowedDNSSuffixes",
                                       "spec.network.egress.allowedHosts"};
  size_t checked = 0;
  for (const std::string& p : required) {
    yaml::Node root = base_tree();
    size_t dot = p.rfind('.');
    yaml::Node* parent = dot == std::string::npos ? &root : const_cast<yaml::Node*>(yaml::at_path(root, p.substr(0, dot)));
    ASSERT_NE(parent, nullptr) << p;
    ASSERT_TRUE(parent->erase(dot == std::string::npos ? p : p.substr(dot + 1))) << p;
    auto text = yaml::emit(root);
    ASSERT_TRUE(text);
    Findings f = testing::check(*text);
    const Finding* e = testing::find(f, p);
    ASSERT_NE(e, nullptr) << p << "\n" << testing::dump(f);
    EXPECT_EQ(e->message, "required key is missing");
    ++checked;
  }
  // Guard: the list above covers every required field reachable from the minimal profile.
  size_t schema_required = 0;
  std::function<void(const schema::Node&, bool)> walk = [&](const schema::Node& s, bool reachable) {
    if (s.type != Type::kObject) return;
    for (const auto& f : s.fields) {
      if (f.required && reachable) ++schema_required;
      walk(*f.node, reachable && f.required);
    }
  };
  walk(schema::profile_schema(), true);
  EXPECT_EQ(checked, schema_required);
}

TEST(SchemaCases, ThereAreHundreds) { EXPECT_GE(all_cases().size(), 300u); }

}  // namespace
}  // namespace km::profile
