// kato, the command-line tool: parses a command, asks the node agent through
// its Unix socket, prints the answer for people (text) or programs (--json).
#pragma once

namespace kato {

// Returns the process exit code: 0 on success, 1 on an error (a one-line
// message on stderr), 2 on bad usage.
int RunCli(int argc, char** argv);

}  // namespace kato
