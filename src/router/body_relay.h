// The router's body relay (internal to src/router/proxy.cc): a message body
// as it arrives on a stream, handed out in pieces into a caller's buffer
// (BodyIn), and the buffers that send such a piece framed for the other side
// (FrameBody, WriteFramed). Content-Length bodies are read straight into the
// caller's buffer; chunked ones go through the message's own Beast parser
// (buffer_body), so that chunk sizes and trailers are parsed by the same code
// that parsed the header. Beast/Asio-heavy: include it from proxy.cc only.
// Not thread-safe: one per exchange and direction, on its worker's thread.
#pragma once

#include <algorithm>
#include <array>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace kato {
namespace router_detail {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using ErrorCode = boost::system::error_code;

constexpr size_t kRelayBuffer = 64 * 1024;  // per direction and exchange

// The end of a stream that was expected to end there (TLS peers often skip close_notify).
inline bool IsEof(const ErrorCode& ec) {
  return ec == net::error::eof || ec == net::ssl::error::stream_truncated;
}

enum class Framing { kNone, kLength, kChunked, kUntilClose };

// A message body as it arrives on a stream, handed out in pieces into a
// caller's buffer. Chunked bodies go through the message's parser (which read
// the header); the others are counted here, and read straight into the
// caller's buffer once what the header read left over is used up.
template <bool isRequest>
class BodyIn {
 public:
  using Parser = http::parser<isRequest, http::buffer_body>;

  void Start(Framing f, uint64_t length, Parser* parser) {
    framing_ = f;
    remaining_ = length;
    parser_ = parser;
    done_ = f == Framing::kNone || (f == Framing::kLength && length == 0);
  }
  bool done() const { return done_; }
  Framing framing() const { return framing_; }

  // Body bytes already in `in`, into out[0, cap).
  size_t Take(beast::flat_buffer& in, char* out, size_t cap, ErrorCode& ec) {
    if (done_ || cap == 0 || in.size() == 0) return 0;
    if (framing_ != Framing::kChunked) {
      size_t n = std::min(in.size(), cap);
      if (framing_ == Framing::kLength) n = static_cast<size_t>(std::min<uint64_t>(n, remaining_));
      std::memcpy(out, in.data().data(), n);
      in.consume(n);
      if (framing_ == Framing::kLength) done_ = (remaining_ -= n) == 0;
      return n;
    }
    auto& body = parser_->get().body();
    body.data = out;
    body.size = cap;
    body.more = true;
    while (in.size() > 0 && body.size > 0 && !parser_->is_done()) {
      size_t used = parser_->put(in.data(), ec);
      in.consume(used);
      if (ec == http::error::need_buffer || ec == http::error::need_more) {
        ec = {};
        if (used == 0) break;
        continue;
      }
      if (ec) return 0;
    }
    done_ = parser_->is_done();
    return cap - body.size;
  }

  // At least one byte of body into out[0, cap), or the end of the body:
  // handler(ec, n). Calls the handler at once when `in` already has some.
  template <class S, class H>
  void Read(S& s, beast::flat_buffer& in, char* out, size_t cap, H&& handler) {
    ErrorCode ec;
    size_t n = Take(in, out, cap, ec);
    if (ec || n > 0 || done_) return handler(ec, n);
    if (framing_ == Framing::kChunked) {
      // Take used what it could: that much left over is a chunk line that never ends.
      if (in.size() >= kRelayBuffer) return handler(http::error::bad_chunk, 0);
      s.async_read_some(in.prepare(kRelayBuffer),
                        [this, &s, &in, out, cap, h = std::forward<H>(handler)](
                            const ErrorCode& ec, size_t n) mutable {
                          if (ec) return h(IsEof(ec) ? http::error::partial_message : ec, 0);
                          in.commit(n);
                          Read(s, in, out, cap, std::move(h));
                        });
      return;
    }
    size_t want = framing_ == Framing::kLength
                      ? static_cast<size_t>(std::min<uint64_t>(cap, remaining_))
                      : cap;
    s.async_read_some(net::buffer(out, want), [this, h = std::forward<H>(handler)](
                                                  const ErrorCode& ec, size_t n) mutable {
      if (framing_ == Framing::kUntilClose && IsEof(ec)) {
        done_ = true;
        return h(ErrorCode{}, 0);
      }
      if (ec) return h(IsEof(ec) ? http::error::partial_message : ec, 0);
      if (framing_ == Framing::kLength) done_ = (remaining_ -= n) == 0;
      h(ErrorCode{}, n);
    });
  }

 private:
  Framing framing_ = Framing::kNone;
  uint64_t remaining_ = 0;
  bool done_ = true;
  Parser* parser_ = nullptr;
};

// The buffers that send `n` body bytes at `data` framed as `f` (chunk header
// and trailer for kChunked, plus the last chunk when `last`), after `head`
// (may be empty). `scratch` holds the chunk header; it must live until the
// write completes.
struct Framed {
  std::array<net::const_buffer, 4> bufs;
  size_t count = 0;
  void Add(net::const_buffer b) {
    if (b.size() > 0) bufs[count++] = b;
  }
};

inline Framed FrameBody(Framing f, std::string_view head, const char* data, size_t n, bool last,
                 char (&scratch)[24]) {
  static constexpr std::string_view kCrlf = "\r\n";
  static constexpr std::string_view kLast = "0\r\n\r\n";
  static constexpr std::string_view kCrlfLast = "\r\n0\r\n\r\n";
  Framed out;
  out.Add(net::buffer(head.data(), head.size()));
  if (f != Framing::kChunked) {
    out.Add(net::buffer(data, n));
    return out;
  }
  if (n > 0) {
    auto [end, ec] = std::to_chars(scratch, scratch + 20, n, 16);
    *end++ = '\r';
    *end++ = '\n';
    out.Add(net::buffer(scratch, static_cast<size_t>(end - scratch)));
    out.Add(net::buffer(data, n));
    std::string_view tail = last ? kCrlfLast : kCrlf;
    out.Add(net::buffer(tail.data(), tail.size()));
  } else if (last) {
    out.Add(net::buffer(kLast.data(), kLast.size()));
  }
  return out;
}

template <class S, class H>
void WriteFramedAsync(S& s, const Framed& f, H&& handler) {
  switch (f.count) {
    case 0:
      return handler(ErrorCode{}, 0);
    case 1:
      return net::async_write(s, f.bufs[0], std::forward<H>(handler));
    case 2:
      return net::async_write(s, std::array<net::const_buffer, 2>{f.bufs[0], f.bufs[1]},
                              std::forward<H>(handler));
    case 3:
      return net::async_write(
          s, std::array<net::const_buffer, 3>{f.bufs[0], f.bufs[1], f.bufs[2]},
          std::forward<H>(handler));
    default:
      return net::async_write(s, f.bufs, std::forward<H>(handler));
  }
}

template <class S, class H>
void WriteFramed(S& s, const Framed& f, H&& handler) {
  WriteFramedAsync(s, f, std::forward<H>(handler));
}

// A plain socket in non-blocking mode is written to at once: when the kernel
// takes it all, as it does for most answers and requests, the handler runs
// now rather than after a trip through the worker's queue (nginx, too, writes
// where it has the data). What the kernel does not take goes on as an
// asynchronous write, the handler getting the sum.
template <class Protocol, class Executor, class H>
void WriteFramed(net::basic_stream_socket<Protocol, Executor>& s, const Framed& f, H&& handler) {
  if (f.count == 0 || !s.non_blocking()) return WriteFramedAsync(s, f, std::forward<H>(handler));
  size_t total = 0;
  for (size_t i = 0; i < f.count; ++i) total += f.bufs[i].size();
  ErrorCode ec;
  size_t n = s.write_some(f.bufs, ec);  // unused entries are empty
  if (ec == net::error::would_block || ec == net::error::try_again) {
    ec = {};
    n = 0;
  }
  if (ec || n == total) return handler(ec, n);
  beast::buffers_suffix<std::array<net::const_buffer, 4>> rest(f.bufs);
  rest.consume(n);
  net::async_write(s, rest, [n, h = std::forward<H>(handler)](const ErrorCode& ec, size_t m) mutable {
    h(ec, n + m);
  });
}
}  // namespace router_detail
}  // namespace kato
