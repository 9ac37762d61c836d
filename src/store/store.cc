// Store helpers shared by every implementation: whole-state copies and the
// choice of store for a core's data dir.
#include "store/store.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/layout.h"

namespace kato {

Status CheckDocWrites(const std::vector<DocWrite>& writes) {
  if (writes.size() > kMaxDocWrites)
    return Err("too many document writes at once (" + std::to_string(writes.size()) +
               "; at most " + std::to_string(kMaxDocWrites) + ")");
  for (const DocWrite& w : writes) {
    if (w.kind.empty() || w.key.empty()) return Err("a document needs a kind and a key");
    if (w.value_json && !nlohmann::json::accept(*w.value_json))
      return Err("document " + w.kind + "/" + w.key + " is not valid JSON");
  }
  return Ok();
}

Result<bool> IsEmptyStore(Store& store) {
  auto snap = store.Dump();
  if (!snap) return Err(snap.error());
  return *snap == StoreSnapshot{};
}

Status CopyStore(Store& from, Store& to) {
  auto snap = from.Dump();
  if (!snap) return Err(snap.error());
  KATO_TRY(to.Load(*snap));
  auto back = to.Dump();
  if (!back) return Err("cannot read the copy back: " + back.error());
  if (!(*back == *snap)) {
    std::string what;
    if (back->revision != snap->revision) what += " revision";
    if (back->settings != snap->settings) what += " settings";
    if (back->nodes != snap->nodes) what += " nodes";
    if (back->removed_nodes != snap->removed_nodes) what += " removed-nodes";
    if (back->tokens != snap->tokens) what += " tokens";
    if (back->config != snap->config) what += " config";
    if (back->docs != snap->docs) what += " documents";
    if (back->leases != snap->leases) what += " leases";
    if (back->history != snap->history) what += " history";
    return Err("the copy differs from the original in:" + what);
  }
  return Ok();
}

Result<std::string> StoreSpecOf(const std::string& data_dir) {
  DataLayout layout{data_dir};
  struct stat sb;
  if (::stat(layout.store_spec().c_str(), &sb) != 0) {
    if (errno == ENOENT) return layout.state_db();
    return Err("cannot read " + layout.store_spec() + ": " + std::strerror(errno));
  }
  auto text = ReadFile(layout.store_spec());
  if (!text) return Err(text.error());
  std::string spec = *text;
  while (!spec.empty() && (spec.back() == '\n' || spec.back() == ' ')) spec.pop_back();
  if (spec.empty()) return Err(layout.store_spec() + " is empty (expected a postgresql:// URL)");
  return spec;
}

}  // namespace kato
