// The contract every call of the C API keeps, whatever its arguments, as the validation fuzz tests
// check it on the CPU backend (test_validation_fuzz.cpp, test_fused_validation_fuzz.cpp,
// test_statistics_ops_validation_fuzz.cpp), and the random changes they share:
//  - the status is one of nk_status's values;
//  - a failing call's message starts with its function, the same call gives the same status and
//    message again, and not one byte of any buffer it could reach has changed;
//  - a call that succeeds was given no output that overlaps another buffer it reads or writes
//    (but the in-place pairs the header allows) and no buffer that overlaps the context's
//    workspace, writes only inside its outputs (their extents for the shape the call passed) and
//    the workspace, writes every element of the outputs that it must fill, and gives the same
//    bytes when repeated from the same state.
#pragma once

#include <gtest/gtest.h>
#include <normkit/normkit.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "test_support.hpp"
#include "validation_fixture.hpp"

namespace nkf {

using nkv::Buffers;

// Bytes of one of a call's buffers, elements of `elem` bytes.
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
// outcome and leaves the buffers as the call left them. `extents` gives a success's buffers.
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
inline void expect_both_outcomes(const Outcomes& ops, int trials) {
  EXPECT_GE(ops.successes, trials / 20) << ops.failures << " calls failed";
  EXPECT_GE(ops.failures, trials / 4) << ops.successes << " calls succeeded";
}
inline void expect_both_outcomes(const Outcomes& ops, const Outcomes& queries, int trials) {
  expect_both_outcomes(ops, trials);
  EXPECT_GE(queries.successes, trials / 20) << queries.failures << " queries failed";
  EXPECT_GE(queries.failures, trials / 8) << queries.successes << " queries succeeded";
}

// A call the test built to be valid: checked like any other, and it must be accepted.
inline void check_valid_call(const std::string& fn, Buffers& buffers,
                             const std::function<nk_status()>& call,
                             const std::function<Extents()>& extents, Outcomes& outcomes) {
  const int failures = outcomes.failures;
  check_call(fn, buffers, call, extents, outcomes);
  EXPECT_EQ(outcomes.failures, failures) << "a valid call was rejected: " << nk_last_error();
}

// One to `most` changes made by `mutate`, and what they did ("a; b; c").
inline std::string random_changes(nkt::Random& rng, int most,
                                  const std::function<std::string()>& mutate) {
  std::string changes;
  const int64_t count = rng.integer(1, most);
  for (int64_t i = 0; i < count; ++i) changes += (i ? "; " : "") + mutate();
  return changes;
}

// ---- pointer arguments and their random changes ------------------------------------------------

// How a call uses a buffer argument.
enum class Role { kIn, kOut, kInOut };

// A pointer argument (a field of a struct the test passes): its name (also its buffer's), what its
// buffer holds (`kind`: buffers of one kind have one size, so any of them may stand for another),
// its role, and how to read and set it.
struct Slot {
  std::string name;
  int kind;
  Role role;
  std::function<void*()> get;
  std::function<void(void*)> set;
};

template <class S, class P>
Slot make_slot(const char* name, int kind, Role role, S* s, P S::*field) {
  return Slot{name, kind, role,
              [s, field] { return const_cast<void*>(static_cast<const void*>(s->*field)); },
              [s, field](void* p) { s->*field = static_cast<P>(p); }};
}

inline Slot& slot_named(std::vector<Slot>& slots, const std::string& name) {
  for (Slot& s : slots) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no slot " << name;
  return slots.front();
}

// A new buffer for each slot, of `floats(kind)` fp32 elements: random where the call reads it
// (inputs and kInOut, such as running statistics), poisoned where it only writes it.
inline void new_slot_buffers(const std::vector<Slot>& slots, int64_t (*floats)(int kind),
                             nkt::Random& rng, Buffers& buffers) {
  for (const Slot& s : slots) {
    nkt::Buffer b(NK_F32, rng.uniform(floats(s.kind), -2, 2));
    if (s.role == Role::kOut) b.poison();
    buffers[s.name] = std::move(b);
  }
}

// One random change of one of `slots`: NULL; 1 or 2 bytes off (once: twice would be 4 bytes,
// aligned and past the buffer); onto a buffer of its kind (its own where it was NULL: an output
// anywhere, in place or an overlap to reject; a buffer the call reads only onto one that holds
// data, since a poisoned one would carry its NaN bits into outputs that the success check reads
// as unwritten); or into the buffer "arena" (fp32 elements, at least 32 + any buffer's size).
// Returns what it did.
inline std::string mutate_pointer(std::vector<Slot>& slots, Buffers& buffers, nkt::Random& rng) {
  std::string what = " unchanged";  // where the change drawn does not apply
  Slot& s = slots[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(slots.size()) - 1))];
  auto* p = static_cast<char*>(s.get());
  const int how = static_cast<int>(rng.integer(0, 4));
  if (how == 0) {
    s.set(nullptr);
    what = " NULL";
  } else if (how == 1 && p != nullptr && reinterpret_cast<uintptr_t>(p) % 4 == 0) {
    const int off = pick(rng, {1, 2});
    s.set(p + off);
    what = " + " + std::to_string(off) + " bytes";
  } else if (how == 2) {
    const Slot& t =
        slots[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(slots.size()) - 1))];
    const std::string& target = p == nullptr ? s.name : t.name;
    if (slot_named(slots, target).kind == s.kind &&
        !(s.role != Role::kOut && poisoned(buffers.at(target)))) {
      s.set(buffers.at(target).data());
      what = " = " + target + "'s buffer";
    }
  } else {
    const int64_t at = rng.integer(0, 32);  // near each other: partial overlaps are frequent
    s.set(buffers.at("arena").f32() + at);
    what = " = arena + " + std::to_string(at);
  }
  return s.name + what;
}

// ---- the other random changes the fuzz tests share ------------------------------------------

// One dimension of both descriptors (a call reads one of them): N and rows, C and cols, or S, to a
// value that keeps an accepted call inside buffers of 2 x 4 x 3 (or 3 x 8) activations and 8
// per-channel values, or to one that must be rejected (below 1, or an element count above
// 2^60 - 1). N = 0 is accepted only where a rank may be empty. Returns what it did.
inline std::string mutate_dimension(nk_act_desc& act, nk_row_desc& row, nkt::Random& rng) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const int which = static_cast<int>(rng.integer(0, 2));
  if (which == 0) {
    const int64_t v = pick<int64_t>(
        rng, {1, 2, 0, -1, std::numeric_limits<int64_t>::min(), kMax, int64_t{1} << 60});
    act.n = row.rows = v;
    return "n = rows = " + std::to_string(v);
  }
  if (which == 1) {
    const int64_t v = pick<int64_t>(rng, {1, 2, 4, 0, -3, kMax, int64_t{1} << 61});
    act.c = row.cols = v;
    return "c = cols = " + std::to_string(v);
  }
  const int64_t v = pick<int64_t>(rng, {1, 2, 3, 0, -1, kMax, int64_t{1} << 60});
  act.spatial = v;
  return "spatial = " + std::to_string(v);
}

// The context's workspace as a test set it (none: at NULL).
struct Workspace {
  void* at = nullptr;
  size_t bytes = 0;
};

// Sets a workspace of `bytes` on ctx at the first 256-byte boundary of `inside`, or of a new
// poisoned buffer "workspace" when `inside` is NULL.
inline void set_workspace(nk_context ctx, Buffers& buffers, size_t bytes, void* inside,
                          Workspace& ws) {
  if (inside == nullptr) {
    buffers["workspace"] = nkt::Buffer(NK_F32, static_cast<int64_t>(bytes / 4 + 64));
    buffers["workspace"].poison();
    inside = buffers["workspace"].data();
  }
  void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(inside) + 255) / 256 * 256);
  ASSERT_EQ(nk_context_set_workspace(ctx, aligned, bytes), NK_SUCCESS) << nk_last_error();
  ws = Workspace{aligned, bytes};
}

// Removes the context's workspace.
inline void clear_workspace(nk_context ctx, Workspace& ws) {
  ASSERT_EQ(nk_context_set_workspace(ctx, nullptr, 0), NK_SUCCESS) << nk_last_error();
  ws = Workspace{};
}

// A random workspace: too small for most ops (16 bytes), large enough (4096), or inside the buffer
// "arena" (where the call's buffers may overlap it). Returns what it did.
inline std::string mutate_workspace(nk_context ctx, Buffers& buffers, nkt::Random& rng,
                                    Workspace& ws) {
  const int w = static_cast<int>(rng.integer(0, 2));
  if (w == 0) set_workspace(ctx, buffers, 16, nullptr, ws);
  if (w == 1) set_workspace(ctx, buffers, 4096, nullptr, ws);
  if (w == 2)
    set_workspace(ctx, buffers, 1024, buffers.at("arena").f32() + rng.integer(0, 512), ws);
  return w == 0 ? "workspace 16 bytes" : w == 1 ? "workspace 4096 bytes" : "workspace in the arena";
}

// One field of the parameter block (with `eps`, the eps argument of the calls that take one apart
// from the block, which changes with it): phase, eps, momentum, or the two modes; to a valid or an
// invalid value. Returns what it did.
inline std::string mutate_params(nk_norm_params& params, double& eps, nkt::Random& rng) {
  const int which = static_cast<int>(rng.integer(0, 3));
  std::ostringstream what;
  if (which == 0) {
    const int v = pick(rng, {0, 1, 7});
    params.phase = static_cast<nk_phase>(v);
    what << "phase = " << v;
  } else if (which == 1) {
    const double v = pick(rng, {1e-5, 0.0, 1e-3, -1e-9, nkv::kNaN, nkv::kInf, -nkv::kInf});
    params.eps = eps = v;
    what << "eps = " << v;
  } else if (which == 2) {
    const double v = pick(rng, {0.0, 0.5, 1.0, -0.1, 1.1, nkv::kNaN, nkv::kInf});
    params.momentum = v;
    what << "momentum = " << v;
  } else {
    const int m = pick(rng, {0, 1, 9}), r = pick(rng, {0, 1, -2});
    params.momentum_mode = static_cast<nk_momentum_mode>(m);
    params.running_var = static_cast<nk_running_var>(r);
    what << "momentum_mode = " << m << ", running_var = " << r;
  }
  return what.str();
}

}  // namespace nkf
