#include "core/data/prepare.h"

#include <spdlog/spdlog.h>

#include "core/data/token_shard.h"
#include "core/util/check.h"

namespace linea::data {

int prepare_data(const std::vector<std::string>& inputs, const std::string& output,
                 const std::string& separator) {
  LINEA_USER_CHECK(!inputs.empty(), "pass one or more text files after the options")
      << "linea prepare-data: no input files";
  LINEA_USER_CHECK(!output.empty(), "pass --output FILE, e.g. data/corpus.tokens")
      << "linea prepare-data: no output file";
  const TokenShard shard = tokenize_text_files(inputs, separator);
  // An empty shard would only fail later, at training start, far from its cause.
  LINEA_USER_CHECK(shard.num_docs() > 0,
                   "check the input files and --separator (the files may be empty, or hold only "
                   "separator lines)")
      << "linea prepare-data: the " << inputs.size() << " input file(s) hold no document; "
      << output << " was not written";
  write_token_shard(output, shard);
  spdlog::info("prepare-data: wrote {} documents, {} tokens (vocabulary {}) from {} file(s) to {}",
               shard.num_docs(), shard.tokens.size(), shard.vocab_size, inputs.size(), output);
  return 0;
}

}  // namespace linea::data
