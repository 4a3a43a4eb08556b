// Checks of single string values in a profile. Each returns an error message (to follow
// "<path>: ") or nullopt when the value is acceptable. Pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace km::profile::checks {

using Msg = std::optional<std::string>;

Msg api_version(std::string_view v);
Msg kind(std::string_view v);
Msg profile_name(std::string_view v);
Msg id_prefix(std::string_view v);
Msg extends_name(std::string_view v);
Msg label_key(std::string_view v);
Msg dns_suffix(std::string_view v);
Msg host_rule(std::string_view v);
Msg cidr_rule(std::string_view v);
Msg byte_size(std::string_view v);
Msg env_name(std::string_view v);
Msg abs_path(std::string_view v);
Msg config_file_path(std::string_view v);
Msg sandbox_path(std::string_view v);       // absolute or ~/..., no globs
Msg sandbox_path_glob(std::string_view v);  // absolute or ~/..., globs allowed
Msg user_name(std::string_view v);
Msg github_repo(std::string_view v);
Msg git_ref_glob(std::string_view v);
Msg email_alias(std::string_view v);
Msg email_sender(std::string_view v);
Msg email_address(std::string_view v);
Msg aws_region(std::string_view v);
Msg aws_az(std::string_view v);
Msg instance_type(std::string_view v);
Msg ami(std::string_view v);
Msg snapshot_id(std::string_view v);
Msg ebs_device(std::string_view v);
Msg slack_channel_id(std::string_view v);
Msg slack_user_id(std::string_view v);
Msg geometry(std::string_view v);
Msg sops_file(std::string_view v);
Msg url(std::string_view v);
Msg image(std::string_view v);
Msg non_blank(std::string_view v);

// Parses a size such as "512Mi", "2Gi", "1G", "1048576" into bytes.
std::optional<unsigned long long> parse_byte_size(std::string_view v);

}  // namespace km::profile::checks
