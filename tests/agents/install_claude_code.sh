#!/usr/bin/env bash
# Installs Claude Code, at the pinned version, for the tests that run the real agent against the
# fake AI providers (tests/world/fake_ai.py). Why this version: tests/agents/README.md.
#
#   tests/agents/install_claude_code.sh [DIR]     DIR defaults to build/agents in the repository
#
# Idempotent: does nothing if DIR already holds the pinned version. Prints the absolute path of the
# `claude` executable on stdout (and nothing else); diagnostics go to stderr. Needs node >= 18 and
# npm (Debian 12: apt-get install nodejs npm) and the npm registry; installs nothing outside DIR
# (npm keeps its download cache in ~/.npm as usual).
set -euo pipefail

readonly version=2.1.112
# The registry's sha512 of claude-code-2.1.112.tgz, as npm records it in DIR/package-lock.json.
readonly integrity=sha512-9FUgJ0EOvILyhIqxFKNVliebiUjL68dwpEW3eGSSe0vkVDJ1c5qMDNWc22gW3zkD7zRAqtfQPSGv0t4vMM2DPA==
readonly min_node=18

die() {
  printf 'install_claude_code: error: %s\n' "$1" >&2
  if [ -n "${2:-}" ]; then printf 'hint: %s\n' "$2" >&2; fi
  exit 1
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${1:-$repo/build/agents}"
[ $# -le 1 ] || { echo "usage: $0 [DIR]" >&2; exit 2; }

command -v node >/dev/null 2>&1 ||
  die "node is not installed" "apt-get install nodejs   (Debian 12's nodejs is Node.js 18)"
command -v npm >/dev/null 2>&1 ||
  die "npm is not installed" "apt-get install npm"
node_version="$(node -p 'process.versions.node')"
[ "${node_version%%.*}" -ge "$min_node" ] 2>/dev/null ||
  die "node $node_version is too old: Claude Code $version needs node >= $min_node" "apt-get install nodejs"

pkg="$dir/node_modules/@anthropic-ai/claude-code"
exe="$dir/node_modules/.bin/claude"

# The version in DIR, and the integrity npm recorded for it ("" if absent).
json_field() {  # FILE EXPRESSION over the parsed JSON `j`
  [ -f "$1" ] || return 0
  node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
           const v = (new Function("j", "return " + process.argv[2]))(j); if (v) console.log(v);' "$1" "$2" ||
    true
}
installed() {
  [ -x "$exe" ] &&
    [ "$(json_field "$pkg/package.json" 'j.version')" = "$version" ] &&
    [ "$(json_field "$dir/package-lock.json" 'j.packages["node_modules/@anthropic-ai/claude-code"]?.integrity')" = "$integrity" ]
}

if installed; then
  printf 'install_claude_code: Claude Code %s already in %s\n' "$version" "$dir" >&2
else
  printf 'install_claude_code: installing Claude Code %s into %s\n' "$version" "$dir" >&2
  mkdir -p "$dir"
  # --omit=optional: the optional deps are sharp's native image libraries, which the agent only
  # uses for pasted images. --ignore-scripts: this version has no install scripts; run none.
  npm install --prefix "$dir" --no-audit --no-fund --no-update-notifier --save-exact --omit=optional \
    --ignore-scripts --loglevel=error "@anthropic-ai/claude-code@$version" >&2 ||
    die "npm install @anthropic-ai/claude-code@$version failed" "is the npm registry reachable (npm ping)?"
  got="$(json_field "$dir/package-lock.json" 'j.packages["node_modules/@anthropic-ai/claude-code"]?.integrity')"
  [ "$got" = "$integrity" ] ||
    die "the installed package's integrity is ${got:-missing}, expected $integrity" "remove $dir and retry"
  installed || die "Claude Code $version is not in $dir after npm install"
fi

printf '%s/claude\n' "$(cd "$(dirname "$exe")" && pwd)"
