// The checkpoints folder: retention (keep_last + keep_every) and which checkpoint a run resumes
// from (the newest with a COMPLETE marker; incomplete and temporary ones are skipped).
#include "core/checkpoint/checkpoint_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace linea::checkpoint {
namespace {
namespace fs = std::filesystem;

TEST(CheckpointRetention, KeepsTheLastKAndEveryNth) {
  const std::vector<int64_t> steps = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
  EXPECT_EQ(steps_to_delete(steps, 2, 0), (std::vector<int64_t>{10, 20, 30, 40, 50, 60, 70, 80}));
  EXPECT_EQ(steps_to_delete(steps, 2, 40), (std::vector<int64_t>{10, 20, 30, 50, 60, 70}));
  EXPECT_EQ(steps_to_delete(steps, 3, 25), (std::vector<int64_t>{10, 20, 30, 40, 60, 70}));
  EXPECT_EQ(steps_to_delete(steps, 20, 0), std::vector<int64_t>{});
  EXPECT_EQ(steps_to_delete({7, 3, 5}, 1, 0), (std::vector<int64_t>{3, 5})) << "any order in";
}

class CheckpointDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("linea_ckdir_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void make(const std::string& name, bool complete) {
    fs::create_directories(dir_ / name);
    if (complete) std::ofstream(dir_ / name / kCompleteMarker) << "x";
  }
  fs::path dir_;
};

TEST_F(CheckpointDirTest, ResumesFromTheNewestCompleteOne) {
  EXPECT_EQ(newest_complete_checkpoint(dir_.string()), "") << "no folder: start afresh";
  make("step-5", true);
  make("step-40", true);        // numeric order, not text order: 40 > 5
  make("step-50", false);       // no marker: skipped
  make(".tmp-step-60", false);  // a write that did not finish: skipped
  make("step-x", true);         // not a checkpoint name
  EXPECT_EQ(newest_complete_checkpoint(dir_.string()), (dir_ / "step-40").string());
  const auto all = list_checkpoints(dir_.string());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].step, 5);
  EXPECT_EQ(all[2].step, 50);
  EXPECT_FALSE(all[2].complete);
}

TEST_F(CheckpointDirTest, RetentionDeletesOnlyCompleteOldOnes) {
  for (int s : {1, 2, 3, 4, 5, 6}) make("step-" + std::to_string(s), true);
  make("step-7", false);
  apply_retention(dir_.string(), 2, 3);
  std::vector<int64_t> left;
  for (const auto& c : list_checkpoints(dir_.string())) left.push_back(c.step);
  EXPECT_EQ(left, (std::vector<int64_t>{3, 5, 6, 7}));
}

}  // namespace
}  // namespace linea::checkpoint
