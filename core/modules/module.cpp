#include "core/modules/module.h"

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor/dispatch.h"

namespace linea {
namespace {

// Elements per random stream. Block 0 is the stream keyed by (seed, name) alone, so a parameter
// of at most this many elements gets exactly the values a single sequential stream gives; larger
// ones (embeddings, expert matrices of big models) draw block b from the stream keyed by
// (seed, name#b), which lets blocks fill in parallel with results independent of the thread count.
constexpr int64_t kInitBlock = int64_t{1} << 16;

template <typename T>
void fill_normal_block(T* out, int64_t begin, int64_t end, uint64_t seed, const std::string& name,
                       int64_t block, double std) {
  Rng rng = block == 0 ? Rng(seed, name) : Rng(seed, name + "#" + std::to_string(block));
  for (int64_t i = begin; i < end; ++i) out[i] = static_cast<T>(std * rng.normal());
}

}  // namespace

void init_normal(Parameter& p, uint64_t seed, double std) {
  LINEA_CHECK(p.value.device().is_cpu())
      << "init_normal: parameter '" << p.name << "' is on " << p.value.device().str()
      << "; initialise on the CPU, then move the model";
  const int64_t n = p.value.numel();
  const int64_t blocks = (n + kInitBlock - 1) / kInitBlock;
  dispatch_float(p.value.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* out = p.value.data<T>();
    auto run = [&](int64_t b) {
      fill_normal_block(out, b * kInitBlock, std::min(n, (b + 1) * kInitBlock), seed, p.name, b,
                        std);
    };
    const int64_t threads =
        std::min<int64_t>(blocks, std::max(1u, std::thread::hardware_concurrency()));
    if (threads <= 1) {
      for (int64_t b = 0; b < blocks; ++b) run(b);
      return;
    }
    std::vector<std::thread> pool;
    for (int64_t t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (int64_t b = t; b < blocks; b += threads) run(b);
      });
    for (auto& th : pool) th.join();
  });
}

void init_constant(Parameter& p, double value) { p.value.fill_(value); }

Parameter make_parameter(std::string name, const Shape& shape, DType dtype, bool weight_decay) {
  Parameter p;
  p.name = std::move(name);
  p.value = Tensor::zeros(shape, dtype);
  p.grad = Tensor::zeros(shape, dtype);
  p.weight_decay = weight_decay;
  return p;
}

}  // namespace linea
