// .mar reading: the input is written to a file in a private temporary folder and opened with
// OpenModelArchive and the default ExtractLimits, as the model manager does; a success is
// removed again. Checks the documented contract: on error nothing is left in extract_root,
// and a success extracts inside it.
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "serving/model_archive.h"

namespace {

const std::string& WorkDir() {
  static const std::string dir = [] {
    const char* tmp = getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tserve-fuzz-mar-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) tserve::fuzz::Fail("mkdtemp");
    return pattern;
  }();
  return dir;
}

bool EmptyOrMissing(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return true;
  bool empty = true;
  while (dirent* e = readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") empty = false;
  }
  closedir(d);
  return empty;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = WorkDir() + "/model.mar";
  const std::string extract_root = WorkDir() + "/extract";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) tserve::fuzz::Fail("cannot write the archive");
  if (size > 0 && std::fwrite(data, 1, size, f) != size) tserve::fuzz::Fail("short write");
  std::fclose(f);

  auto archive = tserve::serving::OpenModelArchive(path, extract_root);
  if (archive.ok()) {
    TSERVE_FUZZ_CHECK(archive.value().extracted);
    TSERVE_FUZZ_CHECK(archive.value().dir.rfind(extract_root + "/", 0) == 0);
    TSERVE_FUZZ_CHECK(!archive.value().manifest.model_name.empty());
    tserve::serving::RemoveExtractedArchive(archive.value());
  } else {
    TSERVE_FUZZ_CHECK(!archive.status().message().empty());
    // Messages name the archive as given, never another host path.
  }
  TSERVE_FUZZ_CHECK(EmptyOrMissing(extract_root));
  unlink(path.c_str());
  return 0;
}
