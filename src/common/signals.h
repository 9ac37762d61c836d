// Role processes (katod primary|controller|router|dea) stop on SIGTERM or
// SIGINT, taken synchronously with sigwait by their main thread.
#pragma once

#include <signal.h>

namespace kato {

// Blocks SIGTERM and SIGINT in the calling thread (and the threads it starts
// afterwards, which inherit the mask); returns the set to sigwait() on.
inline sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

}  // namespace kato
