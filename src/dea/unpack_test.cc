#include "dea/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/fs.h"

namespace kato {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// One archive entry to write. type: 'f' file, 'd' dir, 'l' symlink, 'h' hardlink
// (to `link`), 'c' character device, 'p' fifo.
struct E {
  std::string path;
  char type = 'f';
  std::string data;
  std::string link;
  int mode = 0644;
  int64_t zeros = 0;  // extra bytes of zeros after `data` (for bombs and big files)
};

// Writes entries with libarchive's write API, so that the archive holds exactly
// what the test says (tar tools would refuse or rewrite the hostile paths).
void WriteArchive(const std::string& path, const std::vector<E>& entries, bool gzip = true) {
  archive* a = archive_write_new();
  ASSERT_EQ(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
  if (gzip) {
    ASSERT_EQ(archive_write_add_filter_gzip(a), ARCHIVE_OK);
  }
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  std::vector<char> zeros(1 << 20, 0);
  for (const auto& e : entries) {
    archive_entry* ent = archive_entry_new();
    archive_entry_set_pathname(ent, e.path.c_str());
    archive_entry_set_perm(ent, static_cast<mode_t>(e.mode));
    archive_entry_set_mtime(ent, 1700000000, 0);
    int64_t size = 0;
    switch (e.type) {
      case 'f':
        archive_entry_set_filetype(ent, AE_IFREG);
        size = static_cast<int64_t>(e.data.size()) + e.zeros;
        break;
      case 'd':
        archive_entry_set_filetype(ent, AE_IFDIR);
        break;
      case 'l':
        archive_entry_set_filetype(ent, AE_IFLNK);
        archive_entry_set_symlink(ent, e.link.c_str());
        break;
      case 'h':
        archive_entry_set_filetype(ent, AE_IFREG);
        archive_entry_set_hardlink(ent, e.link.c_str());
        break;
      case 'c':
        archive_entry_set_filetype(ent, AE_IFCHR);
        archive_entry_set_rdev(ent, makedev(1, 3));
        break;
      case 'p':
        archive_entry_set_filetype(ent, AE_IFIFO);
        break;
    }
    archive_entry_set_size(ent, size);
    ASSERT_EQ(archive_write_header(a, ent), ARCHIVE_OK) << archive_error_string(a);
    if (!e.data.empty()) archive_write_data(a, e.data.data(), e.data.size());
    for (int64_t left = e.zeros; left > 0;) {
      size_t n = static_cast<size_t>(std::min<int64_t>(left, zeros.size()));
      archive_write_data(a, zeros.data(), n);
      left -= static_cast<int64_t>(n);
    }
    archive_entry_free(ent);
  }
  ASSERT_EQ(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
}

class UnpackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kato-unpack-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    parent_ = root_ + "/instances";
    dest_ = parent_ + "/app";
    archive_ = root_ + "/bits.tar.gz";
    ASSERT_TRUE(MakeDirs(parent_).ok());
  }
  void TearDown() override { fs::remove_all(root_); }

  // Unpacking `entries` must fail naming `what`, and leave the parent empty.
  void ExpectRefused(const std::vector<E>& entries, const std::string& what,
                     UnpackLimits limits = {}) {
    WriteArchive(archive_, entries);
    Status s = UnpackArchive(archive_, dest_, limits);
    ASSERT_FALSE(s.ok()) << "accepted an archive that should be refused for " << what;
    EXPECT_THAT(s.error(), HasSubstr(what));
    EXPECT_TRUE(fs::is_empty(parent_)) << "left files behind after: " << s.error();
    EXPECT_FALSE(fs::exists("/tmp/kato-unpack-escaped"));
  }

  std::string Read(const std::string& rel) { return ReadFile(dest_ + "/" + rel).value(); }
  int Mode(const std::string& rel) {
    struct stat st;
    EXPECT_EQ(::lstat((dest_ + "/" + rel).c_str(), &st), 0) << rel;
    return st.st_mode & 07777;
  }

  std::string root_, parent_, dest_, archive_;
};

TEST_F(UnpackTest, RoundTripsFilesDirsModesAndInternalLinks) {
  WriteArchive(archive_, {
                             {"./", 'd', "", "", 0755},
                             {"./bin", 'd', "", "", 0750},
                             {"./bin/run", 'f', "#!/bin/sh\necho hi\n", "", 0755},
                             {"./suid", 'f', "x", "", 04755},
                             {"lib/deep/er/data.txt", 'f', "payload", "", 0600},
                             {"lib/run-link", 'l', "", "../bin/run"},
                             {"lib/deep/er/up", 'l', "", "../../run-link"},
                             {"lib/hard", 'h', "", "./bin/run"},
                             {"ro", 'd', "", "", 0555},
                             {"ro/inside", 'f', "in a read-only dir", "", 0444},
                         });
  ASSERT_TRUE(UnpackArchive(archive_, dest_, {}).ok());
  EXPECT_EQ(Read("bin/run"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(Mode("bin/run"), 0755);
  EXPECT_EQ(Mode("bin"), 0750);
  EXPECT_EQ(Mode("suid"), 0755) << "setuid must be dropped";
  EXPECT_EQ(Read("lib/deep/er/data.txt"), "payload");
  EXPECT_EQ(Mode("lib/deep/er/data.txt"), 0600);
  EXPECT_EQ(fs::read_symlink(dest_ + "/lib/run-link"), "../bin/run");
  EXPECT_EQ(Read("lib/run-link"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(Read("lib/deep/er/up"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(fs::hard_link_count(dest_ + "/bin/run"), 2u);
  EXPECT_EQ(Mode("ro"), 0555);
  EXPECT_EQ(Read("ro/inside"), "in a read-only dir");
  EXPECT_EQ(fs::last_write_time(dest_ + "/bin/run").time_since_epoch().count() != 0, true);
  // Only the destination remains: the staging directory was renamed into place.
  EXPECT_EQ(std::distance(fs::directory_iterator(parent_), fs::directory_iterator()), 1);
}

TEST_F(UnpackTest, ReadsPlainTarByContent) {
  std::string plain = root_ + "/bits.tgz";  // the name lies: detection is by content
  WriteArchive(plain, {{"index.html", 'f', "<h1>hi</h1>"}}, /*gzip=*/false);
  ASSERT_TRUE(UnpackArchive(plain, dest_, {}).ok());
  EXPECT_EQ(Read("index.html"), "<h1>hi</h1>");
}

TEST_F(UnpackTest, UnpacksWhatGnuTarMakes) {
  // What `kato app push` users will upload: tar's own output, gnu format.
  std::string src = root_ + "/src";
  ASSERT_TRUE(MakeDirs(src + "/static").ok());
  ASSERT_TRUE(WriteFileAtomic(src + "/Procfile", "web: python3 app.py\n", 0644).ok());
  ASSERT_TRUE(WriteFileAtomic(src + "/static/" + std::string(150, 'n'), "long name", 0644).ok());
  fs::create_symlink("static", src + "/assets");
  std::string cmd = "tar -C " + src + " --format=gnu -czf " + archive_ + " .";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  ASSERT_TRUE(UnpackArchive(archive_, dest_, {}).ok());
  EXPECT_EQ(Read("Procfile"), "web: python3 app.py\n");
  EXPECT_EQ(Read("assets/" + std::string(150, 'n')), "long name");
}

TEST_F(UnpackTest, AnEmptyArchiveGivesAnEmptyDirectory) {
  WriteArchive(archive_, {});
  ASSERT_TRUE(UnpackArchive(archive_, dest_, {}).ok());
  EXPECT_TRUE(fs::is_empty(dest_));
}

TEST_F(UnpackTest, RefusesAnExistingDestination) {
  WriteArchive(archive_, {{"a", 'f', "x"}});
  ASSERT_TRUE(MakeDirs(dest_).ok());
  Status s = UnpackArchive(archive_, dest_, {});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("already exists"));
}

TEST_F(UnpackTest, GivesFilesToTheOwner) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown needs root";
  WriteArchive(archive_, {{"d/f", 'f', "x"}, {"d/l", 'l', "", "f"}});
  ASSERT_TRUE(UnpackArchive(archive_, dest_, {}, FileOwner{65534, 65534}).ok());
  for (const char* rel : {"", "/d", "/d/f", "/d/l"}) {
    struct stat st;
    ASSERT_EQ(::lstat((dest_ + rel).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u) << rel;
    EXPECT_EQ(st.st_gid, 65534u) << rel;
  }
}

TEST_F(UnpackTest, RefusesAbsolutePaths) {
  ExpectRefused({{"ok", 'f', "x"}, {"/tmp/kato-unpack-escaped", 'f', "x"}},
                "'/tmp/kato-unpack-escaped' has an absolute path");
}

TEST_F(UnpackTest, RefusesDotDot) {
  ExpectRefused({{"../x", 'f', "x"}}, "'../x' has a '..' component");
  ExpectRefused({{"a/../../x", 'f', "x"}}, "'a/../../x' has a '..' component");
  ExpectRefused({{"a/..", 'd'}}, "'a/..");
}

TEST_F(UnpackTest, RefusesSymlinkToAbsolutePathAndWritingThroughIt) {
  ExpectRefused({{"etc", 'l', "", "/etc"}, {"etc/kato-pwned", 'f', "x"}},
                "'etc' is a symlink to '/etc', which is an absolute path");
}

TEST_F(UnpackTest, NeverWritesThroughAnInTreeSymlink) {
  // The link itself is fine; a later entry going through it is not (it could
  // be retargeted by a third entry, or be a file planted where a dir should be).
  ExpectRefused({{"real", 'd'}, {"alias", 'l', "", "real"}, {"alias/f", 'f', "x"}},
                "'alias/f' goes through 'alias', which is a symlink or a file");
  ExpectRefused({{"file", 'f', "x"}, {"file/f", 'f', "x"}}, "goes through 'file'");
}

TEST_F(UnpackTest, RefusesSymlinksLeavingTheTree) {
  ExpectRefused({{"a/escape", 'l', "", "../../tmp"}},
                "'a/escape' is a symlink to '../../tmp', which leaves the app directory");
  ExpectRefused({{"up", 'l', "", ".."}}, "leaves the app directory");
  // Lexically inside, but 'b' could be a link to '..' resolved at run time.
  ExpectRefused({{"x", 'l', "", "b/../.."}}, "has a '..' after a name");
  ExpectRefused({{"x", 'l', "", ""}}, "'x' is a symlink with no target");
}

TEST_F(UnpackTest, RefusesHardlinksToOutsideOrNotYetUnpackedFiles) {
  ExpectRefused({{"passwd", 'h', "", "/etc/passwd"}},
                "'passwd' is a hardlink to '/etc/passwd', which is not a file unpacked");
  ExpectRefused({{"p", 'h', "", "../../etc/passwd"}}, "is a hardlink to '../../etc/passwd'");
  ExpectRefused({{"early", 'h', "", "late"}, {"late", 'f', "x"}}, "'early' is a hardlink");
  ExpectRefused({{"d", 'd'}, {"link", 'h', "", "d"}}, "'link' is a hardlink to 'd'");
}

TEST_F(UnpackTest, RefusesDevicesAndFifos) {
  ExpectRefused({{"null", 'c'}}, "'null' is a device, fifo or socket");
  ExpectRefused({{"pipe", 'p'}}, "'pipe' is a device, fifo or socket");
}

TEST_F(UnpackTest, RefusesDuplicates) {
  ExpectRefused({{"a", 'f', "1"}, {"a", 'f', "2"}}, "'a' appears twice");
}

TEST_F(UnpackTest, EnforcesLimits) {
  UnpackLimits limits;
  limits.max_entries = 5;
  std::vector<E> many;
  for (int i = 0; i < 10; ++i) many.push_back({"f" + std::to_string(i), 'f', "x"});
  ExpectRefused(many, "more than 5 entries", limits);

  limits = {};
  limits.max_file_bytes = 1000;
  ExpectRefused({{"big", 'f', "", "", 0644, 2000}}, "'big' is larger than the limit of 1000",
                limits);

  limits = {};
  limits.max_depth = 3;
  ExpectRefused({{"a/b/c/d", 'f', "x"}}, "is 4 directories deep, over the limit of 3", limits);
}

TEST_F(UnpackTest, StopsAGzipBombAtTheTotalLimit) {
  UnpackLimits limits;
  limits.max_total_bytes = 8 << 20;
  // 64 MiB of zeros compress to ~64 KiB; several files each under the file limit.
  std::vector<E> bomb;
  for (int i = 0; i < 4; ++i)
    bomb.push_back({"z" + std::to_string(i), 'f', "", "", 0644, 16 << 20});
  WriteArchive(archive_, bomb);
  EXPECT_LT(fs::file_size(archive_), 1u << 20);
  ExpectRefused(bomb, "unpacks to more than 8388608 bytes", limits);
}

TEST_F(UnpackTest, RefusesTruncatedAndGarbageArchives) {
  WriteArchive(archive_, {{"a", 'f', std::string(100000, 'a')}, {"b", 'f', "b"}}, false);
  fs::resize_file(archive_, 20000);
  Status s = UnpackArchive(archive_, dest_, {});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("cannot unpack"));
  EXPECT_TRUE(fs::is_empty(parent_));

  ASSERT_TRUE(WriteFileAtomic(archive_, "this is not an archive at all, just some text\n").ok());
  s = UnpackArchive(archive_, dest_, {});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("not a .tar.gz or .tar archive"));
  EXPECT_TRUE(fs::is_empty(parent_));

  s = UnpackArchive(root_ + "/missing.tar.gz", dest_, {});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error(), HasSubstr("missing.tar.gz"));
  EXPECT_TRUE(fs::is_empty(parent_));
}

}  // namespace
}  // namespace kato
