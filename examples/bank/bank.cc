// The bank's domain: events, the account reducer and the commands (bank.h).
#include "bank.h"

#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "annal/assert.h"

namespace annal::bank {
namespace {

using nlohmann::json;

constexpr std::string_view kStreamPrefix = "account-";
constexpr uint32_t kReadPageEvents = 10'000;

// The payload as a JSON object, parsed without exceptions.
Result<json> ParseObject(const RecordedEvent& e) {
  json j = json::parse(e.payload, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return Status::InvalidArgument(e.type + " at position " + std::to_string(e.position.get()) +
                                   ": the payload is not a JSON object");
  return j;
}

Result<int64_t> ParseAmount(const RecordedEvent& e) {
  ANNAL_ASSIGN_OR_RETURN(json j, ParseObject(e));
  auto it = j.find("amount");
  if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() <= 0 ||
      it->get<int64_t>() > kMaxAmount)
    return Status::InvalidArgument(e.type + " at position " + std::to_string(e.position.get()) +
                                   ": \"amount\" is not an integer in 1.." +
                                   std::to_string(kMaxAmount));
  return it->get<int64_t>();
}

Result<std::string> ParseOwner(const RecordedEvent& e) {
  ANNAL_ASSIGN_OR_RETURN(json j, ParseObject(e));
  auto it = j.find("owner");
  if (it == j.end() || !it->is_string())
    return Status::InvalidArgument(e.type + " at position " + std::to_string(e.position.get()) +
                                   ": \"owner\" is not a string");
  return it->get<std::string>();
}

Status CheckAmount(int64_t amount) {
  if (amount <= 0 || amount > kMaxAmount)
    return Status::InvalidArgument("amount " + std::to_string(amount) + " is not in 1.." +
                                   std::to_string(kMaxAmount));
  return Status::Ok();
}

class AccountReducerImpl final : public Reducer {
 public:
  const std::string& name() const override { return name_; }
  uint32_t schema_version() const override { return 1; }
  std::string Initial() const override { return EncodeState({}); }

  Status Apply(std::string* state, const RecordedEvent& event) const override {
    ANNAL_ASSIGN_OR_RETURN(AccountState s, DecodeState(*state));
    ANNAL_ASSIGN_OR_RETURN(std::optional<Change> c, DecodeChange(event));
    if (!c) return Status::Ok();  // not a bank event: the account does not change
    if (c->owner) {
      s.opened = true;
      s.owner = *c->owner;
    }
    s.balance += c->delta;
    *state = EncodeState(s);
    return Status::Ok();
  }

 private:
  const std::string name_ = "bank-account";
};

}  // namespace

std::string AccountStream(std::string_view id) {
  ANNAL_ASSERT(!id.empty());
  return std::string(kStreamPrefix) + std::string(id);
}

std::string OpenedPayload(std::string_view owner) { return json{{"owner", owner}}.dump(); }
std::string AmountPayload(int64_t amount) { return json{{"amount", amount}}.dump(); }

Result<std::optional<Change>> DecodeChange(const RecordedEvent& e) {
  if (e.stream.size() <= kStreamPrefix.size() ||
      e.stream.compare(0, kStreamPrefix.size(), kStreamPrefix) != 0)
    return std::optional<Change>();
  Change c;
  c.account = e.stream.substr(kStreamPrefix.size());
  c.position = e.position;
  if (e.type == kAccountOpened) {
    ANNAL_ASSIGN_OR_RETURN(std::string owner, ParseOwner(e));
    c.owner = std::move(owner);
  } else if (e.type == kAccountCredited) {
    ANNAL_ASSIGN_OR_RETURN(c.delta, ParseAmount(e));
  } else if (e.type == kAccountDebited) {
    ANNAL_ASSIGN_OR_RETURN(int64_t amount, ParseAmount(e));
    c.delta = -amount;
  } else {
    return std::optional<Change>();
  }
  return std::optional<Change>(std::move(c));
}

void FoldChange(const Change& c, Balances* balances) {
  auto it = balances->find(c.account);
  if (it == balances->end()) it = balances->emplace(c.account, Balance{}).first;
  Balance& b = it->second;
  if (c.position.get() <= b.last_position) return;
  if (c.owner) b.owner = *c.owner;
  b.balance += c.delta;
  b.last_position = c.position.get();
}

Result<Balances> ReplayBalances(client::Client& client, GlobalPosition* last_position) {
  Balances balances;
  client::Filter filter{.kind = client::Filter::Kind::kCategory, .value = std::string(kCategory)};
  GlobalPosition from(1);
  GlobalPosition last;
  while (true) {
    ANNAL_ASSIGN_OR_RETURN(client::AllEventsPage page,
                           client.ReadAll(from, kReadPageEvents, filter));
    for (const RecordedEvent& e : page.events) {
      ANNAL_ASSIGN_OR_RETURN(std::optional<Change> c, DecodeChange(e));
      if (!c) continue;
      FoldChange(*c, &balances);
      last = e.position;
    }
    // An empty page that did not move: the end of the log. (An empty page
    // that moved is a stretch the filter skipped.)
    if (page.events.empty() && page.next_position <= from) break;
    from = page.next_position;
  }
  if (last_position != nullptr) *last_position = last;
  return balances;
}

Result<AccountState> DecodeState(const std::string& state) {
  json j = json::parse(state, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("opened") || !j["opened"].is_boolean() ||
      !j.contains("owner") || !j["owner"].is_string() || !j.contains("balance") ||
      !j["balance"].is_number_integer())
    return Status::InvalidArgument("not a bank account state: " + state.substr(0, 100));
  return AccountState{.opened = j["opened"].get<bool>(),
                      .owner = j["owner"].get<std::string>(),
                      .balance = j["balance"].get<int64_t>()};
}

std::string EncodeState(const AccountState& state) {
  return json{{"opened", state.opened}, {"owner", state.owner}, {"balance", state.balance}}.dump();
}

std::shared_ptr<const Reducer> AccountReducer() {
  static const std::shared_ptr<const Reducer> reducer = std::make_shared<AccountReducerImpl>();
  return reducer;
}

Bank::Bank(client::Client& client, client::RepositoryOptions options)
    : accounts_(client, AccountReducer(), options) {}

Result<client::Executed> Bank::Open(std::string_view id, std::string_view owner) {
  std::string stream = AccountStream(id);
  return accounts_.Execute(stream, [&](const std::string& state) -> Result<std::vector<EventData>> {
    ANNAL_ASSIGN_OR_RETURN(AccountState s, DecodeState(state));
    if (s.opened) return Status::AlreadyExists(stream + " is open already");
    return std::vector<EventData>{
        {.type = std::string(kAccountOpened), .payload = OpenedPayload(owner)}};
  });
}

Result<client::Executed> Bank::Credit(std::string_view id, int64_t amount) {
  ANNAL_RETURN_IF_ERROR(CheckAmount(amount));
  std::string stream = AccountStream(id);
  return accounts_.Execute(stream, [&](const std::string& state) -> Result<std::vector<EventData>> {
    ANNAL_ASSIGN_OR_RETURN(AccountState s, DecodeState(state));
    if (!s.opened) return Status::NotFound(stream + " is not open");
    return std::vector<EventData>{
        {.type = std::string(kAccountCredited), .payload = AmountPayload(amount)}};
  });
}

Result<client::Executed> Bank::Debit(std::string_view id, int64_t amount) {
  ANNAL_RETURN_IF_ERROR(CheckAmount(amount));
  std::string stream = AccountStream(id);
  return accounts_.Execute(stream, [&](const std::string& state) -> Result<std::vector<EventData>> {
    ANNAL_ASSIGN_OR_RETURN(AccountState s, DecodeState(state));
    if (!s.opened) return Status::NotFound(stream + " is not open");
    if (s.balance < amount) return Status::InvalidArgument("insufficient funds");
    return std::vector<EventData>{
        {.type = std::string(kAccountDebited), .payload = AmountPayload(amount)}};
  });
}

}  // namespace annal::bank
