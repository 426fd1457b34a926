// The balances projection's handler and options (balances.h); the two
// databases are in sqlite_balances.cc and postgres_balances.cc.
#include "balances.h"

#include <utility>
#include <vector>

namespace annal::bank {

Status BalanceProjection::Handle(const client::ProjectionBatch& batch) {
  std::vector<Change> changes;
  changes.reserve(batch.events.size());
  for (const RecordedEvent& e : batch.events) {
    ANNAL_ASSIGN_OR_RETURN(std::optional<Change> c, DecodeChange(e));
    if (c) changes.push_back(std::move(*c));
  }
  if (batch.rebuilding)
    return changes.empty() ? Status::Ok() : store_->ApplyRebuild(changes, batch.slice);
  return store_->ApplyLive(changes, batch.through);
}

client::ProjectionOptions ProjectionOptionsFor(std::string name, uint32_t slices, bool rebuild) {
  client::ProjectionOptions o;
  o.name = std::move(name);
  o.filter.kind = client::Filter::Kind::kCategory;
  o.filter.value = std::string(kCategory);
  o.slices = slices;
  o.rebuild = rebuild;
  return o;
}

}  // namespace annal::bank
