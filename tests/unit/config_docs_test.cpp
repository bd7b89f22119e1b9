// docs/configs.md documents every field of the schema (its "Every field" table).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "linea.pb.h"

namespace linea {
namespace {

void field_paths(const google::protobuf::Descriptor* d, const std::string& prefix,
                 std::vector<std::string>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    const std::string path = prefix + f->name();
    if (f->is_repeated()) {
      out->push_back(path + "[i]");
    } else if (f->message_type()) {
      field_paths(f->message_type(), path + ".", out);
    } else {
      out->push_back(path);
    }
  }
}

TEST(ConfigDocs, EveryFieldIsDocumented) {
  std::ifstream in(std::string(LINEA_SOURCE_DIR) + "/docs/configs.md");
  ASSERT_TRUE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  std::vector<std::string> paths;
  field_paths(config::Config::descriptor(), "", &paths);
  EXPECT_GT(paths.size(), 80u);
  for (const std::string& p : paths)
    EXPECT_NE(doc.find("`" + p + "`"), std::string::npos)
        << p << " is missing from docs/configs.md";
}

}  // namespace
}  // namespace linea
