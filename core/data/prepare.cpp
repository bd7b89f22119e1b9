#include "core/data/prepare.h"

#include <spdlog/spdlog.h>

#include "core/data/megatron_indexed.h"
#include "core/data/token_shard.h"
#include "core/util/check.h"

namespace linea::data {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

PrepareFormat parse_prepare_format(const std::string& name) {
  if (name == "token-shard") return PrepareFormat::kTokenShard;
  if (name == "megatron") return PrepareFormat::kMegatron;
  LINEA_USER_CHECK(false, "pass --format token-shard (the default) or --format megatron")
      << "linea prepare-data: unknown --format \"" << name << "\"";
}

int prepare_data(const std::vector<std::string>& inputs, const std::string& output,
                 const std::string& separator, PrepareFormat format) {
  const bool megatron = format == PrepareFormat::kMegatron;
  LINEA_USER_CHECK(!inputs.empty(), "pass one or more text files after the options")
      << "linea prepare-data: no input files";
  LINEA_USER_CHECK(!output.empty(), megatron ? "pass --output PREFIX, e.g. data/corpus (writes "
                                               "data/corpus.bin and data/corpus.idx)"
                                             : "pass --output FILE, e.g. data/corpus.tokens")
      << "linea prepare-data: no output file";
  LINEA_USER_CHECK(!megatron || !(ends_with(output, ".bin") || ends_with(output, ".idx")),
                   "pass the prefix without the extension: --output data/corpus writes "
                   "data/corpus.bin and data/corpus.idx")
      << "linea prepare-data --format megatron: --output " << output
      << " ends with .bin or .idx, which would write " << output << ".bin";
  const TokenShard shard = tokenize_text_files(inputs, separator);
  // An empty dataset would only fail later, at training start, far from its cause.
  LINEA_USER_CHECK(shard.num_docs() > 0,
                   "check the input files and --separator (the files may be empty, or hold only "
                   "separator lines)")
      << "linea prepare-data: the " << inputs.size() << " input file(s) hold no document; "
      << output << " was not written";
  if (megatron) {
    const MegatronDType dtype = megatron_dtype_for_vocab(shard.vocab_size);
    write_megatron_indexed(output, shard.tokens, shard.doc_offsets, dtype);
    spdlog::info(
        "prepare-data: wrote {} documents, {} tokens ({} ids, vocabulary {}) from {} file(s) to "
        "{}.bin and {}.idx (Megatron indexed dataset)",
        shard.num_docs(), shard.tokens.size(), megatron_dtype_name(dtype), shard.vocab_size,
        inputs.size(), output, output);
    return 0;
  }
  write_token_shard(output, shard);
  spdlog::info("prepare-data: wrote {} documents, {} tokens (vocabulary {}) from {} file(s) to {}",
               shard.num_docs(), shard.tokens.size(), shard.vocab_size, inputs.size(), output);
  return 0;
}

}  // namespace linea::data
