#include "km/daemon/audit_trails.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <future>
#include <set>

#include "km/audit/lines.h"
#include "km/audit/redact.h"
#include "km/store/trail.h"

namespace km::daemon {

using Json = nlohmann::json;

namespace {

constexpr size_t kBatch = 16384;            // events the writer takes at once
constexpr size_t kReadPerPipe = 1u << 20;   // bytes read from one pipe per round

// About what an event takes in memory while it waits (its strings, and a little per value), for
// the queue's byte bound. Bounded in depth: below 32 levels a value counts as 64 bytes.
size_t approx_bytes(const Json& j, int depth = 0) {
  if (depth >= 32) return 64;
  if (const auto* str = j.get_ptr<const Json::string_t*>()) return str->size() + 16;
  size_t n = 32;
  if (const auto* obj = j.get_ptr<const Json::object_t*>()) {
    for (const auto& [k, v] : *obj) n += k.size() + 16 + approx_bytes(v, depth + 1);
    return n;
  }
  if (const auto* arr = j.get_ptr<const Json::array_t*>()) {
    for (const auto& v : *arr) n += approx_bytes(v, depth + 1);
    return n;
  }
  return 16;
}

size_t approx_bytes(const audit::Event& e) { return 64 + e.source.size() + e.type.size() + approx_bytes(e.detail); }
constexpr size_t kTruncatedHead = 1024;     // what a cut line keeps in its record
constexpr size_t kMaxUnindexed = 262144;    // rows kept for a retry when the index refused them

}  // namespace

Json AuditCounters::to_json() const {
  return Json{{"events", events},
              {"dropped", dropped()},
              {"dropped_kmd", dropped_kmd},
              {"dropped_enforcer", dropped_enforcer},
              {"suppressed", suppressed},
              {"truncated", truncated},
              {"malformed", malformed},
              {"exec_lost", exec_lost},
              {"tls_lost", tls_lost}};
}

AuditCounters AuditCounters::from_json(const Json& j) {
  AuditCounters c;
  if (!j.is_object()) return c;
  auto get = [&j](const char* k) { return j.contains(k) && j[k].is_number_unsigned() ? j[k].get<uint64_t>() : uint64_t{0}; };
  c.events = get("events");
  c.dropped_kmd = get("dropped_kmd");
  c.dropped_enforcer = get("dropped_enforcer");
  c.suppressed = get("suppressed");
  c.truncated = get("truncated");
  c.malformed = get("malformed");
  c.exec_lost = get("exec_lost");
  c.tls_lost = get("tls_lost");
  return c;
}

// One sandbox's trail. The writer thread alone touches writer and redactor; the rest is under
// mu_. States are removed only by the writer thread (close), under mu_.
struct AuditTrails::State {
  std::unique_ptr<store::TrailWriter> writer;
  std::optional<audit::Redactor> redactor;
  bool open_failed = false;  // logged once
  std::string recovery;      // what opening the trail repaired, not yet recorded
  AuditCounters counters;
  std::string dir;  // where the files are ("" until known)
  uint64_t head = 0;
  std::string head_hash;
  uint64_t recorded = 0, written = 0;  // events queued / taken through the writer, for flush()
  uint64_t queued_bytes = 0;            // about how much of the queue's memory is this sandbox's
  uint64_t unreported_drops = 0, unreported_malformed = 0;
  int compressing = 0;
  std::vector<store::AuditIndex::Row> unindexed;  // writer thread only
};

struct AuditTrails::Pipe {
  std::string id;
  UniqueFd fd;
  audit::LineSplitter lines;
  bool closing = false;
  Pipe(std::string i, UniqueFd f, size_t max_line) : id(std::move(i)), fd(std::move(f)), lines(max_line) {}
};

AuditTrails::AuditTrails(AuditTrailsOptions o, log::Logger& log) : options_(std::move(o)), log_(log) {}

Result<std::unique_ptr<AuditTrails>> AuditTrails::create(AuditTrailsOptions options, log::Logger& log) {
  std::unique_ptr<AuditTrails> t(new AuditTrails(std::move(options), log));
  KM_ASSIGN_OR_RETURN(t->index_, store::AuditIndex::open(t->options_.db_path));
  t->wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!t->wake_) return fail(Error::from_errno("eventfd"));
  t->writer_ = std::thread([p = t.get()] { p->write_loop(); });
  t->reader_ = std::thread([p = t.get()] { p->read_loop(); });
  t->compressor_ = std::thread([p = t.get()] { p->compress_loop(); });
  return t;
}

AuditTrails::~AuditTrails() {
  // The pipes are drained first, then the writer empties the queue, then compression stops
  // (files left plain are compressed when their trail is next opened).
  {
    std::lock_guard<std::mutex> g(pipes_mu_);
    for (auto& [id, p] : pipes_) p->closing = true;
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    stopping_ = true;
  }
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  if (reader_.joinable()) reader_.join();
  {
    std::lock_guard<std::mutex> g(mu_);
    writer_stopping_ = true;
  }
  queue_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  compress_cv_.notify_all();
  done_cv_.notify_all();
  if (compressor_.joinable()) compressor_.join();
}

// A sandbox's state as the index last recorded it: counters and head (a new kmd goes on
// counting). Reads the store: called without mu_ wherever it can be (state_for).
std::unique_ptr<AuditTrails::State> AuditTrails::load_state(const std::string& id) {
  auto s = std::make_unique<State>();
  if (auto rec = index_->trail(id); rec && *rec) {
    s->counters = AuditCounters::from_json(Json::parse((*rec)->counters, nullptr, false));
    s->dir = (*rec)->dir;
    s->head = (*rec)->seq;
    s->head_hash = (*rec)->hash;
  }
  return s;
}

AuditTrails::State& AuditTrails::state_for(std::unique_lock<std::mutex>& g, const std::string& id) {
  if (auto it = states_.find(id); it != states_.end()) return *it->second;
  g.unlock();
  auto loaded = load_state(id);
  g.lock();
  return *states_.try_emplace(id, std::move(loaded)).first->second;  // another thread's, if it got there first
}

AuditTrails::State& AuditTrails::state_locked(const std::string& id) {
  auto& s = states_[id];
  if (!s) s = load_state(id);  // a sandbox first seen here: the index is read under mu_ (rare)
  return *s;
}

void AuditTrails::push_locked(const std::string& id, audit::Event e, size_t bytes) {
  if (e.ts_ms == 0) e.ts_ms = audit::now_ms();
  State& t = state_locked(id);
  ++t.recorded;
  t.queued_bytes += bytes;
  queued_bytes_ += bytes;
  queue_.push_back(Item{id, std::move(e), nullptr, bytes});
}

bool AuditTrails::record(const std::string& id, audit::Event e) {
  bool dropped = false;
  const size_t bytes = approx_bytes(e);
  {
    std::unique_lock<std::mutex> g(mu_);
    State& t = state_for(g, id);
    // A flood in one sandbox cannot take the whole queue from the others: alone, a sandbox may
    // hold three quarters of it (a quarter stays for the others' first events); while another
    // has events waiting, half. The same holds for the queue's bytes.
    uint64_t mine = t.recorded - t.written;
    bool others = queue_.size() > mine;
    uint64_t cap = others ? share() : options_.queue_limit - options_.queue_limit / 4;
    uint64_t byte_cap = others ? byte_share() : options_.queue_bytes - options_.queue_bytes / 4;
    if (queue_.size() >= options_.queue_limit || mine >= cap || queued_bytes_ + bytes > options_.queue_bytes ||
        t.queued_bytes + bytes > byte_cap) {
      ++t.counters.dropped_kmd;
      ++t.unreported_drops;
      dropped = true;
    } else {
      push_locked(id, std::move(e), bytes);
    }
  }
  queue_cv_.notify_one();  // an event to write, or a loss to record
  return !dropped;
}

// --- The writer thread.

void AuditTrails::write_loop() {
  for (;;) {
    std::vector<Item> batch;
    {
      std::unique_lock<std::mutex> g(mu_);
      queue_cv_.wait(g, [this] {
        if (!queue_.empty() || writer_stopping_) return true;
        // Losses with nothing else to write are still recorded.
        for (auto& [id, s] : states_) {
          if (s->unreported_drops || s->unreported_malformed) return true;
        }
        return false;
      });
      if (queue_.empty() && writer_stopping_) break;
      size_t n = std::min(queue_.size(), kBatch);
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        Item& front = queue_.front();
        if (front.bytes) {
          queued_bytes_ -= front.bytes;
          if (auto st = states_.find(front.id); st != states_.end()) {
            st->second->queued_bytes -= std::min<uint64_t>(st->second->queued_bytes, front.bytes);
          }
        }
        batch.push_back(std::move(front));
        queue_.pop_front();
      }
    }
    // Events in arrival order per sandbox; a control item runs after the events before it.
    std::map<std::string, std::vector<audit::Event>> groups;
    std::vector<std::string> order;
    auto flush_group = [&](const std::string& id) {
      auto it = groups.find(id);
      if (it == groups.end()) return;
      size_t n = it->second.size();
      write_group(id, std::move(it->second), n);
      groups.erase(it);
    };
    for (Item& item : batch) {
      if (item.control) {
        flush_group(item.id);
        item.control();
        continue;
      }
      auto [it, fresh] = groups.try_emplace(item.id);
      if (fresh) order.push_back(item.id);
      it->second.push_back(std::move(item.event));
    }
    for (const auto& id : order) flush_group(id);
    // Losses reported without new events.
    std::vector<std::string> lossy;
    {
      std::lock_guard<std::mutex> g(mu_);
      for (auto& [id, s] : states_) {
        if (s->unreported_drops || s->unreported_malformed) lossy.push_back(id);
      }
    }
    for (const auto& id : lossy) write_group(id, {}, 0);
  }
}

void AuditTrails::write_group(const std::string& id, std::vector<audit::Event> events, size_t recorded) {
  State* t;
  uint64_t drops, malformed;
  {
    std::lock_guard<std::mutex> g(mu_);
    t = &state_locked(id);
    drops = std::exchange(t->unreported_drops, 0);
    malformed = std::exchange(t->unreported_malformed, 0);
  }
  // What was lost goes into the trail before what follows it.
  std::vector<audit::Event> reports;
  int64_t now = audit::now_ms();
  if (drops) {
    reports.push_back(audit::Event{now, "kmd", "audit",
                                   Json{{"kind", "dropped"}, {"dropped", drops}, {"source", "kmd"},
                                        {"reason", "kmd's audit queue was full (the disk is slower than the sandbox); events were dropped"}}});
  }
  if (malformed) {
    reports.push_back(audit::Event{now, "kmd", "audit",
                                   Json{{"kind", "malformed"}, {"count", malformed},
                                        {"reason", "lines from the enforcer that were not audit events were skipped"}}});
  }
  if (!reports.empty()) events.insert(events.begin(), std::make_move_iterator(reports.begin()), std::make_move_iterator(reports.end()));
  auto done = [&](size_t written, const AuditCounters* add) {
    {
      std::lock_guard<std::mutex> g(mu_);
      t->written += recorded;
      if (add) {
        t->counters.events += written;
        t->counters.dropped_enforcer += add->dropped_enforcer;
        t->counters.suppressed += add->suppressed;
        t->counters.exec_lost += add->exec_lost;
        t->counters.tls_lost += add->tls_lost;
      }
    }
    done_cv_.notify_all();
  };
  if (events.empty()) return done(0, nullptr);
  if (!t->writer) {
    if (Status st = open_trail(id, *t); !st) {
      if (!t->open_failed) log_.log(log::Level::kError, "cannot open the audit trail; events are dropped", {{"error", st.error().to_string()}}, id);
      t->open_failed = true;
      std::lock_guard<std::mutex> g(mu_);
      t->counters.dropped_kmd += events.size() - reports.size();
      t->written += recorded;
      done_cv_.notify_all();
      return;
    }
  }
  if (!t->recovery.empty()) {
    // Part of a batch torn by a crash was cut off when the trail was opened.
    events.insert(events.begin(), audit::Event{now, "kmd", "audit", Json{{"kind", "recovered"}, {"reason", t->recovery}}});
    reports.push_back(events.front());  // not one of the recorded events
    t->recovery.clear();
  }
  // Redacted before it is sealed: the trail, the index and every reader see only this.
  AuditCounters add;
  std::vector<store::AuditIndex::Row> rows;
  rows.reserve(events.size());
  for (audit::Event& e : events) {
    e.detail = t->redactor->redact_json(e.detail);
    if (e.type == "audit" && e.source != "kmd") {
      std::string kind = audit::kind_of(e.type, e.detail);
      auto count = [&e](const char* k) { return e.detail.contains(k) && e.detail[k].is_number_unsigned() ? e.detail[k].get<uint64_t>() : uint64_t{0}; };
      if (kind == "dropped") add.dropped_enforcer += count("dropped");
      if (kind == "suppressed") add.suppressed += count("count");
    }
    if (e.type == "audit" && audit::kind_of(e.type, e.detail) == "exec-lost" && e.detail.contains("count") &&
        e.detail["count"].is_number_unsigned()) {
      add.exec_lost += e.detail["count"].get<uint64_t>();
    }
    if (e.type == "audit" && audit::kind_of(e.type, e.detail) == "tls-lost" && e.detail.contains("count") &&
        e.detail["count"].is_number_unsigned()) {
      add.tls_lost += e.detail["count"].get<uint64_t>();
    }
    rows.push_back(store::AuditIndex::Row{0, e.ts_ms, e.type, audit::kind_of(e.type, e.detail), {}});
  }
  auto appended = t->writer->append(events);
  if (!appended) {
    log_.log(log::Level::kError, "writing the audit trail failed; events are dropped", {{"error", appended.error().to_string()}}, id);
    {
      std::lock_guard<std::mutex> g(mu_);
      t->counters.dropped_kmd += events.size() - reports.size();
      t->unreported_drops += drops + events.size() - reports.size();
      t->unreported_malformed += malformed;
    }
    done(0, nullptr);
    // A disk that refuses writes is not retried at once: the queue fills meanwhile, and what
    // it cannot take is counted.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return;
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i].seq = (*appended)[i].seq;
    rows[i].at = (*appended)[i].at;
  }
  store::AuditIndex::Trail rec{t->writer->dir(), appended->back().seq, appended->back().hash, ""};
  {
    std::lock_guard<std::mutex> g(mu_);
    AuditCounters c = t->counters;
    c.events += events.size();
    c.dropped_enforcer += add.dropped_enforcer;
    c.suppressed += add.suppressed;
    c.exec_lost += add.exec_lost;
    c.tls_lost += add.tls_lost;
    rec.counters = c.to_json().dump();
  }
  // Rows a failed index commit left are indexed first, in the same transaction: the index
  // never has a gap below its highest seq, which is what catching up from the files relies on.
  if (!t->unindexed.empty()) {
    rows.insert(rows.begin(), std::make_move_iterator(t->unindexed.begin()), std::make_move_iterator(t->unindexed.end()));
    t->unindexed.clear();
  }
  bool indexed = true;
  if (Status st = index_->add(id, rows, rec); !st) {
    indexed = false;
    log_.log(log::Level::kWarn, "indexing audit events failed; retried with the next batch", {{"error", st.error().to_string()}}, id);
    if (rows.size() <= kMaxUnindexed) {
      t->unindexed = std::move(rows);
    } else {
      // Too many to hold: the files have them, and reopening the trail indexes what the index
      // lacks (everything after its highest seq).
      t->writer.reset();
    }
  }
  if (indexed) {
    // The head moves only once the events are indexed: whoever sees it can query them.
    std::lock_guard<std::mutex> g(mu_);
    t->head = rec.seq;
    t->head_hash = rec.hash;
    t->dir = rec.dir;
  }
  for (std::string& path : t->writer ? t->writer->take_rotated() : std::vector<std::string>{}) {
    std::lock_guard<std::mutex> g(mu_);
    ++t->compressing;
    compress_.emplace_back(id, std::move(path));
    compress_cv_.notify_one();
  }
  done(events.size(), &add);
}

Status AuditTrails::open_trail(const std::string& id, State& t) {
  std::string dir;
  {
    std::lock_guard<std::mutex> g(mu_);
    dir = t.dir.empty() ? options_.live_dir(id) : t.dir;
  }
  KM_ASSIGN_OR_RETURN(auto writer, store::TrailWriter::open(dir, id, store::TrailWriter::Options{options_.rotate_bytes}));
  // The index may lag the files (a crash between the write and the index commit).
  KM_ASSIGN_OR_RETURN(uint64_t indexed, index_->last_seq(id));
  if (indexed > writer->chain().last_seq()) {
    // The index outlived lines the files lost (a host crash: the index's commit reached the
    // disk, the lines did not, or a torn batch was cut): those rows would name the events
    // written next at other positions.
    KM_TRY(index_->drop_after(id, writer->chain().last_seq()));
    log_.log(log::Level::kWarn, "audit index rows past the trail's end dropped",
             {{"indexed", indexed}, {"trail", writer->chain().last_seq()}}, id);
    indexed = writer->chain().last_seq();
  }
  if (writer->chain().last_seq() > indexed) {
    std::vector<store::AuditIndex::Row> rows;
    KM_TRY(store::scan_trail(dir, [&](const store::TrailFile& f, uint64_t offset, std::string_view line) {
      Json j = Json::parse(line, nullptr, false);
      if (!j.is_object() || !j.contains("seq") || !j["seq"].is_number_unsigned()) return true;
      uint64_t seq = j["seq"].get<uint64_t>();
      if (seq <= indexed) return true;
      std::string type = j.value("type", std::string());
      int64_t ts = audit::parse_ts(j.value("ts", std::string())).value_or(0);
      rows.push_back({seq, ts, type, audit::kind_of(type, j.contains("detail") ? j["detail"] : Json()),
                      store::TrailPosition{f.number, offset, static_cast<uint32_t>(line.size())}});
      return true;
    }));
    store::AuditIndex::Trail rec{dir, writer->chain().last_seq(), writer->chain().last_hash(), ""};
    {
      std::lock_guard<std::mutex> g(mu_);
      rec.counters = t.counters.to_json().dump();
    }
    KM_TRY(index_->add(id, rows, rec));
    log_.log(log::Level::kInfo, "audit index brought up to date from the trail", {{"events", rows.size()}}, id);
  }
  std::vector<std::string> secrets = options_.secrets ? options_.secrets(id) : std::vector<std::string>{};
  t.redactor.emplace(std::move(secrets));
  for (const auto& why : t.redactor->ignored_literals()) log_.log(log::Level::kWarn, why, {}, id);
  std::string recovery = writer->recovery();
  {
    std::lock_guard<std::mutex> g(mu_);
    t.dir = dir;
    t.head = writer->chain().last_seq();
    t.head_hash = writer->chain().last_hash();
    for (std::string& path : writer->take_rotated()) {
      ++t.compressing;
      compress_.emplace_back(id, std::move(path));
    }
  }
  compress_cv_.notify_one();
  t.writer = std::move(writer);
  t.open_failed = false;
  t.recovery = std::move(recovery);  // written first by the caller, into the trail itself
  return ok();
}

Status AuditTrails::run_control(const std::string& id, std::function<Status()> f, int timeout_ms) {
  auto result = std::make_shared<std::promise<Status>>();
  std::future<Status> fut = result->get_future();
  {
    std::lock_guard<std::mutex> g(mu_);
    if (writer_stopping_) return fail(ErrorCode::kUnavailable, "kmd is stopping");
    queue_.push_back(Item{id, {}, [f = std::move(f), result] { result->set_value(f()); }});
  }
  queue_cv_.notify_one();
  if (fut.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
    return fail(ErrorCode::kUnavailable, "the audit trail of " + id + " did not answer in time");
  }
  return fut.get();
}

bool AuditTrails::flush(const std::string& id, int timeout_ms) {
  std::unique_lock<std::mutex> g(mu_);
  auto it = states_.find(id);
  if (it == states_.end()) return true;
  uint64_t target = it->second->recorded;
  return done_cv_.wait_for(g, std::chrono::milliseconds(timeout_ms), [&] {
    auto s = states_.find(id);
    return s == states_.end() || s->second->written >= target;
  });
}

bool AuditTrails::sync(const std::string& id, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  {
    // Two full rounds of the reader: the second polled every pipe after this call began.
    std::unique_lock<std::mutex> g(pipes_mu_);
    uint64_t target = reader_passes_ + 2;
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
    if (!pipes_cv_.wait_until(g, deadline, [&] {
          if (reader_passes_ == target - 1) (void)!::write(wake_.get(), &one, sizeof one);
          return reader_passes_ >= target;
        })) {
      return false;
    }
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
  return flush(id, static_cast<int>(std::max<int64_t>(left, 1)));
}

Status AuditTrails::archive(const std::string& id, const std::string& dest) {
  return run_control(id, [this, id, dest]() -> Status {
    State* t;
    {
      std::unique_lock<std::mutex> g(mu_);
      t = &state_locked(id);
      // Compressions under way finish first (they rename within the old directory).
      compress_cv_.notify_all();
      done_cv_.wait_for(g, std::chrono::seconds(60), [t] { return t->compressing == 0; });
    }
    if (!t->writer) KM_TRY(open_trail(id, *t));
    KM_TRY(t->writer->move_to(dest));
    std::string counters;
    {
      std::lock_guard<std::mutex> g(mu_);
      t->dir = dest;
      counters = t->counters.to_json().dump();
    }
    return index_->set_trail(id, store::AuditIndex::Trail{dest, t->writer->chain().last_seq(), t->writer->chain().last_hash(), counters});
  }, 120000);
}

void AuditTrails::close(const std::string& id) {
  (void)run_control(id, [this, id]() -> Status {
    std::lock_guard<std::mutex> g(mu_);
    auto it = states_.find(id);
    if (it == states_.end() || it->second->compressing > 0 || it->second->recorded != it->second->written) return ok();
    states_.erase(it);
    done_cv_.notify_all();
    return ok();
  }, 30000);
}

Status AuditTrails::forget(const std::string& id) {
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = states_.find(id);
    if (it != states_.end() && !it->second->writer && it->second->recorded == it->second->written) states_.erase(it);
  }
  return index_->forget(id);
}

// --- Compression of rotated files.

void AuditTrails::compress_loop() {
  for (;;) {
    std::pair<std::string, std::string> job;
    {
      std::unique_lock<std::mutex> g(mu_);
      compress_cv_.wait(g, [this] { return !compress_.empty() || writer_stopping_; });
      if (writer_stopping_) return;  // plain files are compressed when their trail is next opened
      job = std::move(compress_.front());
      compress_.pop_front();
    }
    Status st = store::compress_trail_file(job.second);
    if (!st) log_.log(log::Level::kWarn, "compressing an audit trail file failed (it stays plain)", {{"error", st.error().to_string()}}, job.first);
    {
      std::lock_guard<std::mutex> g(mu_);
      if (auto it = states_.find(job.first); it != states_.end()) --it->second->compressing;
    }
    done_cv_.notify_all();
  }
}

// --- The enforcers' pipes.

Result<UniqueFd> AuditTrails::enforcer_writer(const std::string& id, const std::string& fifo) {
  KM_TRY(read_enforcer(id, fifo));
  // Read-write: the pipe always has a reader (this descriptor), so the enforcer never gets
  // EPIPE while kmd restarts; its lines wait in the pipe.
  UniqueFd w(::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW));
  if (!w) return fail(Error::from_errno("open " + fifo));
  return w;
}

Status AuditTrails::read_enforcer(const std::string& id, const std::string& fifo) {
  std::unique_lock<std::mutex> g(pipes_mu_);
  if (auto it = pipes_.find(id); it != pipes_.end()) {
    if (!it->second->closing) return ok();
    // The previous pipe (the sandbox stopped, now it starts again) is still being drained: the
    // reader thread holds it, so it is never replaced under the reader; wait until it is gone.
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
    if (!pipes_cv_.wait_for(g, std::chrono::seconds(10), [&] { return pipes_.find(id) == pipes_.end(); })) {
      return fail(ErrorCode::kUnavailable, "the previous audit pipe of " + id + " is still being drained");
    }
  }
  struct stat st {};
  if (::lstat(fifo.c_str(), &st) == 0 && (!S_ISFIFO(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 0077) != 0)) {
    // Not the pipe kmd made (only kmd can write in the runtime directory, but be sure).
    if (::unlink(fifo.c_str()) != 0) return fail(Error::from_errno("removing " + fifo));
  }
  if (::mkfifo(fifo.c_str(), 0600) != 0 && errno != EEXIST) return fail(Error::from_errno("mkfifo " + fifo));
  UniqueFd r(::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW));
  if (!r) return fail(Error::from_errno("open " + fifo));
  if (::fstat(r.get(), &st) != 0 || !S_ISFIFO(st.st_mode)) return fail(ErrorCode::kFailedPrecondition, fifo + " is not a FIFO");
  (void)::fcntl(r.get(), F_SETPIPE_SZ, options_.pipe_bytes);
  pipes_[id] = std::make_unique<Pipe>(id, std::move(r), options_.max_line);
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  return ok();
}

void AuditTrails::detach_enforcer(const std::string& id) {
  std::unique_lock<std::mutex> g(pipes_mu_);
  auto it = pipes_.find(id);
  if (it == pipes_.end()) return;
  it->second->closing = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  pipes_cv_.wait_for(g, std::chrono::seconds(10), [&] { return pipes_.find(id) == pipes_.end(); });
}

void AuditTrails::read_pipe(Pipe& p, bool drain) {
  std::vector<audit::Event> events;
  uint64_t truncated = 0, malformed = 0;
  int64_t now = audit::now_ms();
  auto on_line = [&](std::string_view text, size_t cut) {
    if (cut > 0) {
      ++truncated;
      Json d{{"kind", "truncated"}, {"bytes", text.size() + cut}, {"kept", std::min(text.size(), kTruncatedHead)},
             {"head", std::string(text.substr(0, kTruncatedHead))},
             {"reason", "an enforcer line longer than " + std::to_string(p.lines.max_line()) + " bytes was cut"}};
      events.push_back(audit::Event{now, "kmd", "audit", std::move(d)});
      return;
    }
    if (text.empty()) return;
    Json j = Json::parse(text, nullptr, false);
    auto e = audit::from_enforcer_line(j, now);
    if (!e) {
      ++malformed;
      return;
    }
    events.push_back(std::move(*e));
  };
  char buf[65536];
  size_t total = 0;
  while (drain || total < kReadPerPipe) {
    ssize_t n = ::read(p.fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: empty for now
    total += static_cast<size_t>(n);
    p.lines.feed(std::string_view(buf, static_cast<size_t>(n)), on_line);
  }
  if (drain) p.lines.finish(on_line);
  if (events.empty() && !truncated && !malformed) return;
  std::vector<size_t> sizes;
  sizes.reserve(events.size());
  for (const auto& e : events) sizes.push_back(approx_bytes(e));
  {
    // The pipe is read only while the queue has room, so what one read brings is always taken.
    std::unique_lock<std::mutex> g(mu_);
    State& t = state_for(g, p.id);
    t.counters.truncated += truncated;
    t.counters.malformed += malformed;
    t.unreported_malformed += malformed;
    for (size_t i = 0; i < events.size(); ++i) push_locked(p.id, std::move(events[i]), sizes[i]);
  }
  queue_cv_.notify_one();
}

void AuditTrails::read_loop() {
  for (;;) {
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
    std::vector<Pipe*> polled;
    bool room;
    std::set<std::string> over;  // sandboxes past 3/4 of their share: their pipes wait
    {
      std::lock_guard<std::mutex> g(mu_);
      room = queue_.size() < options_.queue_limit * 3 / 4 && queued_bytes_ < options_.queue_bytes * 3 / 4;
      size_t waiting = 0;
      for (const auto& [sid, st] : states_) {
        if (st->recorded > st->written) ++waiting;
        if (st->recorded - st->written >= share() * 3 / 4 || st->queued_bytes >= byte_share() * 3 / 4) over.insert(sid);
      }
      if (waiting <= 1) over.clear();  // alone, a sandbox may use the whole queue
    }
    {
      std::unique_lock<std::mutex> g(pipes_mu_);
      bool any_closing = false;
      for (auto it = pipes_.begin(); it != pipes_.end();) {
        Pipe& p = *it->second;
        if (p.closing) {
          read_pipe(p, true);
          it = pipes_.erase(it);
          any_closing = true;
          continue;
        }
        if (room && !over.count(p.id)) {
          fds.push_back({p.fd.get(), POLLIN, 0});
          polled.push_back(&p);
        }
        ++it;
      }
      if (any_closing) pipes_cv_.notify_all();
      std::lock_guard<std::mutex> m(mu_);
      if (stopping_ && pipes_.empty()) return;
    }
    // A full queue: the pipes wait (and fill; the enforcers count what they cannot write).
    int rc = ::poll(fds.data(), fds.size(), room && over.empty() ? 500 : 20);
    if (rc < 0 && errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (rc > 0 && (fds[0].revents & POLLIN)) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    {
      std::lock_guard<std::mutex> g(pipes_mu_);
      for (size_t i = 0; i < polled.size(); ++i) {
        // Pipes are removed only by this thread, so `polled` is still valid.
        if (rc > 0 && (fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) read_pipe(*polled[i], false);
      }
      ++reader_passes_;
    }
    pipes_cv_.notify_all();
  }
}

// --- Reading.

std::string AuditTrails::dir_locked(const std::string& id, State* t) {
  if (t && !t->dir.empty()) return t->dir;
  return options_.live_dir(id);
}

std::string AuditTrails::dir(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  return dir_locked(id, &state_locked(id));
}

AuditCounters AuditTrails::counters(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  return state_locked(id).counters;
}

uint64_t AuditTrails::head(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  return state_locked(id).head;
}

uint64_t AuditTrails::wait_after(const std::string& id, uint64_t seq, int timeout_ms) {
  std::unique_lock<std::mutex> g(mu_);
  (void)state_locked(id);
  uint64_t head = 0;
  done_cv_.wait_for(g, std::chrono::milliseconds(timeout_ms), [&] {
    auto it = states_.find(id);
    head = it == states_.end() ? head : it->second->head;
    return head > seq || writer_stopping_;
  });
  return head;
}

Result<std::vector<AuditTrails::Line>> AuditTrails::query_lines(const std::string& id, const store::AuditIndex::Query& q) {
  KM_ASSIGN_OR_RETURN(auto rows, index_->find(id, q));
  std::vector<store::TrailPosition> at;
  at.reserve(rows.size());
  for (const auto& r : rows) at.push_back(r.at);
  auto lines = store::read_trail_lines(dir(id), at);
  if (!lines) lines = store::read_trail_lines(dir(id), at);  // moved meanwhile (destroy): once more
  if (!lines) return fail(std::move(lines).error().wrap("reading the audit trail of " + id));
  std::vector<Line> out;
  out.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out.push_back(Line{rows[i].seq, std::move((*lines)[i])});
  return out;
}

Result<std::vector<Json>> AuditTrails::query(const std::string& id, const store::AuditIndex::Query& q) {
  KM_ASSIGN_OR_RETURN(auto lines, query_lines(id, q));
  std::vector<Json> out;
  out.reserve(lines.size());
  for (auto& l : lines) {
    Json j = Json::parse(l.text, nullptr, false);
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

Result<AuditTrails::Verified> AuditTrails::verify(const std::string& id) {
  // The head is taken first: every event up to it is in the files (the head moves only after
  // the write). A live sandbox goes on appending while the files are read; what comes after
  // the head is not judged (the next --verify covers it).
  (void)flush(id);
  Verified out;
  std::string head_hash;
  std::string where;
  {
    std::lock_guard<std::mutex> g(mu_);
    State& t = state_locked(id);
    out.head = t.head;
    head_hash = t.head_hash;
    where = dir_locked(id, &t);
  }
  audit::ChainVerifier v(id);
  uint32_t file = 0;
  uint64_t line = 0;
  KM_TRY(store::scan_trail(where, [&](const store::TrailFile& f, uint64_t, std::string_view text) {
    if (f.number != file) file = f.number, line = 0;
    ++line;
    bool more = v.feed(text, store::trail_file_name(f.number, f.compressed) + " line " + std::to_string(line));
    return more && v.last_seq() != out.head;
  }));
  v.finish(out.head, head_hash);
  out.events = v.events();
  out.problem = v.problem();
  return out;
}

}  // namespace km::daemon
