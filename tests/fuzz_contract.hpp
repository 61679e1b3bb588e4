// The contract every call of the C API keeps, whatever its arguments, as the validation fuzz tests
// check it (test_validation_fuzz.cpp, test_fused_validation_fuzz.cpp) on the CPU backend:
//  - the status is one of nk_status's values;
//  - a failing call's message starts with its function, the same call gives the same status and
//    message again, and not one byte of any buffer it could reach has changed;
//  - a call that succeeds was given no output that overlaps another buffer it reads or writes
//    (but the in-place pairs the header allows), writes only inside the outputs the header gives
//    it (their extents for the shape the call passed), writes every element of the outputs that
//    it must fill, and gives the same bytes when repeated from the same state.
#pragma once

#include <gtest/gtest.h>
#include <normkit/normkit.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "test_support.hpp"
#include "validation_fixture.hpp"

namespace nkf {

using nkv::Buffers;

// Bytes a successful call may write, of elements of `elem` bytes.
struct Range {
  const void* at;
  size_t bytes;
  size_t elem;
};

// The buffers of a successful call: the outputs it `may` write, those it `must` fill (every
// element), the inputs it `reads`, the (output, input) pairs that may be the same buffer, and the
// context's workspace (which it may write too).
struct Extents {
  std::vector<Range> may, must, reads;
  Range workspace{nullptr, 0, 1};
  std::vector<std::pair<const void*, const void*>> in_place;
  // An output of `count` elements of `elem` bytes at p (nothing when p is NULL).
  void add(const void* p, int64_t count, size_t elem, bool fill) {
    if (p == nullptr) return;
    may.push_back({p, static_cast<size_t>(count) * elem, elem});
    if (fill) must.push_back(may.back());
  }
  // An input likewise.
  void read(const void* p, int64_t count, size_t elem) {
    if (p != nullptr) reads.push_back({p, static_cast<size_t>(count) * elem, elem});
  }
  // Output `out` may equal input `in` (when both are given).
  void allow(const void* out, const void* in) { in_place.emplace_back(out, in); }
};

inline bool overlap(const Range& a, const Range& b) {
  const auto* pa = static_cast<const unsigned char*>(a.at);
  const auto* pb = static_cast<const unsigned char*>(b.at);
  return a.bytes > 0 && b.bytes > 0 && pa < pb + b.bytes && pb < pa + a.bytes;
}

// How many calls succeeded and failed.
struct Outcomes {
  int successes = 0, failures = 0;
};

using Snapshot = std::map<std::string, std::vector<unsigned char>>;

inline Snapshot take(const Buffers& buffers) {
  Snapshot s;
  for (const auto& [name, b] : buffers) s[name] = b.bytes();
  return s;
}

inline void restore(Buffers& buffers, const Snapshot& s) {
  for (auto& [name, b] : buffers) std::memcpy(b.data(), s.at(name).data(), s.at(name).size());
}

inline bool poisoned(const nkt::Buffer& b) {
  for (unsigned char byte : b.bytes()) {
    if (byte != 0xFF) return false;
  }
  return true;
}

// One value of `values`, uniformly.
template <class V>
V pick(nkt::Random& rng, std::initializer_list<V> values) {
  return values.begin()[rng.integer(0, static_cast<int64_t>(values.size()) - 1)];
}

// "name + offset": where p points among the buffers.
inline std::string buffer_of(const Buffers& buffers, const void* p) {
  const auto* at = static_cast<const unsigned char*>(p);
  for (const auto& [name, b] : buffers) {
    const auto* base = static_cast<const unsigned char*>(b.data());
    if (at >= base && at < base + b.bytes().size()) {
      return name + " + " + std::to_string(at - base) + " bytes";
    }
  }
  return "an address outside the buffers";
}

// Calls `call` (of the function `fn`) on `buffers` as they are, checks the contract, counts the
// outcome and leaves the buffers as the call left them. `extents` says what a success may write.
inline void check_call(const std::string& fn, Buffers& buffers,
                       const std::function<nk_status()>& call,
                       const std::function<Extents()>& extents, Outcomes& outcomes) {
  const Snapshot before = take(buffers);
  nkv::MakeLastErrorStale(fn);
  const nk_status st = call();
  const std::string message = nk_last_error();
  ASSERT_GE(static_cast<int>(st), static_cast<int>(NK_SUCCESS));
  ASSERT_LE(static_cast<int>(st), static_cast<int>(NK_ERROR_FILE_FORMAT));
  const Snapshot after = take(buffers);
  if (st != NK_SUCCESS) {
    ++outcomes.failures;
    EXPECT_EQ(message.rfind(fn + ": ", 0), 0u) << "message: " << message;
    EXPECT_GT(message.size(), fn.size() + 2) << "an empty message";
    for (const auto& [name, bytes] : before) {
      EXPECT_TRUE(after.at(name) == bytes) << name << " was written by the failing call";
    }
    EXPECT_EQ(call(), st) << "the same failing call returned another status";
    EXPECT_EQ(std::string(nk_last_error()), message) << "the same failing call, another message";
    return;
  }
  ++outcomes.successes;
  const Extents out = extents();
  // No output overlaps another buffer of the call but as the header allows, and no buffer
  // overlaps the workspace.
  for (const Range& r : out.reads) {
    ASSERT_FALSE(overlap(r, out.workspace))
        << fn << " accepted an input that overlaps the workspace: " << buffer_of(buffers, r.at);
  }
  for (size_t i = 0; i < out.may.size(); ++i) {
    const Range& o = out.may[i];
    for (size_t j = 0; j < out.may.size(); ++j) {
      ASSERT_FALSE(j != i && overlap(o, out.may[j]))
          << fn << " accepted two outputs that overlap: " << buffer_of(buffers, o.at) << " and "
          << buffer_of(buffers, out.may[j].at);
    }
    ASSERT_FALSE(overlap(o, out.workspace))
        << fn << " accepted an output that overlaps the workspace: " << buffer_of(buffers, o.at);
    for (const Range& r : out.reads) {
      bool allowed = false;
      for (const auto& [w, in] : out.in_place) allowed = allowed || (w == o.at && in == r.at);
      ASSERT_FALSE(overlap(o, r) && !allowed)
          << fn << " accepted an output that overlaps an input: " << buffer_of(buffers, o.at)
          << " and " << buffer_of(buffers, r.at);
    }
  }
  for (const auto& [name, bytes] : before) {
    const auto* base = static_cast<const unsigned char*>(buffers.at(name).data());
    const std::vector<unsigned char>& now = after.at(name);
    for (size_t i = 0; i < bytes.size(); ++i) {
      if (now[i] == bytes[i]) continue;
      bool inside = overlap(out.workspace, Range{base + i, 1, 1});
      for (const Range& r : out.may) {
        const auto* at = static_cast<const unsigned char*>(r.at);
        inside = inside || (base + i >= at && base + i < at + r.bytes);
      }
      ASSERT_TRUE(inside) << fn << " wrote byte " << i << " of " << name
                          << ", outside every output it was given";
    }
  }
  // Every element of the outputs it must fill is written: none keeps the poison (all bytes 0xFF),
  // which no value the library stores has (a NaN the arithmetic makes has other bits).
  for (const Range& r : out.must) {
    const auto* p = static_cast<const unsigned char*>(r.at);
    for (size_t i = 0; i + r.elem <= r.bytes; i += r.elem) {
      bool poison = true;
      for (size_t b = 0; b < r.elem; ++b) poison = poison && p[i + b] == 0xFF;
      ASSERT_FALSE(poison) << fn << " left element " << i / r.elem << " of the output at "
                           << buffer_of(buffers, r.at) << " unwritten";
    }
  }
  // The same call from the same state gives the same bytes.
  restore(buffers, before);
  EXPECT_EQ(call(), NK_SUCCESS) << "the repeated call failed: " << nk_last_error();
  const Snapshot repeat = take(buffers);
  for (const auto& [name, bytes] : after) {
    EXPECT_TRUE(repeat.at(name) == bytes) << name << " differs when the call is repeated";
  }
}

// An op and its workspace query, both called on the same arguments from the same state: the op
// against `outputs`, the query writing `bytes` alone.
inline void check_op_and_query(const std::string& fn, Buffers& buffers,
                               const std::function<nk_status()>& op,
                               const std::function<Extents()>& outputs, Outcomes& op_outcomes,
                               const std::function<nk_status()>& query, const size_t* bytes,
                               Outcomes& query_outcomes) {
  const Snapshot before = take(buffers);
  check_call(fn, buffers, op, outputs, op_outcomes);
  restore(buffers, before);
  check_call(
      fn + "_workspace_size", buffers, query,
      [&] {
        Extents out;
        out.add(bytes, 1, sizeof(size_t), false);
        return out;
      },
      query_outcomes);
}

// After `trials` trials: both outcomes occurred often enough that each check ran many times.
inline void expect_both_outcomes(const Outcomes& ops, const Outcomes& queries, int trials) {
  EXPECT_GE(ops.successes, trials / 20) << ops.failures << " calls failed";
  EXPECT_GE(ops.failures, trials / 4) << ops.successes << " calls succeeded";
  EXPECT_GE(queries.successes, trials / 20) << queries.failures << " queries failed";
  EXPECT_GE(queries.failures, trials / 8) << queries.successes << " queries succeeded";
}

}  // namespace nkf
