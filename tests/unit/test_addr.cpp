#include <gtest/gtest.h>

#include "fulcrum/addr.hpp"

using namespace fulcrum;

TEST(IpAddr, ParseAndFormat) {
    auto a = IpAddr::parse("198.18.0.1");
    ASSERT_TRUE(a);
    EXPECT_TRUE(a->is_v4());
    EXPECT_EQ(a->str(), "198.18.0.1");
    EXPECT_EQ(a->bytes[4], 0);
    auto b = IpAddr::parse("2001:db8::1");
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->is_v6());
    EXPECT_EQ(b->str(), "2001:db8::1");
    EXPECT_EQ(*a, IpAddr::v4(0xC6120001));
    for (const char* bad : {"", "1.2.3", "1.2.3.256", "2001:db8:::1", "::ffff:1.2.3.4.5", "[::1]",
                            "10.0.0.1/24", "abc", " 1.2.3.4"})
        EXPECT_FALSE(IpAddr::parse(bad)) << bad;
}

TEST(IpPrefix, ParseContains) {
    auto p = IpPrefix::parse("198.18.0.0/15");
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->contains(*IpAddr::parse("198.19.255.255")));
    EXPECT_FALSE(p->contains(*IpAddr::parse("198.20.0.0")));
    EXPECT_FALSE(p->contains(*IpAddr::parse("2001:db8::1")));
    EXPECT_EQ(p->str(), "198.18.0.0/15");
    EXPECT_FALSE(IpPrefix::parse("198.18.0.1/15"));  // host bits set
    EXPECT_FALSE(IpPrefix::parse("198.18.0.0/33"));
    EXPECT_FALSE(IpPrefix::parse("198.18.0.0"));
    EXPECT_FALSE(IpPrefix::parse("198.18.0.0/"));
    EXPECT_FALSE(IpPrefix::parse("198.18.0.0/1x"));
    auto q = IpPrefix::parse("2001:db8::/32");
    ASSERT_TRUE(q);
    EXPECT_TRUE(q->contains(*IpAddr::parse("2001:db8:ffff::1")));
    EXPECT_FALSE(q->contains(*IpAddr::parse("2001:db9::1")));
}

TEST(MacAddr, ParseFormat) {
    auto m = MacAddr::parse("02:00:5e:10:ab:FF");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->str(), "02:00:5e:10:ab:ff");
    EXPECT_FALSE(m->is_zero());
    EXPECT_TRUE(MacAddr{}.is_zero());
    for (const char* bad : {"", "02:00:5e:10:ab", "02-00-5e-10-ab-ff", "02:00:5e:10:ab:fg", "002:00:5e:10:ab:f"})
        EXPECT_FALSE(MacAddr::parse(bad)) << bad;
}
