// CommandRunner: runs a system tool (ip, nft, mkfs.ext4, mount) and returns its
// output, behind an interface so that the code that decides which commands to
// run is unit tested with a fake that records them.
//
// PosixCommandRunner runs argv[0] (an absolute path, never looked up) with a
// fixed, minimal environment — nothing of the caller's environment, and
// nothing an app controls, reaches the tool — stdin fed from `input`, and a
// deadline after which the tool is killed. It waits for its own child by pid
// only, so it does not disturb a caller that reaps other children. Thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/result.h"

namespace kato {

class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  // Runs the command to completion. A non-zero exit is an error whose message
  // names the command and carries the last lines of its stderr. Returns stdout.
  virtual Result<std::string> Run(const std::vector<std::string>& argv,
                                  const std::string& input = "") = 0;
};

class PosixCommandRunner final : public CommandRunner {
 public:
  explicit PosixCommandRunner(std::chrono::milliseconds timeout = std::chrono::seconds(30))
      : timeout_(timeout) {}
  Result<std::string> Run(const std::vector<std::string>& argv,
                          const std::string& input = "") override;

 private:
  std::chrono::milliseconds timeout_;
};

// Where a tool lives: the first of /usr/sbin, /usr/bin, /sbin, /bin that has
// an executable `name`; empty when none does.
std::string FindTool(const std::string& name);

}  // namespace kato
