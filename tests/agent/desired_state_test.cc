#include "agent/desired_state.h"

#include <gtest/gtest.h>

namespace outpost::agent {
namespace {

constexpr const char* kSha = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

nlohmann::json replica(const std::string& id) {
  return {{"replica_id", id},
          {"deployment_id", "dep-1"},
          {"model_version_id", "v1"},
          {"artifacts",
           nlohmann::json::array({{{"name", "model.pt"}, {"sha256", kSha}, {"size", 11}}})},
          {"inference_compute_info",
           {{"cpu_limit", "500m"},
            {"cpu_memory", "1Gi"},
            {"num_accelerators", 1},
            {"accelerator_memory", "2Gi"}}},
          {"disable_packing", true}};
}

TEST(DesiredStateTest, ParsesTheDocumentedShape) {
  const auto state = DesiredState::from_json(
      {{"version", 7}, {"replicas", nlohmann::json::array({replica("a"), replica("b")})}});
  ASSERT_TRUE(state.ok()) << state.error().message();
  EXPECT_EQ(state->version, 7u);
  ASSERT_EQ(state->replicas.size(), 2u);
  const auto& first = state->replicas[0];
  EXPECT_EQ(first.cpu_millicores, 500u);
  EXPECT_EQ(first.memory_bytes, 1ull << 30);
  EXPECT_EQ(first.num_accelerators, 1);
  EXPECT_EQ(first.accelerator_memory_bytes, 2ull << 30);
  EXPECT_TRUE(first.disable_packing);
  EXPECT_EQ(first.artifacts[0].size, 11u);
}

TEST(DesiredStateTest, RefusesMalformedDocumentsNamingTheField) {
  const auto refused = [](const nlohmann::json& doc) {
    auto state = DesiredState::from_json(doc);
    return state.ok() ? std::string("accepted") : state.error().message();
  };
  EXPECT_NE(refused(nlohmann::json::array()).find("JSON object"), std::string::npos);
  EXPECT_NE(refused({{"version", -1}, {"replicas", nlohmann::json::array()}}).find("version"),
            std::string::npos);
  auto bad = replica("a");
  bad["artifacts"][0]["name"] = "../escape";
  EXPECT_NE(refused({{"version", 1}, {"replicas", nlohmann::json::array({bad})}})
                .find("artifacts[0].name"),
            std::string::npos);
  EXPECT_NE(
      refused({{"version", 1}, {"replicas", nlohmann::json::array({replica("a"), replica("a")})}})
          .find("repeated"),
      std::string::npos);
  bad = replica("a");
  bad["inference_compute_info"]["cpu_memory"] = "lots";
  EXPECT_NE(
      refused({{"version", 1}, {"replicas", nlohmann::json::array({bad})}}).find("cpu_memory"),
      std::string::npos);
  bad = replica("a");
  bad.erase("model_version_id");
  EXPECT_NE(refused({{"version", 1}, {"replicas", nlohmann::json::array({bad})}})
                .find("model_version_id is missing"),
            std::string::npos);
}

}  // namespace
}  // namespace outpost::agent
