// fulcrumd's configuration loader: values, defaults, health-check merging, the documented
// examples, and one test per class of error with its exact position and message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <set>
#include <string>
#include <vector>

#include "fulcrum/control/admin_request.hpp"
#include "fulcrum/control/config.hpp"
#include "fulcrum/control/metrics.hpp"

namespace fulcrum::control {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kFile = "test.yaml";

// Raw string literals below start with a newline so the YAML can begin on its own line; the
// first line of the YAML is line 1.
std::string yaml(std::string_view text) {
    if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
    return std::string(text);
}

Config parse(std::string_view text) {
    return parse_config(yaml(text), kFile);
}

// The messages of a configuration that must be refused.
std::vector<std::string> errors(std::string_view text) {
    try {
        parse_config(yaml(text), kFile);
    } catch (const ConfigError& e) {
        return e.messages();
    }
    ADD_FAILURE() << "the configuration was accepted:\n" << yaml(text);
    return {};
}

// The single message of a configuration with exactly one problem.
std::string error(std::string_view text) {
    const auto m = errors(text);
    if (m.size() != 1) {
        std::string all;
        for (const auto& s : m) all += "\n  " + s;
        ADD_FAILURE() << "expected exactly one message, got " << m.size() << ":" << all;
        return m.empty() ? std::string() : m.front();
    }
    return m.front();
}

IpAddr ip(const char* s) {
    return *IpAddr::parse(s);
}

// The repository root: found from the test binary (build/tests/control-tests) or the current
// directory, whichever has docs/examples above it, or through a meson build directory's
// meson-info.json (which names the source directory) for out-of-tree builds.
std::optional<fs::path> meson_source_dir(const fs::path& build_dir) {
    std::ifstream in(build_dir / "meson-info" / "meson-info.json");
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const std::string key = "\"source\": \"";
    const size_t at = text.find(key);
    if (at == std::string::npos) return std::nullopt;
    const size_t end = text.find('"', at + key.size());
    if (end == std::string::npos) return std::nullopt;
    return fs::path(text.substr(at + key.size(), end - at - key.size()));
}

std::optional<fs::path> source_root() {
    std::vector<fs::path> starts;
    std::error_code ec;
    if (auto exe = fs::read_symlink("/proc/self/exe", ec); !ec) starts.push_back(exe.parent_path());
    if (auto cwd = fs::current_path(ec); !ec) starts.push_back(cwd);
    for (fs::path dir : starts) {
        for (int up = 0; up < 8; ++up) {
            if (fs::exists(dir / "docs" / "examples" / "fulcrum.yaml", ec)) return dir;
            if (auto src = meson_source_dir(dir);
                src && fs::exists(*src / "docs" / "examples" / "fulcrum.yaml", ec))
                return src;
            if (!dir.has_parent_path() || dir.parent_path() == dir) break;
            dir = dir.parent_path();
        }
    }
    return std::nullopt;
}

const ServiceConfig& service(const Config& c, std::string_view name) {
    for (const auto& s : c.services)
        if (s.name == name) return s;
    throw std::runtime_error("no service " + std::string(name));
}

// ---- valid configurations -----------------------------------------------------------------

TEST(ConfigParse, FullExampleIntoValues) {
    const Config c = parse(R"(
dataplane:
  control_socket: /run/fl/dp.sock
  hash_seed: 0x5eed
  mtu: 1500
  encapsulation:
    source_v4: 198.18.255.0/24
    source_v6: 2001:db8:ffff::/64
    gue_port: 6081
    ttl: 32
admin:
  socket: /run/fl/admin.sock
metrics:
  listen: "[::1]:9400"
limits:
  retire_after: 5m
health_check:
  type: tcp
  interval: 3s
  timeout: 1500ms
  rise: 4
  fall: 5
  path: /health
  expect_status: 200
  host: www.example.com
  tls_verify: false
  port: 8080
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    protocol: tcp
    scheduler: maglev
    forwarding: dsr
    table_size: 65537
    health_check: {type: http, path: /}
    servers:
      - address: 198.18.0.11
        port: 80
        weight: 3
        backup: false
        enabled: true
        health_check: {port: 8081}
      - address: 198.18.0.12
        weight: 0
        backup: true
        enabled: false
  - name: dns.v6
    vip: 2001:db8::53
    port: 53
    protocol: udp
    scheduler: wrr
    forwarding: gue
    table_size: 251
    servers:
      - address: 2001:db8:1::53
        port: 5353
)");
    EXPECT_EQ(c.path, kFile);
    EXPECT_EQ(c.dataplane_socket, "/run/fl/dp.sock");
    EXPECT_EQ(c.hash_seed, 0x5eedu);
    EXPECT_EQ(c.mtu, 1500);
    ASSERT_TRUE(c.encap.src4);
    EXPECT_EQ(*c.encap.src4, *IpPrefix::parse("198.18.255.0/24"));
    ASSERT_TRUE(c.encap.src6);
    EXPECT_EQ(*c.encap.src6, *IpPrefix::parse("2001:db8:ffff::/64"));
    EXPECT_EQ(c.encap.gue_port, 6081);
    EXPECT_EQ(c.encap.outer_ttl, 32);
    EXPECT_EQ(c.admin_socket, "/run/fl/admin.sock");
    EXPECT_EQ(c.metrics_listen, "[::1]:9400");
    EXPECT_EQ(c.retire_after, 5min);
    ASSERT_EQ(c.services.size(), 2u);

    const ServiceConfig& web = c.services[0];
    EXPECT_EQ(web.name, "web");
    EXPECT_EQ(web.vip, ip("198.18.0.100"));
    EXPECT_EQ(web.port, 80);
    EXPECT_EQ(web.proto, FL_PROTO_TCP);
    EXPECT_EQ(web.scheduler, Scheduler::maglev);
    EXPECT_EQ(web.forwarding, Forwarding::dsr);
    EXPECT_EQ(web.table_size, 65537u);
    EXPECT_EQ(web.where.str(), "test.yaml:28:5");
    ASSERT_EQ(web.servers.size(), 2u);

    const ServerConfig& s0 = web.servers[0];
    EXPECT_EQ(s0.address, ip("198.18.0.11"));
    EXPECT_EQ(s0.port, 80);
    EXPECT_EQ(s0.weight, 3u);
    EXPECT_FALSE(s0.backup);
    EXPECT_TRUE(s0.enabled);
    EXPECT_EQ(s0.where.str(), "test.yaml:37:9");
    // defaults <- top level <- service <- server, key by key
    HealthCheckConfig h0;
    h0.type = CheckType::http;  // service
    h0.path = "/";              // service over the top level's /health
    h0.port = 8081;             // server over the top level's 8080
    h0.interval = 3s;           // top level
    h0.timeout = 1500ms;        // top level
    h0.rise = 4;
    h0.fall = 5;
    h0.expect_status = {200};
    h0.host = "www.example.com";
    h0.tls_verify = false;
    EXPECT_EQ(s0.health, h0);

    const ServerConfig& s1 = web.servers[1];
    EXPECT_EQ(s1.port, 0);
    EXPECT_EQ(s1.effective_port(web.port), 80);
    EXPECT_EQ(s1.weight, 0u);
    EXPECT_TRUE(s1.backup);
    EXPECT_FALSE(s1.enabled);
    HealthCheckConfig h1 = h0;
    h1.port = 8080;  // the top level's
    EXPECT_EQ(s1.health, h1);

    const ServiceConfig& dns = c.services[1];
    EXPECT_EQ(dns.name, "dns.v6");
    EXPECT_EQ(dns.vip, ip("2001:db8::53"));
    EXPECT_EQ(dns.proto, FL_PROTO_UDP);
    EXPECT_EQ(dns.scheduler, Scheduler::wrr);
    EXPECT_EQ(dns.forwarding, Forwarding::gue);
    EXPECT_EQ(dns.table_size, 251u);
    ASSERT_EQ(dns.servers.size(), 1u);
    EXPECT_EQ(dns.servers[0].port, 5353);  // gue may change the port
    EXPECT_EQ(dns.servers[0].health.type, CheckType::tcp);
    EXPECT_EQ(dns.servers[0].health.path, "/health");
    EXPECT_EQ(dns.servers[0].health.port, 8080);
}

TEST(ConfigParse, DefaultsForOmittedKeys) {
    const Config c = parse(R"(
services:
  - name: a
    vip: 198.18.0.1
    port: 443
    servers:
      - address: 198.18.0.2
)");
    const Config defaults;
    EXPECT_EQ(c.dataplane_socket, "/run/fulcrum/dataplane.sock");
    EXPECT_EQ(c.dataplane_socket, defaults.dataplane_socket);
    EXPECT_EQ(c.hash_seed, 0u);
    EXPECT_EQ(c.mtu, 0);
    EXPECT_FALSE(c.encap.src4);
    EXPECT_FALSE(c.encap.src6);
    EXPECT_EQ(c.encap.gue_port, 6080);
    EXPECT_EQ(c.encap.outer_ttl, 64);
    EXPECT_EQ(c.admin_socket, "/run/fulcrum/admin.sock");
    EXPECT_EQ(c.metrics_listen, "127.0.0.1:9310");
    EXPECT_EQ(c.retire_after, 15min);
    ASSERT_EQ(c.services.size(), 1u);
    const ServiceConfig& s = c.services[0];
    EXPECT_EQ(s.proto, FL_PROTO_TCP);
    EXPECT_EQ(s.scheduler, Scheduler::maglev);
    EXPECT_EQ(s.forwarding, Forwarding::dsr);
    EXPECT_EQ(s.table_size, 65537u);
    ASSERT_EQ(s.servers.size(), 1u);
    EXPECT_EQ(s.servers[0].port, 0);
    EXPECT_EQ(s.servers[0].weight, 1u);
    EXPECT_FALSE(s.servers[0].backup);
    EXPECT_TRUE(s.servers[0].enabled);
    EXPECT_EQ(s.servers[0].health, HealthCheckConfig{});
    EXPECT_EQ(s.servers[0].health.type, CheckType::tcp);
    EXPECT_EQ(s.servers[0].health.interval, 2s);
    EXPECT_EQ(s.servers[0].health.timeout, 1s);
    EXPECT_EQ(s.servers[0].health.rise, 2u);
    EXPECT_EQ(s.servers[0].health.fall, 3u);
}

TEST(ConfigParse, HealthChecksMergeKeyByKey) {
    const Config c = parse(R"(
health_check: {interval: 5s, expect_status: [200, 204], rise: 3}
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    health_check: {type: https, timeout: 4s, tls_verify: true}
    servers:
      - address: 198.18.0.2
      - address: 198.18.0.3
        health_check: {type: http, expect_status: 301, host: a.example}
  - name: b
    vip: 198.18.0.1
    port: 81
    servers:
      - address: 198.18.0.2
        health_check: {type: none}
)");
    const auto& a = c.services[0].servers;
    EXPECT_EQ(a[0].health.type, CheckType::https);
    EXPECT_EQ(a[0].health.interval, 5s);
    EXPECT_EQ(a[0].health.timeout, 4s);
    EXPECT_EQ(a[0].health.rise, 3u);
    EXPECT_EQ(a[0].health.fall, 3u);
    EXPECT_EQ(a[0].health.expect_status, (std::vector<int>{200, 204}));
    EXPECT_TRUE(a[0].health.tls_verify);
    EXPECT_EQ(a[0].health.host, "");
    EXPECT_EQ(a[1].health.type, CheckType::http);
    EXPECT_EQ(a[1].health.expect_status, std::vector<int>{301});
    EXPECT_EQ(a[1].health.host, "a.example");
    EXPECT_TRUE(a[1].health.tls_verify);  // from the service
    EXPECT_EQ(a[1].health.timeout, 4s);
    const auto& b = c.services[1].servers;
    EXPECT_EQ(b[0].health.type, CheckType::none);
    EXPECT_EQ(b[0].health.timeout, 1s);  // service a's override does not leak into b
    EXPECT_FALSE(b[0].health.tls_verify);
    EXPECT_EQ(b[0].health.expect_status, (std::vector<int>{200, 204}));
}

TEST(ConfigParse, EmptyServiceListAndServiceWithoutServers) {
    EXPECT_TRUE(parse("services: []\n").services.empty());
    const Config c = parse(R"(
services:
  - name: empty
    vip: 198.18.0.1
    port: 80
    servers: []
)");
    ASSERT_EQ(c.services.size(), 1u);
    EXPECT_TRUE(c.services[0].servers.empty());
}

TEST(ConfigParse, MetricsCanBeDisabled) {
    EXPECT_EQ(parse("metrics: {listen: \"\"}\nservices: []\n").metrics_listen, "");
    EXPECT_EQ(parse("metrics: {enabled: false}\nservices: []\n").metrics_listen, "");
    EXPECT_EQ(parse("metrics: {enabled: true}\nservices: []\n").metrics_listen, "127.0.0.1:9310");
    EXPECT_EQ(parse("metrics: {listen: 0.0.0.0:9100}\nservices: []\n").metrics_listen,
              "0.0.0.0:9100");
}

TEST(ConfigParse, IntegersAndBooleans) {
    const Config c = parse(R"(
dataplane: {hash_seed: 18446744073709551615, mtu: 0}
services:
  - {name: a, vip: 198.18.0.1, port: 0x50, servers: [{address: 198.18.0.2, backup: yes, enabled: off}]}
)");
    EXPECT_EQ(c.hash_seed, 18446744073709551615u);
    EXPECT_EQ(c.mtu, 0);
    EXPECT_EQ(c.services[0].port, 80);
    EXPECT_TRUE(c.services[0].servers[0].backup);
    EXPECT_FALSE(c.services[0].servers[0].enabled);
}

// ---- files --------------------------------------------------------------------------------

TEST(ConfigFiles, DocumentedExamplesParse) {
    const auto root = source_root();
    ASSERT_TRUE(root) << "cannot find the repository (docs/examples) from the test binary or "
                         "the current directory";
    const fs::path dir = *root / "docs" / "examples";

    const Config full = load_config_file((dir / "fulcrum.yaml").string());
    EXPECT_EQ(full.path, (dir / "fulcrum.yaml").string());
    EXPECT_EQ(full.hash_seed, 0x5eedu);
    EXPECT_GE(full.services.size(), 5u);
    bool schedulers[3] = {}, forwardings[4] = {};
    for (const auto& s : full.services) {
        schedulers[static_cast<int>(s.scheduler)] = true;
        forwardings[static_cast<int>(s.forwarding)] = true;
    }
    EXPECT_TRUE(schedulers[FL_SCHED_MAGLEV] && schedulers[FL_SCHED_WRR]);
    EXPECT_TRUE(forwardings[FL_FWD_DSR] && forwardings[FL_FWD_IPIP] && forwardings[FL_FWD_GUE]);

    const Config pair = load_config_file((dir / "database-pair.yaml").string());
    ASSERT_EQ(pair.services.size(), 3u);
    const ServiceConfig& web = service(pair, "web");
    ASSERT_EQ(web.servers.size(), 3u);
    EXPECT_EQ(web.servers[0].weight, 1u);
    EXPECT_EQ(web.servers[1].weight, 2u);
    EXPECT_EQ(web.servers[2].weight, 3u);
    EXPECT_EQ(web.servers[0].health.type, CheckType::http);

    const ServiceConfig& write = service(pair, "db-write");
    ASSERT_EQ(write.servers.size(), 2u);
    EXPECT_FALSE(write.servers[0].backup);  // the primary
    EXPECT_TRUE(write.servers[1].backup);   // a replica
    EXPECT_EQ(write.servers[0].health.path, "/primary");

    const ServiceConfig& read = service(pair, "db-read");
    ASSERT_EQ(read.servers.size(), 2u);
    EXPECT_FALSE(read.servers[0].backup);
    EXPECT_FALSE(read.servers[1].backup);
    EXPECT_EQ(read.servers[0].health.path, "/replica");
    // The replica behind db-write is one of db-read's.
    EXPECT_EQ(write.servers[1].address, read.servers[0].address);
    EXPECT_EQ(write.port, read.port);
    EXPECT_NE(write.vip, read.vip);
}

// Valid but probably not meant: named with the service's location and what to do; a sound
// configuration has none.
TEST(ConfigWarnings, NoServerInRotationAndNoHealthCheck) {
    const Config c = parse(R"(
services:
  - {name: ok, vip: 198.18.0.1, port: 80, servers: [{address: 198.18.1.1}, {address: 198.18.1.2, weight: 0}]}
  - {name: empty, vip: 198.18.0.2, port: 80, servers: []}
  - name: drained
    vip: 198.18.0.3
    port: 80
    servers: [{address: 198.18.1.1, weight: 0}, {address: 198.18.1.2, enabled: false}]
  - name: blind
    vip: 198.18.0.4
    port: 80
    health_check: {type: none}
    servers: [{address: 198.18.1.1}]
)");
    const auto w = config_warnings(c);
    ASSERT_EQ(w.size(), 3u) << ::testing::PrintToString(w);
    EXPECT_EQ(w[0], "test.yaml:3:5: warning: services[1] 'empty': no servers: its traffic is dropped (no_server) "
                    "until servers are added");
    EXPECT_EQ(w[1], "test.yaml:4:5: warning: services[2] 'drained': every server is drained (weight 0) or "
                    "disabled: its traffic is dropped (no_server); give one a weight or enable it");
    EXPECT_EQ(w[2], "test.yaml:8:5: warning: services[3] 'blind': no health check (type none): a server that dies "
                    "keeps receiving new connections; use tcp, http or https");
    EXPECT_TRUE(config_warnings(parse(R"(
services:
  - {name: ok, vip: 198.18.0.1, port: 80, servers: [{address: 198.18.1.1}]}
)")).empty());
}

// docs/metrics.md's table is the one fulcrumd --metrics-reference prints from the metric
// declarations: a metric added, renamed or re-described without the docs fails here
// (regenerate the table with the command in docs/metrics.md).
TEST(ConfigFiles, MetricsReferenceInTheDocsIsTheCodes) {
    const auto root = source_root();
    ASSERT_TRUE(root);
    std::ifstream in(*root / "docs" / "metrics.md");
    ASSERT_TRUE(in) << "docs/metrics.md is missing";
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const std::string begin = "<!-- metrics-reference:begin -->\n", end = "<!-- metrics-reference:end -->";
    const size_t b = text.find(begin), e = text.find(end);
    ASSERT_NE(b, std::string::npos);
    ASSERT_NE(e, std::string::npos);
    EXPECT_EQ(text.substr(b + begin.size(), e - b - begin.size()), metrics_reference_markdown())
        << "regenerate the table: build/control/fulcrumd --metrics-reference";
    const auto ref = metrics_reference();
    EXPECT_GE(ref.size(), 50u);
    std::set<std::string> names;
    for (const auto& m : ref) EXPECT_TRUE(names.insert(m.name).second) << m.name << " declared twice";
}

// docs/admin-api.md is `fulcrumd --admin-reference`: the request table the decoder and
// fulcrumctl use, never edited by hand.
TEST(ConfigFiles, AdminReferenceInTheDocsIsTheCodes) {
    const auto root = source_root();
    ASSERT_TRUE(root);
    std::ifstream in(*root / "docs" / "admin-api.md");
    ASSERT_TRUE(in) << "docs/admin-api.md is missing";
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_EQ(ss.str(), admin_reference_markdown())
        << "regenerate it: build/control/fulcrumd --admin-reference > docs/admin-api.md";
    const std::string md = admin_reference_markdown();
    for (const auto& spec : admin_command_table())
        EXPECT_NE(md.find("\n### `" + spec.name + "`\n"), std::string::npos) << spec.name;
}

// docs/migration.md: the keepalived.conf and haproxy.cfg converted there carry the values the
// mapping tables give.
TEST(ConfigFiles, MigratedExamplesCarryTheConvertedValues) {
    const auto root = source_root();
    ASSERT_TRUE(root);
    const fs::path dir = *root / "docs" / "examples";

    const Config k = load_config_file((dir / "from-keepalived.yaml").string());
    EXPECT_TRUE(k.ha.enabled);
    EXPECT_EQ(k.ha.vrid, 51);
    EXPECT_EQ(k.ha.priority, 150);
    EXPECT_EQ(k.ha.advert_interval(), Millis{1000});  // advert_int 1 (seconds)
    ASSERT_EQ(k.ha.unicast_peers.size(), 1u);
    EXPECT_EQ(k.ha.track_services, std::vector<std::string>{"web"});
    EXPECT_TRUE(k.ha.sync.enabled);
    const ServiceConfig& web = service(k, "web");
    EXPECT_EQ(web.scheduler, Scheduler::wrr);      // lb_algo wrr
    EXPECT_EQ(web.forwarding, Forwarding::dsr);    // lb_kind DR
    ASSERT_EQ(web.servers.size(), 3u);
    EXPECT_EQ(web.servers[0].weight, 1u);
    EXPECT_EQ(web.servers[1].weight, 2u);
    EXPECT_TRUE(web.servers[2].backup);            // sorry_server
    EXPECT_EQ(web.servers[0].health.type, CheckType::http);
    EXPECT_EQ(web.servers[0].health.interval, Millis{6000});  // delay_loop 6
    EXPECT_EQ(web.servers[0].health.timeout, Millis{3000});   // connect_timeout 3
    EXPECT_EQ(web.servers[0].health.fall, 3u);                // retry 3
    EXPECT_EQ(web.servers[0].health.rise, 1u);
    EXPECT_EQ(web.servers[2].health.type, CheckType::tcp);
    const ServiceConfig& dns = service(k, "dns");
    EXPECT_EQ(dns.scheduler, Scheduler::maglev);   // lb_algo mh
    EXPECT_EQ(dns.forwarding, Forwarding::ipip);   // lb_kind TUN
    EXPECT_EQ(dns.servers[0].health.port, 5353);   // connect_port
    EXPECT_EQ(dns.servers[0].health.interval, Millis{10000});

    const Config h = load_config_file((dir / "from-haproxy.yaml").string());
    EXPECT_FALSE(h.ha.enabled);
    const ServiceConfig& w = service(h, "postgres-write");
    EXPECT_EQ(w.scheduler, Scheduler::maglev);
    ASSERT_EQ(w.servers.size(), 2u);
    EXPECT_FALSE(w.servers[0].backup);
    EXPECT_TRUE(w.servers[1].backup);              // backup
    EXPECT_EQ(w.servers[0].health.path, "/primary");
    EXPECT_EQ(w.servers[0].health.port, 8008);
    EXPECT_EQ(w.servers[0].health.interval, Millis{2000});  // inter 2s
    EXPECT_EQ(w.servers[0].health.fall, 3u);
    EXPECT_EQ(w.servers[0].health.rise, 2u);
    const ServiceConfig& r = service(h, "postgres-read");
    EXPECT_EQ(r.scheduler, Scheduler::wrr);        // balance roundrobin
    ASSERT_EQ(r.servers.size(), 3u);
    EXPECT_EQ(r.servers[0].weight, 20u);
    EXPECT_EQ(r.servers[1].weight, 10u);
    EXPECT_FALSE(r.servers[2].enabled);            // disabled
    EXPECT_EQ(r.servers[0].health.path, "/replica");
}

// The YAML snippets of docs/configuration.md are valid, except the one that shows the error
// output, which must produce exactly the messages printed after it.
TEST(ConfigFiles, DocumentationSnippets) {
    const auto root = source_root();
    ASSERT_TRUE(root);
    std::ifstream in(*root / "docs" / "configuration.md");
    ASSERT_TRUE(in);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string doc = ss.str();
    auto block_after = [&](size_t from, std::string_view fence) -> std::pair<std::string, size_t> {
        const size_t start = doc.find(fence, from);
        if (start == std::string::npos) return {{}, std::string::npos};
        const size_t body = start + fence.size();
        const size_t end = doc.find("```", body);
        if (end == std::string::npos) return {{}, std::string::npos};
        return {doc.substr(body, end - body), end + 3};
    };
    const size_t bad_at = doc.find("Example: this file");
    ASSERT_NE(bad_at, std::string::npos);
    size_t n_valid = 0;
    for (size_t pos = 0;;) {
        auto [yaml_text, next] = block_after(pos, "```yaml\n");
        if (next == std::string::npos) break;
        if (pos <= bad_at && next > bad_at) {
            const auto [output, after] = block_after(next, "```\n");
            ASSERT_NE(after, std::string::npos);
            std::vector<std::string> want;
            std::stringstream lines(output);
            for (std::string l; std::getline(lines, l);) want.push_back(l);
            try {
                parse_config(yaml_text, "fulcrum.yaml");
                ADD_FAILURE() << "the documented error example was accepted";
            } catch (const ConfigError& e) {
                EXPECT_EQ(e.messages(), want);
            }
        } else {
            EXPECT_NO_THROW(parse_config(yaml_text, "configuration.md")) << yaml_text;
            ++n_valid;
        }
        pos = next;
    }
    EXPECT_GE(n_valid, 3u);
}

TEST(ConfigFiles, MissingFile) {
    try {
        load_config_file("/nonexistent/fulcrum.yaml");
        FAIL() << "no error";
    } catch (const ConfigError& e) {
        ASSERT_EQ(e.messages().size(), 1u);
        EXPECT_EQ(e.messages()[0],
                  "cannot read /nonexistent/fulcrum.yaml: No such file or directory");
        EXPECT_STREQ(e.what(), "cannot read /nonexistent/fulcrum.yaml: No such file or directory");
    }
}

TEST(ConfigFiles, DirectoryIsNotAFile) {
    const std::string dir = fs::temp_directory_path().string();
    try {
        load_config_file(dir);
        FAIL() << "no error";
    } catch (const ConfigError& e) {
        ASSERT_EQ(e.messages().size(), 1u);
        EXPECT_EQ(e.messages()[0], "cannot read " + dir + ": Is a directory");
    }
}

TEST(ConfigFiles, MessagesNameTheFile) {
    const fs::path p =
        fs::temp_directory_path() / ("fulcrum-config-test-" + std::to_string(::getpid()) + ".yaml");
    {
        std::ofstream out(p);
        out << "services:\n  - name: a\n    vip: 198.18.0.1\n    port: 99999\n    servers: []\n";
    }
    try {
        load_config_file(p.string());
        ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
        ASSERT_EQ(e.messages().size(), 1u);
        EXPECT_EQ(e.messages()[0], p.string() +
                                       ":4:11: services[0].port: 99999 is out of range; "
                                       "use a number from 1 to 65535");
    }
    fs::remove(p);
}

// ---- durations ----------------------------------------------------------------------------

TEST(ConfigDuration, Syntax) {
    EXPECT_EQ(parse_duration("1500ms"), 1500ms);
    EXPECT_EQ(parse_duration("2s"), 2s);
    EXPECT_EQ(parse_duration("1m"), 1min);
    EXPECT_EQ(parse_duration("1h"), 1h);
    EXPECT_EQ(parse_duration("0ms"), 0ms);
    for (const char* bad : {"250", "0", "2 sec", "2sec", "1.5s", "-1s", "s", "", " 2s", "2s ", "2S", "1d",
                            "99999999999999999999ms", "9999999999999999h"})
        EXPECT_FALSE(parse_duration(bad)) << bad;
    EXPECT_EQ(format_duration(1500ms), "1500ms");
    EXPECT_EQ(format_duration(2000ms), "2s");
    EXPECT_EQ(format_duration(90s), "90s");
    EXPECT_EQ(format_duration(15min), "15m");
    EXPECT_EQ(format_duration(2h), "2h");
    EXPECT_EQ(format_duration(0ms), "0ms");
}

TEST(ConfigDuration, InTheFile) {
    const Config c = parse(R"(
limits: {retire_after: 1m}
health_check: {interval: 2s, timeout: 1500ms}
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    health_check: {interval: 250ms, timeout: 250ms}
    servers: [{address: 198.18.0.2}]
)");
    EXPECT_EQ(c.retire_after, 60s);
    EXPECT_EQ(c.services[0].servers[0].health.interval, 250ms);
    EXPECT_EQ(c.services[0].servers[0].health.timeout, 250ms);
    EXPECT_EQ(error(R"(
limits: {retire_after: 2 sec}
services: []
)"),
              "test.yaml:1:24: limits.retire_after: invalid duration '2 sec'; write a whole number "
              "followed by ms, s, m or h (500ms, 2s, 1m, 1h)");
    // A bare number means seconds to keepalived users and milliseconds to HAProxy users.
    EXPECT_EQ(error("health_check: {timeout: 3}\nservices: []\n"),
              "test.yaml:1:25: health_check.timeout: '3' has no unit; write 3s for seconds or 3ms for "
              "milliseconds");
    EXPECT_EQ(error("limits: {retire_after: 0s}\nservices: []\n"),
              "test.yaml:1:24: limits.retire_after: the duration must be longer than 0");
    // "Never" written as a huge duration overflowed the clocks and retired servers at once.
    EXPECT_EQ(error("limits: {retire_after: 3000000h}\nservices: []\n"),
              "test.yaml:1:24: limits.retire_after: 3000000h is longer than 8760h (a year), the longest "
              "duration fulcrumd takes");
    EXPECT_EQ(error("health_check: {interval: 8761h}\nservices: []\n"),
              "test.yaml:1:26: health_check.interval: 8761h is longer than 8760h (a year), the longest "
              "duration fulcrumd takes");
    EXPECT_EQ(parse("limits: {retire_after: 8760h}\nservices: []\n").retire_after, 8760h);
    EXPECT_EQ(error("limits: {retire_after: [1]}\nservices: []\n"),
              "test.yaml:1:24: limits.retire_after: expected a duration such as 2s or 500ms, got a "
              "list");
}

// ---- errors, one class at a time ----------------------------------------------------------

// The expected messages are long literals split over lines, which is what this check flags.
// NOLINTBEGIN(bugprone-suspicious-missing-comma)

TEST(ConfigErrors, YamlSyntax) {
    EXPECT_EQ(error(R"(
services:
  - name: a
    vip: [198.18.0.1
)"),
              "test.yaml:4:1: invalid YAML: end of sequence flow not found (check the indentation, "
              "quotes and brackets here and on the lines just above)");
    EXPECT_EQ(error("services:\n\t- name: a\n"),
              "test.yaml:2:2: invalid YAML: illegal block entry (YAML indentation must use "
              "spaces, not tabs)");
}

TEST(ConfigErrors, DocumentShape) {
    EXPECT_EQ(error(""),
              "test.yaml:1:1: the configuration is empty; it needs at least a 'services' list "
              "(write 'services: []' for a balancer with no services yet)");
    EXPECT_EQ(error("# nothing yet\n"),
              "test.yaml:1:1: the configuration is empty; it needs at least a 'services' list "
              "(write 'services: []' for a balancer with no services yet)");
    EXPECT_EQ(error("- a\n- b\n"),
              "test.yaml:1:1: the top level: expected a mapping (key: value lines), got a list");
    EXPECT_EQ(error("admin: {socket: /run/a.sock}\n"),
              "test.yaml:1:1: the top level: missing key 'services'; add the list of services "
              "('services: []' for a balancer with no services yet)");
    // A file cut short right after "services:" would drop every service on reload.
    const std::string truncated = "admin: {socket: /run/a.sock}\nservices:\n";
    EXPECT_EQ(error(truncated),
              "test.yaml:2:1: services: no services listed (is the file cut short?); list them, or "
              "write 'services: []' for a balancer with no services yet");
    // The same after a service's "servers:": every server of the service would go.
    EXPECT_EQ(error("services:\n  - {name: a, vip: 198.18.0.1, port: 80, servers: }\n"),
              "test.yaml:2:42: services[0].servers: no servers listed (is the file cut short?); list "
              "them, or write 'servers: []' for a service without servers yet");
    EXPECT_EQ(error("services: []\n---\nservices: []\n"),
              "test.yaml:2:1: a second YAML document starts here; the configuration is a single "
              "document (remove the '---' line, or check the indentation above)");
    // yaml-cpp 0.7's LoadAll would loop forever on these (yaml-cpp issue #1040).
    EXPECT_EQ(error(","),
              "test.yaml:1:1: invalid YAML: unexpected ',' (check the indentation, quotes and "
              "brackets here and on the lines just above)");
    EXPECT_EQ(error("# a comment\n, services: []\n"),
              "test.yaml:2:1: invalid YAML: unexpected ',' (check the indentation, quotes and "
              "brackets here and on the lines just above)");
    EXPECT_EQ(error("services: []\n---\n,\n"),
              "test.yaml:2:1: a second YAML document starts here; the configuration is a single "
              "document (remove the '---' line, or check the indentation above)");
    EXPECT_EQ(error("services: {web: 1}\n"),
              "test.yaml:1:11: services: expected a list of services (lines starting with '- '), "
              "got a mapping");
}

TEST(ConfigErrors, WrongTypes) {
    const auto m = errors(R"(
dataplane:
  hash_seed: "0x5eed"
  encapsulation: 5
admin: [a]
services:
  - name: {a: 1}
    vip: 198.18.0.1
    port: eighty
    servers:
      - address: 198.18.0.2
        weight: [1]
        backup: maybe
        enabled: "false"
      - 198.18.0.3
)");
    const std::vector<std::string> want{
        "test.yaml:2:14: dataplane.hash_seed: expected an integer from 0 to 18446744073709551615, "
        "got the string \"0x5eed\"; remove the quotes",
        "test.yaml:3:18: dataplane.encapsulation: expected a mapping (key: value lines), got '5'",
        "test.yaml:4:8: admin: expected a mapping (key: value lines), got a list",
        "test.yaml:6:11: services[0].name: expected a string, got a mapping",
        "test.yaml:8:11: services[0].port: expected an integer from 1 to 65535, got 'eighty'",
        "test.yaml:11:17: services[0].servers[0].weight: expected an integer from 0 to 65535, got "
        "a list",
        "test.yaml:12:17: services[0].servers[0].backup: expected true or false, got 'maybe'",
        "test.yaml:13:18: services[0].servers[0].enabled: expected true or false, got the string "
        "\"false\"; remove the quotes",
        "test.yaml:14:9: services[0].servers[1]: expected a server (a mapping), got "
        "'198.18.0.3'; write '- address: 198.18.0.3'",
    };
    EXPECT_EQ(m, want);
}

TEST(ConfigErrors, UnknownKeys) {
    EXPECT_EQ(error(R"(
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    servers:
      - address: 198.18.0.2
        wieght: 3
)"),
              "test.yaml:7:9: unknown key 'wieght' (did you mean 'weight'?) in "
              "services[0].servers[0]; allowed keys: address, port, weight, backup, enabled, "
              "health_check");
    EXPECT_EQ(error("services: []\nlogging: {level: debug}\n"),
              "test.yaml:2:1: unknown key 'logging' at the top level; allowed keys: dataplane, "
              "admin, metrics, limits, interface, ha, xdp, health_check, services");
    EXPECT_EQ(error("services: []\nhealth_check: {tpye: http}\n"),
              "test.yaml:2:16: unknown key 'tpye' (did you mean 'type'?) in health_check; allowed "
              "keys: type, interval, timeout, rise, fall, path, expect_status, host, tls_verify, "
              "port");
    EXPECT_EQ(error("services: []\ndataplane: {hash-seed: 1}\n"),
              "test.yaml:2:13: unknown key 'hash-seed' (did you mean 'hash_seed'?) in dataplane; "
              "allowed keys: control_socket, hash_seed, mtu, encapsulation");
    EXPECT_EQ(error("services: []\nhealth_check: &hc {rise: 2}\nadmin:\n  <<: *hc\n"),
              "test.yaml:4:3: in admin: YAML merge keys ('<<') are not supported; write the keys "
              "out (health check settings shared by every server belong in the top-level "
              "health_check)");
}

TEST(ConfigErrors, DuplicateKeys) {
    EXPECT_EQ(error(R"(
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    port: 81
    servers: []
)"),
              "test.yaml:5:5: duplicate key 'port' in services[0] (first at test.yaml:4:5); keep "
              "only one of them");
    EXPECT_EQ(error("services: []\nmetrics: {listen: \"\", listen: \"\"}\n"),
              "test.yaml:2:23: duplicate key 'listen' in metrics (first at test.yaml:2:11); keep "
              "only one of them");
    EXPECT_EQ(error("services: []\nservices: []\n"),
              "test.yaml:2:1: duplicate key 'services' at the top level (first at "
              "test.yaml:1:1); keep only one of them");
}

TEST(ConfigErrors, BadAddresses) {
    const auto m = errors(R"(
services:
  - name: a
    vip: 198.18.0.256
    port: 80
    servers:
      - address: 198.18.0.2/32
      - address: 198.18.0.3:8080
      - address: backend-1.example
      - address: "[2001:db8::1]"
  - name: b
    vip: 224.0.0.1
    port: 80
    servers:
      - address: 0.0.0.0
      - address: 127.0.0.1
      - address: ::ffff:198.18.0.4
)");
    const std::vector<std::string> want{
        "test.yaml:3:10: services[0].vip: '198.18.0.256' is not an IPv4 or IPv6 address; write "
        "one such as 198.18.0.10 or 2001:db8::10 (host names are not resolved)",
        "test.yaml:6:18: services[0].servers[0].address: '198.18.0.2/32' is a prefix; write a "
        "single address, without '/length'",
        "test.yaml:7:18: services[0].servers[1].address: '198.18.0.3:8080' includes a port; write "
        "the address alone and the port under 'port'",
        "test.yaml:8:18: services[0].servers[2].address: 'backend-1.example' is not an IPv4 or "
        "IPv6 address; write one such as 198.18.0.10 or 2001:db8::10 (host names are not "
        "resolved)",
        "test.yaml:9:18: services[0].servers[3].address: '[2001:db8::1]' is not an address; write "
        "IPv6 addresses without brackets",
        "test.yaml:11:10: services[1].vip: 224.0.0.1 is a multicast address; use a unicast "
        "address",
        "test.yaml:14:18: services[1].servers[0].address: 0.0.0.0 is the unspecified address; use "
        "a unicast address",
        "test.yaml:15:18: services[1].servers[1].address: 127.0.0.1 is a loopback address; use a "
        "unicast address",
        "test.yaml:16:18: services[1].servers[2].address: ::ffff:198.18.0.4 is an IPv4-mapped "
        "IPv6 address (write the IPv4 address itself); use a unicast address",
    };
    EXPECT_EQ(m, want);
}

TEST(ConfigErrors, BadPrefixes) {
    const auto m = errors(R"(
dataplane:
  encapsulation:
    source_v4: 198.18.255.1/24
    source_v6: 198.18.0.0/16
services: []
)");
    const std::vector<std::string> want{
        "test.yaml:3:16: dataplane.encapsulation.source_v4: '198.18.255.1/24' has host bits set; "
        "write the network address (198.18.255.0/24)",
        "test.yaml:4:16: dataplane.encapsulation.source_v6: '198.18.0.0/16' is an IPv4 prefix; "
        "this key takes an IPv6 prefix such as 2001:db8:ffff::/64",
    };
    EXPECT_EQ(m, want);
    EXPECT_EQ(error("dataplane: {encapsulation: {source_v4: 0.0.0.0/0}}\nservices: []\n"),
              "test.yaml:1:40: dataplane.encapsulation.source_v4: '0.0.0.0/0' has an invalid "
              "prefix length; use 1 to 32");
    EXPECT_EQ(error("dataplane: {encapsulation: {source_v6: \"2001:db8::\"}}\nservices: []\n"),
              "test.yaml:1:40: dataplane.encapsulation.source_v6: '2001:db8::' has no prefix "
              "length; write address/length, e.g. 2001:db8:ffff::/64");
    EXPECT_EQ(error("dataplane: {encapsulation: {source_v4: foo/8}}\nservices: []\n"),
              "test.yaml:1:40: dataplane.encapsulation.source_v4: 'foo/8' does not start with an "
              "IP address; write a prefix such as 198.18.255.0/24");
}

TEST(ConfigErrors, OutOfRange) {
    const auto m = errors(R"(
dataplane:
  mtu: 500
  encapsulation: {gue_port: 0, ttl: 256}
health_check:
  rise: 0
  fall: 101
  expect_status: [200, 700]
  port: 65536
services:
  - name: a
    vip: 198.18.0.1
    port: 70000
    table_size: 2
    servers:
      - address: 198.18.0.2
        weight: 65536
      - address: 198.18.0.3
        weight: -1
)");
    const std::vector<std::string> want{
        "test.yaml:2:8: dataplane.mtu: 500 is below the minimum of 576; use a number from 576 to "
        "9702, or 0 for the dataplane port's MTU",
        "test.yaml:3:29: dataplane.encapsulation.gue_port: 0 is out of range; use a number from 1 "
        "to 65535",
        "test.yaml:3:37: dataplane.encapsulation.ttl: 256 is out of range; use a number from 1 to "
        "255",
        "test.yaml:5:9: health_check.rise: 0 is out of range; use a number from 1 to 100 "
        "(consecutive successes that mark a server up)",
        "test.yaml:6:9: health_check.fall: 101 is out of range; use a number from 1 to 100 "
        "(consecutive failures that mark a server down)",
        "test.yaml:7:24: health_check.expect_status[1]: 700 is out of range; use a number from "
        "100 to 599",
        "test.yaml:8:9: health_check.port: 65536 is out of range; use a number from 1 to 65535 "
        "(leave 'port' out to check the server's port)",
        "test.yaml:12:11: services[0].port: 70000 is out of range; use a number from 1 to 65535",
        "test.yaml:13:17: services[0].table_size: 2 is out of range; use a number from 3 to "
        "16777213 (a prime; the default is 65537)",
        "test.yaml:16:17: services[0].servers[0].weight: 65536 is out of range; use a number from "
        "0 to 65535 (0 drains the server: no new connections)",
        "test.yaml:18:17: services[0].servers[1].weight: -1 is out of range; use a number from 0 "
        "to 65535 (0 drains the server: no new connections)",
    };
    EXPECT_EQ(m, want);
    EXPECT_EQ(error("dataplane: {mtu: 9703}\nservices: []\n"),
              "test.yaml:1:18: dataplane.mtu: 9703 is out of range; use a number from 0 to 9702 "
              "(0: the dataplane port's MTU)");
}

TEST(ConfigErrors, HealthCheckTimes) {
    // timeout above the interval, at one level
    EXPECT_EQ(error("health_check: {interval: 2s, timeout: 3s}\nservices: []\n"),
              "test.yaml:1:39: health_check.timeout: 3s is longer than the interval 2s; make the "
              "timeout at most the interval");
    // against the default interval
    EXPECT_EQ(error("health_check: {timeout: 2500ms}\nservices: []\n"),
              "test.yaml:1:25: health_check.timeout: 2500ms is longer than the interval 2s (the "
              "default); make the timeout at most the interval, or raise the interval");
    // a server's interval below the top level's timeout
    EXPECT_EQ(error(R"(
health_check: {timeout: 1s}
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    servers:
      - address: 198.18.0.2
        health_check: {interval: 500ms}
)"),
              "test.yaml:8:34: services[0].servers[0].health_check.interval: 500ms is shorter than "
              "the timeout 1s (set at test.yaml:1:25); make the interval at least the timeout, or "
              "lower the timeout");
    // equal is fine
    EXPECT_NO_THROW(parse("health_check: {interval: 1s, timeout: 1s}\nservices: []\n"));
    EXPECT_EQ(error("health_check: {interval: 50ms, timeout: 20ms}\nservices: []\n"),
              "test.yaml:1:26: health_check.interval: 50ms is too short; use 100ms or more");
    EXPECT_EQ(error("health_check: {timeout: 0ms}\nservices: []\n"),
              "test.yaml:1:25: health_check.timeout: the duration must be longer than 0");
}

TEST(ConfigErrors, HealthCheckValues) {
    const auto m = errors(R"(
health_check:
  type: tpc
  path: health
  host: "a b"
  expect_status: []
services: []
)");
    const std::vector<std::string> want{
        "test.yaml:2:9: health_check.type: unknown health check type 'tpc' (did you mean "
        "'tcp'?); use tcp, http, https or none",
        "test.yaml:3:9: health_check.path: 'health' is not a request path; write one that starts "
        "with '/' and has no spaces (at most 1024 bytes), e.g. /health",
        "test.yaml:4:9: health_check.host: 'a b' is not a Host header value; write a host name "
        "without spaces (at most 255 bytes), or leave 'host' out to send the server address",
        "test.yaml:5:18: health_check.expect_status: the list is empty; give at least one HTTP "
        "status code, e.g. [200]",
    };
    EXPECT_EQ(m, want);
}

TEST(ConfigErrors, Enumerations) {
    const auto m = errors(R"(
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    protocol: sctp
    scheduler: roundrobin
    forwarding: GUE
    servers: []
)");
    const std::vector<std::string> want{
        "test.yaml:5:15: services[0].protocol: unknown protocol 'sctp'; use tcp or udp",
        "test.yaml:6:16: services[0].scheduler: unknown scheduler 'roundrobin'; use maglev or wrr",
        "test.yaml:7:17: services[0].forwarding: unknown forwarding mode 'GUE' (did you mean "
        "'gue'?); use dsr, ipip or gue",
    };
    EXPECT_EQ(m, want);
}

TEST(ConfigErrors, TableSizeNotPrime) {
    EXPECT_EQ(error(R"(
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    table_size: 65536
    servers: []
)"),
              "test.yaml:5:17: services[0].table_size: 65536 is not a prime; Maglev needs a prime "
              "table size: use 65521 or 65537 (the default is 65537)");
    EXPECT_EQ(error(R"(
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    table_size: 16777214
    servers: []
)"),
              "test.yaml:5:17: services[0].table_size: 16777214 is out of range; use a number "
              "from 3 to 16777213 (a prime; the default is 65537)");
}

TEST(ConfigErrors, ServiceNames) {
    const auto m = errors(R"(
services:
  - name: "web frontend"
    vip: 198.18.0.1
    port: 80
    servers: []
  - name: a-very-long-service-name-that-does-not-fit-the-snapshot
    vip: 198.18.0.1
    port: 81
    servers: []
  - name: ""
    vip: 198.18.0.1
    port: 82
    servers: []
)");
    const std::vector<std::string> want{
        "test.yaml:2:11: services[0].name: 'web frontend' contains a space, which a service name "
        "cannot; use letters, digits, '_', '.' and '-'",
        "test.yaml:6:11: services[1].name: "
        "'a-very-long-service-name-that-does-not-fit-the-snapshot' is 55 bytes long; use at most "
        "47",
        "test.yaml:10:11: services[2].name: the name is empty; use letters, digits, '_', '.' and "
        "'-'",
    };
    EXPECT_EQ(m, want);
}

TEST(ConfigErrors, DuplicateServiceNames) {
    EXPECT_EQ(error(R"(
services:
  - name: web
    vip: 198.18.0.1
    port: 80
    servers: []
  - name: web
    vip: 198.18.0.1
    port: 443
    servers: []
)"),
              "test.yaml:6:11: services[1].name: duplicate service name 'web' (also used by the "
              "service at test.yaml:2:11); service names must be unique");
}

TEST(ConfigErrors, ConflictingVip) {
    EXPECT_EQ(error(R"(
services:
  - name: web
    vip: 198.18.0.1
    port: 80
    servers: []
  - name: web2
    vip: 198.18.0.1
    port: 80
    servers: []
  - name: web-udp
    vip: 198.18.0.1
    port: 80
    protocol: udp
    servers: []
)"),
              "test.yaml:7:10: services[1].vip: conflicting VIP: 198.18.0.1:80/tcp is also used "
              "by service 'web' at test.yaml:3:10; give each service its own VIP, port or "
              "protocol");
    EXPECT_EQ(error(R"(
services:
  - {name: a, vip: "2001:db8::1", port: 53, protocol: udp, servers: []}
  - {name: b, vip: "2001:db8:0::1", port: 53, protocol: udp, servers: []}
)"),
              "test.yaml:3:20: services[1].vip: conflicting VIP: [2001:db8::1]:53/udp is also used "
              "by service 'a' at test.yaml:2:20; give each service its own VIP, port or "
              "protocol");
}

TEST(ConfigErrors, DuplicateServer) {
    EXPECT_EQ(error(R"(
services:
  - name: web
    vip: 198.18.0.1
    port: 80
    servers:
      - address: 198.18.0.11
      - address: 198.18.0.12
      - address: 198.18.0.11
        port: 80
)"),
              "test.yaml:8:18: services[0].servers[2].address: server 198.18.0.11:80 appears "
              "twice in service 'web' (also at test.yaml:6:18); remove one of them");
    // The same address on another port is another server (ipip may change the port), and the
    // same server in two services is fine.
    EXPECT_NO_THROW(parse(R"(
dataplane: {encapsulation: {source_v4: 198.18.255.0/24}}
services:
  - name: web
    vip: 198.18.0.1
    port: 80
    forwarding: ipip
    servers:
      - address: 198.18.0.11
      - address: 198.18.0.11
        port: 8080
  - name: web2
    vip: 198.18.0.2
    port: 80
    servers:
      - address: 198.18.0.11
)"));
}

TEST(ConfigErrors, AddressFamilyMismatch) {
    EXPECT_EQ(error(R"(
services:
  - name: web
    vip: 198.18.0.1
    port: 80
    servers:
      - address: 2001:db8::11
)"),
              "test.yaml:6:18: services[0].servers[0].address: server 2001:db8::11 is IPv6 but "
              "the VIP of service 'web' (198.18.0.1) is IPv4; a service's servers must have its "
              "VIP's address family");
}

TEST(ConfigErrors, DsrCannotChangeThePort) {
    EXPECT_EQ(error(R"(
services:
  - name: web
    vip: 198.18.0.1
    port: 80
    servers:
      - address: 198.18.0.11
        port: 8080
      - address: 198.18.0.12
        port: 80
      - address: 198.18.0.13
        port: 0
)"),
              "test.yaml:7:15: services[0].servers[0].port: DSR cannot change the port: the "
              "server's port 8080 differs from the port 80 of service 'web'; remove the server's "
              "port, make the server listen on 80, or use ipip or gue forwarding");
}

TEST(ConfigErrors, EncapsulationPrefixMissing) {
    const auto m = errors(R"(
dataplane:
  encapsulation: {source_v6: "2001:db8:ffff::/64"}
services:
  - name: a
    vip: 198.18.0.1
    port: 80
    forwarding: ipip
    servers: []
  - name: b
    vip: 2001:db8::1
    port: 80
    forwarding: gue
    servers: []
)");
    const std::vector<std::string> want{
        "test.yaml:7:17: services[0].forwarding: ipip forwarding needs "
        "dataplane.encapsulation.source_v4 (the prefix outer IPv4 source addresses are taken "
        "from); set it, e.g. 'source_v4: 198.18.255.0/24'",
    };
    EXPECT_EQ(m, want);
}

TEST(ConfigErrors, MissingKeys) {
    const auto m = errors(R"(
services:
  - port: 80
  - name: b
    vip: 198.18.0.2
    port: 80
    servers:
      - weight: 2
      -
      - address: 198.18.0.3
  -
)");
    const std::vector<std::string> want{
        "test.yaml:2:5: services[0]: missing key 'name'; add a unique name, e.g. 'name: web'",
        "test.yaml:2:5: services[0]: missing key 'vip'; add the virtual IP address, e.g. 'vip: "
        "198.18.0.100'",
        "test.yaml:2:5: services[0]: missing key 'servers'; list the servers, or write "
        "'servers: []' for a service without servers yet",
        "test.yaml:7:9: services[1].servers[0]: missing key 'address'; add the server's IP "
        "address, e.g. 'address: 198.18.0.11'",
        "test.yaml:8:7: services[1].servers[1]: empty list item; a server needs at least "
        "'address'",
        "test.yaml:10:3: services[2]: empty list item; a service needs at least name, vip, port "
        "and servers",
    };
    EXPECT_EQ(m, want);
}

TEST(ConfigErrors, Sockets) {
    const auto m = errors(R"(
dataplane: {control_socket: run/dp.sock}
admin: {socket: /run/fulcrum/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock}
metrics: {listen: "localhost:9310"}
services: []
)");
    const std::vector<std::string> want{
        "test.yaml:1:29: dataplane.control_socket: 'run/dp.sock' is not an absolute path; write "
        "the socket path from '/'",
        "test.yaml:2:17: admin.socket: the path is 117 bytes long; a Unix socket path holds at "
        "most 107",
        "test.yaml:3:19: metrics.listen: 'localhost:9310' is not address:port; write e.g. "
        "127.0.0.1:9310 or [::1]:9310 (an IP address, IPv6 in brackets, and a port from 1 to "
        "65535), or \"\" to disable the endpoint",
    };
    EXPECT_EQ(m, want);
    EXPECT_EQ(error("metrics: {enabled: true, listen: \"\"}\nservices: []\n"),
              "test.yaml:1:20: metrics.enabled: the endpoint is enabled but metrics.listen is "
              "empty; set listen (e.g. 127.0.0.1:9310), or set enabled: false");
    for (const char* bad : {"::1:9310", "127.0.0.1", "127.0.0.1:0", "[127.0.0.1]:80", ":9310"}) {
        const std::string text = "metrics: {listen: \"" + std::string(bad) + "\"}\nservices: []\n";
        EXPECT_EQ(errors(text).size(), 1u) << bad;
    }
}

// The limits of the snapshot, on generated configurations.
std::string many_services(size_t n, uint32_t table_size) {
    std::string y = "services:\n";
    for (size_t i = 0; i < n; ++i)
        y += "  - {name: s" + std::to_string(i) + ", vip: 198.18." + std::to_string(i / 250) + "." +
             std::to_string(i % 250 + 1) + ", port: 80, table_size: " + std::to_string(table_size) +
             ", servers: []}\n";
    return y;
}

TEST(ConfigErrors, TooManyServices) {
    EXPECT_NO_THROW(parse(many_services(FL_MAX_SERVICES, 3)));
    EXPECT_EQ(error(many_services(FL_MAX_SERVICES + 1, 3)),
              "test.yaml:4098:5: services[4096]: too many services: 4097 are configured and at "
              "most 4096 are supported (this is the first one over the limit); split the services "
              "across more balancers");
}

// The snapshot limit, computed as the snapshot builder lays snapshots out: a 160-byte header,
// 96 bytes per service, 64 per server slot (all 65536 counted: slots of servers removed by
// reloads stay in use), 8 per member, 4 per Maglev table entry, each section 64-byte aligned.
// With n services of 65537 entries and no servers that is
//   align64(192 + 96 n) + 4194304 + 262148 n  bytes,
// 268274236 for n = 1007 and 268536448 for n = 1008, against the limit of 268435455 (a
// control-protocol frame of 256 MiB holds the snapshot and one kind byte).
TEST(ConfigErrors, SnapshotTooLargeForTheDefaultTables) {
    EXPECT_NO_THROW(parse(many_services(1007, 65537)));
    EXPECT_EQ(error(many_services(1008, 65537)),
              "test.yaml:1009:58: services[1007].table_size: with service 's1007' (table_size "
              "65537) the forwarding snapshot would be 268536448 bytes (256.1 MiB), above the "
              "limit of 268435455 bytes (the largest snapshot a control-protocol frame carries "
              "to the dataplane); use smaller table_size values (a prime about 100 times the "
              "number of servers is enough, e.g. 1021 or 4093)");
}

// Measured before the check: four services with the largest table size passed --check, and
// fulcrumd then retried publishing their 268 MB snapshot every second for ever. By the formula
// above: 205521372 bytes for three such services, 272630288 (260.0 MiB) for four.
TEST(ConfigErrors, UnpublishableTableSize) {
    const std::string head = "services:\n";
    auto svc = [](int i, const char* servers) {
        return "  - name: s" + std::to_string(i) + "\n    vip: 198.18.0." + std::to_string(i + 1) +
               "\n    port: 80\n    table_size: 16777213\n    servers: " + servers + "\n";
    };
    EXPECT_NO_THROW(parse(head + svc(0, "[]") + svc(1, "[]") + svc(2, "[]")));
    EXPECT_EQ(error(head + svc(0, "[]") + svc(1, "[]") + svc(2, "[]") + svc(3, "[]")),
              "test.yaml:20:17: services[3].table_size: with service 's3' (table_size 16777213) "
              "the forwarding snapshot would be 272630288 bytes (260.0 MiB), above the limit of "
              "268435455 bytes (the largest snapshot a control-protocol frame carries to the "
              "dataplane); use smaller table_size values (a prime about 100 times the number of "
              "servers is enough, e.g. 1021 or 4093)");
    // A service without table_size (the default 65537) that crosses the limit is named at
    // its list item.
    std::string y = head + svc(0, "[]") + svc(1, "[]") + svc(2, "[]");
    for (int i = 3; i < 1000; ++i)
        y += "  - {name: s" + std::to_string(i) + ", vip: 198.18." + std::to_string(i / 250) + "." +
             std::to_string(i % 250 + 1) + ", port: 81, servers: []}\n";
    // 3 * 67108852 + 240 * 262148 table bytes, 243 service records: 268459932 bytes.
    EXPECT_EQ(error(y),
              "test.yaml:256:5: services[242]: with service 's242' (table_size 65537) the "
              "forwarding snapshot would be 268459932 bytes (256.0 MiB), above the limit of "
              "268435455 bytes (the largest snapshot a control-protocol frame carries to the "
              "dataplane); use smaller table_size values (a prime about 100 times the number of "
              "servers is enough, e.g. 1021 or 4093)");
}

TEST(ConfigErrors, TooManyServers) {
    auto servers = [](size_t n) {
        std::string y = "services:\n";
        for (size_t s = 0; s * 4096 < n; ++s) {
            y += "  - name: s" + std::to_string(s) + "\n    vip: 198.18.0." +
                 std::to_string(s + 1) + "\n    port: 80\n    table_size: 3\n    servers:\n";
            for (size_t i = s * 4096; i < std::min(n, (s + 1) * 4096); ++i)
                y += "      - {address: 10." + std::to_string(i >> 16) + "." +
                     std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255) + "}\n";
        }
        return y;
    };
    const Config ok = parse(servers(kMaxConfiguredServers));
    size_t n = 0;
    for (const auto& s : ok.services) n += s.servers.size();
    EXPECT_EQ(n, kMaxConfiguredServers);
    // 16 services of 4096 servers, 6 lines per service header: the 65536th server is the last
    // line, in services[15].
    EXPECT_EQ(error(servers(kMaxConfiguredServers + 1)),
              "test.yaml:65617:9: services[15].servers[4095]: too many servers: the services list "
              "more than 65535 servers in all (this is the first one over the limit); split the "
              "services across more balancers");
}

TEST(ConfigErrors, ManyProblemsReportedTogetherInFileOrder) {
    const auto m = errors(R"(
dataplane:
  mtu: 100
health_check:
  interval: 1s
  timeout: 2s
services:
  - name: web
    vip: 198.18.0.1
    port: 80
    forwarding: ipip
    servers:
      - address: 198.18.0.11
        wieght: 2
      - address: 2001:db8::1
  - name: web
    vip: 198.18.0.1
    port: 80
    servers: []
)");
    const std::vector<std::string> want{
        "test.yaml:2:8: dataplane.mtu: 100 is below the minimum of 576; use a number from 576 to "
        "9702, or 0 for the dataplane port's MTU",
        "test.yaml:5:12: health_check.timeout: 2s is longer than the interval 1s; make the timeout "
        "at most the interval",
        "test.yaml:10:17: services[0].forwarding: ipip forwarding needs "
        "dataplane.encapsulation.source_v4 (the prefix outer IPv4 source addresses are taken "
        "from); set it, e.g. 'source_v4: 198.18.255.0/24'",
        "test.yaml:13:9: unknown key 'wieght' (did you mean 'weight'?) in services[0].servers[0]; "
        "allowed keys: address, port, weight, backup, enabled, health_check",
        "test.yaml:14:18: services[0].servers[1].address: server 2001:db8::1 is IPv6 but the VIP "
        "of service 'web' (198.18.0.1) is IPv4; a service's servers must have its VIP's address "
        "family",
        "test.yaml:15:11: services[1].name: duplicate service name 'web' (also used by the "
        "service at test.yaml:7:11); service names must be unique",
        "test.yaml:16:10: services[1].vip: conflicting VIP: 198.18.0.1:80/tcp is also used by "
        "service 'web' at test.yaml:8:10; give each service its own VIP, port or protocol",
    };
    EXPECT_EQ(m, want);
    // what() holds them all, one a line.
    try {
        parse("dataplane: {mtu: 100}\nservices: [{port: 80}]\n");
        FAIL() << "no error";
    } catch (const ConfigError& e) {
        ASSERT_EQ(e.messages().size(), 4u);
        std::string joined;
        for (const auto& s : e.messages()) joined += (joined.empty() ? "" : "\n") + s;
        EXPECT_EQ(e.what(), joined);
    }
}

// NOLINTEND(bugprone-suspicious-missing-comma)

TEST(ConfigErrors, LocationFormat) {
    EXPECT_EQ((Location{"f.yaml", 3, 7}).str(), "f.yaml:3:7");
    EXPECT_EQ((Location{"f.yaml", 0, 0}).str(), "f.yaml");
    EXPECT_STREQ(check_type_name(CheckType::https), "https");
    EXPECT_STREQ(check_type_name(CheckType::none), "none");
}


TEST(ConfigErrors, Ipv6EncapsulationNeedsRoomForTheMinimumMtu) {
    EXPECT_EQ(error(R"(
dataplane:
  mtu: 1300
  encapsulation:
    source_v6: 2001:db8:ffff::/64
services:
  - name: web6
    vip: 2001:db8::100
    port: 80
    forwarding: gue
    servers:
      - address: 2001:db8::11
)"),
              "test.yaml:9:17: services[0].forwarding: gue over IPv6 needs dataplane.mtu of at least 1328 (the IPv6 "
              "minimum of 1280 plus the outer headers), not 1300; raise the MTU towards the servers or use dsr");
}

// ---- limits on the text itself -------------------------------------------------------------

TEST(ConfigLimits, TextSize) {
    std::string text = "services: []\n";
    text += std::string(kMaxConfigBytes - text.size() - 1, '#') + "\n";  // one long comment
    ASSERT_EQ(text.size(), kMaxConfigBytes);
    EXPECT_NO_THROW(parse_config(text, kFile));
    text += "\n";
    EXPECT_EQ(error(text),
              "test.yaml: the configuration is 16777217 bytes, more than the limit of 16 MiB; a "
              "configuration this large is not supported (the largest useful one, 65535 servers "
              "each with its own health check, is well below it): check that this is the right "
              "file");
}

TEST(ConfigLimits, FileSize) {
    const fs::path p = fs::temp_directory_path() /
                       ("fulcrum-config-big-" + std::to_string(::getpid()) + ".yaml");
    {
        std::ofstream out(p);
        out << "services: []\n";
    }
    fs::resize_file(p, kMaxConfigBytes + 1);  // sparse: refused from its size, before reading
    try {
        load_config_file(p.string());
        ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
        ASSERT_EQ(e.messages().size(), 1u);
        EXPECT_EQ(e.messages()[0],
                  p.string() +
                      ": the file is 16777217 bytes, more than the limit of 16 MiB; a "
                      "configuration this large is not supported (the largest useful one, 65535 "
                      "servers each with its own health check, is well below it): check that "
                      "this is the right file");
    }
    fs::remove(p);
}

// A valid configuration of exactly n nodes: the root mapping, 'services', '[]',
// 'health_check', its mapping, 'expect_status', the list, and n - 7 status codes (5 bytes each,
// the first at line 3, column 19).
std::string nodes_config(size_t n) {
    std::string y = "services: []\nhealth_check:\n  expect_status: [";
    for (size_t i = 0; i + 7 < n; ++i) y += i ? ", 200" : "200";
    return y + "]\n";
}

TEST(ConfigLimits, NodeCount) {
    EXPECT_NO_THROW(parse(nodes_config(kMaxConfigNodes)));
    // Node 8 is the first status code, so node 1000001 is the one at index 999993: column
    // 19 + 5 * 999993.
    EXPECT_EQ(error(nodes_config(kMaxConfigNodes + 1)),
              "test.yaml:3:4999984: the configuration has more than 1000000 YAML nodes (values, "
              "lists and mappings); this is where the limit is passed: split the services across "
              "more balancers");
}

// Five levels of ten-fold aliases, then a sixth: 'a' stands for 10 nodes, 'b' for 101, 'c' for
// 1011, 'd' for 10111, 'e' for 101111. Up to the end of line 6 that is 112352 nodes (written
// and expanded: 3 + 11 + 102 + 1012 + 10112 + 101112) after 40 aliases; line 7 adds its key,
// its list, and 101111 per '*e': the ninth one (column 5 + 8 * 4) passes 1000000. Measured
// before the limit: a 172 KB file like this took 49.6 s and 7.4 GB in fulcrumd --check.
constexpr std::string_view kLaughs = R"(services: []
a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
)";

TEST(ConfigLimits, AliasExpansion) {
    EXPECT_EQ(error(std::string(kLaughs) + "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"),
              "test.yaml:7:37: alias '*e' here stands for 101111 nodes and takes the "
              "configuration over the limit of 1000000 YAML nodes with aliases expanded (49 "
              "aliases so far; fulcrumd reads each alias as a full copy); refer to shared parts "
              "fewer times, or write them out");
    // Passed at a plain node, after aliases: line 7 has its key and list (112354), then
    // node 1000001 is list item 887646 (0-based), at column 5 + 3 * 887646.
    std::string plain = std::string(kLaughs) + "g: [";
    for (int i = 0; i < 887700; ++i) plain += i ? ", 1" : "1";
    plain += "]\n";
    EXPECT_EQ(error(plain),
              "test.yaml:7:2662943: the configuration has more than 1000000 YAML nodes (values, "
              "lists and mappings, with its 40 aliases expanded); this is where the limit is "
              "passed: use fewer aliases, or split the services across more balancers");
    EXPECT_EQ(error("services: []\na: &a [x, *a]\n"),
              "test.yaml:2:11: alias '*a' refers to a list or mapping that contains it, which "
              "would make the configuration infinitely large; remove the alias");
}

TEST(ConfigLimits, AliasesWithinTheLimitAreCopies) {
    const Config c = parse(R"(
health_check: &hc {type: http, path: /health, interval: 2s, timeout: 1s}
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    servers: &pool
      - {address: 198.18.1.11, weight: 5}
      - {address: 198.18.1.12, health_check: *hc}
  - name: web-alt
    vip: 198.18.0.101
    port: 80
    servers: *pool
)");
    ASSERT_EQ(c.services.size(), 2u);
    ASSERT_EQ(c.services[1].servers.size(), 2u);
    EXPECT_EQ(c.services[1].servers[0].address, ip("198.18.1.11"));
    EXPECT_EQ(c.services[1].servers[0].weight, 5u);
    EXPECT_EQ(c.services[1].servers[1].health.type, CheckType::http);
    EXPECT_EQ(c.services[1].servers[1].health.path, "/health");
}

TEST(ConfigLimits, NestingDepth) {
    auto nested = [](int levels) {
        return "services: []\na: " + std::string(static_cast<size_t>(levels), '[') + "x" +
               std::string(static_cast<size_t>(levels), ']') + "\n";
    };
    // The root mapping and 31 lists: 32 levels, refused only for the unknown key.
    EXPECT_EQ(error(nested(31)),
              "test.yaml:2:1: unknown key 'a' (did you mean 'ha'?) at the top level; allowed keys: dataplane, admin, "
              "metrics, limits, interface, ha, xdp, health_check, services");
    EXPECT_EQ(error(nested(32)),
              "test.yaml:2:35: lists and mappings are nested more than 32 levels deep here (a "
              "configuration needs 8 at most); check the indentation and the brackets");
}

// 499990 keys in one mapping (the node limit allows 499998): the first half unknown, the
// second half the same keys again. Checked by scanning the keys seen so far, this took 25.7 s
// at 200000 keys and grows with the square (about 160 s here, a large part of the 900 s
// scripts/test.sh gives the whole control-tests binary); with a hash map it is linear, a few
// seconds of yaml-cpp parsing.
TEST(ConfigLimits, ManyKeysAreCheckedInLinearTime) {
    constexpr size_t half = 249995;
    std::string y = "services: []\n";
    for (int pass = 0; pass < 2; ++pass)
        for (size_t i = 0; i < half; ++i) y += "k" + std::to_string(i) + ": 1\n";
    const auto m = errors(y);
    ASSERT_EQ(m.size(), kMaxConfigProblems + 1);
    EXPECT_EQ(m[0],
              "test.yaml:2:1: unknown key 'k0' at the top level; allowed keys: dataplane, admin, "
              "metrics, limits, interface, ha, xdp, health_check, services");
    EXPECT_EQ(m[kMaxConfigProblems - 1],
              "test.yaml:101:1: unknown key 'k99' at the top level; allowed keys: dataplane, "
              "admin, metrics, limits, interface, ha, xdp, health_check, services");
    EXPECT_EQ(m.back(), "test.yaml: 499890 more problems not listed (at most 100 are); fix the "
                        "ones above and check again");
}

// The problems listed are the first ones in file order, not the first ones found: the top-level
// keys are checked before health_check's, yet its duplicate key (line 3) comes first.
TEST(ConfigLimits, ProblemsListedAreTheFirstInTheFile) {
    std::string y = "health_check:\n  type: tcp\n  type: http\nservices: []\n";
    for (size_t i = 0; i < 100000; ++i) y += "k" + std::to_string(i) + ": 1\n";
    const auto m = errors(y);
    ASSERT_EQ(m.size(), kMaxConfigProblems + 1);
    EXPECT_EQ(m[0], "test.yaml:3:3: duplicate key 'type' in health_check (first at "
                    "test.yaml:2:3); keep only one of them");
    EXPECT_EQ(m[kMaxConfigProblems - 1],
              "test.yaml:103:1: unknown key 'k98' at the top level; allowed keys: dataplane, "
              "admin, metrics, limits, interface, ha, xdp, health_check, services");
    EXPECT_EQ(m.back(), "test.yaml: 99901 more problems not listed (at most 100 are); fix the "
                        "ones above and check again");
}

size_t resident_bytes() {
    std::ifstream in("/proc/self/statm");
    size_t size = 0, resident = 0;
    in >> size >> resident;
    return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

// A refused configuration hands its memory back (malloc_trim after the refusal): 4000 services
// sharing one aliased list of 60 servers (772000 nodes with aliases expanded, within the
// limit) are read into 240000 servers' worth of copies before the cross-checks refuse them
// (too many servers); afterwards the process must not stay at that size.
TEST(ConfigLimits, RefusedConfigurationGivesItsMemoryBack) {
    std::string y = "x: &pool\n";
    for (int i = 0; i < 60; ++i) y += "  - {address: 198.19.0." + std::to_string(i + 1) + "}\n";
    y += "services:\n";
    for (int i = 0; i < 4000; ++i)
        y += "  - {name: s" + std::to_string(i) + ", vip: 198.18." + std::to_string(i / 200) + "." +
             std::to_string(i % 200 + 1) + ", port: 80, table_size: 3, servers: *pool}\n";
    const size_t before = resident_bytes();
    EXPECT_FALSE(errors(y).empty());
    const size_t after = resident_bytes();
    EXPECT_LT(after, before + (size_t{32} << 20))
        << "resident grew from " << (before >> 20) << " MiB to " << (after >> 20) << " MiB";
}

}  // namespace

// ---- interface: and ha: -------------------------------------------------------------------

constexpr const char* kWeb = R"(
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    servers: [{address: 198.18.0.10}]
)";

TEST(ConfigHa, AbsentMeansStandaloneWithNothingManaged) {
    const Config c = parse(kWeb);
    EXPECT_FALSE(c.ha.enabled);
    EXPECT_FALSE(c.interface.configured);
}

TEST(ConfigHa, FullSection) {
    const Config c = parse(std::string(R"(
interface:
  name: fl1
  addresses: [198.18.0.2/24, 2001:db8::2/64]
ha:
  vrid: 51
  priority: 150
  advert_interval: 1s
  preempt: false
  preempt_delay: 30s
  unicast_peers: [198.18.0.3]
  checksum: message_only
  accept_checksum: pseudo_header
  garp: {count: 5, repeat_delay: 10s}
  lease: 2s
  track_services: [web]
  sync: {peer: 198.18.0.3, port: 9000, key_file: /etc/fulcrum/sync.key, refresh: 5s, rate: 50000}
)") + kWeb);
    EXPECT_TRUE(c.interface.configured);
    EXPECT_EQ(c.interface.name, "fl1");
    ASSERT_EQ(c.interface.addresses.size(), 2u);
    EXPECT_EQ(c.interface.addresses[0].addr, ip("198.18.0.2"));  // host bits kept
    EXPECT_EQ(c.interface.addresses[0].length, 24);
    EXPECT_EQ(c.interface.addresses[1].length, 64);
    ASSERT_TRUE(c.ha.enabled);
    EXPECT_EQ(c.ha.vrid, 51);
    EXPECT_EQ(c.ha.priority, 150);
    EXPECT_EQ(c.ha.advert_interval_cs, 100);
    EXPECT_FALSE(c.ha.preempt);
    EXPECT_EQ(c.ha.preempt_delay, 30s);
    EXPECT_EQ(c.ha.unicast_peers, std::vector<IpAddr>{ip("198.18.0.3")});
    EXPECT_TRUE(c.ha.checksum_message_only);
    EXPECT_EQ(c.ha.accept_checksum, 1);
    EXPECT_EQ(c.ha.garp_count, 5u);
    EXPECT_EQ(c.ha.garp_repeat_delay, 10s);
    EXPECT_EQ(c.ha.effective_lease(), 2s);
    EXPECT_EQ(c.ha.track_services, std::vector<std::string>{"web"});
    ASSERT_TRUE(c.ha.sync.enabled);
    EXPECT_EQ(c.ha.sync.peer, ip("198.18.0.3"));
    EXPECT_EQ(c.ha.sync.port, 9000);
    EXPECT_EQ(c.ha.sync.key_file, "/etc/fulcrum/sync.key");
    EXPECT_EQ(c.ha.sync.refresh, 5s);
    EXPECT_EQ(c.ha.sync.rate, 50000u);
}

TEST(ConfigHa, Defaults) {
    const Config c = parse(std::string("ha: {vrid: 7}\n") + kWeb);
    EXPECT_EQ(c.ha.priority, 100);
    EXPECT_EQ(c.ha.advert_interval_cs, 10);  // 100 ms
    EXPECT_TRUE(c.ha.preempt);
    EXPECT_EQ(c.ha.preempt_delay, 0ms);
    EXPECT_TRUE(c.ha.unicast_peers.empty());
    EXPECT_EQ(c.ha.effective_lease(), 300ms);  // three advert intervals
    EXPECT_FALSE(c.ha.sync.enabled);
    EXPECT_EQ(c.interface.name, "fl0");
}

TEST(ConfigHa, Errors) {
    EXPECT_EQ(error(std::string("ha: {priority: 100}\n") + kWeb),
              "test.yaml:1:5: ha: missing key 'vrid'; give the virtual router id (1 to 255), the "
              "same on both balancers");
    EXPECT_EQ(error(std::string("ha:\n  vrid: 0\n") + kWeb),
              "test.yaml:2:9: ha.vrid: 0 is out of range; use a number from 1 to 255 (the same on "
              "both balancers, unique on the link)");
    EXPECT_EQ(error(std::string("ha:\n  vrid: 1\n  advert_interval: 15ms\n") + kWeb),
              "test.yaml:3:20: ha.advert_interval: 15ms is not a whole number of centiseconds "
              "from 10ms to 40950ms (VRRPv3 carries the interval in centiseconds); use e.g. 100ms "
              "or 1s");
    EXPECT_EQ(error(std::string("ha:\n  vrid: 1\n  advert_interval: 1\n") + kWeb),
              "test.yaml:3:20: ha.advert_interval: '1' has no unit; write 1s for seconds or 1ms "
              "for milliseconds");
    EXPECT_EQ(error(std::string("ha:\n  vrid: 1\n  checksum: v2\n") + kWeb),
              "test.yaml:3:13: ha.checksum: unknown IPv4 checksum form 'v2'; use pseudo_header "
              "or message_only");
    EXPECT_EQ(error(std::string("ha:\n  vrid: 1\n  track_services: [wbe]\n") + kWeb),
              "test.yaml:3:20: ha.track_services[0]: no service is named 'wbe' (did you mean "
              "'web'?); list names from 'services'");
    EXPECT_EQ(error(std::string("ha:\n  vrid: 1\n  lease: 50ms\n") + kWeb),
              "test.yaml:3:10: ha.lease: 50ms is shorter than the advert interval 100ms; "
              "fulcrumd renews the lease with every advert, so give it at least one interval "
              "(the default is 3)");
    // No ha.sync.local and no interface address of the peer's family: nothing to send from.
    EXPECT_EQ(error(std::string("interface: {addresses: [198.18.0.2/24]}\nha:\n  vrid: 1\n  sync: {peer: 2001:db8::3}\n") +
                    kWeb),
              "test.yaml:4:16: ha.sync.peer: 2001:db8::3 is an IPv6 address, and this balancer has no address of "
              "that family to send from: set ha.sync.local, or list one under interface.addresses");
    // A local address that does not parse is the only error (not also "set ha.sync.local").
    EXPECT_NE(error(std::string("interface: {addresses: [198.18.0.2/24]}\nha:\n  vrid: 1\n  sync: {peer: 2001:db8::3, "
                                "local: 2001:db8::zz}\n") +
                    kWeb)
                  .find("ha.sync.local"),
              std::string::npos);
    EXPECT_EQ(parse(std::string("interface: {addresses: [198.18.0.2/24]}\nha:\n  vrid: 1\n  sync: {peer: 2001:db8::3, "
                                "local: 2001:db8::2}\n") +
                    kWeb)
                  .ha.sync.local,
              ip("2001:db8::2"));
    EXPECT_EQ(error(std::string("ha:\n  vrid: 1\n  sync: {port: 9}\n") + kWeb),
              "test.yaml:3:9: ha.sync: missing key 'peer'; give the other balancer's address "
              "for connection sync");
    EXPECT_EQ(error(std::string("ha:\n  vrid: 1\n  preemt: false\n") + kWeb),
              "test.yaml:3:3: unknown key 'preemt' (did you mean 'preempt'?) in ha; allowed "
              "keys: vrid, priority, advert_interval, preempt, preempt_delay, unicast_peers, "
              "checksum, accept_checksum, garp, lease, track_services, sync");
    EXPECT_EQ(error(std::string("interface:\n  addresses: [198.18.0.2]\n") + kWeb),
              "test.yaml:2:15: interface.addresses[0]: '198.18.0.2' has no prefix length; write "
              "address/length (e.g. 198.18.0.2/24 or 2001:db8::2/64) so that the host's subnet "
              "route is right");
    EXPECT_EQ(error(std::string("interface:\n  name: a/b\n") + kWeb),
              "test.yaml:2:9: interface.name: 'a/b' is not an interface name (1 to 15 "
              "characters, no '/', ':' or spaces); give the dataplane's exception interface, "
              "e.g. fl0");
    EXPECT_EQ(error(std::string("interface: {addresses: [198.18.0.3/24]}\nha:\n  vrid: 1\n  "
                                "unicast_peers: [198.18.0.3]\n") +
                    kWeb),
              "test.yaml:4:19: ha.unicast_peers[0]: 198.18.0.3 is this balancer's own interface "
              "address; list the other balancer's address");
}

}  // namespace fulcrum::control

namespace fulcrum::control {
namespace {

// ---- xdp ----------------------------------------------------------------------------------

TEST(ConfigXdp, AbsentMeansNoFront) {
    EXPECT_FALSE(parse(kWeb).xdp.enabled);
}

TEST(ConfigXdp, FullSection) {
    const Config c = parse(std::string(R"(
xdp:
  interface: eth1
  acl:
    default: deny
    allow: [198.18.0.0/15, 2001:db8::/32, 198.18.7.7/32]
    deny: [198.18.66.0/24, 2001:db8:bad::/48]
  syn_limit: {rate: 200, burst: 50, ipv6_prefix: 56}
)") + kWeb);
    const XdpConfig& x = c.xdp;
    ASSERT_TRUE(x.enabled);
    EXPECT_EQ(x.interface, "eth1");
    EXPECT_FALSE(x.default_allow);
    ASSERT_EQ(x.allow.size(), 3u);
    EXPECT_EQ(x.allow[0].str(), "198.18.0.0/15");
    EXPECT_EQ(x.allow[1].str(), "2001:db8::/32");
    EXPECT_EQ(x.allow[2].str(), "198.18.7.7/32");
    ASSERT_EQ(x.deny.size(), 2u);
    EXPECT_EQ(x.deny[0].str(), "198.18.66.0/24");
    EXPECT_EQ(x.deny[1].str(), "2001:db8:bad::/48");
    EXPECT_EQ(x.syn_rate, 200u);
    EXPECT_EQ(x.syn_burst, 50u);
    EXPECT_EQ(x.syn_ipv6_prefix, 56u);
}

TEST(ConfigXdp, Defaults) {
    const Config c = parse(std::string("xdp: {interface: eth1}\n") + kWeb);
    ASSERT_TRUE(c.xdp.enabled);
    EXPECT_TRUE(c.xdp.default_allow);
    EXPECT_TRUE(c.xdp.allow.empty());
    EXPECT_TRUE(c.xdp.deny.empty());
    EXPECT_EQ(c.xdp.syn_rate, 0u);  // no SYN limit
    EXPECT_EQ(c.xdp.syn_ipv6_prefix, 64u);
    // Without a burst, one second's worth.
    const Config r = parse(std::string("xdp: {interface: eth1, syn_limit: {rate: 300}}\n") + kWeb);
    EXPECT_EQ(r.xdp.syn_rate, 300u);
    EXPECT_EQ(r.xdp.syn_burst, 300u);
}

TEST(ConfigXdp, Errors) {
    EXPECT_EQ(error(std::string("xdp: {acl: {default: deny}}\n") + kWeb),
              "test.yaml:1:6: xdp: missing key 'interface'; give the kernel interface of the "
              "dataplane's net_af_xdp port (its iface=), e.g. 'interface: eth1'");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acll: {}\n") + kWeb),
              "test.yaml:3:3: unknown key 'acll' (did you mean 'acl'?) in xdp; allowed keys: "
              "interface, acl, syn_limit");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl: {defualt: deny}\n") + kWeb),
              "test.yaml:3:9: unknown key 'defualt' (did you mean 'default'?) in xdp.acl; "
              "allowed keys: default, allow, deny");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  syn_limit: {rat: 5}\n") + kWeb),
              "test.yaml:3:15: unknown key 'rat' (did you mean 'rate'?) in xdp.syn_limit; "
              "allowed keys: rate, burst, ipv6_prefix");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth 1\n") + kWeb),
              "test.yaml:2:14: xdp.interface: 'eth 1' is not an interface name (1 to 15 "
              "characters, no '/', ':' or spaces); give the kernel interface of the dataplane's "
              "net_af_xdp port (its iface=), e.g. eth1");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    default: alow\n") + kWeb),
              "test.yaml:4:14: xdp.acl.default: unknown ACL default 'alow' (did you mean "
              "'allow'?); use allow or deny");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    deny: [198.18.66.1/24]\n") + kWeb),
              "test.yaml:4:12: xdp.acl.deny[0]: '198.18.66.1/24' has host bits set; write the "
              "network address (198.18.66.0/24)");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    deny: [2001:db8::1/64]\n") + kWeb),
              "test.yaml:4:12: xdp.acl.deny[0]: '2001:db8::1/64' has host bits set; write the "
              "network address (2001:db8::/64)");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    deny: [198.18.66.0]\n") + kWeb),
              "test.yaml:4:12: xdp.acl.deny[0]: '198.18.66.0' has no prefix length; write "
              "address/length, e.g. 198.18.255.0/24");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    deny: [0.0.0.0/0]\n") + kWeb),
              "test.yaml:4:12: xdp.acl.deny[0]: '0.0.0.0/0' matches every source; set "
              "xdp.acl.default instead");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    deny: [example.com/24]\n") + kWeb),
              "test.yaml:4:12: xdp.acl.deny[0]: 'example.com/24' does not start with an IP "
              "address; write a prefix such as 198.18.255.0/24");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    deny: 198.18.66.0/24\n") + kWeb),
              "test.yaml:4:11: xdp.acl.deny: expected a list of source prefixes such as "
              "[198.18.0.0/15, 2001:db8::/32], got '198.18.66.0/24'");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    allow: [198.18.0.0/15, "
                                "198.18.0.0/15]\n") +
                    kWeb),
              "test.yaml:4:28: xdp.acl.allow[1]: 198.18.0.0/15 is listed twice (first at "
              "test.yaml:4:13); keep one");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  acl:\n    allow: [2001:db8::/32]\n"
                                "    deny: [2001:db8::/32]\n") +
                    kWeb),
              "test.yaml:5:12: xdp.acl.deny[0]: 2001:db8::/32 is also in xdp.acl.allow (at "
              "test.yaml:4:13); a prefix is either allowed or denied: remove one");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  syn_limit: {rate: 10, burst: 0}\n") + kWeb),
              "test.yaml:3:32: xdp.syn_limit.burst: 0 is out of range; use a number from 1 to "
              "1000000000 (SYNs a source may send at once, at least 1)");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  syn_limit: {rate: -1}\n") + kWeb),
              "test.yaml:3:21: xdp.syn_limit.rate: -1 is out of range; use a number from 0 to "
              "1000000000 (SYNs per second per source; 0: no limit)");
    EXPECT_EQ(error(std::string("xdp:\n  interface: eth1\n  syn_limit: {ipv6_prefix: 129}\n") + kWeb),
              "test.yaml:3:28: xdp.syn_limit.ipv6_prefix: 129 is out of range; use a number from 1 "
              "to 128 (IPv6 sources are counted per prefix of this length; 64 is one customer "
              "subnet)");
}

TEST(ConfigXdp, AclLimitPerFamily) {
    // One IPv4 prefix more than the front's trie holds: 16385 /32s.
    std::string list;
    for (size_t i = 0; i <= kMaxXdpAclPerFamily; ++i)
        list += (i ? ", " : "") + IpAddr::v4(static_cast<uint32_t>((198u << 24) | (18u << 16) | i)).str() + "/32";
    EXPECT_EQ(error("xdp:\n  interface: eth1\n  acl:\n    deny: [" + list + "]\n" + kWeb),
              "test.yaml:4:5: xdp.acl: 16385 IPv4 prefixes in allow and deny together; the XDP front "
              "holds at most 16384 per address family: merge adjacent prefixes");
}

TEST(ConfigXdp, VipLimitPerFamily) {
    // The front's VIP sets hold 1024 addresses per family: 1025 IPv4 VIPs are refused, and
    // the IPv6 set is counted on its own.
    std::string services = "services:\n";
    for (size_t i = 0; i <= kMaxXdpVipsPerFamily; ++i)
        services += "  - {name: s" + std::to_string(i) + ", vip: " +
                    IpAddr::v4(static_cast<uint32_t>((198u << 24) | (18u << 16) | (1u << 12) | i)).str() +
                    ", port: 80, table_size: 251, servers: []}\n";
    services += "  - {name: v6, vip: 2001:db8::1, port: 80, table_size: 251, servers: []}\n";
    EXPECT_EQ(error("xdp: {interface: eth1}\n" + services),
              "test.yaml:1:6: xdp: the services have 1025 IPv4 VIPs; the XDP front holds at most 1024 per "
              "address family");
    // Without the front there is no such limit.
    EXPECT_EQ(parse(services).services.size(), kMaxXdpVipsPerFamily + 2);
}

}  // namespace
}  // namespace fulcrum::control
