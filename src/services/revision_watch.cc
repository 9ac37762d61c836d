#include "services/revision_watch.h"

namespace kato {

RevisionWatch::RevisionWatch(ClusterClient& client) : client_(client), thread_([this] { Run(); }) {}

RevisionWatch::~RevisionWatch() {
  done_ = true;
  thread_.join();  // within the long poll's 1 s
}

void RevisionWatch::Run() {
  int64_t revision = -1;
  while (!done_) {
    auto r = client_.Watch(revision, Millis(1000));
    if (r && *r != revision) {
      revision = *r;
      changed_ = true;
    } else if (!r) {
      for (int i = 0; i < 10 && !done_; ++i) std::this_thread::sleep_for(Millis(100));  // core away
    }
  }
}

}  // namespace kato
