// CPU grouped linear products (kernels/grouped_gemm.h): the reference, one linear_forward /
// linear_backward (BLAS) per group on its row block.
#include "kernels/grouped_gemm.h"

#include "kernels/cpu/dispatch.h"
#include "kernels/elementwise.h"
#include "kernels/grouped_gemm_shapes.h"
#include "kernels/matmul.h"

namespace linea::kernels {
namespace {

// Group e's weight [out, in] (a view).
Tensor group_weight(const Tensor& w, int64_t e) {
  return w.slice(e, e + 1).view({w.dim(1), w.dim(2)});
}

}  // namespace

void grouped_linear_forward(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts,
                            Tensor& y) {
  LINEA_ON_CUDA(x, grouped_linear_forward(x, w, counts, y));
  const char* op = "grouped_linear_forward";
  cpu::check_float(x, op, "x");
  cpu::check_like(w, x, op, "w", "x");
  cpu::check_like(y, x, op, "y", "x");
  const GroupedSizes s = check_grouped_shapes(x, w, counts, op);
  check_grouped_rows(y, s.rows, s.out, op, "y");
  for (int64_t e = 0; e < s.groups; ++e) {
    if (counts[e] == 0) continue;
    Tensor ye = y.slice(s.first[e], s.first[e + 1]);
    linear_forward(x.slice(s.first[e], s.first[e + 1]), group_weight(w, e), ye);
  }
}

void grouped_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy,
                             const std::vector<int64_t>& counts, Tensor& dx,
                             const std::vector<Tensor>& dw) {
  LINEA_ON_CUDA(x, grouped_linear_backward(x, w, dy, counts, dx, dw));
  const char* op = "grouped_linear_backward";
  cpu::check_float(x, op, "x");
  cpu::check_like(w, x, op, "w", "x");
  cpu::check_like(dy, x, op, "dy", "x");
  const GroupedSizes s = check_grouped_shapes(x, w, counts, op);
  check_grouped_rows(dy, s.rows, s.out, op, "dy");
  if (dx.defined()) {
    cpu::check_like(dx, x, op, "dx", "x");
    check_grouped_rows(dx, s.rows, s.in, op, "dx");
  }
  const int64_t parts = check_grouped_dw(dw, s, op);
  for (const Tensor& t : dw) cpu::check_like(t, x, op, "dw", "x");
  for (int64_t e = 0; e < s.groups; ++e) {
    if (counts[e] == 0) continue;
    const Tensor xe = x.slice(s.first[e], s.first[e + 1]);
    const Tensor dye = dy.slice(s.first[e], s.first[e + 1]);
    const Tensor we = group_weight(w, e);
    if (dx.defined()) {
      Tensor dxe = dx.slice(s.first[e], s.first[e + 1]);
      gemm(dye, false, we, false, dxe);
    }
    if (parts == 0) continue;
    // The whole [out, in] gradient of the group, then its row parts added into dw.
    Tensor g = Tensor::zeros({s.out, s.in}, x.dtype());
    gemm(dye, true, xe, false, g);
    const int64_t o = s.out / parts;
    for (int64_t p = 0; p < parts; ++p) {
      Tensor part = dw[e * parts + p];
      add_inplace(part, g.slice(p * o, (p + 1) * o));
    }
  }
}

}  // namespace linea::kernels
