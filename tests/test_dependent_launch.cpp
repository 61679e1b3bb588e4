// The rule that keeps programmatic dependent launches stream-ordered
// (kernels/common/dependent_launch.cuh), checked on the sources: every kernel under kernels/ but
// those of the files that launch plainly enters the chain (griddepcontrol.wait) before anything
// else, and launch_dependent is called only from those files and never on a plain file's kernel. A
// kernel launched so without the wait could read its inputs before the kernel that writes them has
// finished, on sm_90 only, which neither the CPU tests nor the simulated GPU (sm_80 code) can see.
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

// The files whose kernels are launched plainly (<<<>>>) and do not wait: the statistics
// accumulator's, synchronized batch norm's and the preprocessing's own kernels; and
// compiled_arch.cu, whose probe kernel is never launched. Every other kernel under kernels/ enters
// the chain.
const std::set<std::string> kPlainFiles = {"statistics.cu", "sync_batch_norm.cu",
                                           "preprocessing.cu", "compiled_arch.cu"};

bool is_plain_file(const fs::path& p) { return kPlainFiles.count(p.filename().string()) == 1; }

bool is_kernel_file(const fs::path& p) {
  const std::string rel = fs::relative(p, kSource).generic_string();
  return rel.rfind("kernels/", 0) == 0 && (p.extension() == ".cu" || p.extension() == ".cuh");
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

TEST(DependentLaunch, EveryKernelButThePlainFilesEntersTheChainFirst) {
  int files = 0, kernels = 0, plain_files = 0;
  const std::regex identifier("[A-Za-z_][A-Za-z_0-9]*");
  for (const fs::path& p : code_files()) {
    if (!is_kernel_file(p)) continue;
    if (is_plain_file(p)) {
      ++plain_files;
      continue;
    }
    ++files;
    for (const Kernel& k : kernels_of(p)) {
      ++kernels;
      EXPECT_TRUE(std::regex_match(k.name, identifier))
          << k.file << ": a kernel's name parsed as '" << k.name << "'";
      EXPECT_TRUE(k.enters_first) << k.file << ": kernel " << k.name
                                  << " does not start with dev::enter_chain();";
    }
  }
  EXPECT_EQ(plain_files, static_cast<int>(kPlainFiles.size())) << "a plain file was renamed";
  EXPECT_GE(files, 20) << "the kernels' sources were not found under " << kSource;
  EXPECT_GE(kernels, 46) << "fewer kernels than the 46 of 2026-12-06: a parse error?";
}

TEST(DependentLaunch, OnlyChainedKernelsAreLaunchedDependent) {
  std::set<std::string> plain;
  for (const fs::path& p : code_files()) {
    if (!is_kernel_file(p) || !is_plain_file(p)) continue;
    for (const Kernel& k : kernels_of(p)) plain.insert(k.name);
  }
  EXPECT_GE(plain.size(), 13u) << "the plain files' kernels were not found";
  // launch_dependent(name<...>, ...): a kernel, or a launcher's function-pointer parameter, which
  // can only hold a kernel its file sees: the plain files are .cu files nobody includes.
  const std::regex call(R"(launch_dependent\(\s*([A-Za-z_][A-Za-z_0-9:]*))");
  int calls = 0;
  for (const fs::path& p : code_files()) {
    const std::string s = strip_comments(read(p));
    if (p.filename() == "dependent_launch.cuh") continue;  // the definition
    for (auto m = std::sregex_iterator(s.begin(), s.end(), call); m != std::sregex_iterator();
         ++m) {
      ++calls;
      const std::string name = (*m)[1];
      EXPECT_TRUE(is_kernel_file(p) && !is_plain_file(p))
          << p.filename() << " launches " << name << " dependent: only chained kernel files may";
      EXPECT_EQ(plain.count(name), 0u) << p.filename() << " launches the plain kernel " << name
                                       << " dependent, which does not wait";
    }
    for (const std::string& f : kPlainFiles) {
      EXPECT_EQ(s.find("#include \"" + f + "\""), std::string::npos)
          << p.filename() << " includes the plain file " << f;
    }
  }
  EXPECT_GE(calls, 51) << "fewer dependent launches than the 51 of 2026-12-06: a parse error?";
}

}  // namespace
