#include "core/modules/mixers/state_exchange.h"

namespace linea {
namespace {
thread_local StateExchange* g_active = nullptr;
}  // namespace

StateExchange* StateExchange::active() { return g_active; }

ExchangeScope::ExchangeScope(StateExchange* e) : previous_(g_active) { g_active = e; }

ExchangeScope::~ExchangeScope() { g_active = previous_; }

}  // namespace linea
