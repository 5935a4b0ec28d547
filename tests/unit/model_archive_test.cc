#include "serving/model_archive.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/strings.h"
#include "serving/model_store.h"

namespace tserve::serving {
namespace {

namespace fs = std::filesystem;

// A fresh folder under $TMPDIR, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tserve-archive-test-XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    // realpath: /tmp may itself be a symlink, and the store checks compare real paths.
    path_ = fs::canonical(tmpl).string();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& content) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t CountEntries(const std::string& dir) {
  if (!fs::exists(dir)) return 0;
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

Manifest TestManifest(const std::string& name = "resnet18") {
  Manifest m;
  m.created_on = "17/03/2025 11:20:57";
  m.model_name = name;
  m.model_version = "1.0";
  m.serialized_file = "model.pt";
  m.handler = "image_classifier";
  m.config_file = "model-config.yaml";
  m.archiver_version = "0.12.0";
  return m;
}

// One entry of a hand-built zip; unix_mode 0 leaves libzip's default attributes.
struct ZipEntry {
  std::string name;
  std::string content;
  uint32_t unix_mode = 0;
};

// Builds a zip with libzip directly, so tests can make archives WriteArchive refuses to.
void MakeZip(const std::string& path, const std::vector<ZipEntry>& entries) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_NE(za, nullptr);
  for (const ZipEntry& e : entries) {
    zip_source_t* src = zip_source_buffer(za, e.content.data(), e.content.size(), 0);
    ASSERT_NE(src, nullptr);
    zip_int64_t idx = zip_file_add(za, e.name.c_str(), src, ZIP_FL_ENC_UTF_8);
    ASSERT_GE(idx, 0) << e.name << ": " << zip_strerror(za);
    if (e.unix_mode != 0) {
      ASSERT_EQ(zip_file_set_external_attributes(za, static_cast<zip_uint64_t>(idx), 0,
                                                 ZIP_OPSYS_UNIX, e.unix_mode << 16),
                0);
    }
  }
  ASSERT_EQ(zip_close(za), 0) << zip_strerror(za);
}

const std::string kManifestJson = ManifestToJson(TestManifest());

// The model's input files on disk and their places in the archive.
struct Inputs {
  std::vector<std::pair<std::string, std::string>> files;
};

Inputs MakeInputs(const TempDir& dir) {
  WriteFile(dir / "in/model.pt", "weights");
  WriteFile(dir / "in/model-config.yaml", "batchSize: 4\nmaxBatchDelay: 20\ntopk: 3\n");
  WriteFile(dir / "in/index_to_name.json", "{\"0\": [\"n0\", \"tench\"]}");
  WriteFile(dir / "in/vocab.txt", "a\nb\n");
  return {{{"model.pt", dir / "in/model.pt"},
           {"model-config.yaml", dir / "in/model-config.yaml"},
           {"index_to_name.json", dir / "in/index_to_name.json"},
           {"extra/vocab.txt", dir / "in/vocab.txt"}}};
}

void ExpectOpenedTestModel(const ModelArchive& a) {
  EXPECT_EQ(a.manifest, TestManifest());
  EXPECT_EQ(a.config.batch_size, 4);
  EXPECT_EQ(a.config.max_batch_delay_ms, 20);
  EXPECT_EQ(a.config.scalars.at("topk"), "3");
  EXPECT_EQ(ReadFile(a.dir + "/model.pt"), "weights");
  EXPECT_EQ(ReadFile(a.dir + "/index_to_name.json"), "{\"0\": [\"n0\", \"tench\"]}");
  EXPECT_EQ(ReadFile(a.dir + "/extra/vocab.txt"), "a\nb\n");
  EXPECT_EQ(ReadFile(a.dir + "/MAR-INF/MANIFEST.json"), kManifestJson);
}

TEST(ModelArchiveTest, ValidModelNames) {
  for (const char* ok : {"a", "resnet18", "Resnet-18", "my_model.v2", "x-1.0_b"}) {
    EXPECT_TRUE(IsValidModelName(ok)) << ok;
  }
  for (const char* bad :
       {"", "1model", "_m", "-m", ".m", "m/x", "m x", "m=x", "m:1", "caf\xc3\xa9", "../m", "m\n"}) {
    EXPECT_FALSE(IsValidModelName(bad)) << bad;
  }
}

TEST(ModelArchiveTest, WriteThenOpenMar) {
  TempDir tmp;
  Inputs in = MakeInputs(tmp);
  const std::string mar = tmp / "resnet18.mar";
  ASSERT_TRUE(WriteArchive(mar, TestManifest(), in.files, false).ok());

  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->source, mar);
  EXPECT_TRUE(a->extracted);
  EXPECT_EQ(fs::path(a->dir).parent_path(), fs::path(tmp / "extract"));
  EXPECT_EQ(fs::path(a->dir).filename().string().rfind("resnet18-", 0), 0u) << a->dir;
  ExpectOpenedTestModel(*a);

  // Opening twice gives two private folders.
  StatusOr<ModelArchive> b = OpenModelArchive(mar, tmp / "extract");
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_NE(a->dir, b->dir);

  RemoveExtractedArchive(*a);
  RemoveExtractedArchive(*b);
  EXPECT_FALSE(fs::exists(a->dir));
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);
}

TEST(ModelArchiveTest, MarIsADeflatedZipWithTheManifest) {
  TempDir tmp;
  WriteFile(tmp / "model.pt", std::string(10000, 'x'));
  Manifest m = TestManifest();
  m.config_file.clear();
  ASSERT_TRUE(WriteArchive(tmp / "m.mar", m, {{"model.pt", tmp / "model.pt"}}, false).ok());
  int err = 0;
  zip_t* za = zip_open((tmp / "m.mar").c_str(), ZIP_RDONLY, &err);
  ASSERT_NE(za, nullptr);
  EXPECT_EQ(zip_get_num_entries(za, 0), 2);
  zip_stat_t st;
  ASSERT_EQ(zip_stat(za, "model.pt", 0, &st), 0);
  EXPECT_EQ(st.comp_method, ZIP_CM_DEFLATE);
  EXPECT_LT(st.comp_size, st.size);
  EXPECT_GE(zip_name_locate(za, "MAR-INF/MANIFEST.json", 0), 0);
  zip_discard(za);
}

TEST(ModelArchiveTest, WriteThenOpenFolder) {
  TempDir tmp;
  Inputs in = MakeInputs(tmp);
  const std::string folder = tmp / "store/resnet18";
  fs::create_directories(tmp / "store");
  ASSERT_TRUE(WriteArchive(folder, TestManifest(), in.files, true).ok());

  StatusOr<ModelArchive> a = OpenModelArchive(folder, tmp / "extract");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_FALSE(a->extracted);
  EXPECT_EQ(a->dir, folder);
  ExpectOpenedTestModel(*a);
  EXPECT_FALSE(fs::exists(tmp / "extract"));  // nothing extracted
  RemoveExtractedArchive(*a);                 // a model folder is left alone
  EXPECT_TRUE(fs::exists(folder + "/model.pt"));
  // Only the model folder: no temporary siblings left behind.
  EXPECT_EQ(CountEntries(tmp / "store"), 1u);
}

TEST(ModelArchiveTest, WriteArchiveReplacesAnExistingArchive) {
  TempDir tmp;
  Inputs in = MakeInputs(tmp);
  const std::string mar = tmp / "resnet18.mar";
  WriteFile(mar, "old contents, not a zip");
  ASSERT_TRUE(WriteArchive(mar, TestManifest(), in.files, false).ok());
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_TRUE(a.ok()) << a.status().message();
  ExpectOpenedTestModel(*a);
}

TEST(ModelArchiveTest, WriteArchiveReplacesAModelFolderWhole) {
  TempDir tmp;
  Inputs in = MakeInputs(tmp);
  const std::string folder = tmp / "resnet18";
  ASSERT_TRUE(WriteArchive(folder, TestManifest(), in.files, true).ok());
  WriteFile(folder + "/stale.txt", "from the old version");
  ASSERT_TRUE(WriteArchive(folder, TestManifest(), in.files, true).ok());
  EXPECT_FALSE(fs::exists(folder + "/stale.txt"));
  EXPECT_TRUE(fs::exists(folder + "/model.pt"));
  EXPECT_EQ(CountEntries(tmp.path()), 2u);  // in/ and resnet18/
}

TEST(ModelArchiveTest, WriteArchiveNeverReplacesAnOrdinaryFolder) {
  TempDir tmp;
  Inputs in = MakeInputs(tmp);
  WriteFile(tmp / "docs/keep.txt", "precious");
  Status s = WriteArchive(tmp / "docs", TestManifest(), in.files, true);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message(), tmp / "docs" + ": exists and is not a model folder; not replacing it");
  EXPECT_EQ(ReadFile(tmp / "docs/keep.txt"), "precious");
  s = WriteArchive(tmp / "docs", TestManifest(), in.files, false);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(ReadFile(tmp / "docs/keep.txt"), "precious");
}

TEST(ModelArchiveTest, WriteArchiveRefusesUnsafeOrDuplicatePaths) {
  TempDir tmp;
  WriteFile(tmp / "f", "x");
  const std::string out = tmp / "m.mar";
  const Manifest m = TestManifest();
  using Files = std::vector<std::pair<std::string, std::string>>;
  for (const Files& files :
       {Files{{"../f", tmp / "f"}}, Files{{"/etc/f", tmp / "f"}}, Files{{"a/../../f", tmp / "f"}},
        Files{{"", tmp / "f"}}, Files{{"MAR-INF/MANIFEST.json", tmp / "f"}},
        Files{{"MAR-INF", tmp / "f"}}, Files{{"a", tmp / "f"}, {"./a", tmp / "f"}},
        Files{{"a", tmp / "f"}, {"a/b", tmp / "f"}}}) {
    for (bool as_folder : {false, true}) {
      Status s = WriteArchive(out, m, files, as_folder);
      EXPECT_FALSE(s.ok()) << files.back().first;
      EXPECT_EQ(s.message().rfind(out + ": ", 0), 0u) << s.message();
      EXPECT_FALSE(fs::exists(out));
    }
  }
}

TEST(ModelArchiveTest, WriteArchiveNamesAMissingInputFile) {
  TempDir tmp;
  Status s = WriteArchive(tmp / "m.mar", TestManifest(), {{"model.pt", tmp / "nope.pt"}}, false);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), tmp / "nope.pt" + ": No such file or directory");
  EXPECT_FALSE(fs::exists(tmp / "m.mar"));
}

// Every zip-slip shape: nothing may be written, inside extract_root or beside it.
TEST(ModelArchiveTest, RejectsZipSlipEntries) {
  struct Case {
    ZipEntry entry;
    std::string cause;
  };
  const std::vector<Case> cases = {
      {{"../evil.txt", "pwned"}, "\"..\" component"},
      {{"a/../../evil.txt", "pwned"}, "\"..\" component"},
      {{"..\\evil.txt", "pwned"}, "\"..\" component"},
      {{"/tmp/evil.txt", "pwned"}, "absolute path"},
      {{"C:/evil.txt", "pwned"}, "absolute path (drive letter)"},
      {{"link", "/etc/passwd", 0120777}, "symbolic link"},
  };
  for (const Case& c : cases) {
    TempDir tmp;
    const std::string mar = tmp / "evil.mar";
    MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson},
                  {"model.pt", "w"},
                  {"model-config.yaml", ""},
                  c.entry});
    StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract/sub");
    ASSERT_FALSE(a.ok()) << c.entry.name;
    EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
    const std::string& msg = a.status().message();
    // The name as Quoted shows it: "..\\evil.txt" for ..\evil.txt (one line, unambiguous).
    EXPECT_EQ(msg.rfind(mar + ": unsafe entry " + Quoted(c.entry.name) + " (" + c.cause + ")", 0),
              0u)
        << msg;
    EXPECT_EQ(CountEntries(tmp / "extract/sub"), 0u) << c.entry.name;
    EXPECT_FALSE(fs::exists(tmp / "extract/evil.txt"));
    EXPECT_FALSE(fs::exists(tmp / "evil.txt"));
  }
}

TEST(ModelArchiveTest, AcceptsDirectoryEntriesAndDotSlash) {
  TempDir tmp;
  const std::string mar = tmp / "m.mar";
  MakeZip(mar, {{"./", ""},
                {"MAR-INF/", ""},
                {"MAR-INF/MANIFEST.json", kManifestJson},
                {"./model.pt", "w"},
                {"model-config.yaml", "batchSize: 2\n"},
                {"data/", "", 040755},
                {"data/run.sh", "#!/bin/sh\n", 0100755}});
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "x");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(ReadFile(a->dir + "/model.pt"), "w");
  EXPECT_TRUE(fs::is_directory(a->dir + "/data"));
  struct stat st;
  ASSERT_EQ(::stat((a->dir + "/data/run.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  RemoveExtractedArchive(*a);
}

TEST(ModelArchiveTest, NotAZipArchive) {
  TempDir tmp;
  const std::string mar = tmp / "resnet18.mar";
  WriteFile(mar, "this is not a zip file, just some text that is long enough");
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "x");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), mar + ": not a zip archive");
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);

  WriteFile(mar, "");
  a = OpenModelArchive(mar, tmp / "x");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), mar + ": not a zip archive (empty file)");
  EXPECT_FALSE(fs::exists(tmp / "x"));
}

TEST(ModelArchiveTest, MissingPathIsNotFound) {
  TempDir tmp;
  StatusOr<ModelArchive> a = OpenModelArchive(tmp / "nope.mar", tmp / "x");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(a.status().message(), tmp / "nope.mar" + ": no such file or folder");
}

TEST(ModelArchiveTest, MissingManifest) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"model.pt", "w"}});
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), mar + ": MAR-INF/MANIFEST.json missing");
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);

  WriteFile(tmp / "folder/model.pt", "w");
  a = OpenModelArchive(tmp / "folder", tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), tmp / "folder" + ": MAR-INF/MANIFEST.json missing");
}

TEST(ModelArchiveTest, InvalidManifestNamesArchiveAndFile) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", R"({"model": {"modelName": "x"}})"}});
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), mar + ": MAR-INF/MANIFEST.json: missing model.handler");
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);
}

TEST(ModelArchiveTest, MissingSerializedFile) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson}, {"model-config.yaml", ""}});
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(),
            mar + ": serializedFile model.pt named in MAR-INF/MANIFEST.json is missing");
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);  // the extracted folder is removed again
}

TEST(ModelArchiveTest, SerializedFileOutsideTheArchiveIsRefused) {
  TempDir tmp;
  Manifest m = TestManifest();
  m.serialized_file = "../outside.pt";
  m.config_file.clear();
  WriteFile(tmp / "outside.pt", "w");
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", ManifestToJson(m)}});
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), mar +
                                      ": serializedFile \"../outside.pt\" must be a path inside "
                                      "the archive (\"..\" component)");
}

TEST(ModelArchiveTest, NoSerializedFileIsFine) {
  TempDir tmp;
  Manifest m = TestManifest("noop");
  m.serialized_file.clear();
  m.config_file.clear();
  m.handler = "noop";
  ASSERT_TRUE(WriteArchive(tmp / "noop.mar", m, {}, false).ok());
  StatusOr<ModelArchive> a = OpenModelArchive(tmp / "noop.mar", tmp / "extract");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->manifest, m);
  EXPECT_EQ(a->config, ModelConfig{});
  RemoveExtractedArchive(*a);
}

TEST(ModelArchiveTest, InvalidModelNameInManifest) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", ManifestToJson(TestManifest("1bad/name"))},
                {"model.pt", "w"},
                {"model-config.yaml", ""}});
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), mar +
                                      ": invalid model name \"1bad/name\" in "
                                      "MAR-INF/MANIFEST.json: a letter, then letters, digits, "
                                      "'_', '.' or '-'");
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);
}

TEST(ModelArchiveTest, BadModelConfigNamesArchiveFileAndLine) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson},
                {"model.pt", "w"},
                {"model-config.yaml", "minWorkers: 1\nbatchSize: x\n"}});
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(),
            mar + ": model-config.yaml:2: batchSize must be an integer ≥ 1, got \"x\"");
}

TEST(ModelArchiveTest, MissingConfigFile) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson}, {"model.pt", "w"}});
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(),
            mar + ": configFile model-config.yaml named in MAR-INF/MANIFEST.json is missing");
}

TEST(ModelArchiveTest, CorruptEntryIsReported) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson},
                {"model.pt", std::string(4096, 'w')},
                {"model-config.yaml", ""}});
  // Flip bytes in the middle of the file: the stored data no longer matches its CRC.
  std::string bytes = ReadFile(mar);
  size_t pos = bytes.find("MAR-INF/MANIFEST.json");
  ASSERT_NE(pos, std::string::npos);
  for (size_t i = pos + 40; i < pos + 60 && i < bytes.size(); ++i) bytes[i] ^= 0x55;
  WriteFile(mar, bytes);
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message().rfind(mar + ": ", 0), 0u) << a.status().message();
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);
}

TEST(ModelArchiveTest, ArchiveExpandingPastTheCapIsRefused) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson},
                {"model.pt", std::string(4096, 'w')},
                {"model-config.yaml", ""},
                {"extra.bin", std::string(4096, 'x')}});
  ExtractLimits limits;
  limits.max_total_bytes = 5000;
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract", limits);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.status().message(), mar + ": expands to more than 5000 bytes");
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);
  limits.max_total_bytes = 10000;
  a = OpenModelArchive(mar, tmp / "extract", limits);
  ASSERT_TRUE(a.ok()) << a.status().message();
  RemoveExtractedArchive(*a);
}

TEST(ModelArchiveTest, LyingSizesAreCaughtWhileExtracting) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson},
                {"model.pt", std::string(8192, 'w')},
                {"model-config.yaml", ""}});
  // Rewrite model.pt's uncompressed size (local header offset 22, central header offset 24)
  // to 1 byte, as a crafted archive would.
  std::string bytes = ReadFile(mar);
  auto patch = [&](const std::string& sig, size_t name_at, size_t size_at) {
    for (size_t pos = bytes.find(sig); pos != std::string::npos; pos = bytes.find(sig, pos + 1)) {
      if (bytes.compare(pos + name_at, 8, "model.pt") != 0) continue;
      bytes[pos + size_at] = 1;
      for (size_t i = 1; i < 4; ++i) bytes[pos + size_at + i] = 0;
    }
  };
  patch(std::string("PK\x03\x04", 4), 30, 22);
  patch(std::string("PK\x01\x02", 4), 46, 24);
  WriteFile(mar, bytes);
  ExtractLimits limits;
  limits.max_total_bytes = 4096;
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract", limits);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.status().message(), mar + ": expands to more than 4096 bytes");
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);
}

TEST(ModelArchiveTest, TooManyEntriesAreRefused) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson},
                {"model.pt", "w"},
                {"model-config.yaml", ""},
                {"a", ""}});
  ExtractLimits limits;
  limits.max_entries = 3;
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract", limits);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), mar + ": has more than 3 entries");
}

TEST(ModelArchiveTest, ExtremeCompressionRatioIsRefused) {
  TempDir tmp;
  const std::string mar = tmp / "x.mar";
  MakeZip(mar, {{"MAR-INF/MANIFEST.json", kManifestJson},
                {"model.pt", std::string(size_t{4} << 20, '\0')},  // deflates ~1000:1
                {"model-config.yaml", ""}});
  ExtractLimits limits;
  limits.max_ratio = 100;
  StatusOr<ModelArchive> a = OpenModelArchive(mar, tmp / "extract", limits);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), mar + ": entry \"model.pt\" inflates more than 100:1");
  EXPECT_EQ(CountEntries(tmp / "extract"), 0u);
}

// --- the model store ---

// A store with two archives, a model folder, a plain folder, a stray file and a hidden
// archive; plus a file outside it.
class ModelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = tmp_ / "store";
    fs::create_directories(store_);
    WriteFile(store_ + "/resnet18.mar", "zip");
    WriteFile(store_ + "/noop.mar", "zip");
    WriteFile(store_ + "/folder_model/MAR-INF/MANIFEST.json", "{}");
    WriteFile(store_ + "/plain/readme.txt", "x");
    WriteFile(store_ + "/notes.txt", "x");
    WriteFile(store_ + "/.hidden.mar", "zip");
    WriteFile(tmp_ / "outside.mar", "zip");
  }

  std::vector<ModelSpec> Resolve(const std::vector<std::string>& entries) {
    StatusOr<std::vector<ModelSpec>> r = ResolveLoadModels(entries, store_);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? *r : std::vector<ModelSpec>{};
  }

  Status ResolveError(const std::vector<std::string>& entries) {
    StatusOr<std::vector<ModelSpec>> r = ResolveLoadModels(entries, store_);
    EXPECT_FALSE(r.ok());
    return r.status();
  }

  TempDir tmp_;
  std::string store_;
};

TEST_F(ModelStoreTest, AllListsArchivesAndModelFoldersSorted) {
  std::vector<ModelSpec> want = {
      {"", store_ + "/folder_model"}, {"", store_ + "/noop.mar"}, {"", store_ + "/resnet18.mar"}};
  EXPECT_EQ(Resolve({"all"}), want);
  EXPECT_EQ(Resolve({"ALL"}), want);
  EXPECT_EQ(Resolve({" all "}), want);
}

TEST_F(ModelStoreTest, AllCannotBeCombined) {
  Status s = ResolveError({"all", "noop.mar"});
  EXPECT_EQ(s.message(), "load_models: \"all\" cannot be combined with other models");
  s = ResolveError({"noop.mar,all"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TEST_F(ModelStoreTest, FileNames) {
  std::vector<ModelSpec> want = {{"", store_ + "/resnet18.mar"}, {"", store_ + "/noop.mar"}};
  EXPECT_EQ(Resolve({"resnet18.mar", "noop.mar"}), want);
  EXPECT_EQ(Resolve({"resnet18.mar,noop.mar"}), want);
  EXPECT_EQ(Resolve({" resnet18.mar , noop.mar ,"}), want);
}

TEST_F(ModelStoreTest, NamedEntries) {
  std::vector<ModelSpec> want = {{"squeeze", store_ + "/resnet18.mar"},
                                 {"folder.v2", store_ + "/folder_model"}};
  EXPECT_EQ(Resolve({"squeeze=resnet18.mar", "folder.v2=folder_model"}), want);
}

TEST_F(ModelStoreTest, NoEntriesIsAnEmptyList) {
  EXPECT_TRUE(Resolve({}).empty());
  EXPECT_TRUE(Resolve({"", " , "}).empty());
}

TEST_F(ModelStoreTest, AbsolutePathsOnlyInsideTheStore) {
  std::vector<ModelSpec> want = {{"r", store_ + "/resnet18.mar"}};
  EXPECT_EQ(Resolve({"r=" + store_ + "/resnet18.mar"}), want);
  Status s = ResolveError({"r=" + tmp_ / "outside.mar"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "load_models: " + tmp_ / "outside.mar" + ": resolves to " +
                             tmp_ / "outside.mar" + ", outside the model store " + store_);
}

TEST_F(ModelStoreTest, DotDotCannotLeaveTheStore) {
  Status s = ResolveError({"../outside.mar"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("outside the model store"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("../outside.mar"), std::string::npos) << s.message();
  // ".." that stays inside is fine.
  EXPECT_EQ(Resolve({"plain/../noop.mar"}), (std::vector<ModelSpec>{{"", store_ + "/noop.mar"}}));
}

TEST_F(ModelStoreTest, SymlinkEscapingTheStoreIsRejected) {
  fs::create_symlink(tmp_ / "outside.mar", store_ + "/escape.mar");
  Status s = ResolveError({"escape.mar"});
  EXPECT_EQ(s.message(), "load_models: escape.mar: resolves to " + tmp_ / "outside.mar" +
                             ", outside the model store " + store_);
  // "all" does not smuggle it in either.
  s = ResolveError({"all"});
  EXPECT_NE(s.message().find("escape.mar: resolves to"), std::string::npos) << s.message();
  // A link to a folder outside, then a path through it.
  fs::create_directories(tmp_ / "elsewhere");
  WriteFile(tmp_ / "elsewhere/m.mar", "zip");
  fs::create_symlink(tmp_ / "elsewhere", store_ + "/linkdir");
  fs::remove(store_ + "/escape.mar");
  s = ResolveError({"m=linkdir/m.mar"});
  EXPECT_NE(s.message().find("outside the model store"), std::string::npos) << s.message();
}

TEST_F(ModelStoreTest, SymlinkInsideTheStoreIsFine) {
  fs::create_symlink(store_ + "/resnet18.mar", store_ + "/latest.mar");
  EXPECT_EQ(Resolve({"latest.mar"}), (std::vector<ModelSpec>{{"", store_ + "/resnet18.mar"}}));
}

TEST_F(ModelStoreTest, TheStoreThroughASymlinkStillWorks) {
  fs::create_symlink(store_, tmp_ / "store-link");
  StatusOr<std::vector<ModelSpec>> r = ResolveLoadModels({"noop.mar"}, tmp_ / "store-link");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->at(0).path, store_ + "/noop.mar");
}

TEST_F(ModelStoreTest, SiblingWithTheStoreAsPrefixIsOutside) {
  WriteFile(tmp_ / "store-other/x.mar", "zip");
  Status s = ResolveError({tmp_ / "store-other/x.mar"});
  EXPECT_NE(s.message().find("outside the model store"), std::string::npos) << s.message();
}

TEST_F(ModelStoreTest, MissingFileIsNamed) {
  Status s = ResolveError({"noop.mar", "missing.mar"});
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "load_models: missing.mar: not found in model store " + store_);
  s = ResolveError({"m=missing_folder"});
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
}

TEST_F(ModelStoreTest, InvalidNamesAreRejected) {
  for (const char* entry : {"1m=noop.mar", "=noop.mar", "m x=noop.mar", "_m=noop.mar"}) {
    Status s = ResolveError({entry});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << entry;
    EXPECT_EQ(s.message().rfind("load_models: invalid model name", 0), 0u) << s.message();
    EXPECT_NE(s.message().find(entry), std::string::npos) << s.message();
  }
  Status s = ResolveError({"m="});
  EXPECT_EQ(s.message(), "load_models: no file after '=' in \"m=\"");
}

TEST_F(ModelStoreTest, UrlsAreNotSupportedAtStartup) {
  Status s = ResolveError({"m=https://example.com/m.mar"});
  EXPECT_EQ(s.message(),
            "load_models: \"m=https://example.com/m.mar\": URLs are not supported at startup; "
            "put the archive in the model store");
}

TEST_F(ModelStoreTest, StoreMustExist) {
  StatusOr<std::vector<ModelSpec>> r = ResolveLoadModels({"noop.mar"}, "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "no model store configured (set model_store or --model-store)");
  r = ResolveLoadModels({"all"}, tmp_ / "nope");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "model store " + tmp_ / "nope" + ": No such file or directory");
  r = ResolveLoadModels({"noop.mar"}, store_ + "/notes.txt");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "model store " + store_ + "/notes.txt is not a folder");
}

TEST_F(ModelStoreTest, ResolveInsideStore) {
  StatusOr<std::string> p = ResolveInsideStore(store_, "noop.mar");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ + "/noop.mar");
  p = ResolveInsideStore(store_, store_ + "/folder_model/");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, store_ + "/folder_model");

  for (const std::string& bad : {std::string("."), store_, store_ + "/", std::string("..")}) {
    p = ResolveInsideStore(store_, bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  p = ResolveInsideStore(store_, "");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(), "empty model path");
  p = ResolveInsideStore(store_, "nope.mar");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tserve::serving
