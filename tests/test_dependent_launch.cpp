// The rule that keeps programmatic dependent launches stream-ordered
// (kernels/common/dependent_launch.cuh), checked on the sources: every kernel of the channel norms
// enters the chain (griddepcontrol.wait) before anything else, and launch_dependent launches only
// those kernels. A kernel launched so without the wait could read its inputs before the kernel
// that writes them has finished, on sm_90 only, which neither the CPU tests nor the simulated GPU
// (sm_80 code) can see.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const fs::path kSource = NORMKIT_TEST_SOURCE_DIR;

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool is_channel_norm_file(const fs::path& p) {
  const std::string name = p.filename().string();
  return name.rfind("channel_norm_", 0) == 0 && (p.extension() == ".cu" || p.extension() == ".cuh");
}

// Every .cu, .cuh, .cpp and .hpp file under kernels/ and src/.
std::vector<fs::path> code_files() {
  std::vector<fs::path> files;
  for (const char* dir : {"kernels", "src"}) {
    for (const auto& e : fs::recursive_directory_iterator(kSource / dir)) {
      const std::string ext = e.path().extension().string();
      if (e.is_regular_file() &&
          (ext == ".cu" || ext == ".cuh" || ext == ".cpp" || ext == ".hpp")) {
        files.push_back(e.path());
      }
    }
  }
  return files;
}

std::string strip_comments(const std::string& s) {
  return std::regex_replace(s, std::regex("//[^\n]*"), "");
}

const std::string kEnter = "dev::enter_chain();";

struct Kernel {
  std::string file, name;
  bool enters_first;
};

// The __global__ functions of a file: name, and whether the body's first statement is
// dev::enter_chain().
std::vector<Kernel> kernels_of(const fs::path& p) {
  const std::string s = strip_comments(read(p));
  std::vector<Kernel> out;
  for (size_t at = s.find("__global__"); at != std::string::npos;
       at = s.find("__global__", at + 1)) {
    // The parameter list is the last balanced (...) before the body's brace (no brace comes
    // before it: __launch_bounds__ and the parameters hold none).
    const size_t body = s.find('{', at);
    size_t open = s.rfind(')', body);
    for (int depth = 0;; --open) {
      if (s[open] == ')') ++depth;
      if (s[open] == '(' && --depth == 0) break;
    }
    const size_t name_end = s.find_last_not_of(" \n", open - 1) + 1;
    const size_t name_begin = s.find_last_of(" \n", name_end - 1) + 1;
    const size_t first = s.find_first_not_of(" \n", body + 1);
    out.push_back({p.filename().string(), s.substr(name_begin, name_end - name_begin),
                   s.compare(first, kEnter.size(), kEnter) == 0});
  }
  return out;
}

TEST(DependentLaunch, EveryChannelNormKernelEntersTheChainFirst) {
  int files = 0, kernels = 0, global_mentions = 0;
  for (const fs::path& p : code_files()) {
    if (!is_channel_norm_file(p)) continue;
    ++files;
    const std::string s = strip_comments(read(p));
    for (size_t at = s.find("__global__"); at != std::string::npos;
         at = s.find("__global__", at + 1)) {
      ++global_mentions;
    }
    for (const Kernel& k : kernels_of(p)) {
      ++kernels;
      EXPECT_TRUE(k.enters_first) << k.file << ": kernel " << k.name
                                  << " does not start with dev::enter_chain();";
    }
  }
  EXPECT_GE(files, 16) << "the channel norms' sources were not found under " << kSource;
  EXPECT_EQ(kernels, global_mentions);
  EXPECT_GE(kernels, 30) << "fewer channel-norm kernels than the 30 of 2026-12-06: a parse error?";
}

TEST(DependentLaunch, OnlyChainedKernelsAreLaunchedDependent) {
  std::set<std::string> chained;
  for (const fs::path& p : code_files()) {
    if (!is_channel_norm_file(p)) continue;
    for (const Kernel& k : kernels_of(p)) {
      if (k.enters_first) chained.insert(k.name);
    }
  }
  // launch_dependent(name<...>, ...) or launch_dependent(kernel, ...), where `kernel` is a
  // launcher's function-pointer parameter, which its callers bind to channel-norm kernels.
  const std::regex call(R"(launch_dependent\(\s*([A-Za-z_][A-Za-z_0-9:]*))");
  int calls = 0;
  for (const fs::path& p : code_files()) {
    const std::string s = strip_comments(read(p));
    const bool definition = p.filename() == "dependent_launch.cuh";
    for (auto m = std::sregex_iterator(s.begin(), s.end(), call); m != std::sregex_iterator();
         ++m) {
      if (definition) continue;
      ++calls;
      const std::string name = (*m)[1];
      EXPECT_TRUE(is_channel_norm_file(p))
          << p.filename() << " launches " << name << " dependent: only channel-norm files may";
      EXPECT_TRUE(name == "kernel" || chained.count(name) == 1)
          << p.filename() << " launches " << name
          << " dependent, which is not a channel-norm kernel that enters the chain first";
    }
  }
  EXPECT_GE(calls, 35) << "fewer dependent launches than the 38 of 2026-12-06: a parse error?";
}

}  // namespace
