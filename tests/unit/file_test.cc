// common/file.h: whole-file reads, atomic writes, mkdir -p.
#include "common/file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

#include "temp_dir.h"

namespace tserve {
namespace {

namespace fs = std::filesystem;

// A fresh folder under $TMPDIR, removed with everything in it at scope exit.
class TempDir : public testing::TempDir {
 public:
  TempDir() : testing::TempDir("tserve-file-test") {}
};

void Put(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---- ReadFile ----

TEST(FileTest, ReadFileReturnsTheWholeFileBytesAsTheyAre) {
  TempDir tmp;
  const std::string bytes("a\0b\r\n\xff", 6);
  Put(tmp / "f", bytes);
  StatusOr<std::string> got = ReadFile(tmp / "f");
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(*got, bytes);
  Put(tmp / "empty", "");
  got = ReadFile(tmp / "empty");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "");
  // Larger than one read() chunk.
  const std::string big(200 * 1024 + 7, 'x');
  Put(tmp / "big", big);
  got = ReadFile(tmp / "big");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, big);
}

TEST(FileTest, ReadFileReadsProcFilesWhoseSizeShowsAsZero) {
  StatusOr<std::string> got = ReadFile("/proc/self/stat");
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_FALSE(got->empty());
  EXPECT_EQ(got->back(), '\n');
}

TEST(FileTest, ReadFileErrorsNameThePathAndTheReason) {
  TempDir tmp;
  StatusOr<std::string> missing = ReadFile(tmp / "none");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "cannot read " + (tmp / "none") + ": No such file or directory");
  StatusOr<std::string> dir = ReadFile(tmp.path());
  EXPECT_EQ(dir.status().code(), StatusCode::kInternal);
  EXPECT_EQ(dir.status().message(), "cannot read " + tmp.path() + ": Is a directory");
}

TEST(FileTest, ReadFileOfAnUnreadableFileIsPermissionDenied) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads any file";
  TempDir tmp;
  Put(tmp / "secret", "s");
  ASSERT_EQ(::chmod((tmp / "secret").c_str(), 0), 0);
  StatusOr<std::string> got = ReadFile(tmp / "secret");
  EXPECT_EQ(got.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(got.status().message(), "cannot read " + (tmp / "secret") + ": Permission denied");
}

TEST(FileTest, ReadFileEnforcesTheSizeLimit) {
  TempDir tmp;
  Put(tmp / "ten", "0123456789");
  StatusOr<std::string> at_limit = ReadFile(tmp / "ten", 10);
  ASSERT_TRUE(at_limit.ok());
  EXPECT_EQ(*at_limit, "0123456789");
  StatusOr<std::string> over = ReadFile(tmp / "ten", 9);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(over.status().message(), (tmp / "ten") + " is larger than 9 bytes");
  // Also where the size is only known by reading (/proc).
  StatusOr<std::string> proc = ReadFile("/proc/self/status", 16);
  EXPECT_EQ(proc.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(Contains(proc.status().message(), "/proc/self/status is larger than 16 bytes"));
}

// ---- WriteFileAtomically ----

TEST(FileTest, WriteFileAtomicallyCreatesAndReplacesWithTheGivenMode) {
  TempDir tmp;
  const mode_t old_umask = ::umask(022);
  ASSERT_TRUE(WriteFileAtomically(tmp / "f", "first", 0666).ok());
  ::umask(old_umask);
  EXPECT_EQ(*ReadFile(tmp / "f"), "first");
  EXPECT_EQ(ModeOf(tmp / "f"), 0666u);  // not reduced by the umask
  ASSERT_TRUE(WriteFileAtomically(tmp / "f", std::string("sec\0nd", 6), 0600).ok());
  EXPECT_EQ(*ReadFile(tmp / "f"), std::string("sec\0nd", 6));
  EXPECT_EQ(ModeOf(tmp / "f"), 0600u);
  // No temporary file is left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(FileTest, WriteFileAtomicallyReplacesASymlinkNotItsTarget) {
  TempDir tmp;
  Put(tmp / "victim", "precious\n");
  fs::create_symlink(tmp / "victim", tmp / "link");
  ASSERT_TRUE(WriteFileAtomically(tmp / "link", "new\n", 0644).ok());
  EXPECT_EQ(*ReadFile(tmp / "victim"), "precious\n");
  EXPECT_FALSE(fs::is_symlink(tmp / "link"));
  EXPECT_EQ(*ReadFile(tmp / "link"), "new\n");
}

TEST(FileTest, WriteFileAtomicallyErrorsNameThePathStepAndReason) {
  TempDir tmp;
  Status s = WriteFileAtomically(tmp / "nodir/f", "x", 0644);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(),
            "cannot write " + (tmp / "nodir/f") + ": create: No such file or directory");
  // A directory in the way: rename fails, the temporary file is removed.
  ASSERT_EQ(::mkdir((tmp / "d").c_str(), 0755), 0);
  Put(tmp / "d/keep", "k");
  s = WriteFileAtomically(tmp / "d", "x", 0644);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_TRUE(Contains(s.message(), "cannot write " + (tmp / "d") + ": rename: ")) << s.message();
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);  // only d
  EXPECT_EQ(*ReadFile(tmp / "d/keep"), "k");
}

// ---- ScopedFd / WriteFully ----

TEST(FileTest, ScopedFdClosesUnlessReleased) {
  TempDir tmp;
  int fd = -1;
  {
    ScopedFd owned(::open((tmp / "f").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    fd = owned.get();
    ASSERT_GE(fd, 0);
    EXPECT_EQ(WriteFully(fd, std::string(100000, 'x')), 0);
  }
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);  // closed
  EXPECT_EQ(ReadFile(tmp / "f")->size(), 100000u);
  int kept = -1;
  {
    ScopedFd owned(::open((tmp / "f").c_str(), O_RDONLY | O_CLOEXEC));
    kept = owned.Release();
    EXPECT_EQ(owned.get(), -1);
  }
  EXPECT_NE(::fcntl(kept, F_GETFD), -1);  // still open: the caller's now
  ::close(kept);
  ScopedFd none;  // owns nothing, closes nothing
  EXPECT_EQ(none.get(), -1);
}

TEST(FileTest, WriteFullyReturnsTheErrno) {
  TempDir tmp;
  ScopedFd read_only(::open((tmp.path()).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_GE(read_only.get(), 0);
  EXPECT_EQ(WriteFully(read_only.get(), "x"), EBADF);
  EXPECT_EQ(WriteFully(read_only.get(), ""), 0);  // nothing to write: no call
}

// ---- MakeDirectories ----

TEST(FileTest, MakeDirectoriesCreatesEveryMissingParent) {
  TempDir tmp;
  ASSERT_TRUE(MakeDirectories(tmp / "a/b//c/", 0750).ok());
  EXPECT_TRUE(fs::is_directory(tmp / "a/b/c"));
  const mode_t old_umask = ::umask(0);
  ASSERT_TRUE(MakeDirectories(tmp / "m/n", 0750).ok());
  ::umask(old_umask);
  EXPECT_EQ(ModeOf(tmp / "m"), 0750u);
  EXPECT_EQ(ModeOf(tmp / "m/n"), 0750u);
  // Existing directories, links to directories, relative paths and "" are fine.
  EXPECT_TRUE(MakeDirectories(tmp / "a/b/c").ok());
  fs::create_symlink(tmp / "a", tmp / "la");
  EXPECT_TRUE(MakeDirectories(tmp / "la/b/d").ok());
  EXPECT_TRUE(fs::is_directory(tmp / "a/b/d"));
  EXPECT_TRUE(MakeDirectories("").ok());
  EXPECT_TRUE(MakeDirectories("/").ok());
}

TEST(FileTest, MakeDirectoriesErrorsNameTheComponent) {
  TempDir tmp;
  Put(tmp / "file", "x");
  Status s = MakeDirectories(tmp / "file/sub");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "cannot create directory " + (tmp / "file") + ": it exists and is not a directory");
  if (::geteuid() != 0) {
    ASSERT_EQ(::mkdir((tmp / "ro").c_str(), 0555), 0);
    s = MakeDirectories(tmp / "ro/x/y");
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
    EXPECT_EQ(s.message(), "cannot create directory " + (tmp / "ro/x") + ": Permission denied");
  }
}

}  // namespace
}  // namespace tserve
