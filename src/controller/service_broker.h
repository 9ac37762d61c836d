// ServiceBroker: the controller's services API (issue "Data services for
// apps"), as a request -> response function over the cluster Store.
//
//   GET    /v2/services                      every service (no credentials)
//   POST   /v2/services                      create {type, name, node?, plan?, org?}; waits until
//                                            the service node has provisioned it
//   GET    /v2/services/NAME                 one service, with its credentials
//   DELETE /v2/services/NAME[?force=1]       delete (a bound one only with force, which
//                                            unbinds first); waits until the node removed it
//   POST   /v2/services/NAME/bindings        bind {app}
//   DELETE /v2/services/NAME/bindings/APP    unbind
//
// The broker places a service on a node with the type's role (the one with
// the fewest services, or the one asked for), chooses its random id and
// credentials, and writes "service/NAME"; the service node (`katod
// services`) provisions it and answers in "service_state/NAME" (see
// services/service_model.h). Binding records the app in the service and
// bumps the app's version, so that the health manager replaces its instances
// one at a time with ones that have the service's credentials (the DEA reads
// them from the service documents).
//
// Mutations are serialized by a mutex (one controller's API threads); the
// caller checks the credential.
#pragma once

#include <functional>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "common/http.h"
#include "store/store.h"

namespace kato {

// A service's name: a lowercase letter, then letters, digits, '-' and '_'.
Status CheckServiceName(const std::string& name);

class ServiceBroker {
 public:
  struct Options {
    // How long create and delete wait for the service node.
    Millis provision_wait{45000};  // below the 60 s a `kato` request through the agent waits
    Millis delete_wait{30000};
    // Called between two looks at the service node's answer (default: a
    // 20 ms sleep). Tests use it to play the service node.
    std::function<void()> poll_pause;
  };
  ServiceBroker(Options options, Store& store, const Clock& clock);

  static bool Serves(const std::string& path) {
    return path == "/v2/services" || path.rfind("/v2/services/", 0) == 0;
  }
  HttpResponse Handle(const HttpRequest& req);

  // An app is going away: it leaves every service it was bound to.
  void ForgetApp(const std::string& app);

 private:
  HttpResponse Create(const std::string& body);
  HttpResponse Delete(const std::string& name, bool force);
  HttpResponse Bind(const std::string& name, const std::string& body);
  HttpResponse Unbind(const std::string& name, const std::string& app);
  void Pause();

  Options options_;
  Store& store_;
  const Clock& clock_;
  std::mutex mu_;
};

}  // namespace kato
