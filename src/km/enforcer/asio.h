// Asio, as km includes it. GCC 12 at -O3 reports a false -Wnull-dereference inside Asio's
// scheduler (a thread_info pointer it cannot prove non-null) wherever handlers are inlined;
// the diagnostic is silenced for Asio's own code only.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <asio.hpp>
#pragma GCC diagnostic pop
