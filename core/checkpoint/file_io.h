// Whole-file reads and durable writes for checkpoints: a write is flushed to the disk (fsync)
// before it returns, so a checkpoint marked complete survives a crash of the machine.
#pragma once

#include <string>
#include <string_view>

namespace linea::checkpoint {

// Writes `data` to `path` (replacing it) and fsyncs the file. Throws linea::Error naming the path.
void write_file_durable(const std::string& path, std::string_view data);

// Fsyncs a directory, so that entries created, renamed or removed in it are on disk.
void fsync_directory(const std::string& path);

// The whole file; throws linea::Error naming the path when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace linea::checkpoint
