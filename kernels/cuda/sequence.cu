// CUDA time concat and slice (kernels/sequence.h): each is one or two cudaMemcpy2DAsync on the
// current stream, the B sequences being the rows of a pitched copy (any dtype, bit-exact).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

// Bytes of one time step of one sequence: the product of the dimensions after [B, T].
size_t step_bytes(const Tensor& x) {
  return dtype_size(x.dtype()) *
         static_cast<size_t>(shape_numel(Shape(x.shape().begin() + 2, x.shape().end())));
}

// `rows` rows of `width` bytes from src (pitch spitch) to dst (pitch dpitch).
void copy_rows(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows,
               const OnDevice& dev) {
  if (width == 0 || rows == 0) return;
  CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDeviceToDevice,
                               dev.stream));
}

}  // namespace

Tensor concat_time(const Tensor& a, const Tensor& b) {
  const char* op = "concat_time";
  check_cuda(a, op, "a");
  check_cuda(b, op, "b");
  check_same_device(b, a, op, "b", "a");
  LINEA_CHECK(a.ndim() >= 2 && a.ndim() == b.ndim() && a.dim(0) == b.dim(0) &&
              a.dtype() == b.dtype())
      << op << ": " << describe(a) << " and " << describe(b);
  for (int64_t i = 2; i < a.ndim(); ++i)
    LINEA_CHECK(a.dim(i) == b.dim(i)) << op << ": " << describe(a) << " and " << describe(b);
  Shape s = a.shape();
  s[1] = a.dim(1) + b.dim(1);
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  const size_t step = step_bytes(a), na = step * a.dim(1), nb = step * b.dim(1);
  OnDevice dev(a);
  auto* o = static_cast<char*>(out.raw());
  copy_rows(o, na + nb, a.raw(), na, na, a.dim(0), dev);
  copy_rows(o + na, na + nb, b.raw(), nb, nb, a.dim(0), dev);
  return out;
}

Tensor slice_time(const Tensor& x, int64_t begin, int64_t end) {
  const char* op = "slice_time";
  check_cuda(x, op, "x");
  LINEA_CHECK(x.ndim() >= 2 && 0 <= begin && begin <= end && end <= x.dim(1))
      << op << " [" << begin << ", " << end << ") of " << describe(x);
  Shape s = x.shape();
  s[1] = end - begin;
  Tensor out = Tensor::empty(s, x.dtype(), x.device());
  const size_t step = step_bytes(x), n = step * (end - begin);
  OnDevice dev(x);
  copy_rows(out.raw(), n, static_cast<const char*>(x.raw()) + begin * step, step * x.dim(1), n,
            x.dim(0), dev);
  return out;
}

}  // namespace linea::kernels::cuda
