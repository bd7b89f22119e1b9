// The train/validation split by documents shared by the file-backed sources: the last
// round(valid_fraction * D) documents (at least one, and at least one left for training) are held
// out, so no document is cut in two and no validation text leaks into training.
#pragma once

#include <cstdint>
#include <string>

namespace linea::data {

// Documents held out of `docs` for data.valid_fraction = `fraction` (0 when it is 0). Errors
// (fraction outside [0, 1), fewer than 2 documents) name data.valid_fraction and `file`.
int64_t held_out_documents(double fraction, int64_t docs, const std::string& file);

}  // namespace linea::data
