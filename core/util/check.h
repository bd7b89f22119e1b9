// Checks that say where and what to do.
//
// LINEA_CHECK(cond) << "message";          internal invariant; throws linea::Error with file:line.
// LINEA_USER_CHECK(cond, hint) << "message"; a mistake a user can make; adds a `hint:` line.
// Both throw linea::Error, so the CLI can print one clear line and exit non-zero; MPI jobs abort
// every rank from the top level (see launch/main.cpp).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace linea {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
// Collects a streamed message; Thrower turns it into an exception at the end of the expression.
class CheckMessage {
 public:
  CheckMessage(const char* expr, const char* file, int line, const char* hint)
      : hint_(hint ? hint : "") {
    ss_ << file << ":" << line << ": check failed: " << expr << ": ";
  }
  template <typename T>
  CheckMessage& operator<<(const T& v) {
    ss_ << v;
    return *this;
  }
  std::string str() const { return hint_.empty() ? ss_.str() : ss_.str() + "\nhint: " + hint_; }

 private:
  std::ostringstream ss_;
  std::string hint_;
};
struct Thrower {
  [[noreturn]] void operator&(const CheckMessage& m) { throw Error(m.str()); }
};
}  // namespace detail

}  // namespace linea

#define LINEA_CHECK(cond) \
  if (cond) {             \
  } else                  \
    ::linea::detail::Thrower() & ::linea::detail::CheckMessage(#cond, __FILE__, __LINE__, nullptr)

#define LINEA_USER_CHECK(cond, hint) \
  if (cond) {                        \
  } else                             \
    ::linea::detail::Thrower() & ::linea::detail::CheckMessage(#cond, __FILE__, __LINE__, hint)
