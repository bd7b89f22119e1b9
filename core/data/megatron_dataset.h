// data.source MEGATRON: one or several Megatron indexed datasets (megatron_indexed.h), blended by
// weight (blend.h), served as windows by global sample index.
//
// Each dataset's split (training: all but its held-out last documents; validation: those) is one
// token stream, its sequences concatenated in file order; the end-of-document ids the
// preprocessing appended (Megatron's --append-eod, the byte tokenizer's 256) are kept and windows
// may cross documents, as in Megatron's GPT dataset. Window w is tokens
// [w * seq_len, w * seq_len + seq_len + 1): inputs are its first seq_len tokens, targets the last
// seq_len, so consecutive windows share one token and every token but the first is a target once.
// Dataset k's windows are visited in epochs, each a Fisher-Yates permutation seeded by
// (data.seed, split, k, epoch); the blend picks which dataset serves global sample g. So sample g
// depends only on data.seed, the files and g.
#pragma once

#include <memory>

#include "core/data/dataset.h"

namespace linea::data {

// Opens and checks every dataset of data.path / data.blend; errors name the field or the file.
std::unique_ptr<Dataset> make_megatron_dataset(const config::Config& cfg, Split split);

}  // namespace linea::data
