#include "core/data/document_split.h"

#include <algorithm>
#include <cmath>

#include "core/util/check.h"

namespace linea::data {

int64_t held_out_documents(double fraction, int64_t docs, const std::string& file) {
  LINEA_USER_CHECK(fraction >= 0.0 && fraction < 1.0,
                   "set data.valid_fraction in [0, 1), e.g. 0.05")
      << "data.valid_fraction = " << fraction << " is outside [0, 1)";
  if (fraction == 0.0) return 0;
  LINEA_USER_CHECK(docs >= 2,
                   "set data.valid_fraction to 0, or prepare a corpus of several "
                   "documents (`linea prepare-data --separator ...`)")
      << "data.valid_fraction = " << fraction << " needs at least 2 documents, but " << file
      << " holds " << docs;
  return std::clamp<int64_t>(std::llround(fraction * static_cast<double>(docs)), 1, docs - 1);
}

}  // namespace linea::data
