#include "primary/assignment_index.h"

#include <nlohmann/json.hpp>

namespace kato {

namespace {

// The DEA an assignment names ("" when it names none or is not readable).
std::string NodeOf(const std::string& value_json) {
  auto j = nlohmann::json::parse(value_json, nullptr, false);
  if (!j.is_object() || !j.contains("node_id") || !j["node_id"].is_string()) return "";
  return j["node_id"].get<std::string>();
}

}  // namespace

Status AssignmentIndex::EnsureLoaded(Store& store) {
  if (loaded_) return Ok();
  auto docs = store.ListDocs(kKind);
  if (!docs) return Err(docs.error());
  std::set<std::string> ignored;
  by_node_.clear();
  node_of_.clear();
  for (const auto& [key, value] : *docs) Put(key, value, ignored);
  loaded_ = true;
  return Ok();
}

void AssignmentIndex::Apply(const DocWrite& write, std::set<std::string>& touched) {
  if (!loaded_ || write.kind != kKind) return;
  Erase(write.key, touched);
  if (write.value_json) Put(write.key, *write.value_json, touched);
}

void AssignmentIndex::Put(const std::string& key, const std::string& value_json,
                          std::set<std::string>& touched) {
  std::string node = NodeOf(value_json);
  if (node.empty()) return;  // no DEA runs it: nobody's to read
  by_node_[node][key] = value_json;
  node_of_[key] = node;
  touched.insert(node);
}

void AssignmentIndex::Erase(const std::string& key, std::set<std::string>& touched) {
  auto it = node_of_.find(key);
  if (it == node_of_.end()) return;
  auto node = by_node_.find(it->second);
  node->second.erase(key);
  if (node->second.empty()) by_node_.erase(node);
  touched.insert(it->second);
  node_of_.erase(it);
}

std::vector<std::pair<std::string, std::string>> AssignmentIndex::Of(
    const std::string& node_id) const {
  auto it = by_node_.find(node_id);
  if (it == by_node_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

}  // namespace kato
