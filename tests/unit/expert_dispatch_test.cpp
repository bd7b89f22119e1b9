// Expert dispatch and the expert-parallel grid pieces on one rank (EP = 1, SelfCommunicator):
// dispatch is a local stable sort of the copies by expert, combine its inverse.
#include "parallel/expert_dispatch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/modules/parameter.h"
#include "parallel/grad_sync.h"
#include "parallel/process_grid.h"

namespace linea::parallel {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Copy i has the row (i + 1, -(i + 1)).
Tensor numbered_rows(int64_t n, DType dtype) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.insert(v.end(), {double(i + 1), -double(i + 1)});
  return Tensor::from_vector({n, 2}, v, dtype);
}

TEST(ExpertDispatchOneRank, DispatchIsAStableSortByExpertAndCombineItsInverse) {
  for (DType dt : {DType::kF32, DType::kF64, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dt));
    SelfCommunicator ep("ep");
    ExpertDispatcher d(ep, 4);
    const std::vector<int32_t> route = {2, 0, -1, 2, 1, 0, -1, 2};
    d.prepare(route);
    EXPECT_EQ(d.num_local_experts(), 4);
    EXPECT_EQ(d.first_local_expert(), 0);
    EXPECT_EQ(d.num_copies(), 8);
    EXPECT_EQ(d.num_received(), 6);
    EXPECT_EQ(d.local_expert_counts(), (std::vector<int64_t>{2, 1, 3, 0}));  // expert 3: none
    EXPECT_EQ(d.send_counts(), (std::vector<int64_t>{6}));
    EXPECT_EQ(d.recv_counts(), (std::vector<int64_t>{6}));

    const Tensor x = numbered_rows(8, dt);
    const Tensor got = d.dispatch(x);
    // Expert 0: copies 1, 5; expert 1: copy 4; expert 2: copies 0, 3, 7.
    EXPECT_EQ(got.to_vector(), (std::vector<double>{2, -2, 6, -6, 5, -5, 1, -1, 4, -4, 8, -8}));
    EXPECT_EQ(got.dtype(), dt);
    const Tensor back = d.combine(got);
    EXPECT_EQ(back.to_vector(),
              (std::vector<double>{1, -1, 2, -2, 0, 0, 4, -4, 5, -5, 6, -6, 0, 0, 8, -8}));
    // Backward partners: dispatch_backward maps like combine, combine_backward like dispatch.
    EXPECT_EQ(d.dispatch_backward(got).to_vector(), back.to_vector());
    EXPECT_EQ(d.combine_backward(x).to_vector(), got.to_vector());
    // One rank sends nothing to others.
    EXPECT_EQ(ep.stats().bytes_sent[static_cast<int>(CollectiveKind::kAllToAll)], 0u);
  }
}

TEST(ExpertDispatchOneRank, AdjointOnHigherRankRows) {
  SelfCommunicator ep("ep");
  ExpertDispatcher d(ep, 3);
  const std::vector<int32_t> route = {1, 1, -1, 0, 2, 0};
  d.prepare(route);
  std::vector<double> xv, yv;
  for (int i = 0; i < 6 * 2 * 2; ++i) xv.push_back((i * 7) % 5 - 2.0);
  for (int i = 0; i < 5 * 2 * 2; ++i) yv.push_back((i * 3) % 7 - 3.0);
  const Tensor x = Tensor::from_vector({6, 2, 2}, xv, DType::kF64);
  const Tensor y = Tensor::from_vector({5, 2, 2}, yv, DType::kF64);
  auto dot = [](const Tensor& a, const Tensor& b) {
    double s = 0;
    for (int64_t i = 0; i < a.numel(); ++i) s += a.item(i) * b.item(i);
    return s;
  };
  EXPECT_EQ(d.dispatch(x).shape(), (Shape{5, 2, 2}));
  EXPECT_EQ(dot(d.dispatch(x), y), dot(x, d.dispatch_backward(y)));
  EXPECT_EQ(dot(d.combine(y), x), dot(y, d.combine_backward(x)));
}

TEST(ExpertDispatchOneRank, EmptyAndAllDropped) {
  SelfCommunicator ep("ep");
  ExpertDispatcher d(ep, 2);
  d.prepare(std::vector<int32_t>{});
  EXPECT_EQ(d.dispatch(Tensor::zeros({0, 3}, DType::kF32)).shape(), (Shape{0, 3}));
  EXPECT_EQ(d.combine(Tensor::zeros({0, 3}, DType::kF32)).shape(), (Shape{0, 3}));
  d.prepare(std::vector<int32_t>{-1, -1});
  EXPECT_EQ(d.local_expert_counts(), (std::vector<int64_t>{0, 0}));
  const Tensor got = d.dispatch(Tensor::from_vector({2, 1}, {3, 4}, DType::kF32));
  EXPECT_EQ(got.shape(), (Shape{0, 1}));
  EXPECT_EQ(d.combine(got).to_vector(), (std::vector<double>{0, 0}));
}

TEST(ExpertDispatchOneRank, MisuseIsReported) {
  SelfCommunicator ep("ep");
  ExpertDispatcher d(ep, 2);
  EXPECT_NE(error_of([&] {
              d.dispatch(Tensor::zeros({1, 1}, DType::kF32));
            }).find("prepare"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              d.prepare(std::vector<int32_t>{0, 2});
            }).find("expert 2"),
            std::string::npos);
  d.prepare(std::vector<int32_t>{0, 1});
  EXPECT_NE(error_of([&] {
              d.dispatch(Tensor::zeros({3, 1}, DType::kF32));
            }).find("2 rows"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ExpertDispatcher bad(ep, 0); }).find("num_experts = 0"),
            std::string::npos);
}

TEST(ExpertGridOneRank, EpGroupsOfOneAndGradients) {
  SelfCommunicator world("world");
  ProcessGrid grid(world, GridShape{1, 1, 1});
  EXPECT_EQ(grid.ep().size(), 1);
  EXPECT_EQ(grid.expert_dp().size(), 1);
  EXPECT_EQ(grid.ep_rank(), 0);
  EXPECT_EQ(grid.ep().name(), "ep");
  EXPECT_EQ(grid.expert_dp().name(), "expert_dp");
  const std::string err = error_of([&] { ProcessGrid g(world, GridShape{1, 1, 2}); });
  EXPECT_NE(err.find("parallel.ep (2)"), std::string::npos) << err;
  EXPECT_NE(err.find("hint:"), std::string::npos) << err;

  Parameter rep{"rep", Tensor::zeros({2}, DType::kF32),
                Tensor::from_vector({2}, {3, -4}, DType::kF32)};
  Parameter exp{"exp", Tensor::zeros({1}, DType::kF64), Tensor::from_vector({1}, {12}, DType::kF64),
                true, ParamSharding::kExpert};
  sync_gradients({&rep, &exp}, grid);
  EXPECT_EQ(exp.grad.item(0), 12);
  EXPECT_DOUBLE_EQ(global_grad_norm({&rep, &exp}, grid), 13.0);
  EXPECT_NEAR(clip_gradients({&rep, &exp}, grid, 6.5), 13.0, 1e-12);
  EXPECT_NEAR(exp.grad.item(0), 6.0, 1e-6);
  EXPECT_NEAR(rep.grad.item(1), -2.0, 1e-6);
}

}  // namespace
}  // namespace linea::parallel
