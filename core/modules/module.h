// What every module shares: it registers its parameters (with checkpoint names) and can initialise
// them from a seed. Forward and backward are per-module member functions written side by side;
// a module saves what its backward needs during forward (one micro-batch in flight at a time) and
// its backward accumulates (`+=`) into parameter gradients and returns the input gradient.
#pragma once

#include <cstdint>
#include <string>

#include "core/modules/parameter.h"
#include "core/util/rng.h"

namespace linea {

// Fills `p` with N(0, std) from a stream keyed by (seed, p.name): the same on every rank and
// independent of the order parameters are created in.
void init_normal(Parameter& p, uint64_t seed, double std);
void init_constant(Parameter& p, double value);
// Allocates value and a zeroed gradient.
Parameter make_parameter(std::string name, const Shape& shape, DType dtype, bool weight_decay);

}  // namespace linea
