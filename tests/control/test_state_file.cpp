// fulcrumd's state file (admin.state_file): the operator's overrides round-trip, are written
// atomically, and a corrupt or unreadable file is reported, never written over, and kept.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "fulcrum/control/config.hpp"
#include "fulcrum/control/state_file.hpp"
#include "temp_dir.hpp"

namespace fulcrum::control {
namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

void write(const fs::path& p, const std::string& text) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << text;
}

Overrides sample() {
    Overrides o;
    o["web/198.18.0.11:80"] = {0u, false};           // drained
    o["web/198.18.0.12:80"] = {std::nullopt, true};  // disabled
    o["dns/[2001:db8::53]:53"] = {250u, true};       // both
    return o;
}

TEST(StateFile, FormatAndParseRoundTrip) {
    const Overrides o = sample();
    auto back = parse_overrides(format_overrides(o));
    ASSERT_TRUE(back) << back.error();
    EXPECT_EQ(back.value(), o);

    // Servers without an override are not written.
    Overrides with_empty = o;
    with_empty["web/198.18.0.13:80"] = {};
    auto again = parse_overrides(format_overrides(with_empty));
    ASSERT_TRUE(again);
    EXPECT_EQ(again.value(), o);
    EXPECT_EQ(format_overrides(with_empty).find("198.18.0.13"), std::string::npos);

    auto none = parse_overrides(format_overrides({}));
    ASSERT_TRUE(none) << none.error();
    EXPECT_TRUE(none->empty());
}

TEST(StateFile, ParseRefusesWhatItDoesNotKnowAndSaysWhere) {
    const std::pair<const char*, const char*> cases[] = {
        {"", "not valid JSON"},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {"web/198.18.0.11:80": {"weight": 0})",
         "not valid JSON"},  // truncated
        {"[1, 2]", "expected a JSON object"},
        {R"({"version": 1, "servers": {}})", "\"format\" must be \"fulcrum-overrides\""},
        {R"({"format": "fulcrum-overrides", "version": 2, "servers": {}})",
         "\"version\" must be 1"},
        {R"({"format": "fulcrum-overrides", "version": 1})", "\"servers\" must be an object"},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {}, "extra": 1})",
         "unknown key \"extra\""},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {"nokey": {"weight": 1}}})",
         "servers[\"nokey\"]: not a server key"},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {"web/198.18.0.11:80": 3}})",
         "servers[\"web/198.18.0.11:80\"]: expected an object"},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {"web/198.18.0.11:80": {"weight": 65536}}})",
         "servers[\"web/198.18.0.11:80\"].weight: expected an integer from 0 to 65535"},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {"web/198.18.0.11:80": {"weight": -1}}})",
         ".weight: expected an integer"},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {"web/198.18.0.11:80": {"weight": "0"}}})",
         ".weight: expected an integer"},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {"web/198.18.0.11:80": {"disabled": 1}}})",
         ".disabled: expected true or false"},
        {R"({"format": "fulcrum-overrides", "version": 1, "servers": {"web/198.18.0.11:80": {"drain": true}}})",
         "unknown key \"drain\""},
    };
    for (const auto& [text, want] : cases) {
        auto r = parse_overrides(text);
        ASSERT_FALSE(r) << text;
        EXPECT_NE(r.error().find(want), std::string::npos) << text << "\n -> " << r.error();
    }
}

TEST(StateFile, MissingFileIsNoOverridesAndSaveCreatesItsDirectory) {
    const TempDir d("fulcrum-state-");
    const fs::path p = d.path() / "lib" / "fulcrum" / "overrides.json";
    StateFile f(p.string());
    auto r = f.load();
    ASSERT_TRUE(r) << r.error();
    EXPECT_TRUE(r->empty());
    EXPECT_FALSE(fs::exists(p));  // loading writes nothing

    EXPECT_FALSE(f.save(sample()));
    ASSERT_TRUE(fs::is_regular_file(p));
    StateFile again(p.string());
    auto back = again.load();
    ASSERT_TRUE(back) << back.error();
    EXPECT_EQ(back.value(), sample());
}

TEST(StateFile, SaveReplacesTheFileByRenameNotInPlace) {
    const TempDir d("fulcrum-state-");
    const fs::path p = d.path() / "overrides.json";
    StateFile f(p.string());
    ASSERT_TRUE(f.load());
    Overrides first;
    first["web/198.18.0.11:80"] = {0u, false};
    f.save(first);
    const std::string old_text = read(p);
    // A second name for the file as it is now: an in-place rewrite would change what it
    // shows; writing a new file and renaming it over the old name leaves it alone.
    const fs::path link = d.path() / "before";
    fs::create_hard_link(p, link);
    f.save(sample());
    EXPECT_EQ(read(link), old_text);
    auto now = parse_overrides(read(p));
    ASSERT_TRUE(now) << now.error();
    EXPECT_EQ(now.value(), sample());
    // No temporary file is left behind.
    for (const auto& e : fs::directory_iterator(d.path()))
        EXPECT_TRUE(e.path() == p || e.path() == link) << "left behind: " << e.path();
    struct stat st {};
    ASSERT_EQ(::stat(p.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(StateFile, CorruptFileIsReportedKeptAndMovedAsideAtTheFirstSave) {
    const TempDir d("fulcrum-state-");
    const fs::path p = d.path() / "overrides.json";
    const std::string garbage =
        "{\"format\": \"fulcrum-overrides\", \"version\": 1, \"servers\": {\"web/19";
    write(p, garbage);
    StateFile f(p.string());
    auto r = f.load();
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find(p.string()), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("is corrupt: not valid JSON"), std::string::npos) << r.error();
    EXPECT_EQ(read(p), garbage);  // untouched until the first change
    EXPECT_TRUE(f.kept_bad().empty());

    Overrides o;
    o["web/198.18.0.12:80"] = {std::nullopt, true};
    EXPECT_TRUE(f.save(o));  // moved the bad file aside
    EXPECT_EQ(f.kept_bad(), p.string() + ".bad");
    EXPECT_EQ(read(p.string() + ".bad"), garbage);
    auto now = parse_overrides(read(p));
    ASSERT_TRUE(now) << now.error();
    EXPECT_EQ(now.value(), o);

    // Later saves leave the kept file alone.
    EXPECT_FALSE(f.save(sample()));
    EXPECT_EQ(read(p.string() + ".bad"), garbage);
}

TEST(StateFile, UnreadableFileIsAnErrorNamingIt) {
    const TempDir d("fulcrum-state-");
    const fs::path dir = d.path() / "overrides.json";
    fs::create_directory(dir);  // a directory where the file should be
    StateFile f(dir.string());
    auto r = f.load();
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find(dir.string() + " cannot be read: not a regular file (a directory; it is left alone"),
              std::string::npos)
        << r.error();
    EXPECT_TRUE(f.not_a_file());
    // A directory is never moved aside (it would take what it holds) nor replaced.
    write(dir / "other", "kept");
    try {
        f.save(sample());
        ADD_FAILURE() << "save() replaced or moved a directory";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("is not a regular file; it is left alone"), std::string::npos)
            << e.what();
    }
    EXPECT_TRUE(fs::is_directory(dir));
    EXPECT_EQ(read(dir / "other"), "kept");
    EXPECT_FALSE(fs::exists(dir.string() + ".bad"));

    // A FIFO does not block the load (nobody writes to it).
    const fs::path fifo = d.path() / "fifo.json";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    StateFile q(fifo.string());
    auto rq = q.load();
    ASSERT_FALSE(rq);
    EXPECT_NE(rq.error().find("not a regular file (a special file"), std::string::npos) << rq.error();

    const fs::path big = d.path() / "big.json";
    write(big, std::string(kMaxStateFileBytes + 1, ' '));
    StateFile g(big.string());
    auto rb = g.load();
    ASSERT_FALSE(rb);
    EXPECT_NE(rb.error().find("cannot be read"), std::string::npos) << rb.error();
    EXPECT_NE(rb.error().find("a state file may hold"), std::string::npos) << rb.error();
}

TEST(StateFile, SaveFailureNamesTheFileAndTheStep) {
    const TempDir d("fulcrum-state-");
    const fs::path not_dir = d.path() / "plain";
    write(not_dir, "x");
    StateFile f((not_dir / "overrides.json").string());
    try {
        f.save(sample());
        FAIL() << "saved under a regular file";
    } catch (const std::runtime_error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find((not_dir / "overrides.json").string()), std::string::npos) << m;
        EXPECT_NE(m.find("cannot create directory"), std::string::npos) << m;
    }
}

constexpr const char* kServices = R"(
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    servers:
      - address: 198.18.0.11
)";

TEST(StateFile, ConfigKeyAdminStateFile) {
    const Config def = parse_config(std::string(kServices).substr(1), "t.yaml");
    EXPECT_EQ(def.state_file, "/var/lib/fulcrum/overrides.json");
    const Config c = parse_config(
        std::string("admin:\n  state_file: /tmp/fl/overrides.json\n") + (kServices + 1), "t.yaml");
    EXPECT_EQ(c.state_file, "/tmp/fl/overrides.json");
    for (const char* bad : {"overrides.json", "\"\"", "/var/lib/fulcrum/"}) {
        try {
            parse_config(std::string("admin:\n  state_file: ") + bad + "\n" + (kServices + 1),
                         "t.yaml");
            ADD_FAILURE() << "accepted state_file " << bad;
        } catch (const ConfigError& e) {
            ASSERT_EQ(e.messages().size(), 1u);
            EXPECT_NE(e.messages()[0].find("t.yaml:2:"), std::string::npos) << e.messages()[0];
            EXPECT_NE(e.messages()[0].find("admin.state_file: "), std::string::npos)
                << e.messages()[0];
            EXPECT_NE(e.messages()[0].find("is not an absolute file path"), std::string::npos)
                << e.messages()[0];
        }
    }
}

}  // namespace
}  // namespace fulcrum::control
