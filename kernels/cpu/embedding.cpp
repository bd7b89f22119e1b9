#include "kernels/embedding.h"

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

// Checks every id before anything is written, so a bad batch leaves y / dtable untouched.
void check_id_range(const int32_t* ids, int64_t n, int64_t vocab, const char* op) {
  for (int64_t i = 0; i < n; ++i) {
    LINEA_USER_CHECK(ids[i] >= 0 && ids[i] < vocab,
                     "token ids must lie in [0, model.vocab_size); raise model.vocab_size to "
                     "cover the dataset's tokenizer")
        << op << ": token id " << ids[i] << " at position " << i << " is outside [0, " << vocab
        << ") (vocab size " << vocab << ")";
  }
}

// table [V, D] and an activation [..., D] holding one row per id.
void check_rows(const Tensor& ids, const Tensor& table, const Tensor& act, const char* op,
                const char* table_name, const char* act_name) {
  cpu::check_ids(ids, op, "ids");
  cpu::check_float(table, op, table_name);
  cpu::check_like(act, table, op, act_name, table_name);
  LINEA_CHECK(table.ndim() == 2) << op << ": " << table_name << " " << cpu::describe(table)
                                 << " must be [V, D]";
  const int64_t d = table.dim(1);
  LINEA_CHECK(act.ndim() >= 1 && act.dim(-1) == d && act.numel() == ids.numel() * d)
      << op << ": " << act_name << " " << shape_str(act.shape())
      << " must hold one row of D = " << d << " per id of ids " << shape_str(ids.shape()) << " ("
      << table_name << " " << shape_str(table.shape()) << ")";
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y) {
  LINEA_ON_CUDA(table, embedding_forward(ids, table, y));
  const char* op = "embedding_forward";
  check_rows(ids, table, y, op, "table", "y");
  const int64_t n = ids.numel(), vocab = table.dim(0), d = table.dim(1);
  const int32_t* id = ids.data<int32_t>();
  check_id_range(id, n, vocab, op);
  cpu::dispatch_float(table.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* tab = table.data<T>();
    T* out = y.data<T>();
    for (int64_t i = 0; i < n; ++i) std::copy_n(tab + id[i] * d, d, out + i * d);
  });
}

void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) {
  LINEA_ON_CUDA(dtable, embedding_backward(ids, dy, dtable));
  const char* op = "embedding_backward";
  check_rows(ids, dtable, dy, op, "dtable", "dy");
  const int64_t n = ids.numel(), vocab = dtable.dim(0), d = dtable.dim(1);
  const int32_t* id = ids.data<int32_t>();
  check_id_range(id, n, vocab, op);
  cpu::dispatch_float(dtable.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = dy.data<T>();
    T* tab = dtable.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      T* row = tab + id[i] * d;
      const T* src = g + i * d;
      for (int64_t j = 0; j < d; ++j) row[j] += src[j];
    }
  });
}

}  // namespace linea::kernels
