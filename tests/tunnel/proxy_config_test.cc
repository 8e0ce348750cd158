#include <gtest/gtest.h>

#include "tunnel/client.h"
#include "tunnel/proxy.h"
#include <stdlib.h>

namespace outpost::tunnel {
namespace {

TEST(ProxyConfigTest, ParsesUrlsWithPercentEncodedCredentials) {
  auto proxy = parse_proxy_url("http://agent:p%40ss%3Aword@proxy.corp:8080");
  ASSERT_TRUE(proxy.ok()) << proxy.error().message();
  EXPECT_EQ(proxy->host, "proxy.corp");
  EXPECT_EQ(proxy->port, 8080);
  EXPECT_EQ(proxy->username, "agent");
  EXPECT_EQ(proxy->password, "p@ss:word");
  EXPECT_EQ(proxy->display(), "proxy.corp:8080");  // no credentials where logs can see them

  auto bare = parse_proxy_url("10.0.0.1");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->port, 3128);
  auto v6 = parse_proxy_url("http://[::1]:3129/");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 3129);
}

TEST(ProxyConfigTest, RefusesWhatItCannotUse) {
  EXPECT_NE(parse_proxy_url("https://proxy:443").error().message().find("not supported"),
            std::string::npos);
  EXPECT_FALSE(parse_proxy_url("socks5://proxy:1080").ok());
  EXPECT_FALSE(parse_proxy_url("http://proxy:99999").ok());
  EXPECT_FALSE(parse_proxy_url("http://:8080").ok());
  EXPECT_FALSE(parse_proxy_url("http://u:%zz@proxy:8080").ok());
}

TEST(ProxyConfigTest, NoProxyMatchesHostsAndDomainSuffixes) {
  EXPECT_TRUE(no_proxy_matches("localhost,.corp.example", "api.corp.example"));
  EXPECT_TRUE(no_proxy_matches("corp.example", "corp.example"));
  EXPECT_TRUE(no_proxy_matches(" corp.example ", "a.corp.example"));
  EXPECT_FALSE(no_proxy_matches("corp.example", "notcorp.example"));
  EXPECT_TRUE(no_proxy_matches("*", "anything"));
  EXPECT_TRUE(no_proxy_matches("control:443", "control"));
  EXPECT_FALSE(no_proxy_matches("", "control"));
}

TEST(ProxyConfigTest, EnvironmentProxyHonoursNoProxy) {
  setenv("HTTPS_PROXY", "http://u:p@envproxy:3128", 1);
  setenv("NO_PROXY", "internal.example", 1);
  auto proxied = proxy_from_environment("control.example.com");
  ASSERT_TRUE(proxied.ok());
  ASSERT_TRUE(proxied->has_value());
  EXPECT_EQ((*proxied)->host, "envproxy");
  auto direct = proxy_from_environment("cp.internal.example");
  ASSERT_TRUE(direct.ok());
  EXPECT_FALSE(direct->has_value());
  unsetenv("HTTPS_PROXY");
  unsetenv("NO_PROXY");
  EXPECT_FALSE(proxy_from_environment("control.example.com")->has_value());
}

TEST(TunnelUrlTest, ParsesWssUrlsAndRefusesPlainText) {
  auto url = parse_tunnel_url("wss://control.example.com:8443");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->host, "control.example.com");
  EXPECT_EQ(url->port, 8443);
  EXPECT_EQ(url->path, "/v1/tunnel");
  EXPECT_EQ(parse_tunnel_url("wss://cp/custom/path")->path, "/custom/path");
  EXPECT_EQ(parse_tunnel_url("wss://cp")->port, 443);
  EXPECT_NE(parse_tunnel_url("ws://cp").error().message().find("wss://"), std::string::npos);
  EXPECT_FALSE(parse_tunnel_url("wss://cp:0").ok());
  EXPECT_FALSE(parse_tunnel_url("wss://:443").ok());
}

}  // namespace
}  // namespace outpost::tunnel
