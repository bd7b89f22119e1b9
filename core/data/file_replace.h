// Data files written beside their destination and renamed over it (atomic on POSIX): a crash or a
// full disk never leaves a half-written file under the final name, where a later run would take
// it for a corpus. `what` names the kind of file in errors ("token shard", ...).
#pragma once

#include <fstream>
#include <functional>
#include <string>

namespace linea::data {

// Writes path + ".tmp" through `fill` and returns that name; on a write error removes it and
// throws a user error naming both paths.
std::string write_beside(const std::string& path, const std::string& what,
                         const std::function<void(std::ofstream&)>& fill);

// Renames `tmp` over `path`; on failure removes `tmp` and throws a user error.
void replace_with(const std::string& tmp, const std::string& path);

}  // namespace linea::data
