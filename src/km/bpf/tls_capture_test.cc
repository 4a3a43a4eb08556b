#include "km/bpf/tls_capture.h"

#include <arpa/inet.h>
#include <elf.h>
#include <fcntl.h>
#include <linux/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "km/bpf_abi/tls_capture.h"

namespace km::bpf {
namespace {

// ---- HTTP heads ----

TEST(HttpHead, Request) {
  auto h = parse_http_request_head("GET /v1/messages?x=1 HTTP/1.1\r\nUser-Agent: t\r\nhOsT:  api.example.com \r\n\r\n");
  EXPECT_EQ(h.protocol, "HTTP/1.1");
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.path, "/v1/messages?x=1");
  EXPECT_EQ(h.host, "api.example.com");
}

TEST(HttpHead, RequestCutInTheHeadersKeepsWhatWasComplete) {
  auto h = parse_http_request_head("POST /upload HTTP/1.0\r\nHost: a.example\r\nContent-Le");
  EXPECT_EQ(h.method, "POST");
  EXPECT_EQ(h.host, "a.example");
  // Cut inside the Host line: the partial value is not reported.
  EXPECT_EQ(parse_http_request_head("GET / HTTP/1.1\r\nHost: a.exa").host, "");
}

TEST(HttpHead, NotARequest) {
  for (const char* s : {"", "GET / HTTP/1.1", "get / HTTP/1.1\r\n", "GET  HTTP/1.1\r\n", "GET / HTTP/2.0\r\n",
                        "\x16\x03\x01\x02\x00\r\n", "GET /a b HTTP/1.1\r\n", "xxxxxxxxxxxxxxxx"}) {
    auto h = parse_http_request_head(s);
    EXPECT_EQ(h.protocol, "") << s;
    EXPECT_EQ(h.method, "") << s;
  }
}

TEST(HttpHead, Http2Preface) {
  EXPECT_EQ(parse_http_request_head(std::string_view("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04", 28)).protocol, "h2");
}

TEST(HttpHead, Response) {
  auto h = parse_http_response_head("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(h.status, 404);
  EXPECT_EQ(h.protocol, "HTTP/1.1");
  EXPECT_EQ(parse_http_response_head("HTTP/1.0 204\r\n").status, 204);
  // Interim heads first: the final status counts when it is in the bytes.
  EXPECT_EQ(parse_http_response_head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\r\n").status, 201);
  EXPECT_EQ(parse_http_response_head("HTTP/1.1 100 Continue\r\n\r\n").status, 100);
  EXPECT_EQ(parse_http_response_head("HTTP/1.1 101 Switching Protocols\r\n\r\n").status, 101);
}

TEST(HttpHead, NotAResponse) {
  for (const char* s : {"HTTP/1.1 200", "HTTP/1.1 2000 OK\r\n", "HTTP/1.1 099 x\r\n", "HTTP/1.1 2x0 OK\r\n", "HTTP/2 200\r\n",
                        "xxxxxxxxxxxxxxxxxxxx\r\n", "200 OK\r\n"}) {
    EXPECT_EQ(parse_http_response_head(s).status, 0) << s;
  }
}

// ---- events ----

km_tls_event_data event(uint8_t fn, uint8_t flags, std::string_view data, uint64_t bytes) {
  km_tls_event_data e{};
  e.head.boot_ns = 5;
  e.head.cgroup_id = 42;
  e.head.ssl = 0x5555aaaa0000;
  e.head.bytes = bytes;
  e.head.sandbox = 3;
  e.head.pid = 100;
  e.head.tid = 101;
  e.head.fd = 5;
  e.head.family = AF_INET;
  e.head.remote_port = 443;
  e.head.local_port = 40000;
  e.head.fn = fn;
  e.head.flags = flags | KM_TLS_F_DATA;
  uint8_t addr[4] = {198, 51, 100, 7};
  std::memcpy(e.head.remote_addr, addr, 4);
  std::memcpy(e.head.comm, "curl", 4);
  std::memcpy(e.data, data.data(), data.size());
  e.head.data_len = static_cast<__u32>(data.size());
  return e;
}

constexpr std::string_view kGet = "GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n";

TEST(TlsEvent, HeadsAreParsedAndPlaintextStaysInside) {
  auto e = event(KM_TLS_FN_SSL_WRITE, KM_TLS_F_HEAD, kGet, kGet.size());
  auto r = decode_tls_event(&e, sizeof e);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->sandbox, 3u);
  EXPECT_EQ(r->pid, 100u);
  EXPECT_EQ(r->comm, "curl");
  EXPECT_EQ(r->direction, TlsDirection::kWrite);
  EXPECT_EQ(r->function, "SSL_write");
  EXPECT_EQ(r->conn, 0x5555aaaa0000u);
  EXPECT_EQ(r->http.method, "GET");
  EXPECT_EQ(r->http.host, "a.example");
  ASSERT_TRUE(r->remote);
  EXPECT_EQ(r->remote->to_string(), "198.51.100.7:443");
  EXPECT_EQ(r->local_port, 40000);
  EXPECT_FALSE(r->payload);
}

TEST(TlsEvent, PayloadOnlyWhenTheSandboxAskedForIt) {
  auto e = event(KM_TLS_FN_SSL_WRITE_EX, KM_TLS_F_HEAD | KM_TLS_F_PAYLOADS, kGet, 70000);
  auto r = decode_tls_event(&e, sizeof e);
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->payload);
  EXPECT_EQ(*r->payload, kGet);
  EXPECT_EQ(r->bytes, 70000u);
  EXPECT_EQ(r->function, "SSL_write_ex");
}

TEST(TlsEvent, OnlyHeadsAreParsed) {
  auto e = event(KM_TLS_FN_SSL_READ_EX, KM_TLS_F_PAYLOADS, "HTTP/1.1 200 OK\r\n\r\n", 19);
  auto r = decode_tls_event(&e, sizeof e);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->direction, TlsDirection::kRead);
  EXPECT_EQ(r->http.status, 0) << "the middle of a body that looks like a head";
}

TEST(TlsEvent, GnuTlsCalls) {
  auto e = event(KM_TLS_FN_GNUTLS_RECV, KM_TLS_F_HEAD, "HTTP/1.1 200 OK\r\n\r\n", 19);
  auto r = decode_tls_event(&e, sizeof e);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->function, "gnutls_record_recv");
  EXPECT_EQ(r->direction, TlsDirection::kRead);
  EXPECT_EQ(r->http.status, 200);
}

TEST(TlsEvent, CountOnlyRecord) {
  km_tls_event e{};
  e.bytes = 16384;
  e.fn = KM_TLS_FN_SSL_READ;
  e.fd = -1;
  auto r = decode_tls_event(&e, sizeof e);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->bytes, 16384u);
  EXPECT_EQ(r->fd, -1);
  EXPECT_FALSE(r->remote);
  EXPECT_FALSE(r->payload);
}

TEST(TlsEvent, CloseRecordEndsTheConnection) {
  km_tls_event e{};
  e.fn = KM_TLS_FN_FREE;
  e.flags = KM_TLS_F_CLOSE;
  e.ssl = 0x77;
  e.pid = 9;
  e.fd = 4;
  e.family = AF_INET;
  e.remote_port = 3128;
  e.local_port = 40001;
  auto r = decode_tls_event(&e, sizeof e);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->closed);
  EXPECT_FALSE(r->head);
  EXPECT_EQ(r->function, "free");
  EXPECT_EQ(r->conn, 0x77u);
  EXPECT_EQ(r->local_port, 40001);
  // A close record never carries bytes or plaintext, and only fn FREE closes.
  auto with_bytes = e;
  with_bytes.bytes = 1;
  EXPECT_FALSE(decode_tls_event(&with_bytes, sizeof with_bytes));
  auto no_flag = e;
  no_flag.flags = 0;
  EXPECT_FALSE(decode_tls_event(&no_flag, sizeof no_flag));
  auto wrong_fn = e;
  wrong_fn.fn = KM_TLS_FN_SSL_READ;
  EXPECT_FALSE(decode_tls_event(&wrong_fn, sizeof wrong_fn));
}

TEST(TlsEvent, MalformedRecordsAreErrors) {
  auto e = event(KM_TLS_FN_SSL_WRITE, KM_TLS_F_HEAD, kGet, kGet.size());
  EXPECT_FALSE(decode_tls_event(&e, sizeof e - 1));
  auto no_flag = e;
  no_flag.head.flags &= ~KM_TLS_F_DATA;
  EXPECT_FALSE(decode_tls_event(&no_flag, sizeof no_flag));
  auto long_data = e;
  long_data.head.data_len = KM_TLS_DATA_MAX + 1;
  EXPECT_FALSE(decode_tls_event(&long_data, sizeof long_data));
  auto more_than_moved = e;
  more_than_moved.head.bytes = 3;
  EXPECT_FALSE(decode_tls_event(&more_than_moved, sizeof more_than_moved));
  auto bad_fn = e;
  bad_fn.head.fn = 9;
  EXPECT_FALSE(decode_tls_event(&bad_fn, sizeof bad_fn));
}

TEST(TlsEndpoint, Formats) {
  TlsEndpoint v6;
  v6.family = AF_INET6;
  ASSERT_EQ(::inet_pton(AF_INET6, "2001:db8::1", v6.addr.data()), 1);
  v6.port = 8443;
  EXPECT_EQ(v6.to_string(), "[2001:db8::1]:8443");
  TlsEndpoint mapped;
  mapped.family = AF_INET6;
  ASSERT_EQ(::inet_pton(AF_INET6, "::ffff:203.0.113.9", mapped.addr.data()), 1);
  mapped.port = 443;
  EXPECT_EQ(mapped.to_string(), "203.0.113.9:443");
}

// ---- ld.so.cache ----

struct CacheEntry {
  int32_t flags;
  std::string key, value;
  uint64_t hwcap = 0;
};

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

std::string new_cache(const std::vector<CacheEntry>& entries) {
  std::string strings;
  std::vector<std::pair<uint32_t, uint32_t>> offs;
  size_t table = 48 + 24 * entries.size();
  for (const auto& e : entries) {
    uint32_t k = static_cast<uint32_t>(table + strings.size());
    strings += e.key + '\0';
    uint32_t v = static_cast<uint32_t>(table + strings.size());
    strings += e.value + '\0';
    offs.emplace_back(k, v);
  }
  std::string c = "glibc-ld.so.cache1.1";
  put<uint32_t>(c, static_cast<uint32_t>(entries.size()));
  put<uint32_t>(c, static_cast<uint32_t>(strings.size()));
  c.append(4, '\0');   // flags, padding
  c.append(16, '\0');  // extension offset, unused
  for (size_t i = 0; i < entries.size(); ++i) {
    put<int32_t>(c, entries[i].flags);
    put<uint32_t>(c, offs[i].first);
    put<uint32_t>(c, offs[i].second);
    put<uint32_t>(c, 0);
    put<uint64_t>(c, entries[i].hwcap);
  }
  return c + strings;
}

TEST(LdCache, FindsTheX8664Baseline) {
  std::string c = new_cache({
      {0x0003, "libssl.so.3", "/usr/lib/i386-linux-gnu/libssl.so.3"},  // i386: no x86-64 flag
      {0x0303, "libssl.so.3", "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libssl.so.3", 1ull << 62},
      {0x0303, "libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3"},
      {0x0303, "libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"},
  });
  EXPECT_EQ(ld_cache_lookup(c, "libssl.so.3"), "/usr/lib/x86_64-linux-gnu/libssl.so.3");
  EXPECT_EQ(ld_cache_lookup(c, "libz.so.1"), "/usr/lib/x86_64-linux-gnu/libz.so.1");
  EXPECT_EQ(ld_cache_lookup(c, "libssl.so"), std::nullopt);
  // Only a hwcaps build: better than nothing.
  EXPECT_EQ(ld_cache_lookup(new_cache({{0x0303, "libssl.so.3", "/h/libssl.so.3", 2}}), "libssl.so.3"), "/h/libssl.so.3");
}

TEST(LdCache, AfterTheOldFormat) {
  std::string old = "ld.so-1.7.0";
  old.push_back('\0');
  put<uint32_t>(old, 1);
  old.append(12, '\0');  // one old entry
  old.append(4, '\0');   // the new header is 8-aligned
  std::string c = old + new_cache({{0x0303, "libssl.so.3", "/lib/libssl.so.3"}});
  EXPECT_EQ(ld_cache_lookup(c, "libssl.so.3"), "/lib/libssl.so.3");
}

TEST(LdCache, MalformedIsNotFound) {
  std::string c = new_cache({{0x0303, "libssl.so.3", "/lib/libssl.so.3"}});
  EXPECT_EQ(ld_cache_lookup(c.substr(0, 60), "libssl.so.3"), std::nullopt);
  std::string huge = c;
  uint32_t n = 0x7fffffff;
  std::memcpy(huge.data() + 20, &n, 4);
  EXPECT_EQ(ld_cache_lookup(huge, "libssl.so.3"), std::nullopt);
  EXPECT_EQ(ld_cache_lookup("", "libssl.so.3"), std::nullopt);
  EXPECT_EQ(ld_cache_lookup(std::string(100, 'x'), "libssl.so.3"), std::nullopt);
}

// ---- ELF facts ----

struct Sec {
  std::string name;
  uint32_t type;
  uint64_t flags;
  std::string data;
  uint32_t link = 0;
  uint64_t entsize = 0;
};

// A minimal ELF64 image: header, section contents, then the section table.
std::string make_elf(std::vector<Sec> secs) {
  std::string shstr(1, '\0');
  std::vector<uint32_t> names;
  secs.insert(secs.begin(), Sec{"", SHT_NULL, 0, ""});
  secs.push_back(Sec{".shstrtab", SHT_STRTAB, 0, ""});
  for (auto& s : secs) {
    names.push_back(static_cast<uint32_t>(shstr.size()));
    shstr += s.name + '\0';
  }
  secs.back().data = shstr;
  std::string body(sizeof(Elf64_Ehdr), '\0');
  std::vector<uint64_t> offs;
  for (auto& s : secs) {
    offs.push_back(body.size());
    body += s.data;
  }
  while (body.size() % 8) body.push_back('\0');
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_DYN;
  eh.e_machine = EM_X86_64;
  eh.e_shoff = body.size();
  eh.e_shentsize = sizeof(Elf64_Shdr);
  eh.e_shnum = static_cast<uint16_t>(secs.size());
  eh.e_shstrndx = static_cast<uint16_t>(secs.size() - 1);
  std::memcpy(body.data(), &eh, sizeof eh);
  for (size_t i = 0; i < secs.size(); ++i) {
    Elf64_Shdr sh{};
    sh.sh_name = names[i];
    sh.sh_type = secs[i].type;
    sh.sh_flags = secs[i].flags;
    sh.sh_offset = offs[i];
    sh.sh_size = secs[i].data.size();
    sh.sh_link = secs[i].link;
    sh.sh_entsize = secs[i].entsize;
    body.append(reinterpret_cast<const char*>(&sh), sizeof sh);
  }
  return body;
}

// .dynstr (1), .dynsym (2), .dynamic (3), .text (4), .rodata (5) and `extra`.
std::string elf_with(const std::vector<std::pair<std::string, bool>>& functions, const std::vector<std::string>& needed,
                     const std::string& rodata, std::vector<Sec> extra = {}) {
  std::string strs(1, '\0');
  auto intern = [&](const std::string& s) {
    uint32_t at = static_cast<uint32_t>(strs.size());
    strs += s + '\0';
    return at;
  };
  std::string syms(sizeof(Elf64_Sym), '\0');
  for (const auto& [name, defined] : functions) {
    Elf64_Sym s{};
    s.st_name = intern(name);
    s.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
    s.st_shndx = defined ? 4 : SHN_UNDEF;
    s.st_value = defined ? 0x1000 : 0;
    syms.append(reinterpret_cast<const char*>(&s), sizeof s);
  }
  std::string dyn;
  for (const auto& n : needed) {
    Elf64_Dyn d{};
    d.d_tag = DT_NEEDED;
    d.d_un.d_val = intern(n);
    dyn.append(reinterpret_cast<const char*>(&d), sizeof d);
  }
  Elf64_Dyn rp{};
  rp.d_tag = DT_RUNPATH;
  rp.d_un.d_val = intern("$ORIGIN/../lib:/opt/x");
  dyn.append(reinterpret_cast<const char*>(&rp), sizeof rp);
  dyn.append(sizeof(Elf64_Dyn), '\0');  // DT_NULL
  std::vector<Sec> secs = {
      {".dynstr", SHT_STRTAB, SHF_ALLOC, strs},
      {".dynsym", SHT_DYNSYM, SHF_ALLOC, syms, 1, sizeof(Elf64_Sym)},
      {".dynamic", SHT_DYNAMIC, SHF_ALLOC | SHF_WRITE, dyn, 1, sizeof(Elf64_Dyn)},
      {".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, std::string(16, '\xc3')},
      {".rodata", SHT_PROGBITS, SHF_ALLOC, rodata},
  };
  for (auto& e : extra) secs.push_back(std::move(e));
  return make_elf(std::move(secs));
}

TEST(ElfFacts, BundledOpenSslHasItsSymbols) {
  auto f = elf_tls_facts_of_image(elf_with({{"SSL_read", true}, {"SSL_write", true}}, {"libc.so.6"}, "OpenSSL 3.0.19"));
  EXPECT_TRUE(f.elf);
  EXPECT_TRUE(f.ssl_symbols);
  EXPECT_EQ(f.needed, std::vector<std::string>{"libc.so.6"});
  EXPECT_EQ(f.runpath, (std::vector<std::string>{"$ORIGIN/../lib", "/opt/x"}));
}

TEST(ElfFacts, ImportedSymbolsAreNotBundled) {
  auto f = elf_tls_facts_of_image(elf_with({{"SSL_read", false}, {"SSL_write", false}}, {"libssl.so.3"}, ""));
  EXPECT_FALSE(f.ssl_symbols);
  EXPECT_EQ(f.needed, std::vector<std::string>{"libssl.so.3"});
}

TEST(ElfFacts, StaticStacksByTheirMarks) {
  auto go = elf_tls_facts_of_image(elf_with({}, {}, std::string("\0crypto/tls.(*Conn).Write\0", 26),
                                            {{".go.buildinfo", SHT_PROGBITS, SHF_ALLOC, "\xff Go buildinf:"}}));
  EXPECT_TRUE(go.go);
  EXPECT_TRUE(go.go_tls);
  auto go_plain = elf_tls_facts_of_image(elf_with({}, {}, "fmt.Println", {{".go.buildinfo", SHT_PROGBITS, SHF_ALLOC, "x"}}));
  EXPECT_TRUE(go_plain.go);
  EXPECT_FALSE(go_plain.go_tls);
  EXPECT_TRUE(elf_tls_facts_of_image(elf_with({}, {}, "/cargo/registry/src/rustls-0.23.5/src/conn.rs")).rustls);
  auto stripped = elf_tls_facts_of_image(elf_with({}, {}, "OpenSSL 1.1.1w  11 Sep 2023"));
  EXPECT_TRUE(stripped.openssl_strings);
  EXPECT_FALSE(stripped.ssl_symbols);
  EXPECT_TRUE(elf_tls_facts_of_image(elf_with({}, {}, "BoringSSL")).boringssl);
}

TEST(ElfFacts, NotElfOrBroken) {
  EXPECT_FALSE(elf_tls_facts_of_image("").elf);
  EXPECT_FALSE(elf_tls_facts_of_image("#!/bin/sh\necho hi\n").elf);
  std::string img = elf_with({{"SSL_read", true}, {"SSL_write", true}}, {}, "");
  EXPECT_FALSE(elf_tls_facts_of_image(img.substr(0, img.size() - 10)).elf) << "section table cut";
  std::string bad_sym = img;  // a section table pointing past the end
  Elf64_Ehdr eh;
  std::memcpy(&eh, bad_sym.data(), sizeof eh);
  eh.e_shoff = 1ull << 40;
  std::memcpy(bad_sym.data(), &eh, sizeof eh);
  EXPECT_FALSE(elf_tls_facts_of_image(bad_sym).elf);
}

TEST(ElfFacts, ASandboxsLibrariesAreResolvedInItsRootNeverTheHosts) {
  char tmpl[] = "/tmp/km-elf-root-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  ASSERT_EQ(std::system(("mkdir -p '" + root + "/usr/bin' '" + root + "/opt/tls'").c_str()), 0);
  {
    // Needs a library by absolute path, and a FIFO posing as one.
    std::ofstream out(root + "/usr/bin/prog", std::ios::binary);
    out << elf_with({}, {"/opt/tls/libbundle.so", "/opt/tls/pipe.so"}, "");
  }
  {
    std::ofstream out(root + "/opt/tls/libbundle.so", std::ios::binary);
    out << elf_with({{"SSL_read", true}, {"SSL_write", true}}, {}, "");
  }
  ASSERT_EQ(::mkfifo((root + "/opt/tls/pipe.so").c_str(), 0600), 0);
  int root_fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(root_fd, 0);
  auto r = inspect_executable_tls(root + "/usr/bin/prog", root_fd, "/usr/bin/prog");
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->findings.size(), 1u);
  EXPECT_EQ(r->findings[0].object, "/opt/tls/libbundle.so");  // as the sandbox names it
  EXPECT_EQ(r->findings[0].id, *file_id(root + "/opt/tls/libbundle.so"));
  // Without the root, the same names are the caller's own files (none here).
  auto host = inspect_executable_tls(root + "/usr/bin/prog");
  ASSERT_TRUE(host);
  EXPECT_TRUE(host->findings.empty());
  ::close(root_fd);
  std::system(("rm -rf '" + root + "'").c_str());
}

TEST(ElfFacts, ExecutableOnDisk) {
  char tmpl[] = "/tmp/km-elf-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string path = std::string(tmpl) + "/bundled";
  {
    std::ofstream out(path, std::ios::binary);
    out << elf_with({{"SSL_read", true}, {"SSL_write", true}}, {}, "");
  }
  auto r = inspect_executable_tls(path);
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->findings.size(), 1u);
  EXPECT_EQ(r->findings[0].stack, TlsStack::kOpenSslBundled);
  EXPECT_TRUE(r->findings[0].supported);
  EXPECT_TRUE(r->any_supported());
  auto id = file_id(path);
  ASSERT_TRUE(id);
  EXPECT_EQ(r->findings[0].id, *id);

  std::string fifo = std::string(tmpl) + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_FALSE(inspect_executable_tls(fifo)) << "a FIFO must not block the inspection";
  ::unlink(fifo.c_str());
  ::unlink(path.c_str());
  ::rmdir(tmpl);
}

// ---- profile stacks ----

TEST(TlsTargets, StacksKmCannotSeeAreNamedWithTheReason) {
  auto t = tls_targets_for_profile({"nss", "go", "nss"});
  ASSERT_TRUE(t) << t.error().to_string();
  EXPECT_TRUE(t->objects.empty());
  ASSERT_EQ(t->unsupported.size(), 2u);
  EXPECT_EQ(t->unsupported[0].first, "go");
  EXPECT_NE(t->unsupported[0].second.find("goroutine"), std::string::npos);
  EXPECT_EQ(t->unsupported[1].first, "nss");
  EXPECT_NE(t->unsupported[1].second.find("NSS"), std::string::npos);
  auto bad = tls_targets_for_profile({"schannel"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().to_string().find("schannel"), std::string::npos);
}

// ---- feature probe ----

TEST(UprobeSupport, NamesWhatIsMissing) {
  char tmpl[] = "/tmp/km-sysfs-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  auto s = probe_uprobe_support(tmpl);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().to_string().find("uprobes are not available"), std::string::npos);
  EXPECT_NE(s.error().hint().find("CONFIG_UPROBE_EVENTS"), std::string::npos);
  std::string dir = std::string(tmpl) + "/bus/event_source/devices/uprobe";
  ASSERT_EQ(std::system(("mkdir -p " + dir + " && echo 8 > " + dir + "/type").c_str()), 0);
  EXPECT_TRUE(probe_uprobe_support(tmpl));
  std::system(("rm -rf " + std::string(tmpl)).c_str());
}

}  // namespace
}  // namespace km::bpf
