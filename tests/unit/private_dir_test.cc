// Private directories and symlink-safe files (issue 7 #11, #12): the helpers, and the model
// extraction that relies on them refusing a root someone else could change.
#include "common/private_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "serving/manifest.h"
#include "serving/model_archive.h"
#include "temp_dir.h"

namespace tserve {
namespace {

namespace fs = std::filesystem;

// A fresh folder under $TMPDIR, removed with everything in it at scope exit.
class TempDir : public testing::TempDir {
 public:
  TempDir() : testing::TempDir("tserve-private-test") {}
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// ---- MakePrivateTempDir / CheckPrivateDir / EnsurePrivateDir ----

TEST(PrivateDirTest, MakePrivateTempDirIsUniqueAnd0700) {
  TempDir tmp;
  auto a = MakePrivateTempDir(tmp.path(), "tserve-models-");
  auto b = MakePrivateTempDir(tmp.path(), "tserve-models-");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(fs::path(*a).parent_path(), fs::path(tmp.path()));
  EXPECT_EQ(fs::path(*a).filename().string().rfind("tserve-models-", 0), 0u);
  EXPECT_EQ(ModeOf(*a), 0700u);
  EXPECT_TRUE(CheckPrivateDir(*a).ok());
  EXPECT_TRUE(MakePrivateTempDir(tmp / "missing", "x-").status().code() == StatusCode::kInternal);
}

TEST(PrivateDirTest, EnsurePrivateDirCreatesMissing0700) {
  TempDir tmp;
  ASSERT_TRUE(EnsurePrivateDir(tmp / "run").ok());
  EXPECT_EQ(ModeOf(tmp / "run"), 0700u);
  EXPECT_TRUE(EnsurePrivateDir(tmp / "run").ok());  // again: it is ours
  EXPECT_TRUE(CheckPrivateDir(tmp / "nope").code() == StatusCode::kNotFound);
}

TEST(PrivateDirTest, SymlinkIsRefusedEvenToAPrivateDir) {
  TempDir tmp;
  ASSERT_TRUE(EnsurePrivateDir(tmp / "real").ok());
  fs::create_directory_symlink(tmp / "real", tmp / "link");
  Status s = EnsurePrivateDir(tmp / "link");
  EXPECT_TRUE(s.code() == StatusCode::kFailedPrecondition) << s.message();
  EXPECT_EQ(s.message(), tmp / "link" + " is a symbolic link: refusing to use it");
}

TEST(PrivateDirTest, WritableByOthersIsRefused) {
  TempDir tmp;
  fs::create_directory(tmp / "open");
  ::chmod((tmp / "open").c_str(), 0777);
  Status s = EnsurePrivateDir(tmp / "open");
  EXPECT_TRUE(s.code() == StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            tmp / "open" + " is writable by other users (mode 0777): refusing to use it");
  ::chmod((tmp / "open").c_str(), 0720);
  EXPECT_TRUE(CheckPrivateDir(tmp / "open").code() == StatusCode::kFailedPrecondition);
  ::chmod((tmp / "open").c_str(), 0755);  // readable by others is fine
  EXPECT_TRUE(CheckPrivateDir(tmp / "open").ok());
}

TEST(PrivateDirTest, NotADirectoryIsRefused) {
  TempDir tmp;
  WriteFile(tmp / "file", "x");
  EXPECT_TRUE(EnsurePrivateDir(tmp / "file").code() == StatusCode::kFailedPrecondition);
}

TEST(PrivateDirTest, OwnedBySomeoneElseIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a directory away";
  TempDir tmp;
  fs::create_directory(tmp / "theirs");
  ::chmod((tmp / "theirs").c_str(), 0700);
  ASSERT_EQ(::chown((tmp / "theirs").c_str(), 65534, 65534), 0);
  Status s = EnsurePrivateDir(tmp / "theirs");
  EXPECT_TRUE(s.code() == StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("is owned by uid 65534, not by this user (uid 0)"), std::string::npos)
      << s.message();
}

// ---- WriteFileAtomically (the pid file) / ReadFileNoFollow ----

TEST(PrivateDirTest, WriteFileAtomicallyReplacesASymlinkNotItsTarget) {
  TempDir tmp;
  WriteFile(tmp / "victim", "precious\n");
  fs::create_symlink(tmp / "victim", tmp / "pid");
  ASSERT_TRUE(WriteFileAtomically(tmp / "pid", "123\n", 0644).ok());
  EXPECT_EQ(ReadFile(tmp / "victim"), "precious\n");
  EXPECT_FALSE(fs::is_symlink(tmp / "pid"));
  EXPECT_EQ(ReadFile(tmp / "pid"), "123\n");
  EXPECT_EQ(ModeOf(tmp / "pid"), 0644u);
  // Nothing else is left beside it.
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator()), 2);
}

TEST(PrivateDirTest, WriteFileAtomicallyReplacesAnOldFile) {
  TempDir tmp;
  WriteFile(tmp / "pid", "old contents that are longer\n");
  ASSERT_TRUE(WriteFileAtomically(tmp / "pid", "9\n", 0600).ok());
  EXPECT_EQ(ReadFile(tmp / "pid"), "9\n");
  EXPECT_TRUE(WriteFileAtomically(tmp / "nodir/pid", "9\n", 0600).code() == StatusCode::kInternal);
}

TEST(PrivateDirTest, ReadFileNoFollowRefusesSymlinks) {
  TempDir tmp;
  WriteFile(tmp / "real", "42\n");
  fs::create_symlink(tmp / "real", tmp / "link");
  auto real = ReadFileNoFollow(tmp / "real");
  ASSERT_TRUE(real.ok());
  EXPECT_EQ(*real, "42\n");
  EXPECT_TRUE(ReadFileNoFollow(tmp / "link").status().code() == StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ReadFileNoFollow(tmp / "none").status().code() == StatusCode::kNotFound);
  EXPECT_TRUE(ReadFileNoFollow(tmp.path()).status().code() == StatusCode::kFailedPrecondition);
}

// ---- the extraction root (issue 7 #11) ----

class ExtractRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    serving::Manifest m;
    m.model_name = "noop";
    m.model_version = "1.0";
    m.handler = "noop";
    m.archiver_version = "0.12.0";
    mar_ = tmp_ / "noop.mar";
    ASSERT_TRUE(serving::WriteArchive(mar_, m, {}, false).ok());
  }
  TempDir tmp_;
  std::string mar_;
};

TEST_F(ExtractRootTest, PrivateRootIsUsed) {
  auto root = MakePrivateTempDir(tmp_.path(), "tserve-models-");
  ASSERT_TRUE(root.ok());
  auto a = serving::OpenModelArchive(mar_, *root);
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(fs::path(a->dir).parent_path(), fs::path(*root));
  serving::RemoveExtractedArchive(*a);
}

TEST_F(ExtractRootTest, MissingRootIsCreatedPrivate) {
  auto a = serving::OpenModelArchive(mar_, tmp_ / "new/root");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(ModeOf(tmp_ / "new/root"), 0700u);
  serving::RemoveExtractedArchive(*a);
}

TEST_F(ExtractRootTest, SymlinkedRootIsRefusedAndNothingWrittenThere) {
  // Someone who created the predictable name first as a link to a folder they control.
  fs::create_directory(tmp_ / "attacker");
  fs::create_directory_symlink(tmp_ / "attacker", tmp_ / "tserve-models-4242");
  auto a = serving::OpenModelArchive(mar_, tmp_ / "tserve-models-4242");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("symbolic link"), std::string::npos) << a.status().message();
  EXPECT_TRUE(fs::is_empty(tmp_ / "attacker"));
}

TEST_F(ExtractRootTest, RootOthersCanWriteIsRefused) {
  fs::create_directory(tmp_ / "tserve-models-4242");
  ::chmod((tmp_ / "tserve-models-4242").c_str(), 0777);
  auto a = serving::OpenModelArchive(mar_, tmp_ / "tserve-models-4242");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("writable by other users"), std::string::npos)
      << a.status().message();
  EXPECT_TRUE(fs::is_empty(tmp_ / "tserve-models-4242"));
}

TEST_F(ExtractRootTest, RootOwnedBySomeoneElseIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a directory away";
  fs::create_directory(tmp_ / "tserve-models-4242");
  ::chmod((tmp_ / "tserve-models-4242").c_str(), 0755);
  ASSERT_EQ(::chown((tmp_ / "tserve-models-4242").c_str(), 65534, 65534), 0);
  auto a = serving::OpenModelArchive(mar_, tmp_ / "tserve-models-4242");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("owned by uid 65534"), std::string::npos)
      << a.status().message();
  EXPECT_TRUE(fs::is_empty(tmp_ / "tserve-models-4242"));
}

}  // namespace
}  // namespace tserve
