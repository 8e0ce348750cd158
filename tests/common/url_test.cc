#include "common/url.h"

#include <gtest/gtest.h>

namespace outpost {
namespace {

bool mentions(const Result<Url>& result, std::string_view text) {
  return !result.ok() && result.error().message().find(text) != std::string::npos;
}

TEST(UrlTest, PortsDefaultPerScheme) {
  EXPECT_EQ(parse_url("http://example.com")->port, 80);
  EXPECT_EQ(parse_url("https://example.com")->port, 443);
  EXPECT_EQ(parse_url("ws://example.com")->port, 80);
  EXPECT_EQ(parse_url("WSS://Example.COM")->port, 443);
  EXPECT_EQ(parse_url("gopher://example.com")->port, 0);
  const auto url = parse_url("HTTPS://Example.COM");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->scheme, "https");
  EXPECT_EQ(url->host, "example.com");
  EXPECT_FALSE(url->port_given);
  EXPECT_EQ(url->target(), "/");
  EXPECT_FALSE(url->user.has_value());
}

TEST(UrlTest, ExplicitPortsPathsAndQueries) {
  const auto url = parse_url("https://example.com:8443/a/b%20c?x=1&y=2#frag");
  ASSERT_TRUE(url.ok()) << url.error().message();
  EXPECT_EQ(url->port, 8443);
  EXPECT_TRUE(url->port_given);
  EXPECT_EQ(url->path, "/a/b%20c");
  EXPECT_EQ(url->query, "x=1&y=2");
  EXPECT_EQ(url->target(), "/a/b%20c?x=1&y=2");
  EXPECT_EQ(Url::host_port(url->host, url->port), "example.com:8443");
  EXPECT_EQ(parse_url("http://h:/p")->port, 80);  // an empty port is the default
  EXPECT_EQ(parse_url("http://h?q")->target(), "/?q");
  EXPECT_EQ(parse_url("http://10.1.2.3:65535")->port, 65535);
}

TEST(UrlTest, Ipv6LiteralHosts) {
  const auto url = parse_url("https://[2001:db8::1]:8443/x");
  ASSERT_TRUE(url.ok()) << url.error().message();
  EXPECT_EQ(url->host, "2001:db8::1");
  EXPECT_EQ(url->port, 8443);
  EXPECT_EQ(Url::host_port(url->host, url->port), "[2001:db8::1]:8443");
  EXPECT_EQ(Url::host_header("::1", 443, 443), "[::1]");
  EXPECT_EQ(Url::host_header("::1", 80, 443), "[::1]:80");
  EXPECT_EQ(Url::host_header("cp", 443, 443), "cp");
  // A listener on any port is written with ":0", not as a bare host.
  EXPECT_EQ(Url::host_port("127.0.0.1", 0), "127.0.0.1:0");
  EXPECT_EQ(Url::host_port("::1", 9090), "[::1]:9090");
  EXPECT_FALSE(parse_url("https://[::1/").ok());
  EXPECT_FALSE(parse_url("https://::1/").ok());
}

TEST(UrlTest, UserinfoIsPercentDecoded) {
  const auto url = parse_url("http://dom%5Cagent:p%40ss%3Aw%25rd@proxy:3128");
  ASSERT_TRUE(url.ok()) << url.error().message();
  EXPECT_EQ(url->user, "dom\\agent");
  EXPECT_EQ(url->password, "p@ss:w%rd");
  EXPECT_EQ(url->host, "proxy");
  const auto user_only = parse_url("http://agent@proxy");
  ASSERT_TRUE(user_only.ok());
  EXPECT_EQ(user_only->user, "agent");
  EXPECT_FALSE(user_only->password.has_value());
  EXPECT_FALSE(parse_url("http://u:%zz@proxy").ok());
}

TEST(UrlTest, FormatRoundTrips) {
  Url url;
  url.scheme = "http";
  url.host = "::1";
  url.port = 8080;
  url.user = "dom\\agent";
  url.password = "p@ss:w%rd/?#";
  const auto back = parse_url(format_url(url));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->user, url.user);
  EXPECT_EQ(back->password, url.password);
  EXPECT_EQ(back->host, "::1");
  EXPECT_EQ(back->port, 8080);
}

TEST(UrlTest, BadUrlsSayWhatIsWrong) {
  EXPECT_TRUE(mentions(parse_url(""), "empty"));
  EXPECT_TRUE(mentions(parse_url("example.com:443"), "no scheme"));
  EXPECT_TRUE(mentions(parse_url("https://:443"), "no host"));
  EXPECT_TRUE(mentions(parse_url("https:///path"), "no host"));
  EXPECT_TRUE(mentions(parse_url("https://h:0"), "out of range"));
  EXPECT_TRUE(mentions(parse_url("https://h:65536"), "out of range"));
  EXPECT_TRUE(mentions(parse_url("https://h:99999999999999999999"), "out of range"));
  EXPECT_TRUE(mentions(parse_url("https://h/a b"), "at 12"));
  EXPECT_TRUE(mentions(parse_url("https://h:x/"), "must be a number"));
  EXPECT_TRUE(mentions(parse_url("https://h%2Fx/"), "host name"));
  // The password never appears in an error.
  const auto bad = parse_url("http://u:secret@h:0");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message().find("secret"), std::string::npos);
}

}  // namespace
}  // namespace outpost
