// Shape rules of the grouped linear products (kernels/grouped_gemm.h), shared by the CPU and CUDA
// backends so that both accept and refuse the same calls with the same messages.
#pragma once

#include <vector>

#include "core/tensor/tensor.h"

namespace linea::kernels {

struct GroupedSizes {
  int64_t groups, out, in, rows;
  std::vector<int64_t> first;  // first row of each group, [groups + 1]
};

// x [R, in], w [E, out, in], E = counts.size(), R = sum of the counts (each >= 0).
inline GroupedSizes check_grouped_shapes(const Tensor& x, const Tensor& w,
                                         const std::vector<int64_t>& counts, const char* op) {
  LINEA_CHECK(x.defined() && w.defined()) << op << ": x and w must be defined";
  LINEA_CHECK(w.ndim() == 3) << op << ": w " << shape_str(w.shape()) << " must be [E, out, in]";
  GroupedSizes s{w.dim(0), w.dim(1), w.dim(2), 0, {}};
  LINEA_CHECK(static_cast<int64_t>(counts.size()) == s.groups)
      << op << ": " << counts.size() << " row counts for w " << shape_str(w.shape()) << " ("
      << s.groups << " groups)";
  s.first.assign(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) {
    LINEA_CHECK(counts[e] >= 0) << op << ": row count " << counts[e] << " of group " << e;
    s.first[e + 1] = s.first[e] + counts[e];
  }
  s.rows = s.first.back();
  LINEA_CHECK(x.ndim() == 2 && x.dim(0) == s.rows && x.dim(1) == s.in)
      << op << ": x " << shape_str(x.shape()) << " must be [" << s.rows << ", " << s.in
      << "] (the counts' sum, w's in)";
  return s;
}

// t is [rows, cols].
inline void check_grouped_rows(const Tensor& t, int64_t rows, int64_t cols, const char* op,
                               const char* name) {
  LINEA_CHECK(t.defined() && t.ndim() == 2 && t.dim(0) == rows && t.dim(1) == cols)
      << op << ": " << name << " " << (t.defined() ? shape_str(t.shape()) : "undefined")
      << " must be [" << rows << ", " << cols << "]";
}

// dw: empty, or groups * P tensors [out / P, in]; returns P (0 when empty).
inline int64_t check_grouped_dw(const std::vector<Tensor>& dw, const GroupedSizes& s,
                                const char* op) {
  if (dw.empty()) return 0;
  const int64_t n = static_cast<int64_t>(dw.size());
  LINEA_CHECK(s.groups > 0 && n % s.groups == 0 && s.out % (n / s.groups) == 0)
      << op << ": " << n << " weight-gradient parts for " << s.groups << " groups of " << s.out
      << " rows (needs P parts per group, P dividing out)";
  const int64_t parts = n / s.groups, o = s.out / parts;
  for (int64_t i = 0; i < n; ++i) {
    LINEA_CHECK(dw[i].defined() && dw[i].ndim() == 2 && dw[i].dim(0) == o && dw[i].dim(1) == s.in)
        << op << ": dw[" << i << "] " << (dw[i].defined() ? shape_str(dw[i].shape()) : "undefined")
        << " must be [" << o << ", " << s.in << "]";
  }
  return parts;
}

}  // namespace linea::kernels
