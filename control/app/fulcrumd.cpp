// fulcrumd: Fulcrum's control-plane daemon.
//
//   fulcrumd --config /etc/fulcrum/fulcrum.yaml     run
//   fulcrumd --check /etc/fulcrum/fulcrum.yaml      validate the file and exit (0 valid, 1 not)
//   fulcrumd --metrics-reference / --admin-reference   print docs/metrics.md's table / docs/admin-api.md
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "fulcrum/control/admin_request.hpp"
#include "fulcrum/control/config.hpp"
#include "fulcrum/control/metrics.hpp"
#include "fulcrum/control/daemon.hpp"
#include "fulcrum_version.h"

int main(int argc, char** argv) {
    CLI::App app{"fulcrumd: Fulcrum's control plane (configuration, health checks, publishing, admin API, metrics)"};
    app.name("fulcrumd");
    std::string config = "/etc/fulcrum/fulcrum.yaml";
    std::string check;
    std::string level = "info";
    app.add_option("-c,--config", config, "configuration file")->capture_default_str();
    app.add_option("--check", check, "validate this configuration file and exit (0: valid, 1: invalid)");
    app.add_option("--log-level", level, "trace, debug, info, warn, error, critical, off")
        ->capture_default_str()
        ->transform(CLI::IsMember({"trace", "debug", "info", "warn", "warning", "error", "critical", "off"},
                                  CLI::ignore_case));
    bool reference = false;
    app.add_flag("--metrics-reference", reference,
                 "print every Prometheus metric fulcrumd exports (name, type, meaning) as a Markdown table and exit");
    bool admin_reference = false;
    app.add_flag("--admin-reference", admin_reference,
                 "print the admin API's requests (arguments, replies, fulcrumctl commands) as Markdown and exit "
                 "(docs/admin-api.md)");
    app.set_version_flag("--version", std::string("fulcrumd ") + FULCRUM_VERSION);
    CLI11_PARSE(app, argc, argv);

    if (admin_reference) {
        std::cout << fulcrum::control::admin_reference_markdown();
        return 0;
    }
    if (reference) {
        std::cout << fulcrum::control::metrics_reference_markdown();
        return 0;
    }

    if (!check.empty()) {
        try {
            const auto cfg = fulcrum::control::load_config_file(check);
            size_t servers = 0;
            for (const auto& s : cfg.services) servers += s.servers.size();
            const auto warnings = fulcrum::control::config_warnings(cfg);
            for (const auto& w : warnings) std::cerr << w << "\n";
            std::cout << check << ": valid (" << cfg.services.size() << " services, " << servers << " servers";
            if (!warnings.empty()) std::cout << ", " << warnings.size() << " warning" << (warnings.size() == 1 ? "" : "s");
            std::cout << ")\n";
            return 0;
        } catch (const fulcrum::control::ConfigError& e) {
            for (const auto& m : e.messages()) std::cerr << m << "\n";
            std::cerr << check << ": invalid (" << e.messages().size() << " problem"
                      << (e.messages().size() == 1 ? "" : "s") << ")\n";
            return 1;
        }
    }

    spdlog::set_default_logger(spdlog::stderr_color_mt("fulcrumd"));  // logs go to stderr
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e fulcrumd %l: %v");
    spdlog::set_level(spdlog::level::from_str(level));
    fulcrum::control::Config cfg;
    try {
        cfg = fulcrum::control::load_config_file(config);
    } catch (const fulcrum::control::ConfigError& e) {
        for (const auto& m : e.messages()) spdlog::error("{}", m);
        spdlog::error("not starting: fix {} (check it with: fulcrumd --check {})", config, config);
        return 1;
    }
    for (const auto& w : fulcrum::control::config_warnings(cfg)) spdlog::warn("{}", w);
    fulcrum::control::Daemon::block_signals();
    try {
        fulcrum::control::Daemon d(std::move(cfg));
        return d.run();
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        return 1;
    }
}
