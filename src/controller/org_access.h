// OrgAccess: who may act on which app or service, and whether an
// organization's quota allows a change (issue "Users, organizations, and the
// Management Console"). ControllerApi asks it before doing what a call says.
//
// An app or service belongs to one organization (its "org"; "" for those an
// admin made without --org, which only admins see). A developer sees and
// changes only what their organizations own; to them anything else does not
// exist (404), so that names of other teams' apps do not leak. Node and role
// operations, buildpack changes and staging outcomes are not theirs either.
#pragma once

#include <string>

#include "common/http.h"
#include "common/result.h"
#include "controller/accounts.h"
#include "controller/app_api.h"
#include "store/store.h"

namespace kato {

class OrgAccess {
 public:
  OrgAccess(Store& store, const Caller& caller) : store_(store), caller_(caller) {}

  // The organization a new app or service goes to: `requested` (which must
  // exist, and for a developer be one of theirs), or a developer's only one.
  // An error reply (400, 403 or 404) when there is none.
  Result<std::string> ForNew(const std::string& requested, HttpResponse* refusal) const;

  // Whether the organization's started apps fit its quota once `proposed`
  // replaces the app of its name (memory: instances x memory of each).
  Status CheckAppQuota(const AppRecord& proposed) const;
  // Whether the organization may own one more service.
  Status CheckServiceQuota(const std::string& org) const;

  // The 404 a developer gets for an app or service of another organization.
  static HttpResponse NotFound(const std::string& what, const std::string& name);

 private:
  Store& store_;
  const Caller& caller_;
};

}  // namespace kato
