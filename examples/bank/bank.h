// The bank example's domain (issue #7): accounts kept as event streams
// "account-<id>" with three kinds of events,
//
//   AccountOpened   {"owner": "ada"}
//   AccountCredited {"amount": 250}
//   AccountDebited  {"amount": 100}
//
// (amounts are whole cents, positive). The command side (Bank) runs every
// command through an annal::client::Repository: it loads the account's
// state with AccountReducer, decides, and appends with the expected version
// it loaded, so a debit that would overdraw is refused and two commands on
// one account at once cannot both spend the same money (the loser retries
// with the newer balance).
//
// The read side turns each event into a Change (what it does to its
// account's row of account_balances, see balances.h); FoldChange applies one
// to an in-memory map, which is how the demo and the tests compute the
// expected balances independently of any database.
//
// Thread-safety: free functions are pure. A Bank may be used from several
// threads at once (its Repository and reducer may).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "annal/client.h"
#include "annal/repository.h"
#include "annal/state.h"
#include "annal/status.h"
#include "annal/types.h"

namespace annal::bank {

inline constexpr std::string_view kCategory = "account";
inline constexpr std::string_view kAccountOpened = "AccountOpened";
inline constexpr std::string_view kAccountCredited = "AccountCredited";
inline constexpr std::string_view kAccountDebited = "AccountDebited";
// The largest amount one credit or debit may move, so that no sum of a
// realistic history overflows int64.
inline constexpr int64_t kMaxAmount = 1'000'000'000'000;

// "account-" + id. REQUIRES: id is not empty.
std::string AccountStream(std::string_view id);

// The event payloads.
std::string OpenedPayload(std::string_view owner);
std::string AmountPayload(int64_t amount);

// What one bank event does to its account's row.
struct Change {
  std::string account;               // the id: the stream name after "account-"
  std::optional<std::string> owner;  // set by AccountOpened only
  int64_t delta = 0;                 // +amount, -amount, or 0 for AccountOpened
  GlobalPosition position;
};

// The Change of `e`; std::nullopt for an event that is not a bank event (a
// stream of another category, or another event type), which projections
// skip. kInvalidArgument for a bank event whose payload is malformed.
Result<std::optional<Change>> DecodeChange(const RecordedEvent& e);

// One row of account_balances.
struct Balance {
  std::string owner;
  int64_t balance = 0;
  uint64_t last_position = 0;  // the newest event folded in
  bool operator==(const Balance&) const = default;
};
using Balances = std::map<std::string, Balance, std::less<>>;  // by account id

// Folds `c` into `balances` unless the account already has an event at or
// after c.position (so folding an event twice changes nothing).
void FoldChange(const Change& c, Balances* balances);

// Every bank account as a full replay of the global log gives it: ReadAll
// from position 1, folded with FoldChange. *last_position (optional) is set
// to the position of the last bank event read (0: none).
Result<Balances> ReplayBalances(client::Client& client, GlobalPosition* last_position = nullptr);

// An account's state as the command side sees it.
struct AccountState {
  bool opened = false;
  std::string owner;
  int64_t balance = 0;
};
Result<AccountState> DecodeState(const std::string& state);
std::string EncodeState(const AccountState& state);

// Folds bank events into AccountState (name "bank-account", schema 1).
std::shared_ptr<const Reducer> AccountReducer();

// The commands. Each returns what Repository::Execute did; errors:
//   Open:   kAlreadyExists when the account is open already;
//   Credit, Debit: kNotFound when the account is not open, kInvalidArgument
//           for an amount outside 1..kMaxAmount;
//   Debit:  kInvalidArgument "insufficient funds" when the balance is
//           smaller than the amount (nothing is written);
//   all:    kWrongExpectedVersion when the account changed under the
//           command more often than the repository retries.
class Bank {
 public:
  // `client` must outlive the Bank.
  explicit Bank(client::Client& client, client::RepositoryOptions options = {});

  Result<client::Executed> Open(std::string_view id, std::string_view owner);
  Result<client::Executed> Credit(std::string_view id, int64_t amount);
  Result<client::Executed> Debit(std::string_view id, int64_t amount);

 private:
  client::Repository accounts_;
};

}  // namespace annal::bank
