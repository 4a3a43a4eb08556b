#include "km/sandbox/spec.h"

#include <nlohmann/json.hpp>

namespace km::sandbox {

using Json = nlohmann::json;

std::string to_json(const Spec& s) {
  Json binds = Json::array();
  for (const FileBind& b : s.file_binds) binds.push_back(Json{{"source", b.source}, {"target", b.target}});
  Json j{{"id", s.id}, {"hostname", s.hostname}, {"user", s.user}, {"uid", s.uid}, {"gid", s.gid},
         {"home", s.home}, {"privileged", s.privileged}, {"root_dir", s.root_dir},
         {"lower_dir", s.lower_dir}, {"upper_dir", s.upper_dir}, {"work_dir", s.work_dir},
         {"workspace_dir", s.workspace_dir}, {"home_dir", s.home_dir}, {"masks", s.masks},
         {"writable", s.writable}, {"read_only", s.read_only}, {"deny_read", s.deny_read},
         {"protected", s.protected_paths}, {"unprotect", s.unprotect}, {"env", s.env}, {"working_dir", s.working_dir},
         {"shell", s.shell}, {"init_commands", s.init_commands}, {"config_files", s.config_files},
         {"trusted_ca", s.trusted_ca}, {"file_binds", std::move(binds)},
         {"net", {{"ifname", s.net.ifname}, {"address", s.net.address},
                  {"peer_address", s.net.peer_address}, {"prefix_len", s.net.prefix_len},
                  {"egress", s.net.egress}, {"proxy_port", s.net.proxy_port}, {"enforcement", s.net.enforcement}}}};
  return j.dump();
}

Result<Spec> spec_from_json(const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(ErrorCode::kInvalidArgument, "spec is not a JSON object");
  Spec s;
  try {
    s.id = j.at("id");
    s.hostname = j.at("hostname");
    s.user = j.at("user");
    s.uid = j.at("uid");
    s.gid = j.at("gid");
    s.home = j.at("home");
    s.privileged = j.at("privileged");
    s.root_dir = j.at("root_dir");
    s.lower_dir = j.at("lower_dir");
    s.upper_dir = j.at("upper_dir");
    s.work_dir = j.at("work_dir");
    s.workspace_dir = j.at("workspace_dir");
    s.home_dir = j.at("home_dir");
    s.masks = j.at("masks").get<std::vector<std::string>>();
    s.writable = j.at("writable").get<std::vector<std::string>>();
    s.read_only = j.at("read_only").get<std::vector<std::string>>();
    s.deny_read = j.at("deny_read").get<std::vector<std::string>>();
    s.protected_paths = j.at("protected").get<std::vector<std::string>>();
    s.unprotect = j.at("unprotect").get<std::vector<std::string>>();
    s.env = j.at("env").get<std::map<std::string, std::string>>();
    s.working_dir = j.at("working_dir");
    s.shell = j.at("shell");
    s.init_commands = j.at("init_commands").get<std::vector<std::string>>();
    s.config_files = j.at("config_files").get<std::map<std::string, std::string>>();
    s.trusted_ca = j.value("trusted_ca", std::string());
    if (j.contains("file_binds")) {
      for (const Json& b : j.at("file_binds")) s.file_binds.push_back(FileBind{b.at("source"), b.at("target")});
    }
    const Json& n = j.at("net");
    s.net.ifname = n.at("ifname");
    s.net.address = n.at("address");
    s.net.peer_address = n.at("peer_address");
    s.net.prefix_len = n.at("prefix_len");
    s.net.egress = n.value("egress", false);
    s.net.proxy_port = n.value("proxy_port", uint16_t{3128});
    s.net.enforcement = n.value("enforcement", std::string("proxy"));
  } catch (const Json::exception& e) {
    return fail(ErrorCode::kInvalidArgument, std::string("bad spec: ") + e.what());
  }
  return s;
}

}  // namespace km::sandbox
