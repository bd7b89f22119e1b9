#include "kernels/cross_entropy.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

// Rows of logits (leading dimensions flattened) after checking logits, targets and lse agree.
int64_t check_ce_args(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                      const char* op) {
  cpu::check_float(logits, op, "logits");
  LINEA_CHECK(logits.ndim() >= 2 && logits.dim(-1) > 0)
      << op << ": logits " << cpu::describe(logits) << " must be [N, V] with V > 0";
  const int64_t rows = logits.numel() / logits.dim(-1);
  cpu::check_ids(targets, op, "targets");
  LINEA_CHECK(targets.numel() == rows)
      << op << ": targets " << shape_str(targets.shape()) << " must hold one id per row of logits "
      << shape_str(logits.shape()) << " (" << rows << " rows)";
  cpu::check_like(lse, logits, op, "lse", "logits");
  LINEA_CHECK(lse.numel() == rows)
      << op << ": lse " << shape_str(lse.shape()) << " must hold one value per row of logits "
      << shape_str(logits.shape()) << " (" << rows << " rows)";
  return rows;
}

// Validates every target before anything is written (the backward may overwrite logits in
// place, so it must not fail half-way); returns the number of rows that are not ignored.
int64_t count_valid_targets(const int32_t* t, int64_t rows, int64_t vocab, const char* op) {
  int64_t valid = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (t[r] == kIgnoreIndex) continue;
    LINEA_USER_CHECK(t[r] >= 0 && t[r] < vocab,
                     "targets must lie in [0, model.vocab_size) or be -1 (ignored); raise "
                     "model.vocab_size to cover the dataset's tokenizer")
        << op << ": target id " << t[r] << " at row " << r << " is outside [0, " << vocab
        << ") (vocab size " << vocab << ")";
    ++valid;
  }
  return valid;
}

}  // namespace

double cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& lse,
                             int64_t* n_valid) {
  LINEA_ON_CUDA(logits, cross_entropy_forward(logits, targets, lse, n_valid));
  const char* op = "cross_entropy_forward";
  const int64_t rows = check_ce_args(logits, targets, lse, op);
  const int64_t vocab = logits.dim(-1);
  const int32_t* t = targets.data<int32_t>();
  const int64_t valid = count_valid_targets(t, rows, vocab, op);
  const double total = cpu::dispatch_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* z = logits.data<T>();
    T* lse_out = lse.data<T>();
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const T* zr = z + r * vocab;
      T mx = zr[0];
      for (int64_t j = 1; j < vocab; ++j) mx = zr[j] > mx ? zr[j] : mx;
      double se = 0;
      for (int64_t j = 0; j < vocab; ++j) se += std::exp(zr[j] - mx);
      const double l = static_cast<double>(mx) + std::log(se);
      // Ignored rows get their lse too: it is cheap and keeps the saved tensor fully defined.
      lse_out[r] = static_cast<T>(l);
      if (t[r] != kIgnoreIndex) sum += l - static_cast<double>(zr[t[r]]);
    }
    return sum;
  });
  if (n_valid) *n_valid = valid;
  return valid ? total / static_cast<double>(valid) : 0.0;
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            double dloss, int64_t n_valid, Tensor& dlogits) {
  LINEA_ON_CUDA(logits, cross_entropy_backward(logits, targets, lse, dloss, n_valid, dlogits));
  const char* op = "cross_entropy_backward";
  const int64_t rows = check_ce_args(logits, targets, lse, op);
  cpu::check_same_shape(dlogits, logits, op, "dlogits", "logits");
  const int64_t vocab = logits.dim(-1);
  const int32_t* t = targets.data<int32_t>();
  const int64_t local_valid = count_valid_targets(t, rows, vocab, op);
  // n_valid may count more rows than this call sees (a mean over several ranks or
  // micro-batches), never fewer.
  LINEA_CHECK(n_valid >= local_valid)
      << op << ": n_valid = " << n_valid << " but targets " << shape_str(targets.shape())
      << " hold " << local_valid << " rows that are not ignored";
  const double s = n_valid ? dloss / static_cast<double>(n_valid) : 0.0;
  cpu::dispatch_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* z = logits.data<T>();
    const T* lse_in = lse.data<T>();
    T* dz = dlogits.data<T>();
    const T st = static_cast<T>(s);
    for (int64_t r = 0; r < rows; ++r) {
      const T* zr = z + r * vocab;
      T* dr = dz + r * vocab;
      if (t[r] == kIgnoreIndex) {
        for (int64_t j = 0; j < vocab; ++j) dr[j] = T(0);
        continue;
      }
      const T l = lse_in[r];
      // Element j is read and then written, so dr may be zr (the in-place form); the one-hot
      // term is subtracted afterwards from the written value for the same reason.
      for (int64_t j = 0; j < vocab; ++j) dr[j] = st * std::exp(zr[j] - l);
      dr[t[r]] -= st;
    }
  });
}

}  // namespace linea::kernels
