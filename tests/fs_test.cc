// The file helpers background work uses to stay out of the log's way
// (fs.h): freeing a file a step at a time, writing one back as it grows.
#include "fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <string>

#include "test_util.h"

namespace annal {
namespace {

std::string Pattern(size_t bytes) {
  std::string s(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  return s;
}

class FsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fs::CreateDir(dir_.path()).ok()); }
  std::string Path() const { return fs::Join(dir_.path(), "file"); }

  // A file of `bytes` written with `data`, open for reading and writing.
  fs::Fd Create(const std::string& data) {
    auto fd = fs::Open(Path(), O_RDWR | O_CREAT | O_TRUNC);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    if (!fd.ok()) return fs::Fd();
    EXPECT_TRUE(fs::PwriteAll(fd->get(), data.data(), data.size(), 0, Path()).ok());
    return std::move(*fd);
  }

  uint64_t Size(const fs::Fd& fd) {
    auto size = fs::FileSize(fd.get(), Path());
    EXPECT_TRUE(size.ok()) << size.status().ToString();
    return size.ok() ? *size : ~uint64_t{0};
  }

  testing::TempDir dir_{"fs"};
};

TEST_F(FsTest, FreeGraduallyShrinksTheFileToNothing) {
  fs::Fd fd = Create(Pattern(3 * fs::kFreeStepBytes + 12345));
  ASSERT_TRUE(fd.valid());
  Status s = fs::FreeGradually(fd.get(), Path(), [] { return false; });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Size(fd), 0u);
}

TEST_F(FsTest, FreeGraduallyStopsWhenAsked) {
  const uint64_t bytes = 5 * fs::kFreeStepBytes;
  fs::Fd fd = Create(Pattern(bytes));
  ASSERT_TRUE(fd.valid());
  int asked = 0;
  // Asked before each step: two steps are taken, then it stops.
  Status s = fs::FreeGradually(fd.get(), Path(), [&] { return ++asked > 2; });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(asked, 3);
  EXPECT_EQ(Size(fd), bytes - 2 * fs::kFreeStepBytes);
  // What is left is what was written.
  std::string head(1000, '\0');
  ASSERT_TRUE(fs::PreadExact(fd.get(), head.data(), head.size(), 0, Path()).ok());
  EXPECT_EQ(head, Pattern(bytes).substr(0, head.size()));
}

TEST_F(FsTest, FreeGraduallyOfAReadOnlyDescriptorIsAnErrorNamingTheFile) {
  { fs::Fd w = Create(Pattern(fs::kFreeStepBytes)); }
  auto fd = fs::Open(Path(), O_RDONLY);
  ASSERT_TRUE(fd.ok());
  Status s = fs::FreeGradually(fd->get(), Path(), [] { return false; });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(Path()), std::string::npos) << s.ToString();
  EXPECT_EQ(Size(*fd), fs::kFreeStepBytes);
}

// A tool reading a live store's directory holds the file shared: the store
// must not shrink it under the tool's reads.
TEST_F(FsTest, FreeGraduallyLeavesAFileOthersHoldShared) {
  fs::Fd fd = Create(Pattern(2 * fs::kFreeStepBytes));
  ASSERT_TRUE(fd.valid());
  {
    auto reader = fs::OpenShared(Path(), O_RDONLY);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    Status s = fs::FreeGradually(fd.get(), Path(), [] { return false; });
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
    EXPECT_EQ(Size(fd), 2 * fs::kFreeStepBytes);
  }
  ASSERT_TRUE(fs::FreeGradually(fd.get(), Path(), [] { return false; }).ok());
  EXPECT_EQ(Size(fd), 0u);
}

TEST_F(FsTest, WriteBackGraduallyStartsOnceAChunkIsWritten) {
  const std::string data = Pattern(fs::kWriteBackChunkBytes * 5 / 2);
  auto fd = fs::Open(Path(), O_RDWR | O_CREAT | O_TRUNC);
  ASSERT_TRUE(fd.ok());
  uint64_t written_back = 0;
  std::vector<uint64_t> starts;
  const size_t piece = 100'000;
  for (size_t at = 0; at < data.size(); at += piece) {
    size_t n = std::min(piece, data.size() - at);
    ASSERT_TRUE(fs::PwriteAll(fd->get(), data.data() + at, n, at, Path()).ok());
    uint64_t before = written_back;
    Status s = fs::WriteBackGradually(fd->get(), Path(), at + n, &written_back);
    ASSERT_TRUE(s.ok()) << s.ToString();
    if (written_back != before) {
      EXPECT_EQ(written_back, at + n);
      EXPECT_GE(written_back - before, fs::kWriteBackChunkBytes);
      starts.push_back(written_back);
    }
  }
  EXPECT_EQ(starts.size(), 2u);
  ASSERT_TRUE(fs::Fdatasync(fd->get(), Path()).ok());
  std::string back(data.size(), '\0');
  ASSERT_TRUE(fs::PreadExact(fd->get(), back.data(), back.size(), 0, Path()).ok());
  EXPECT_TRUE(back == data);
}

}  // namespace
}  // namespace annal
