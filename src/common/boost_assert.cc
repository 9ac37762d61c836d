// Boost's assertion handler for the builds that keep assertions (Sanitize,
// Debug: -DBOOST_ENABLE_ASSERT_HANDLER; release builds define NDEBUG and
// check nothing). Every failed assertion aborts, as assert() would, except
// one that Boost.Beast itself found to be wrong: parse_chunk_header's
// `n >= 5` (Boost 1.81, basic_parser.ipp), which a chunked body delivered in
// small pieces reaches with 3 or 4 bytes, where the code that follows
// correctly asks for more (boostorg/beast pull request 2861, fixed in Boost
// 1.86). Our fuzzer reaches it through ParseHttpRequest.
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace boost {

void assertion_failed(char const* expr, char const* function, char const* file, long line);
void assertion_failed_msg(char const* expr, char const* msg, char const* function, char const* file,
                          long line);

namespace {
bool KnownWrong(char const* expr, char const* file) {
  return std::strcmp(expr, "n >= 5") == 0 && std::strstr(file, "beast/http/impl/basic_parser.ipp");
}
}  // namespace

void assertion_failed(char const* expr, char const* function, char const* file, long line) {
  if (KnownWrong(expr, file)) return;
  std::fprintf(stderr, "%s:%ld: %s: Assertion `%s' failed.\n", file, line, function, expr);
  std::abort();
}

void assertion_failed_msg(char const* expr, char const* msg, char const* function, char const* file,
                          long line) {
  std::fprintf(stderr, "%s:%ld: %s: Assertion `%s' failed: %s\n", file, line, function, expr, msg);
  std::abort();
}

}  // namespace boost
