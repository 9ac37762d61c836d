// AssignmentIndex: the primary's in-memory view of the instance assignments
// ("assignment" documents, each naming the DEA that runs it in "node_id"), by
// DEA, so that a DEA reads only its own (GET /v1/docs/assignment?node=ID) and
// its watch wakes only when they change. The primary is the only writer of
// its store while it runs: it loads the index once from the store and then
// applies its own writes to it. Not thread-safe: the primary calls it under
// its lock.
#pragma once

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "store/store.h"

namespace kato {

class AssignmentIndex {
 public:
  static constexpr const char* kKind = "assignment";

  // Reads every assignment from `store` the first time; Ok at once afterwards.
  Status EnsureLoaded(Store& store);
  bool loaded() const { return loaded_; }

  // A write the store has applied (a put with value_json, or a delete). The
  // DEAs whose assignments it changed (the old and the new node) are added to
  // `touched`. Ignored until loaded (the load reads it then).
  void Apply(const DocWrite& write, std::set<std::string>& touched);

  // The (key, value_json) pairs assigned to `node_id`, ordered by key.
  std::vector<std::pair<std::string, std::string>> Of(const std::string& node_id) const;

 private:
  void Put(const std::string& key, const std::string& value_json, std::set<std::string>& touched);
  void Erase(const std::string& key, std::set<std::string>& touched);

  bool loaded_ = false;
  std::map<std::string, std::map<std::string, std::string>> by_node_;  // node -> key -> value
  std::map<std::string, std::string> node_of_;                         // key -> node
};

}  // namespace kato
