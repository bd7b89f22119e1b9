#include "core/modules/module.h"

namespace linea {

void init_normal(Parameter& p, uint64_t seed, double std) {
  Rng rng(seed, p.name);
  for (int64_t i = 0; i < p.value.numel(); ++i) p.value.set_item(i, std * rng.normal());
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
