#include "services/instance_host.h"

namespace kato {

void SupervisedInstances::Apply() {
  std::vector<ProcessSpec> specs;
  for (const auto& [name, spec] : wanted_) specs.push_back(spec);
  sup_.set_desired(std::move(specs));
}

void SupervisedInstances::Want(const ProcessSpec& spec) {
  auto it = wanted_.find(spec.name);
  if (it != wanted_.end() && it->second == spec) return;
  wanted_[spec.name] = spec;
  Apply();
}

void SupervisedInstances::Drop(const std::string& name) {
  if (wanted_.erase(name)) Apply();
}

std::optional<ProcessStatus> SupervisedInstances::Status(const std::string& name) const {
  return sup_.status(name);
}

std::vector<std::string> SupervisedInstances::Names() const {
  std::vector<std::string> out;
  for (const auto& s : sup_.status()) out.push_back(s.name);
  return out;
}

}  // namespace kato
