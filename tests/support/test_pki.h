// TLS material made at test time: a CA and a server certificate it signs (for "localhost" and
// 127.0.0.1), written as PEM files in a fresh temporary directory that is removed afterwards.
#pragma once

#include <string>

namespace outpost::testing {

class TestPki {
 public:
  // `name` distinguishes several PKIs in one test ("good", "other").
  explicit TestPki(const std::string& name = "test");
  ~TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  const std::string& ca_file() const { return ca_file_; }
  const std::string& cert_file() const { return cert_file_; }  // server chain
  const std::string& key_file() const { return key_file_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::string ca_file_;
  std::string cert_file_;
  std::string key_file_;
};

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace outpost::testing
