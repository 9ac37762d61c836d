// The CLI <-> agent channel: a Unix stream socket carrying JSON lines.
//
// The CLI sends one request line {"cmd": ..., "args": {...}, "command": "..."};
// the agent answers with zero or more progress lines {"progress": "..."} and
// one final line {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
#pragma once

#include <string>

#include "common/clock.h"
#include "common/result.h"

namespace kato {

// Creates a listening socket at `path` (replacing a stale one) with `mode`.
Result<int> UnixListen(const std::string& path, int mode);
Result<int> UnixConnect(const std::string& path);
// Reads up to and without the next '\n'. Errors on EOF, on more than `max`
// bytes without a newline, and when nothing completes a line within `timeout`.
// `buffer` keeps bytes read past the line for the next call.
Result<std::string> ReadLine(int fd, std::string& buffer, size_t max, Millis timeout);
Status WriteAll(int fd, const std::string& data);

}  // namespace kato
