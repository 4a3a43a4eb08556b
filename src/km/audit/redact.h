// km::audit::Redactor: secrets are taken out of what km records (commands and argv, shell
// transcripts, DNS/HTTP decisions, agent telemetry) before anything is stored or shown
// (STYLE.md: secrets never reach a log, an error message or an audit record unredacted).
//
// Each secret found is replaced by a typed marker, "[REDACTED:<type>]", e.g.
// "[REDACTED:github-token]"; the types are listed in marker_types() and docs/redaction.md. What is
// found:
//   - the sandbox's own secrets by value (the literals given to the constructor), also when they
//     appear JSON-escaped, percent-encoded or base64-encoded;
//   - provider tokens by their published formats (AWS, GitHub, GitLab, Anthropic, OpenAI, Slack,
//     Stripe, Google, npm, Hugging Face), JWTs, private key blocks;
//   - secrets by context: Authorization headers, passwords in URLs, KEY=VALUE / "key": "value" /
//     `--password X` where the key names a secret, AWS secret keys next to their key id.
//
// Guarantees, for any input bytes (invalid UTF-8 and NUL included):
//   - time and memory are linear in the input (hand-written scanners, no backtracking);
//   - a literal secret never survives: every occurrence in the output overlaps a marker (it can
//     only "occur" there if the literal itself is made partly of marker text);
//   - idempotent: redacting the output again changes nothing. Markers already in the input are
//     kept as they are and never looked into; a value that is only markers counts as redacted;
//   - valid UTF-8 in (text and literals) gives valid UTF-8 out: cuts fall on ASCII delimiters.
// Limits: detection is by format and context, so it catches secrets printed by accident, not a
// sandbox that encodes a secret on purpose (reversed, split, hex); egress policy is what stops
// exfiltration. docs/redaction.md lists what is deliberately not redacted.
//
// Thread-safety: a Redactor is immutable after construction; its methods are const and may be
// called from any number of threads. Copies share the compiled literal matcher.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace km::audit {

// Literal secrets shorter than this are not matched by value: a short string would redact
// ordinary text everywhere. They are reported by Redactor::ignored_literals().
inline constexpr size_t kMinLiteralSecretBytes = 8;

// "[REDACTED:<type>]".
std::string marker(std::string_view type);

// Every marker type the Redactor emits, most specific first.
const std::vector<std::string_view>& marker_types();

// True when `key` (a JSON key, an environment variable, a header or flag name) says its value is
// a secret: it ends, ignoring case and the separators - _ . and space, in password, passwd,
// passphrase, passcode, secret, token, apikey, accesskey, secretkey, privatekey, signingkey,
// encryptionkey, accountkey, credential(s), authorization, cookie, bearer or signature; or in
// pass, pwd, auth or sig as a separate word (DB_PASS, db-pwd, basic_auth, sig; not bypass, PWD,
// oauth). So GITHUB_TOKEN, x-api-key, SecretAccessKey, set-cookie and client_secret do, and
// max_tokens, token_count, password_file and --password-stdin do not.
bool names_secret(std::string_view key);

class LiteralMatcher;

class Redactor {
 public:
  // Built-in rules, plus the sandbox's own secrets matched by value (exact byte substrings).
  // A literal shorter than kMinLiteralSecretBytes, made only of whitespace, or made of marker
  // text is ignored, and the reason (which never contains the secret) is kept for the caller
  // to log. Duplicates are merged.
  explicit Redactor(std::vector<std::string> literal_secrets = {});

  // Why literals were ignored: "sandbox secret #2 (5 bytes) is shorter than 8 bytes; it is not
  // matched by value". Empty when all were accepted.
  const std::vector<std::string>& ignored_literals() const { return ignored_; }
  // Literal secrets in use (after dropping the ignored ones and duplicates).
  size_t literal_count() const { return literal_count_; }

  // `text` with every secret replaced by its marker. `found`, when given, gets the type of each
  // marker written (appended; it is not cleared), so callers can count findings per type.
  std::string redact(std::string_view text, std::vector<std::string>* found = nullptr) const;

  // A JSON value with every string value and every object key redacted as text; numbers, bools
  // and null are kept. On top of the text rules:
  //   - under a key that names_secret(), the whole value is a secret: a string or number becomes
  //     "[REDACTED:credential]" (an Authorization value keeps its scheme: "Bearer
  //     [REDACTED:authorization]"; a 40-character SecretAccessKey is an aws-secret-access-key),
  //     and so does every element of an array. In an object under such a key, members whose own
  //     names say so are secrets, and so are value, data, plain, raw, text, string, content ...
  //     ({"password": {"value": ...}}); others ({"Credentials": {"Expiration": ...}}) are not.
  //     Empty strings, bools, null and values that are already markers are kept;
  //   - {"name": "DB_PASSWORD", "value": "..."} pairs (also key/value, Name/Value,
  //     ParameterKey/ParameterValue): the value is a secret when the name names one;
  //   - arrays of strings under argv, args, cmdline, command or cmd go through redact_argv;
  //   - a key that changes is kept distinct from the others: the second "[REDACTED:jwt]" key
  //     becomes "[REDACTED:jwt]#2", and so on; keys that do not change keep their names.
  // Nesting depth is not limited (no recursion).
  nlohmann::json redact_json(const nlohmann::json& value, std::vector<std::string>* found = nullptr) const;

  // A command's argv: every argument is redacted as text, and, on top:
  //   - the argument after a long flag that names a secret (--password X, --token X,
  //     --api-key X, --client-secret X, ...; not --no-*, and not when X starts with "--") is
  //     redacted whole: "--password=X" and KEY=VALUE arguments are caught by the text rules;
  //   - a few tools whose short flags carry secrets: curl -u/--user/-U/--proxy-user user:PASS,
  //     mysql/mariadb/mysqldump/mysqladmin -pPASS, sshpass -p PASS, and
  //     docker/podman/nerdctl/helm/oras/skopeo ... login -p PASS.
  std::vector<std::string> redact_argv(const std::vector<std::string>& argv,
                                       std::vector<std::string>* found = nullptr) const;

 private:
  std::shared_ptr<const LiteralMatcher> literals_;  // null when there are none
  std::vector<std::string> ignored_;
  size_t literal_count_ = 0;
};

}  // namespace km::audit
