// Loading, merging, overriding and printing configs; the contract is in config.h. Everything here
// walks the schema by reflection, so a field added to linea.proto needs no change in this file.
#include "core/config/config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <system_error>
#include <utility>

#include "core/util/check.h"

namespace linea {
namespace {

namespace pb = google::protobuf;

constexpr const char* kSchemaHint = "see core/proto/linea.proto for the fields";

// Keeps every parser message so the error can name the file and position; without a collector
// protobuf would print to stderr and we could only say "parse failed".
class ParseErrors : public pb::io::ErrorCollector {
 public:
#if GOOGLE_PROTOBUF_VERSION >= 4022000
  void RecordError(int line, pb::io::ColumnNumber column, absl::string_view message) override {
    add(line, column, std::string(message));
  }
#else
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    add(line, column, message);
  }
#endif
  bool empty() const { return lines_.empty(); }
  std::string str() const {
    std::string out;
    for (const std::string& l : lines_) out += (out.empty() ? "" : "\n") + l;
    return out;
  }
  void set_name(const std::string& name) { name_ = name; }

 private:
  void add(int line, int column, const std::string& message) {
    // protobuf counts from 0; editors count from 1.
    std::ostringstream ss;
    ss << name_ << ":" << line + 1 << ":" << column + 1 << ": " << message;
    lines_.push_back(ss.str());
  }
  std::string name_;
  std::vector<std::string> lines_;
};

// MergeFrom appends repeated fields; clearing the ones `src` sets first turns that into replace,
// which is what a later file overriding an earlier one means.
void clear_repeated_fields_set_in(const pb::Message& src, pb::Message* dst) {
  const pb::Reflection* src_refl = src.GetReflection();
  const pb::Reflection* dst_refl = dst->GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  src_refl->ListFields(src, &fields);
  for (const pb::FieldDescriptor* f : fields) {
    if (f->is_repeated()) {
      dst_refl->ClearField(dst, f);
    } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE &&
               dst_refl->HasField(*dst, f)) {
      clear_repeated_fields_set_in(src_refl->GetMessage(src, f), dst_refl->MutableMessage(dst, f));
    }
  }
}

void merge_config(const config::Config& src, config::Config* dst) {
  clear_repeated_fields_set_in(src, dst);
  dst->MergeFrom(src);
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  LINEA_USER_CHECK(!std::filesystem::is_directory(path, ec), "give a .pbtxt file, not a folder")
      << "config path '" << path << "' is a directory";
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  LINEA_USER_CHECK(in.good(),
                   "check the --config path (relative paths start at the current directory)")
      << "cannot open config file '" << path << "': " << std::strerror(errno);
  std::ostringstream ss;
  ss << in.rdbuf();
  LINEA_USER_CHECK(!in.bad(), "check the file's permissions")
      << "cannot read config file '" << path << "'";
  return ss.str();
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "an int32", "a uint64": only the type names protobuf uses need to come out right.
std::string with_article(const std::string& type) {
  return (type[0] == 'i' || type[0] == 'e' ? "an " : "a ") + type;
}

std::string field_names(const pb::Descriptor* d) {
  std::string out;
  for (int i = 0; i < d->field_count(); ++i) out += (i ? ", " : "") + d->field(i)->name();
  return out;
}

std::string enum_names(const pb::EnumDescriptor* e) {
  std::string out;
  for (int i = 0; i < e->value_count(); ++i) out += (i ? ", " : "") + e->value(i)->name();
  return out;
}

// The whole string must be a number of T in range: "12abc", "", "1e999" and "-1" for unsigned
// are all rejected rather than silently truncated.
template <typename T>
bool parse_number(const std::string& s, T* out) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && ptr == end;
}

bool parse_float(const std::string& s, float* out) {
  double d;
  if (!parse_number(s, &d)) return false;
  if (std::isfinite(d) && std::fabs(d) > std::numeric_limits<float>::max()) return false;
  *out = static_cast<float>(d);
  return true;
}

bool parse_bool(const std::string& s, bool* out) {
  const std::string v = lower(s);
  if (v == "true" || v == "1") {
    *out = true;
  } else if (v == "false" || v == "0") {
    *out = false;
  } else {
    return false;
  }
  return true;
}

// Writes every unset optional scalar as its schema default so the printed config is complete.
void fill_defaults(pb::Message* msg) {
  const pb::Descriptor* d = msg->GetDescriptor();
  const pb::Reflection* r = msg->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) continue;
    // Only one member of a oneof may be set; writing the others would clear the chosen one.
    if (f->containing_oneof() != nullptr && !r->HasField(*msg, f)) continue;
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      fill_defaults(r->MutableMessage(msg, f));
      continue;
    }
    if (r->HasField(*msg, f)) continue;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(msg, f, f->default_value_int32());
        break;
      case pb::FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(msg, f, f->default_value_int64());
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(msg, f, f->default_value_uint32());
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(msg, f, f->default_value_uint64());
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(msg, f, f->default_value_double());
        break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        r->SetFloat(msg, f, f->default_value_float());
        break;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(msg, f, f->default_value_bool());
        break;
      case pb::FieldDescriptor::CPPTYPE_STRING:
        r->SetString(msg, f, f->default_value_string());
        break;
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        r->SetEnum(msg, f, f->default_value_enum());
        break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
  }
}

}  // namespace

config::Config parse_config_text(const std::string& text, const std::string& name) {
  ParseErrors errors;
  errors.set_name(name);
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  config::Config cfg;
  const bool ok = parser.ParseFromString(text, &cfg);
  LINEA_USER_CHECK(ok && errors.empty(), kSchemaHint)
      << "cannot parse config " << (errors.empty() ? name + ": invalid text format" : errors.str());
  return cfg;
}

config::Config load_config(const std::vector<std::string>& files,
                           const std::vector<std::string>& overrides) {
  config::Config cfg;
  if (files.empty()) {
    cfg = parse_config_text(embedded_default_config(), "<embedded configs/tiny.pbtxt>");
  }
  for (const std::string& path : files)
    merge_config(parse_config_text(read_file(path), path), &cfg);
  for (const std::string& o : overrides) apply_override(cfg, o);
  return cfg;
}

void apply_override(config::Config& cfg, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  LINEA_USER_CHECK(eq != std::string::npos, "write it as --set model.hidden_size=128")
      << "override '" << assignment << "' has no '='";
  const std::string path = trim(assignment.substr(0, eq));
  const std::string raw_value = assignment.substr(eq + 1);
  LINEA_USER_CHECK(!path.empty(), "write it as --set model.hidden_size=128")
      << "override '" << assignment << "' has no field path before '='";

  // Resolve the whole path on descriptors first, so a bad path leaves cfg untouched (walking with
  // MutableMessage would mark the sub-messages on the way as present).
  std::vector<const pb::FieldDescriptor*> chain;
  const pb::Descriptor* d = config::Config::descriptor();
  std::string walked;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
    const std::string here = walked.empty() ? part : walked + "." + part;
    LINEA_USER_CHECK(d != nullptr, kSchemaHint)
        << "override '" << assignment << "': '" << walked << "' is "
        << with_article(chain.back()->type_name()) << " field, it has no sub-field '" << part
        << "'";
    const pb::FieldDescriptor* f = d->FindFieldByName(part);
    const std::string valid = "valid fields of " +
                              (walked.empty() ? std::string("the config") : "'" + walked + "'") +
                              ": " + field_names(d);
    LINEA_USER_CHECK(f != nullptr, valid.c_str())
        << "override '" << assignment << "': unknown field '" << here << "'";
    LINEA_USER_CHECK(!f->is_repeated(), "set repeated fields in a --config file")
        << "override '" << assignment << "': '" << here << "' is a repeated field";
    chain.push_back(f);
    walked = here;
    d = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE ? f->message_type() : nullptr;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  const pb::FieldDescriptor* leaf = chain.back();
  const bool is_message = leaf->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE;
  const std::string message_hint =
      is_message ? "set one of its fields, e.g. --set " + path + "." +
                       leaf->message_type()->field(0)->name() +
                       "=...; its fields: " + field_names(leaf->message_type())
                 : "";
  LINEA_USER_CHECK(!is_message, message_hint.c_str())
      << "override '" << assignment << "': '" << path << "' is a message, not a value";

  // Sub-messages on the way are created before the value is parsed; working on a copy keeps cfg
  // unchanged when the value turns out to be bad.
  config::Config updated = cfg;
  pb::Message* msg = &updated;
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    msg = msg->GetReflection()->MutableMessage(msg, chain[i]);
  }
  const pb::Reflection* r = msg->GetReflection();
  // Strings keep their spaces; every other type is parsed strictly after trimming.
  const std::string value =
      leaf->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING ? raw_value : trim(raw_value);
  const std::string type_hint =
      "give " + with_article(leaf->type_name()) + " value, e.g. --set " + path + "=" +
      (leaf->cpp_type() == pb::FieldDescriptor::CPPTYPE_BOOL ? "true" : "1");
  bool ok = true;
  switch (leaf->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if ((ok = parse_number(value, &v))) r->SetInt32(msg, leaf, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if ((ok = parse_number(value, &v))) r->SetInt64(msg, leaf, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if ((ok = parse_number(value, &v))) r->SetUInt32(msg, leaf, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if ((ok = parse_number(value, &v))) r->SetUInt64(msg, leaf, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
      double v;
      if ((ok = parse_number(value, &v))) r->SetDouble(msg, leaf, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_FLOAT: {
      float v;
      if ((ok = parse_float(value, &v))) r->SetFloat(msg, leaf, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if ((ok = parse_bool(value, &v))) r->SetBool(msg, leaf, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING:
      r->SetString(msg, leaf, value);
      break;
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const pb::EnumDescriptor* e = leaf->enum_type();
      const pb::EnumValueDescriptor* match = nullptr;
      for (int i = 0; i < e->value_count() && match == nullptr; ++i) {
        if (lower(e->value(i)->name()) == lower(value)) match = e->value(i);
      }
      const std::string hint = "valid values of " + path + ": " + enum_names(e);
      LINEA_USER_CHECK(match != nullptr, hint.c_str())
          << "override '" << assignment << "': '" << value << "' is not a value of " << path;
      r->SetEnum(msg, leaf, match);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      break;  // rejected above
  }
  LINEA_USER_CHECK(ok, type_hint.c_str())
      << "override '" << assignment << "': " << path << " is " << with_article(leaf->type_name())
      << " field and '" << value << "' is not a valid " << leaf->type_name()
      << " (or it is out of range)";
  cfg = std::move(updated);
}

std::string config_to_text(const config::Config& cfg) {
  config::Config full = cfg;
  fill_defaults(&full);
  pb::TextFormat::Printer printer;
  std::string out;
  LINEA_CHECK(printer.PrintToString(full, &out)) << "cannot print the config";
  return out;
}

}  // namespace linea
