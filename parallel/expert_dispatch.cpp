#include "parallel/expert_dispatch.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "core/util/check.h"
#include "kernels/moe_permute.h"

namespace linea::parallel {

namespace {

Shape with_rows(const Shape& s, int64_t rows) {
  Shape out = s;
  out[0] = rows;
  return out;
}

}  // namespace

ExpertDispatcher::ExpertDispatcher(Communicator& ep, int num_experts)
    : ep_(ep), num_experts_(num_experts), local_experts_(0) {
  const int p = ep.size();
  LINEA_USER_CHECK(num_experts >= 1 && num_experts % p == 0,
                   "choose model.channel_mixer.moe.num_experts divisible by parallel.ep")
      << "num_experts = " << num_experts << " cannot be divided among the " << p
      << " ranks of EP group '" << ep.name() << "'";
  local_experts_ = num_experts / p;
}

void ExpertDispatcher::prepare(std::span<const int32_t> expert_of_copy, Device device) {
  const int p = ep_.size();
  const int e_total = num_experts_;
  num_copies_ = static_cast<int64_t>(expert_of_copy.size());

  // Counting sort of the kept copies by global expert; since each rank holds a contiguous block,
  // that orders them by destination rank too. Stable: copy order inside an expert.
  std::vector<int64_t> per_expert(static_cast<size_t>(e_total), 0);
  for (int64_t i = 0; i < num_copies_; ++i) {
    const int32_t e = expert_of_copy[static_cast<size_t>(i)];
    LINEA_CHECK(e >= -1 && e < e_total)
        << "ExpertDispatcher::prepare: copy " << i << " routed to expert " << e << ", outside [-1, "
        << e_total << ")";
    if (e >= 0) ++per_expert[static_cast<size_t>(e)];
  }
  std::vector<int64_t> next(static_cast<size_t>(e_total), 0);
  std::exclusive_scan(per_expert.begin(), per_expert.end(), next.begin(), int64_t{0});
  const int64_t kept = std::accumulate(per_expert.begin(), per_expert.end(), int64_t{0});
  send_order_.assign(static_cast<size_t>(kept), 0);
  for (int64_t i = 0; i < num_copies_; ++i) {
    const int32_t e = expert_of_copy[static_cast<size_t>(i)];
    if (e >= 0) send_order_[static_cast<size_t>(next[static_cast<size_t>(e)]++)] = i;
  }
  send_counts_.assign(static_cast<size_t>(p), 0);
  for (int e = 0; e < e_total; ++e) send_counts_[e / local_experts_] += per_expert[e];

  // The counts exchange: rank d gets the L counts of its experts from every rank.
  Tensor counts_out = Tensor::empty({p, local_experts_}, DType::kI64, Device::cpu());
  std::memcpy(counts_out.raw(), per_expert.data(), per_expert.size() * sizeof(int64_t));
  Tensor counts_in = Tensor::empty({p, local_experts_}, DType::kI64, device);
  const std::vector<int64_t> ones(static_cast<size_t>(p), 1);
  ep_.all_to_all_v(counts_out.to(device), ones, counts_in, ones);
  counts_in = counts_in.cpu();
  const int64_t* in = counts_in.data<int64_t>();  // [source rank][local expert]
  const int l_total = local_experts_;

  recv_counts_.assign(static_cast<size_t>(p), 0);
  local_expert_counts_.assign(static_cast<size_t>(l_total), 0);
  for (int s = 0; s < p; ++s) {
    for (int l = 0; l < l_total; ++l) {
      const int64_t c = in[s * l_total + l];
      LINEA_CHECK(c >= 0) << "ExpertDispatcher::prepare: rank " << s << " of '" << ep_.name()
                          << "' announced " << c << " rows";
      recv_counts_[s] += c;
      local_expert_counts_[l] += c;
    }
  }
  num_received_ = std::accumulate(recv_counts_.begin(), recv_counts_.end(), int64_t{0});

  // Received rows arrive by (source, expert, copy order); dispatch's output is grouped by
  // (expert, source, copy order). start[s][l] = where source s's rows of expert l begin there.
  std::vector<int64_t> start(static_cast<size_t>(p * l_total), 0);
  int64_t pos = 0;
  for (int l = 0; l < l_total; ++l) {
    for (int s = 0; s < p; ++s) {
      start[s * l_total + l] = pos;
      pos += in[s * l_total + l];
    }
  }
  recv_to_grouped_.assign(static_cast<size_t>(num_received_), 0);
  int64_t j = 0;
  for (int s = 0; s < p; ++s) {
    for (int l = 0; l < l_total; ++l) {
      const int64_t base = start[s * l_total + l];
      for (int64_t k = 0; k < in[s * l_total + l]; ++k) recv_to_grouped_[j++] = base + k;
    }
  }
  // Both orders in one upload.
  const int64_t sent = static_cast<int64_t>(send_order_.size());
  Tensor orders = Tensor::empty({sent + num_received_}, DType::kI64, Device::cpu());
  std::copy(send_order_.begin(), send_order_.end(), orders.data<int64_t>());
  std::copy(recv_to_grouped_.begin(), recv_to_grouped_.end(), orders.data<int64_t>() + sent);
  orders = orders.to(device);
  send_index_ = orders.slice(0, sent);
  recv_index_ = orders.slice(sent, sent + num_received_);
  device_ = device;
  prepared_ = true;
}

void ExpertDispatcher::check_prepared(const char* op) const {
  LINEA_CHECK(prepared_) << "ExpertDispatcher::" << op << " before prepare()";
}

void ExpertDispatcher::check_rows(const char* op, const Tensor& t, int64_t rows) const {
  check_prepared(op);
  LINEA_CHECK(t.defined() && t.ndim() >= 1 && t.dim(0) == rows)
      << "ExpertDispatcher::" << op << ": expected " << rows << " rows, got "
      << (t.defined() ? shape_str(t.shape()) : std::string("an undefined tensor"));
  LINEA_CHECK(t.device() == device_)
      << "ExpertDispatcher::" << op << ": rows on " << t.device().str() << ", but prepare was told "
      << device_.str();
}

Tensor ExpertDispatcher::gather(const Tensor& in, const Tensor& index) const {
  Tensor out = Tensor::empty(with_rows(in.shape(), index.numel()), in.dtype(), in.device());
  kernels::gather_rows(in, index, out);
  return out;
}

Tensor ExpertDispatcher::scatter(const Tensor& in, const Tensor& index, int64_t rows) const {
  Tensor out = Tensor::zeros(with_rows(in.shape(), rows), in.dtype(), in.device());
  kernels::scatter_rows(in, index, out);
  return out;
}

// ---- dispatch ---------------------------------------------------------------------------------

Tensor ExpertDispatcher::pack_dispatch(const Tensor& copies) const {
  check_rows("pack_dispatch", copies, num_copies_);
  return gather(copies, send_index_);
}

Tensor ExpertDispatcher::exchange_dispatch(const Tensor& packed) {
  check_rows("exchange_dispatch", packed, static_cast<int64_t>(send_order_.size()));
  Tensor received =
      Tensor::empty(with_rows(packed.shape(), num_received_), packed.dtype(), packed.device());
  ep_.all_to_all_v(packed, send_counts_, received, recv_counts_);
  return received;
}

Tensor ExpertDispatcher::unpack_dispatched(const Tensor& received) const {
  check_rows("unpack_dispatched", received, num_received_);
  return scatter(received, recv_index_, num_received_);
}

Tensor ExpertDispatcher::dispatch(const Tensor& copies) {
  return unpack_dispatched(exchange_dispatch(pack_dispatch(copies)));
}

// ---- combine ----------------------------------------------------------------------------------

Tensor ExpertDispatcher::pack_combine(const Tensor& expert_rows) const {
  check_rows("pack_combine", expert_rows, num_received_);
  return gather(expert_rows, recv_index_);
}

Tensor ExpertDispatcher::exchange_combine(const Tensor& packed) {
  check_rows("exchange_combine", packed, num_received_);
  Tensor returned =
      Tensor::empty(with_rows(packed.shape(), static_cast<int64_t>(send_order_.size())),
                    packed.dtype(), packed.device());
  ep_.all_to_all_v(packed, recv_counts_, returned, send_counts_);
  return returned;
}

Tensor ExpertDispatcher::unpack_combined(const Tensor& returned) const {
  check_rows("unpack_combined", returned, static_cast<int64_t>(send_order_.size()));
  return scatter(returned, send_index_, num_copies_);
}

Tensor ExpertDispatcher::combine(const Tensor& expert_rows) {
  return unpack_combined(exchange_combine(pack_combine(expert_rows)));
}

}  // namespace linea::parallel
