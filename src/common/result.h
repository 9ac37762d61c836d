// Result<T>: kato's one error policy.
//
// Expected failures (bad input, unreachable peers, refused requests, OS errors)
// are returned as a Result carrying a message a user can act on: what failed and
// what to do next. Exceptions never cross a library boundary. Broken internal
// invariants abort through KATO_CHECK with a message.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace kato {

struct Error {
  std::string message;
};

inline Error Err(std::string message) { return Error{std::move(message)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const std::string& error() const { return std::get<1>(v_).message; }
  Error take_error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

struct Unit {};
using Status = Result<Unit>;
inline Status Ok() { return Unit{}; }

[[noreturn]] inline void Die(const char* file, int line, const char* what) {
  std::fprintf(stderr, "kato: internal invariant broken at %s:%d: %s\n", file, line, what);
  std::abort();
}

}  // namespace kato

#define KATO_CHECK(cond) \
  do {                   \
    if (!(cond)) ::kato::Die(__FILE__, __LINE__, #cond); \
  } while (0)

// Propagates an error from an expression returning Result/Status.
#define KATO_TRY(expr)                                        \
  do {                                                        \
    auto kato_try_r_ = (expr);                                \
    if (!kato_try_r_.ok()) return std::move(kato_try_r_).take_error(); \
  } while (0)
