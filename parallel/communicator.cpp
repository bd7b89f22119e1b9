#include "parallel/communicator.h"

#include "parallel/collective_checks.h"

namespace linea::parallel {

const char* collective_name(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::kAllReduce:
      return "all_reduce";
    case CollectiveKind::kAllGather:
      return "all_gather";
    case CollectiveKind::kReduceScatter:
      return "reduce_scatter";
    case CollectiveKind::kAllToAll:
      return "all_to_all";
    case CollectiveKind::kSendRecv:
      return "send_recv";
    case CollectiveKind::kBroadcast:
      return "broadcast";
    case CollectiveKind::kCount:
      break;
  }
  return "unknown";
}

double Communicator::all_reduce_scalar(double v, ReduceOp op) {
  Tensor t = Tensor::from_vector({1}, {v}, DType::kF64);
  all_reduce(t, op);
  return t.item(0);
}

namespace {
struct FinishedCollective final : PendingCollective {
  void wait() override {}
};
}  // namespace

std::unique_ptr<PendingCollective> Communicator::all_gather_async(const Tensor& in, Tensor& out) {
  all_gather(in, out);
  return std::make_unique<FinishedCollective>();
}

namespace {
// Copies unless `out` already is `in` (an in-place call).
void copy_unless_same(const Tensor& in, Tensor& out) {
  if (in.nbytes() && in.raw() != out.raw()) out.copy_from(in);
}
}  // namespace

void SelfCommunicator::all_reduce(Tensor& t, ReduceOp) {
  detail::check_tensor("all_reduce", name_, t, true);
}

void SelfCommunicator::all_gather(const Tensor& in, Tensor& out) {
  detail::check_tensor("all_gather", name_, in, false);
  detail::check_tensor("all_gather", name_, out, false);
  detail::check_same_dtype("all_gather", name_, in, out);
  detail::check_gather_sizes("all_gather", name_, 1, in, out);
  copy_unless_same(in, out);
}

void SelfCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp) {
  detail::check_tensor("reduce_scatter", name_, in, true);
  detail::check_tensor("reduce_scatter", name_, out, true);
  detail::check_same_dtype("reduce_scatter", name_, in, out);
  detail::check_scatter_sizes("reduce_scatter", name_, 1, in, out);
  copy_unless_same(in, out);
}

void SelfCommunicator::all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts,
                                    Tensor& out, const std::vector<int64_t>& recv_counts) {
  detail::check_tensor("all_to_all_v", name_, in, false);
  detail::check_tensor("all_to_all_v", name_, out, false);
  detail::check_all_to_all(name_, 1, in, send_counts, out, recv_counts);
  copy_unless_same(in, out);
}

void SelfCommunicator::broadcast(Tensor& t, int root) {
  detail::check_tensor("broadcast", name_, t, false);
  LINEA_CHECK(root == 0) << "broadcast on group '" << name_ << "': root " << root
                         << " is not a rank of this group of 1";
}

void SelfCommunicator::send(const Tensor&, int peer, int) {
  detail::check_peer("send", name_, 1, 0, peer);
}

void SelfCommunicator::recv(Tensor&, int peer, int) {
  detail::check_peer("recv", name_, 1, 0, peer);
}

std::unique_ptr<Communicator> SelfCommunicator::split(int color, int, std::string name) const {
  if (color < 0) return nullptr;
  return std::make_unique<SelfCommunicator>(std::move(name));
}

}  // namespace linea::parallel
