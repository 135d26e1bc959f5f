// fulcrumd's configuration loader: YAML text (yaml-cpp) to a validated Config.
//
// Parsing never stops at the first problem. Every key and value is checked, then every cross
// reference (names, VIPs, server lists, limits), and all problems are reported together, in
// file order, as "FILE:LINE:COLUMN: message". A value that is wrong is reported once: checks
// that depend on it are skipped rather than reporting consequences of the same mistake.
#include "fulcrum/control/config.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "fulcrum/maglev.hpp"
#include "fulcrum/snapshot_abi.h"

namespace fulcrum::control {

// ---- public helpers -----------------------------------------------------------------------

std::string Location::str() const {
    if (line <= 0) return file;
    return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

const char* check_type_name(CheckType t) {
    switch (t) {
        case CheckType::tcp:
            return "tcp";
        case CheckType::http:
            return "http";
        case CheckType::https:
            return "https";
        case CheckType::none:
            return "none";
    }
    return "?";
}

namespace {

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
    std::string out;
    for (size_t i = 0; i < parts.size(); ++i) {
        if (i) out += sep;
        out += parts[i];
    }
    return out;
}

}  // namespace

ConfigError::ConfigError(std::vector<std::string> messages)
    : std::runtime_error(join(messages, "\n")), messages_(std::move(messages)) {}

std::optional<Millis> parse_duration(std::string_view text) {
    size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    if (digits == 0 || digits > 18) return std::nullopt;  // 18 digits cannot overflow below
    uint64_t n = 0;
    std::from_chars(text.data(), text.data() + digits, n);
    const std::string_view unit = text.substr(digits);
    uint64_t factor = 0;
    if (unit == "ms")
        factor = 1;
    else if (unit == "s")
        factor = 1000;
    else if (unit == "m")
        factor = 60'000;
    else if (unit == "h")
        factor = 3'600'000;
    else
        return std::nullopt;
    constexpr auto max_ms = static_cast<uint64_t>(std::numeric_limits<Millis::rep>::max());
    if (n > max_ms / factor) return std::nullopt;
    return Millis{static_cast<Millis::rep>(n * factor)};
}

std::string format_duration(Millis d) {
    const auto ms = d.count();
    if (ms > 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
    if (ms > 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
    if (ms > 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

namespace {

// ---- diagnostics --------------------------------------------------------------------------

class Diag {
  public:
    Diag(std::string file, std::string_view text) : file_(std::move(file)), text_(text) {}

    Location at(const YAML::Mark& m) const {
        Location l;
        l.file = file_;
        if (!m.is_null() && m.line >= 0 && m.column >= 0) {
            l.line = m.line + 1;
            l.column = m.column + 1;
        }
        return l;
    }

    // Where a list item is. yaml-cpp marks an empty item (a '-' with nothing after it) at the
    // next token, often the next item; point at its dash instead.
    YAML::Mark item_mark(const YAML::Node& n, const YAML::Mark& fallback) const {
        const YAML::Mark m = n.Mark();
        if (!n.IsNull()) return m;
        if (m.is_null() || m.pos < 0 || static_cast<size_t>(m.pos) > text_.size()) return fallback;
        size_t i = static_cast<size_t>(m.pos);
        while (i > 0 && (text_[i - 1] == ' ' || text_[i - 1] == '\t' || text_[i - 1] == '\r' ||
                         text_[i - 1] == '\n'))
            --i;
        if (i == 0 || text_[i - 1] != '-') return fallback;
        --i;
        const size_t nl = text_.rfind('\n', i);
        const size_t line_start = nl == std::string_view::npos ? 0 : nl + 1;
        YAML::Mark dash;
        dash.pos = static_cast<int>(i);
        // Lines counted back from the item's own mark, not from the start of the text: a list
        // of many empty items would otherwise cost time quadratic in the file size.
        const auto between = std::count(text_.begin() + static_cast<std::ptrdiff_t>(i),
                                        text_.begin() + m.pos, '\n');
        dash.line = m.line - static_cast<int>(between);
        dash.column = static_cast<int>(i - line_start);
        return dash;
    }

    // Keeps the kMaxConfigProblems first problems in file order (a max-heap on the position,
    // so that a file with a million problems costs no more than a few hundred messages), and
    // counts the others.
    void error(const Location& where, const std::string& message) {
        if (!listing(where)) {
            ++unlisted_;
            return;
        }
        if (problems_.size() == kMaxConfigProblems) {
            std::pop_heap(problems_.begin(), problems_.end(), later);
            problems_.pop_back();
            ++unlisted_;
        }
        problems_.push_back({where.line, where.column, seq_++, where.str() + ": " + message});
        std::push_heap(problems_.begin(), problems_.end(), later);
    }
    void error(const YAML::Mark& m, const std::string& message) { error(at(m), message); }

    // Whether a problem at `where` would be listed; callers may skip composing an expensive
    // message when not (error() then only counts it).
    bool listing(const Location& where) const {
        return problems_.size() < kMaxConfigProblems ||
               std::tie(where.line, where.column) <
                   std::tie(problems_.front().line, problems_.front().column);
    }

    bool clean() const { return problems_.empty(); }

    // In file order (in the order found at the same position); problems without a position
    // first.
    std::vector<std::string> messages() const {
        auto sorted = problems_;
        std::sort(sorted.begin(), sorted.end(), later);
        std::vector<std::string> out;
        out.reserve(sorted.size() + 1);
        for (auto& p : sorted) out.push_back(std::move(p.text));
        if (unlisted_)
            out.push_back(file_ + ": " + std::to_string(unlisted_) + " more problem" +
                          (unlisted_ == 1 ? "" : "s") + " not listed (at most " +
                          std::to_string(kMaxConfigProblems) +
                          " are); fix the ones above and check again");
        return out;
    }

  private:
    struct Problem {
        int line;
        int column;
        size_t seq;  // order found
        std::string text;
    };
    static bool later(const Problem& a, const Problem& b) {
        return std::tie(a.line, a.column, a.seq) < std::tie(b.line, b.column, b.seq);
    }
    std::string file_;
    std::string_view text_;
    std::vector<Problem> problems_;
    size_t seq_ = 0;
    size_t unlisted_ = 0;
};

// ---- text helpers -------------------------------------------------------------------------

constexpr std::string_view kStrTag = "tag:yaml.org,2002:str";

// A quoted scalar ("80", '80') or one tagged !!str: a string even when it looks like a number.
bool is_quoted(const YAML::Node& n) {
    return n.Tag() == "!" || n.Tag() == kStrTag;
}

// User text for a message: control characters escaped, long text cut.
std::string printable(std::string_view s) {
    std::string out;
    for (const char c : s) {
        if (out.size() >= 64) {
            out += "...";
            break;
        }
        const auto u = static_cast<unsigned char>(c);
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (u < 0x20 || u == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(u));
            out += buf;
        } else {
            out += c;
        }
    }
    return out;
}

std::string describe(const YAML::Node& n) {
    switch (n.Type()) {
        case YAML::NodeType::Null:
            return "nothing";
        case YAML::NodeType::Scalar:
            return is_quoted(n) ? "the string \"" + printable(n.Scalar()) + "\""
                                : "'" + printable(n.Scalar()) + "'";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Map:
            return "a mapping";
        case YAML::NodeType::Undefined:
            break;
    }
    return "an undefined value";
}

// "a", "a or b", "a, b or c"
std::string or_list(const std::vector<std::string_view>& words) {
    std::string out;
    for (size_t i = 0; i < words.size(); ++i) {
        if (i) out += i + 1 == words.size() ? " or " : ", ";
        out += words[i];
    }
    return out;
}

char lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Optimal string alignment distance (Levenshtein plus adjacent transpositions), ignoring case.
size_t edit_distance(std::string_view a, std::string_view b) {
    const size_t n = a.size(), m = b.size();
    std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
    for (size_t i = 0; i <= n; ++i) d[i][0] = i;
    for (size_t j = 0; j <= m; ++j) d[0][j] = j;
    for (size_t i = 1; i <= n; ++i) {
        for (size_t j = 1; j <= m; ++j) {
            const size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
                lower(a[i - 2]) == lower(b[j - 1]))
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
    }
    return d[n][m];
}

// The known word closest to `word`, if it is close enough to be a likely typo.
std::optional<std::string_view> closest(std::string_view word,
                                        const std::vector<std::string_view>& known) {
    if (word.empty() || word.size() > 64) return std::nullopt;
    const size_t limit = word.size() <= 4 ? 1 : 2;
    std::optional<std::string_view> best;
    size_t best_d = limit + 1;
    for (const auto k : known) {
        const size_t dist = edit_distance(word, k);
        if (dist < best_d) {
            best_d = dist;
            best = k;
        }
    }
    return best;
}

std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& known) {
    if (auto s = closest(word, known)) return " (did you mean '" + std::string(*s) + "'?)";
    return {};
}

std::string child(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
}
std::string item(const std::string& path, size_t i) {
    return path + "[" + std::to_string(i) + "]";
}
std::string where_text(const std::string& path) {
    return path.empty() ? "the top level" : path;
}
std::string in_text(const std::string& path) {
    return path.empty() ? "at the top level" : "in " + path;
}

// ---- mappings -----------------------------------------------------------------------------

// A value and where it is. `at` is the value, or its key when the value is empty (yaml-cpp
// marks an empty value at the token after it).
struct Field {
    std::string path;  // "services[0].servers[1].weight"
    YAML::Node value;
    YAML::Mark at;
};

Field list_item(const Diag& d, const Field& list, const YAML::Node& node, size_t i) {
    return Field{item(list.path, i), node, d.item_mark(node, list.at)};
}

// The keys of one mapping: rejects non-scalar, duplicate and unknown keys on construction,
// then hands out the known ones. An empty value (`key:` with nothing) counts as an empty
// mapping.
class Section {
  public:
    Section(Diag& d, const Field& f, std::initializer_list<std::string_view> allowed)
        : d_(d), path_(f.path), at_(f.at), allowed_(allowed) {
        if (f.value.IsNull()) return;
        if (!f.value.IsMap()) {
            d.error(f.at, where_text(path_) + ": expected a mapping (key: value lines), got " +
                              describe(f.value));
            ok_ = false;
            return;
        }
        // A hash map, not a scan of the keys seen so far: a mapping may have hundreds of
        // thousands of keys, and this must stay linear in their number.
        std::unordered_map<std::string, YAML::Mark> seen;
        seen.reserve(f.value.size());
        for (const auto& pair : f.value) {  // a temporary key/value pair per entry
            const YAML::Node k = pair.first;
            const YAML::Node v = pair.second;
            if (!k.IsScalar()) {
                d.error(k.Mark(),
                        in_text(path_) + ": a key must be a plain name, not " + describe(k));
                continue;
            }
            const std::string& name = k.Scalar();
            const auto [prev, fresh] = seen.emplace(name, k.Mark());
            if (!fresh) {
                d.error(k.Mark(), "duplicate key '" + printable(name) + "' " + in_text(path_) +
                                      " (first at " + d.at(prev->second).str() +
                                      "); keep only one of them");
                continue;
            }
            if (std::find(allowed_.begin(), allowed_.end(), name) == allowed_.end()) {
                unknown(name, k.Mark());
                continue;
            }
            entries_.emplace_back(name,
                                  Field{child(path_, name), v, v.IsNull() ? k.Mark() : v.Mark()});
        }
    }

    bool ok() const { return ok_; }

    std::optional<Field> take(std::string_view key) const {
        for (const auto& [name, field] : entries_)
            if (name == key) return field;
        return std::nullopt;
    }

    // Reports a missing required key at the mapping itself.
    void missing(std::string_view key, std::string_view advice) const {
        d_.error(at_, where_text(path_) + ": missing key '" + std::string(key) + "'; " +
                          std::string(advice));
    }

  private:
    void unknown(const std::string& name, const YAML::Mark& m) {
        if (!d_.listing(d_.at(m))) {  // counted only: skip the suggestion's edit distances
            d_.error(m, {});
            return;
        }
        if (name == "<<") {
            d_.error(m, in_text(path_) +
                            ": YAML merge keys ('<<') are not supported; write the keys out "
                            "(health check settings shared by every server belong in the "
                            "top-level health_check)");
            return;
        }
        std::vector<std::string> names(allowed_.begin(), allowed_.end());
        d_.error(m, "unknown key '" + printable(name) + "'" + did_you_mean(name, allowed_) + " " +
                        in_text(path_) + "; allowed keys: " + join(names, ", "));
    }

    Diag& d_;
    std::string path_;
    YAML::Mark at_;
    std::vector<std::string_view> allowed_;
    std::vector<std::pair<std::string, Field>> entries_;
    bool ok_ = true;
};

// ---- scalar readers -----------------------------------------------------------------------

struct IntText {
    bool negative = false;
    bool overflow = false;
    uint64_t magnitude = 0;
};

// Decimal or 0x hexadecimal, optionally signed.
std::optional<IntText> parse_int_text(std::string_view s) {
    IntText r;
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
        r.negative = s[0] == '-';
        s.remove_prefix(1);
    }
    int base = 10;
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s.remove_prefix(2);
    }
    if (s.empty()) return std::nullopt;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), r.magnitude, base);
    if (ptr != s.data() + s.size()) return std::nullopt;
    if (ec == std::errc::result_out_of_range)
        r.overflow = true;
    else if (ec != std::errc{})
        return std::nullopt;
    return r;
}

std::string range_text(uint64_t lo, uint64_t hi) {
    return "a number from " + std::to_string(lo) + " to " + std::to_string(hi);
}

// An integer in [lo, hi]. `advice` is added to range errors, e.g. "(0 drains the server)".
std::optional<uint64_t> read_uint(Diag& d, const Field& f, uint64_t lo, uint64_t hi,
                                  std::string_view advice = {}) {
    const std::string want = "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
    const auto t = f.value.IsScalar() ? parse_int_text(f.value.Scalar()) : std::nullopt;
    if (!t) {
        d.error(f.at, f.path + ": expected " + want + ", got " + describe(f.value));
        return std::nullopt;
    }
    if (is_quoted(f.value)) {
        d.error(f.at, f.path + ": expected " + want + ", got " + describe(f.value) +
                          "; remove the quotes");
        return std::nullopt;
    }
    const bool below = t->negative && t->magnitude != 0;
    if (below || t->overflow || t->magnitude < lo || t->magnitude > hi) {
        std::string m = f.path + ": " + printable(f.value.Scalar()) + " is out of range; use " +
                        range_text(lo, hi);
        if (!advice.empty()) m += " " + std::string(advice);
        d.error(f.at, m);
        return std::nullopt;
    }
    return t->magnitude;
}

std::optional<bool> read_bool(Diag& d, const Field& f) {
    static constexpr std::array<std::string_view, 9> yes{"true", "True", "TRUE", "yes", "Yes",
                                                         "YES",  "on",   "On",   "ON"};
    static constexpr std::array<std::string_view, 9> no{"false", "False", "FALSE", "no", "No",
                                                        "NO",    "off",   "Off",   "OFF"};
    if (f.value.IsScalar()) {
        const std::string& s = f.value.Scalar();
        const bool t = std::find(yes.begin(), yes.end(), s) != yes.end();
        const bool n = std::find(no.begin(), no.end(), s) != no.end();
        if ((t || n) && !is_quoted(f.value)) return t;
        if (t || n) {
            d.error(f.at, f.path + ": expected true or false, got " + describe(f.value) +
                              "; remove the quotes");
            return std::nullopt;
        }
    }
    d.error(f.at, f.path + ": expected true or false, got " + describe(f.value));
    return std::nullopt;
}

std::optional<std::string> read_string(Diag& d, const Field& f) {
    if (f.value.IsScalar()) return f.value.Scalar();
    d.error(f.at, f.path + ": expected a string, got " + describe(f.value));
    return std::nullopt;
}

// A positive duration.
std::optional<Millis> read_duration(Diag& d, const Field& f) {
    if (!f.value.IsScalar()) {
        d.error(f.at,
                f.path + ": expected a duration such as 2s or 500ms, got " + describe(f.value));
        return std::nullopt;
    }
    const std::string& text = f.value.Scalar();
    const auto v = parse_duration(text);
    if (!v) {
        if (!text.empty() && text.size() <= 18 &&
            std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
            // keepalived counts its delays in seconds, HAProxy in milliseconds: a bare number
            // would mean the wrong thing to one of them.
            d.error(f.at, f.path + ": '" + text + "' has no unit; write " + text + "s for seconds or " + text +
                              "ms for milliseconds");
        else
            d.error(f.at, f.path + ": invalid duration '" + printable(text) +
                              "'; write a whole number followed by ms, s, m or h (500ms, 2s, 1m, 1h)");
        return std::nullopt;
    }
    if (v->count() == 0) {
        d.error(f.at, f.path + ": the duration must be longer than 0");
        return std::nullopt;
    }
    if (*v > kMaxDuration) {
        // Longer ones overflow the clocks' arithmetic (a "never" of 3000000h retired servers at
        // once); nothing in the file needs more than a year.
        d.error(f.at, f.path + ": " + format_duration(*v) + " is longer than " + format_duration(kMaxDuration) +
                          " (a year), the longest duration fulcrumd takes");
        return std::nullopt;
    }
    return v;
}

template <typename E>
struct Choice {
    std::string_view name;
    E value;
};

template <typename E, size_t N>
std::optional<E> read_enum(Diag& d, const Field& f, const std::array<Choice<E>, N>& choices,
                           std::string_view noun) {
    std::vector<std::string_view> names;
    names.reserve(N);
    for (const auto& c : choices) names.push_back(c.name);
    if (f.value.IsScalar()) {
        for (const auto& c : choices)
            if (c.name == f.value.Scalar()) return c.value;
        d.error(f.at, f.path + ": unknown " + std::string(noun) + " '" +
                          printable(f.value.Scalar()) + "'" +
                          did_you_mean(f.value.Scalar(), names) + "; use " + or_list(names));
        return std::nullopt;
    }
    d.error(f.at, f.path + ": expected a " + std::string(noun) + " (" + or_list(names) + "), got " +
                      describe(f.value));
    return std::nullopt;
}

constexpr std::array<Choice<CheckType>, 4> kCheckTypes{{{"tcp", CheckType::tcp},
                                                        {"http", CheckType::http},
                                                        {"https", CheckType::https},
                                                        {"none", CheckType::none}}};
constexpr std::array<Choice<uint8_t>, 2> kProtocols{
    {{"tcp", uint8_t{FL_PROTO_TCP}}, {"udp", uint8_t{FL_PROTO_UDP}}}};
constexpr std::array<Choice<Scheduler>, 2> kSchedulers{
    {{"maglev", Scheduler::maglev}, {"wrr", Scheduler::wrr}}};
constexpr std::array<Choice<Forwarding>, 3> kForwardings{
    {{"dsr", Forwarding::dsr}, {"ipip", Forwarding::ipip}, {"gue", Forwarding::gue}}};

// Why an address cannot be a VIP or a server, or nullptr if it can.
const char* not_unicast(const IpAddr& a) {
    const auto& b = a.bytes;
    if (a.is_v4()) {
        if (b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0) return "the unspecified address";
        if (b[0] == 0) return "in 0.0.0.0/8 (\"this network\"), not a usable address";
        if (b[0] == 127) return "a loopback address";
        if ((b[0] & 0xf0) == 0xe0) return "a multicast address";
        if (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255)
            return "the broadcast address";
        return nullptr;
    }
    bool zero_prefix = true;  // first 80 bits
    for (size_t i = 0; i < 10; ++i) zero_prefix = zero_prefix && b[i] == 0;
    if (zero_prefix && b[10] == 0xff && b[11] == 0xff)
        return "an IPv4-mapped IPv6 address (write the IPv4 address itself)";
    bool all_zero = zero_prefix;
    for (size_t i = 10; i < 15; ++i) all_zero = all_zero && b[i] == 0;
    if (all_zero && b[15] == 0) return "the unspecified address";
    if (all_zero && b[15] == 1) return "the loopback address";
    if (b[0] == 0xff) return "a multicast address";
    return nullptr;
}

// A unicast IPv4 or IPv6 address.
std::optional<IpAddr> read_address(Diag& d, const Field& f) {
    if (!f.value.IsScalar()) {
        d.error(f.at, f.path + ": expected an IP address, got " + describe(f.value));
        return std::nullopt;
    }
    const std::string& s = f.value.Scalar();
    const auto a = IpAddr::parse(s);
    if (!a) {
        const std::string q = "'" + printable(s) + "'";
        const size_t colon = s.find(':');
        std::string m;
        if (s.find('/') != std::string::npos)
            m = q + " is a prefix; write a single address, without '/length'";
        else if (!s.empty() && s.front() == '[')
            m = q + " is not an address; write IPv6 addresses without brackets";
        else if (colon != std::string::npos && s.find(':', colon + 1) == std::string::npos &&
                 IpAddr::parse(std::string_view(s).substr(0, colon)))
            m = q + " includes a port; write the address alone and the port under 'port'";
        else
            m = q +
                " is not an IPv4 or IPv6 address; write one such as 198.18.0.10 or "
                "2001:db8::10 (host names are not resolved)";
        d.error(f.at, f.path + ": " + m);
        return std::nullopt;
    }
    if (const char* why = not_unicast(*a)) {
        d.error(f.at, f.path + ": " + a->str() + " is " + why + "; use a unicast address");
        return std::nullopt;
    }
    return a;
}

// The prefix length after the '/' of `text`: 1 to max_len, or nullopt.
std::optional<unsigned> prefix_length(std::string_view len_text, unsigned max_len) {
    unsigned len = 0;
    const auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (len_text.empty() || ec != std::errc{} || ptr != len_text.data() + len_text.size() ||
        len < 1 || len > max_len)
        return std::nullopt;
    return len;
}

// The same, reporting an invalid length for the value `q` (quoted) at `f`.
std::optional<unsigned> read_prefix_length(Diag& d, const Field& f, const std::string& q,
                                           std::string_view len_text, unsigned max_len) {
    const auto len = prefix_length(len_text, max_len);
    if (!len)
        d.error(f.at, f.path + ": " + q + " has an invalid prefix length; use 1 to " +
                          std::to_string(max_len));
    return len;
}

// An IPv4 or IPv6 prefix of the given family, length >= 1, host bits zero.
std::optional<IpPrefix> read_prefix(Diag& d, const Field& f, Family family) {
    const bool v4 = family == Family::v4;
    const std::string example = v4 ? "198.18.255.0/24" : "2001:db8:ffff::/64";
    const unsigned max_len = v4 ? 32 : 128;
    if (!f.value.IsScalar()) {
        d.error(f.at,
                f.path + ": expected a prefix such as " + example + ", got " + describe(f.value));
        return std::nullopt;
    }
    const std::string& s = f.value.Scalar();
    const std::string q = "'" + printable(s) + "'";
    const size_t slash = s.find('/');
    if (slash == std::string::npos) {
        d.error(f.at,
                f.path + ": " + q + " has no prefix length; write address/length, e.g. " + example);
        return std::nullopt;
    }
    auto addr = IpAddr::parse(std::string_view(s).substr(0, slash));
    if (!addr) {
        d.error(f.at, f.path + ": " + q + " does not start with an IP address; write a prefix " +
                          "such as " + example);
        return std::nullopt;
    }
    if (addr->family != family) {
        d.error(f.at, f.path + ": " + q + " is an " + (v4 ? "IPv6" : "IPv4") + " prefix; " +
                          "this key takes an " + (v4 ? "IPv4" : "IPv6") + " prefix such as " +
                          example);
        return std::nullopt;
    }
    const auto len = read_prefix_length(d, f, q, std::string_view(s).substr(slash + 1), max_len);
    if (!len) return std::nullopt;
    IpPrefix masked{*addr, static_cast<uint8_t>(*len)};
    for (unsigned bit = *len; bit < max_len; ++bit)
        masked.addr.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
    if (masked.addr != *addr) {
        d.error(f.at, f.path + ": " + q + " has host bits set; write the network address (" +
                          masked.str() + ")");
        return std::nullopt;
    }
    return masked;
}

// A Unix socket path.
std::optional<std::string> read_socket_path(Diag& d, const Field& f) {
    auto s = read_string(d, f);
    if (!s) return std::nullopt;
    constexpr size_t kMax = 107;  // sun_path holds 108 bytes with the terminating NUL
    if (s->empty() || s->front() != '/') {
        d.error(f.at, f.path + ": '" + printable(*s) +
                          "' is not an absolute path; write the socket path from '/'");
        return std::nullopt;
    }
    if (s->size() > kMax) {
        d.error(f.at, f.path + ": the path is " + std::to_string(s->size()) +
                          " bytes long; a Unix socket path holds at most " + std::to_string(kMax));
        return std::nullopt;
    }
    return s;
}

// "host:port" or "[v6]:port" with an IP address for host; "" disables.
std::optional<std::string> read_listen(Diag& d, const Field& f) {
    auto s = read_string(d, f);
    if (!s) return std::nullopt;
    if (s->empty()) return s;
    std::string_view host, port;
    const std::string_view v = *s;
    if (v.front() == '[') {
        const size_t close = v.find("]:");
        if (close != std::string_view::npos) {
            host = v.substr(1, close - 1);
            port = v.substr(close + 2);
        }
    } else {
        const size_t colon = v.rfind(':');
        if (colon != std::string_view::npos) {
            host = v.substr(0, colon);
            port = v.substr(colon + 1);
        }
    }
    const auto addr = IpAddr::parse(host);
    const bool bracketed = v.front() == '[';
    unsigned p = 0;
    const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    const bool port_ok = !port.empty() && ec == std::errc{} && ptr == port.data() + port.size() &&
                         p >= 1 && p <= 65535;
    if (!addr || addr->is_v6() != bracketed || !port_ok) {
        d.error(f.at, f.path + ": '" + printable(*s) +
                          "' is not address:port; write e.g. 127.0.0.1:9310 or [::1]:9310 "
                          "(an IP address, IPv6 in brackets, and a port from 1 to 65535), or \"\" "
                          "to disable the endpoint");
        return std::nullopt;
    }
    return s;
}

// Text without whitespace or control characters.
bool is_token(std::string_view s) {
    return std::none_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
    });
}

// ---- health checks ------------------------------------------------------------------------

// The keys one health_check mapping sets.
struct HealthLayer {
    std::optional<CheckType> type;
    std::optional<uint16_t> port;
    std::optional<Millis> interval;
    std::optional<Millis> timeout;
    std::optional<unsigned> rise;
    std::optional<unsigned> fall;
    std::optional<std::string> path;
    std::optional<std::vector<int>> expect_status;
    std::optional<std::string> host;
    std::optional<bool> tls_verify;
    Location interval_at, timeout_at;
    bool interval_bad = false;  // given but invalid (already reported)
    bool timeout_bad = false;
    std::string where;  // "services[0].health_check"
};

// A merged health check and where its interval and timeout were set (nullopt: default).
struct MergedHealth {
    HealthCheckConfig cfg;
    std::optional<Location> interval_from, timeout_from;
};

std::optional<int> read_status(Diag& d, const Field& f) {
    if (auto v = read_uint(d, f, 100, 599)) return static_cast<int>(*v);
    return std::nullopt;
}

HealthLayer read_health(Diag& d, const Field& f) {
    HealthLayer h;
    h.where = f.path;
    const Section s(d, f,
                    {"type", "interval", "timeout", "rise", "fall", "path", "expect_status", "host",
                     "tls_verify", "port"});
    if (!s.ok()) return h;
    if (auto x = s.take("type")) h.type = read_enum(d, *x, kCheckTypes, "health check type");
    if (auto x = s.take("interval")) {
        h.interval_bad = true;
        if (auto v = read_duration(d, *x)) {
            if (*v < kMinCheckInterval) {
                d.error(x->at,
                        x->path + ": " + format_duration(*v) + " is too short; use 100ms or more");
            } else {
                h.interval = v;
                h.interval_at = d.at(x->at);
                h.interval_bad = false;
            }
        }
    }
    if (auto x = s.take("timeout")) {
        if (auto v = read_duration(d, *x)) {
            h.timeout = v;
            h.timeout_at = d.at(x->at);
        } else {
            h.timeout_bad = true;
        }
    }
    if (auto x = s.take("rise"))
        if (auto v = read_uint(d, *x, 1, 100, "(consecutive successes that mark a server up)"))
            h.rise = static_cast<unsigned>(*v);
    if (auto x = s.take("fall"))
        if (auto v = read_uint(d, *x, 1, 100, "(consecutive failures that mark a server down)"))
            h.fall = static_cast<unsigned>(*v);
    if (auto x = s.take("path")) {
        if (auto v = read_string(d, *x)) {
            if (v->empty() || v->front() != '/' || !is_token(*v) || v->size() > 1024)
                d.error(x->at, x->path + ": '" + printable(*v) +
                                   "' is not a request path; write one that starts with '/' and "
                                   "has no spaces (at most 1024 bytes), e.g. /health");
            else
                h.path = std::move(v);
        }
    }
    if (auto x = s.take("expect_status")) {
        std::vector<int> codes;
        bool ok = true;
        if (x->value.IsSequence()) {
            size_t i = 0;
            for (const auto& n : x->value) {
                if (auto c = read_status(d, list_item(d, *x, n, i++)))
                    codes.push_back(*c);
                else
                    ok = false;
            }
            if (ok && codes.empty()) {
                d.error(x->at, x->path +
                                   ": the list is empty; give at least one HTTP status "
                                   "code, e.g. [200]");
                ok = false;
            }
        } else if (auto c = read_status(d, *x)) {
            codes.push_back(*c);
        } else {
            ok = false;
        }
        if (ok) h.expect_status = std::move(codes);
    }
    if (auto x = s.take("host")) {
        if (auto v = read_string(d, *x)) {
            if (v->empty() || !is_token(*v) || v->size() > 255)
                d.error(x->at, x->path + ": '" + printable(*v) +
                                   "' is not a Host header value; write a host name without "
                                   "spaces (at most 255 bytes), or leave 'host' out to send the "
                                   "server address");
            else
                h.host = std::move(v);
        }
    }
    if (auto x = s.take("tls_verify")) h.tls_verify = read_bool(d, *x);
    if (auto x = s.take("port"))
        if (auto v = read_uint(d, *x, 1, 65535, "(leave 'port' out to check the server's port)"))
            h.port = static_cast<uint16_t>(*v);
    return h;
}

// Merges `layer` over `base` key by key, and checks that the result's timeout does not exceed
// its interval when this layer set either of them (so each inconsistency is reported once, at
// the level that introduced it).
MergedHealth merge_health(Diag& d, const MergedHealth& base, const HealthLayer& l) {
    MergedHealth m = base;
    HealthCheckConfig& c = m.cfg;
    if (l.type) c.type = *l.type;
    if (l.port) c.port = *l.port;
    if (l.interval) {
        c.interval = *l.interval;
        m.interval_from = l.interval_at;
    }
    if (l.timeout) {
        c.timeout = *l.timeout;
        m.timeout_from = l.timeout_at;
    }
    if (l.rise) c.rise = *l.rise;
    if (l.fall) c.fall = *l.fall;
    if (l.path) c.path = *l.path;
    if (l.expect_status) c.expect_status = *l.expect_status;
    if (l.host) c.host = *l.host;
    if (l.tls_verify) c.tls_verify = *l.tls_verify;

    if ((l.interval || l.timeout) && !l.interval_bad && !l.timeout_bad && c.timeout > c.interval) {
        auto origin = [](const std::optional<Location>& w) {
            return w ? "set at " + w->str() : std::string("the default");
        };
        const std::string t = format_duration(c.timeout), i = format_duration(c.interval);
        if (l.timeout && l.interval)
            d.error(l.timeout_at, l.where + ".timeout: " + t + " is longer than the interval " + i +
                                      "; make the timeout at most the interval");
        else if (l.timeout)
            d.error(l.timeout_at, l.where + ".timeout: " + t + " is longer than the interval " + i +
                                      " (" + origin(m.interval_from) +
                                      "); make the timeout at most the interval, or raise the "
                                      "interval");
        else
            d.error(l.interval_at, l.where + ".interval: " + i + " is shorter than the timeout " +
                                       t + " (" + origin(m.timeout_from) +
                                       "); make the interval at least the timeout, or lower the "
                                       "timeout");
    }
    return m;
}

// ---- services -----------------------------------------------------------------------------

// What the cross-service checks need to know beyond the values themselves.
struct ServiceMeta {
    std::string path;  // "services[3]"
    bool name_ok = false;
    bool vip_ok = false;
    bool port_ok = false;
    bool proto_ok = true;  // default tcp
    bool table_ok = true;  // default size
    bool table_explicit = false;  // table_size is in the file
    Location item, name_at, vip_at, table_at;
    std::vector<Location> server_items;
};

// "198.18.0.1:80", "[2001:db8::1]:80"
std::string endpoint(const IpAddr& a, uint16_t port) {
    const std::string host = a.is_v6() ? "[" + a.str() + "]" : a.str();
    return host + ":" + std::to_string(port);
}

// How messages name a service: 'web', or services[3] when it has no valid name.
std::string label(const ServiceConfig& s, const ServiceMeta& m) {
    return m.name_ok ? "'" + s.name + "'" : m.path;
}

std::string char_text(char c) {
    if (c == ' ') return "a space";
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "byte 0x%02x", static_cast<unsigned>(u));
        return buf;
    }
    return "'" + std::string(1, c) + "'";
}

bool check_name(Diag& d, const Field& f, const std::string& name) {
    const std::string rule = "use letters, digits, '_', '.' and '-'";
    if (name.empty()) {
        d.error(f.at, f.path + ": the name is empty; " + rule);
        return false;
    }
    if (name.size() > kMaxServiceNameLen) {
        d.error(f.at, f.path + ": '" + printable(name) + "' is " + std::to_string(name.size()) +
                          " bytes long; use at most " + std::to_string(kMaxServiceNameLen));
        return false;
    }
    for (const char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!ok) {
            d.error(f.at, f.path + ": '" + printable(name) + "' contains " + char_text(c) +
                              ", which a service name cannot; " + rule);
            return false;
        }
    }
    return true;
}

// The primes nearest to n (for a message).
std::string nearest_primes(uint32_t n) {
    uint32_t below = n, above = n;
    while (below > 3 && !is_prime(below)) --below;
    while (above < kMaglevMaxSize && !is_prime(above)) ++above;
    if (below < n && is_prime(below) && above > n && is_prime(above))
        return std::to_string(below) + " or " + std::to_string(above);
    return std::to_string(is_prime(below) ? below : above);
}

struct Parser {
    Diag& d;
    Config& cfg;
    bool src4_bad = false;  // the prefix was given but invalid (already reported)
    bool src6_bad = false;
    // Where ha: values are, for the checks made once the services are known.
    std::vector<Location> track_at, peer_at;
    Location lease_at, sync_peer_at;

    void dataplane(const Field& f);
    void admin(const Field& f);
    void metrics(const Field& f);
    void limits(const Field& f);
    void interface(const Field& f);
    void ha(const Field& f);
    void sync(const Field& f);
    void xdp(const Field& f);
    void acl(const Field& f);
    void syn_limit(const Field& f);
    void xdp_checks();
    void ha_checks(const Field& ha_field);
    void services(const Field& f, const MergedHealth& defaults);
    std::optional<ServerConfig> server(const Field& f, const ServiceConfig& svc,
                                       const ServiceMeta& meta, bool fwd_ok,
                                       const MergedHealth& defaults,
                                       std::map<std::pair<IpAddr, uint16_t>, Location>& seen);
    std::optional<ServiceConfig> service(const Field& f, const MergedHealth& defaults,
                                         ServiceMeta& meta);
    void cross_checks(const std::vector<ServiceMeta>& metas);
};

void Parser::dataplane(const Field& f) {
    const Section s(d, f, {"control_socket", "hash_seed", "mtu", "encapsulation"});
    if (!s.ok()) return;
    if (auto x = s.take("control_socket"))
        if (auto v = read_socket_path(d, *x)) cfg.dataplane_socket = *v;
    if (auto x = s.take("hash_seed"))
        if (auto v = read_uint(d, *x, 0, std::numeric_limits<uint64_t>::max())) cfg.hash_seed = *v;
    if (auto x = s.take("mtu")) {
        if (auto v = read_uint(d, *x, 0, kMaxMtu, "(0: the dataplane port's MTU)")) {
            if (*v != 0 && *v < kMinMtu)
                d.error(x->at, x->path + ": " + std::to_string(*v) + " is below the minimum of " +
                                   std::to_string(kMinMtu) + "; use " +
                                   range_text(kMinMtu, kMaxMtu) +
                                   ", or 0 for the dataplane port's MTU");
            else
                cfg.mtu = static_cast<uint16_t>(*v);
        }
    }
    if (auto x = s.take("encapsulation")) {
        const Section e(d, *x, {"source_v4", "source_v6", "gue_port", "ttl"});
        if (!e.ok()) return;
        if (auto y = e.take("source_v4")) {
            cfg.encap.src4 = read_prefix(d, *y, Family::v4);
            src4_bad = !cfg.encap.src4;
        }
        if (auto y = e.take("source_v6")) {
            cfg.encap.src6 = read_prefix(d, *y, Family::v6);
            src6_bad = !cfg.encap.src6;
        }
        if (auto y = e.take("gue_port"))
            if (auto v = read_uint(d, *y, 1, 65535)) cfg.encap.gue_port = static_cast<uint16_t>(*v);
        if (auto y = e.take("ttl"))
            if (auto v = read_uint(d, *y, 1, 255)) cfg.encap.outer_ttl = static_cast<uint8_t>(*v);
    }
}

void Parser::admin(const Field& f) {
    const Section s(d, f, {"socket", "state_file"});
    if (!s.ok()) return;
    if (auto x = s.take("socket"))
        if (auto v = read_socket_path(d, *x)) cfg.admin_socket = *v;
    if (auto x = s.take("state_file"))
        if (auto v = read_string(d, *x)) {
            if (v->empty() || v->front() != '/' || v->back() == '/')
                d.error(x->at, x->path + ": '" + printable(*v) +
                                   "' is not an absolute file path; give the file fulcrumd keeps the "
                                   "operator's overrides in (e.g. /var/lib/fulcrum/overrides.json)");
            else
                cfg.state_file = *v;
        }
}

void Parser::metrics(const Field& f) {
    const Section s(d, f, {"listen", "enabled", "basic_auth"});
    if (!s.ok()) return;
    if (auto x = s.take("basic_auth")) {
        // HTTP basic auth for scrapes; the password stays in its own file (not in the config).
        const Section a(d, *x, {"username", "password_file"});
        if (a.ok()) {
            const auto u = a.take("username");
            const auto p = a.take("password_file");
            if (!u) a.missing("username", "basic_auth needs both username and password_file");
            if (!p) a.missing("password_file", "basic_auth needs both username and password_file");
            if (u)
                if (auto v = read_string(d, *u)) {
                    if (v->empty() || v->find(':') != std::string::npos)
                        d.error(u->at, u->path + ": the user name must be non-empty and without ':' (HTTP basic auth)");
                    else
                        cfg.metrics_username = *v;
                }
            if (p)
                if (auto v = read_string(d, *p)) {
                    if (v->empty() || v->front() != '/')
                        d.error(p->at, p->path + ": '" + printable(*v) +
                                           "' is not an absolute path; give the file holding the password");
                    else
                        cfg.metrics_password_file = *v;
                }
        }
    }
    std::optional<bool> enabled;
    const auto en = s.take("enabled");
    if (en) enabled = read_bool(d, *en);
    if (auto x = s.take("listen"))
        if (auto v = read_listen(d, *x)) cfg.metrics_listen = *v;
    if (enabled == false) {
        cfg.metrics_listen.clear();
    } else if (enabled == true && cfg.metrics_listen.empty()) {
        d.error(en->at, en->path +
                            ": the endpoint is enabled but metrics.listen is empty; set "
                            "listen (e.g. 127.0.0.1:9310), or set enabled: false");
    }
}

void Parser::limits(const Field& f) {
    const Section s(d, f, {"retire_after"});
    if (!s.ok()) return;
    if (auto x = s.take("retire_after"))
        if (auto v = read_duration(d, *x)) cfg.retire_after = *v;
}

std::optional<ServerConfig> Parser::server(const Field& f, const ServiceConfig& svc,
                                           const ServiceMeta& meta, bool fwd_ok,
                                           const MergedHealth& defaults,
                                           std::map<std::pair<IpAddr, uint16_t>, Location>& seen) {
    if (f.value.IsScalar()) {
        d.error(f.at, f.path + ": expected a server (a mapping), got " + describe(f.value) +
                          "; write '- address: " + printable(f.value.Scalar()) + "'");
        return std::nullopt;
    }
    if (f.value.IsNull()) {
        d.error(f.at, f.path + ": empty list item; a server needs at least 'address'");
        return std::nullopt;
    }
    const Section s(d, f, {"address", "port", "weight", "backup", "enabled", "health_check"});
    if (!s.ok()) return std::nullopt;
    ServerConfig srv;
    srv.where = d.at(f.at);

    std::optional<Field> addr_f = s.take("address");
    bool addr_ok = false;
    if (!addr_f) {
        s.missing("address", "add the server's IP address, e.g. 'address: 198.18.0.11'");
    } else if (auto a = read_address(d, *addr_f)) {
        srv.address = *a;
        addr_ok = true;
    }
    const auto port_f = s.take("port");
    bool port_ok = true;
    if (port_f) {
        if (auto v = read_uint(d, *port_f, 0, 65535, "(0 or no 'port': the service port)"))
            srv.port = static_cast<uint16_t>(*v);
        else
            port_ok = false;
    }
    if (auto x = s.take("weight"))
        if (auto v = read_uint(d, *x, 0, 65535, "(0 drains the server: no new connections)"))
            srv.weight = static_cast<uint32_t>(*v);
    if (auto x = s.take("backup"))
        if (auto v = read_bool(d, *x)) srv.backup = *v;
    if (auto x = s.take("enabled"))
        if (auto v = read_bool(d, *x)) srv.enabled = *v;
    MergedHealth health = defaults;
    if (auto x = s.take("health_check")) health = merge_health(d, defaults, read_health(d, *x));
    srv.health = health.cfg;

    const std::string svc_label = label(svc, meta);
    if (addr_ok && meta.vip_ok && srv.address.family != svc.vip.family) {
        const bool v6 = srv.address.is_v6();
        d.error(addr_f->at, addr_f->path + ": server " + srv.address.str() + " is " +
                                (v6 ? "IPv6" : "IPv4") + " but the VIP of service " + svc_label +
                                " (" + svc.vip.str() + ") is " + (v6 ? "IPv4" : "IPv6") +
                                "; a service's servers must have its VIP's address family");
        addr_ok = false;
    }
    if (port_f && port_ok && srv.port != 0 && meta.port_ok && fwd_ok &&
        svc.forwarding == Forwarding::dsr && srv.port != svc.port) {
        d.error(port_f->at, port_f->path + ": DSR cannot change the port: the server's port " +
                                std::to_string(srv.port) + " differs from the port " +
                                std::to_string(svc.port) + " of service " + svc_label +
                                "; remove the server's port, make the server listen on " +
                                std::to_string(svc.port) + ", or use ipip or gue forwarding");
        port_ok = false;
    }
    if (addr_ok && port_ok && (meta.port_ok || srv.port != 0)) {
        const uint16_t eff = srv.effective_port(svc.port);
        const auto [it, fresh] = seen.emplace(std::make_pair(srv.address, eff), d.at(addr_f->at));
        if (!fresh)
            d.error(addr_f->at, addr_f->path + ": server " + endpoint(srv.address, eff) +
                                    " appears twice in service " + svc_label + " (also at " +
                                    it->second.str() + "); remove one of them");
    }
    return srv;
}

std::optional<ServiceConfig> Parser::service(const Field& f, const MergedHealth& defaults,
                                             ServiceMeta& meta) {
    meta.path = f.path;
    meta.item = d.at(f.at);
    if (f.value.IsNull()) {
        d.error(f.at, f.path +
                          ": empty list item; a service needs at least name, vip, port "
                          "and servers");
        return std::nullopt;
    }
    const Section s(d, f,
                    {"name", "vip", "port", "protocol", "scheduler", "forwarding", "table_size",
                     "health_check", "servers"});
    if (!s.ok()) return std::nullopt;
    ServiceConfig svc;
    svc.where = meta.item;

    if (auto x = s.take("name")) {
        if (auto v = read_string(d, *x)) {
            svc.name = *v;
            meta.name_ok = check_name(d, *x, svc.name);
            meta.name_at = d.at(x->at);
        }
    } else {
        s.missing("name", "add a unique name, e.g. 'name: web'");
    }
    std::optional<Field> vip_f = s.take("vip");
    if (vip_f) {
        if (auto a = read_address(d, *vip_f)) {
            svc.vip = *a;
            meta.vip_ok = true;
            meta.vip_at = d.at(vip_f->at);
        }
    } else {
        s.missing("vip", "add the virtual IP address, e.g. 'vip: 198.18.0.100'");
    }
    if (auto x = s.take("port")) {
        if (auto v = read_uint(d, *x, 1, 65535)) {
            svc.port = static_cast<uint16_t>(*v);
            meta.port_ok = true;
        }
    } else {
        s.missing("port", "add the service's port, e.g. 'port: 80'");
    }
    if (auto x = s.take("protocol")) {
        const auto v = read_enum(d, *x, kProtocols, "protocol");
        meta.proto_ok = v.has_value();
        if (v) svc.proto = *v;
    }
    if (auto x = s.take("scheduler"))
        if (auto v = read_enum(d, *x, kSchedulers, "scheduler")) svc.scheduler = *v;
    bool fwd_ok = true;
    if (auto x = s.take("forwarding")) {
        const auto v = read_enum(d, *x, kForwardings, "forwarding mode");
        fwd_ok = v.has_value();
        if (v) svc.forwarding = *v;
        if (v && *v != Forwarding::dsr && meta.vip_ok) {
            const bool v4 = svc.vip.is_v4();
            const bool missing = v4 ? !cfg.encap.src4 && !src4_bad : !cfg.encap.src6 && !src6_bad;
            if (missing)
                d.error(x->at,
                        x->path + ": " + forwarding_name(*v) +
                            " forwarding needs "
                            "dataplane.encapsulation." +
                            (v4 ? "source_v4" : "source_v6") + " (the prefix outer " +
                            (v4 ? "IPv4" : "IPv6") +
                            " source addresses are taken from); set it, e.g. '" +
                            (v4 ? "source_v4: 198.18.255.0/24" : "source_v6: 2001:db8:ffff::/64") +
                            "'");
            // IPv6 clients must be able to send 1280 bytes (RFC 8200) once encapsulated.
            const unsigned need = 1280 + (*v == Forwarding::gue ? 48 : 40);
            if (!v4 && cfg.mtu != 0 && cfg.mtu < need)
                d.error(x->at, x->path + ": " + forwarding_name(*v) + " over IPv6 needs dataplane.mtu of at least " +
                                   std::to_string(need) + " (the IPv6 minimum of 1280 plus the outer headers), not " +
                                   std::to_string(cfg.mtu) + "; raise the MTU towards the servers or use dsr");
        }
    }
    meta.table_at = meta.item;
    if (auto x = s.take("table_size")) {
        meta.table_at = d.at(x->at);
        meta.table_explicit = true;
        meta.table_ok = false;
        if (auto v = read_uint(d, *x, 3, kMaglevMaxSize, "(a prime; the default is 65537)")) {
            const auto n = static_cast<uint32_t>(*v);
            if (!is_prime(n)) {
                d.error(x->at, x->path + ": " + std::to_string(n) +
                                   " is not a prime; Maglev needs a prime table size: use " +
                                   nearest_primes(n) + " (the default is 65537)");
            } else {
                svc.table_size = n;
                meta.table_ok = true;
            }
        }
    }
    MergedHealth health = defaults;
    if (auto x = s.take("health_check")) health = merge_health(d, defaults, read_health(d, *x));

    if (auto x = s.take("servers")) {
        if (x->value.IsSequence()) {
            std::map<std::pair<IpAddr, uint16_t>, Location> seen;
            size_t i = 0;
            for (const auto& n : x->value) {
                const Field sf = list_item(d, *x, n, i++);
                meta.server_items.push_back(d.at(sf.at));
                if (auto srv = server(sf, svc, meta, fwd_ok, health, seen))
                    svc.servers.push_back(std::move(*srv));
            }
        } else if (x->value.IsNull()) {
            // What a file cut short after "servers:" looks like: loading it would drop every
            // server of the service, as for "services:" (below).
            d.error(x->at, x->path +
                               ": no servers listed (is the file cut short?); list them, or write "
                               "'servers: []' for a service without servers yet");
        } else {
            d.error(x->at, x->path +
                               ": expected a list of servers (lines starting with '- '), "
                               "got " +
                               describe(x->value));
        }
    } else {
        s.missing("servers",
                  "list the servers, or write 'servers: []' for a service without "
                  "servers yet");
    }
    return svc;
}

// A host address with its prefix length ("198.18.0.2/24"): host bits are expected here.
std::optional<IpPrefix> read_host_address(Diag& d, const Field& f) {
    const std::string example = "198.18.0.2/24 or 2001:db8::2/64";
    if (!f.value.IsScalar()) {
        d.error(f.at, f.path + ": expected an address with its prefix length such as " + example +
                          ", got " + describe(f.value));
        return std::nullopt;
    }
    const std::string& s = f.value.Scalar();
    const std::string q = "'" + printable(s) + "'";
    const size_t slash = s.find('/');
    const auto addr = IpAddr::parse(std::string_view(s).substr(0, slash));
    if (!addr) {
        d.error(f.at, f.path + ": " + q + " is not an address with a prefix length; write e.g. " +
                          example);
        return std::nullopt;
    }
    if (const char* why = not_unicast(*addr)) {
        d.error(f.at, f.path + ": " + addr->str() + " is " + why + "; use a unicast address");
        return std::nullopt;
    }
    const unsigned max_len = addr->is_v4() ? 32 : 128;
    if (slash == std::string::npos) {
        d.error(f.at, f.path + ": " + q + " has no prefix length; write address/length (e.g. " +
                          example + ") so that the host's subnet route is right");
        return std::nullopt;
    }
    const auto len = read_prefix_length(d, f, q, std::string_view(s).substr(slash + 1), max_len);
    if (!len) return std::nullopt;
    return IpPrefix{*addr, static_cast<uint8_t>(*len)};
}

// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
bool valid_ifname(std::string_view s) {
    return !s.empty() && s.size() <= 15 && s != "." && s != ".." &&
           std::none_of(s.begin(), s.end(), [](char c) {
               const auto u = static_cast<unsigned char>(c);
               return u <= 0x20 || u == 0x7f || c == '/' || c == ':';
           });
}

void Parser::interface(const Field& f) {
    const Section s(d, f, {"name", "addresses"});
    if (!s.ok()) return;
    cfg.interface.configured = true;
    cfg.interface.where = d.at(f.at);
    if (auto x = s.take("name"))
        if (auto v = read_string(d, *x)) {
            if (!valid_ifname(*v))
                d.error(x->at, x->path + ": '" + printable(*v) +
                                   "' is not an interface name (1 to 15 characters, no '/', ':' "
                                   "or spaces); give the dataplane's exception interface, e.g. fl0");
            else
                cfg.interface.name = *v;
        }
    if (auto x = s.take("addresses")) {
        if (!x->value.IsSequence()) {
            d.error(x->at, x->path + ": expected a list of addresses with prefix lengths, e.g. "
                                     "[198.18.0.2/24], got " + describe(x->value));
            return;
        }
        for (size_t i = 0; i < x->value.size(); ++i) {
            const Field af = list_item(d, *x, x->value[i], i);
            if (auto a = read_host_address(d, af)) {
                const bool dup = std::any_of(
                    cfg.interface.addresses.begin(), cfg.interface.addresses.end(),
                    [&](const IpPrefix& p) { return p.addr == a->addr; });
                if (dup)
                    d.error(af.at, af.path + ": " + a->addr.str() + " is listed twice; keep one");
                else
                    cfg.interface.addresses.push_back(*a);
            }
        }
    }
}

constexpr std::array<Choice<bool>, 2> kChecksumForms{
    {{"pseudo_header", false}, {"message_only", true}}};
constexpr std::array<Choice<uint8_t>, 3> kChecksumAccept{
    {{"both", uint8_t{0}}, {"pseudo_header", uint8_t{1}}, {"message_only", uint8_t{2}}}};

void Parser::ha(const Field& f) {
    const Section s(d, f,
                    {"vrid", "priority", "advert_interval", "preempt", "preempt_delay",
                     "unicast_peers", "checksum", "accept_checksum", "garp", "lease",
                     "track_services", "sync"});
    if (!s.ok()) return;
    HaConfig& h = cfg.ha;
    h.enabled = true;
    h.where = d.at(f.at);
    if (auto x = s.take("vrid")) {
        if (auto v = read_uint(d, *x, 1, 255, "(the same on both balancers, unique on the link)"))
            h.vrid = static_cast<uint8_t>(*v);
    } else {
        s.missing("vrid", "give the virtual router id (1 to 255), the same on both balancers");
    }
    if (auto x = s.take("priority"))
        if (auto v = read_uint(d, *x, 1, 255,
                               "(the higher one is master; 255 only for the address owner)"))
            h.priority = static_cast<uint8_t>(*v);
    if (auto x = s.take("advert_interval"))
        if (auto v = read_duration(d, *x)) {
            if (v->count() % 10 != 0 || *v < Millis{10} || *v > Millis{40950})
                d.error(x->at, x->path + ": " + format_duration(*v) +
                                   " is not a whole number of centiseconds from 10ms to 40950ms "
                                   "(VRRPv3 carries the interval in centiseconds); use e.g. 100ms or 1s");
            else
                h.advert_interval_cs = static_cast<uint16_t>(v->count() / 10);
        }
    if (auto x = s.take("preempt"))
        if (auto v = read_bool(d, *x)) h.preempt = *v;
    if (auto x = s.take("preempt_delay")) {
        // 0 is meaningful here (preempt at once), unlike in read_duration.
        if (x->value.IsScalar() && (x->value.Scalar() == "0" || x->value.Scalar() == "0s" ||
                                    x->value.Scalar() == "0ms"))
            h.preempt_delay = Millis{0};
        else if (auto v = read_duration(d, *x)) {
            if (*v > Millis{1'000'000})
                d.error(x->at, x->path + ": " + format_duration(*v) +
                                   " is longer than 1000s; use 0s to 1000s");
            else
                h.preempt_delay = *v;
        }
    }
    if (auto x = s.take("unicast_peers")) {
        if (!x->value.IsSequence()) {
            d.error(x->at, x->path + ": expected a list of peer addresses (e.g. [198.18.0.3]), "
                                     "or [] for multicast adverts, got " + describe(x->value));
        } else {
            for (size_t i = 0; i < x->value.size(); ++i) {
                const Field pf = list_item(d, *x, x->value[i], i);
                if (auto a = read_address(d, pf)) {
                    if (std::find(h.unicast_peers.begin(), h.unicast_peers.end(), *a) !=
                        h.unicast_peers.end())
                        d.error(pf.at, pf.path + ": " + a->str() + " is listed twice; keep one");
                    else {
                        h.unicast_peers.push_back(*a);
                        peer_at.push_back(d.at(pf.at));
                    }
                }
            }
        }
    }
    if (auto x = s.take("checksum"))
        if (auto v = read_enum(d, *x, kChecksumForms, "IPv4 checksum form"))
            h.checksum_message_only = *v;
    if (auto x = s.take("accept_checksum"))
        if (auto v = read_enum(d, *x, kChecksumAccept, "accepted IPv4 checksum form"))
            h.accept_checksum = *v;
    if (auto x = s.take("garp")) {
        const Section g(d, *x, {"count", "repeat_delay"});
        if (g.ok()) {
            if (auto y = g.take("count"))
                if (auto v = read_uint(d, *y, 1, 100)) h.garp_count = static_cast<unsigned>(*v);
            if (auto y = g.take("repeat_delay"))
                if (auto v = read_duration(d, *y)) {
                    if (*v > Millis{3'600'000})
                        d.error(y->at, y->path + ": " + format_duration(*v) +
                                           " is longer than 1h; use up to 1h");
                    else
                        h.garp_repeat_delay = *v;
                }
        }
    }
    lease_at = d.at(f.at);
    if (auto x = s.take("lease"))
        if (lease_at = d.at(x->at); auto v = read_duration(d, *x)) {
            if (*v > Millis{600'000})
                d.error(x->at, x->path + ": " + format_duration(*v) +
                                   " is longer than the dataplane's limit of 10m; use a few "
                                   "advert intervals (the default is 3)");
            else
                h.lease = *v;
        }
    if (auto x = s.take("track_services")) {
        if (!x->value.IsSequence()) {
            d.error(x->at, x->path + ": expected a list of service names, got " +
                               describe(x->value));
        } else {
            for (size_t i = 0; i < x->value.size(); ++i) {
                const Field tf = list_item(d, *x, x->value[i], i);
                if (auto v = read_string(d, tf)) {
                    h.track_services.push_back(*v);
                    track_at.push_back(d.at(tf.at));
                }
            }
        }
    }
    if (auto x = s.take("sync")) sync(*x);
}

void Parser::sync(const Field& f) {
    const Section s(d, f, {"peer", "local", "port", "key_file", "refresh", "rate"});
    if (!s.ok()) return;
    SyncConfig& y = cfg.ha.sync;
    y.where = d.at(f.at);
    bool ok = true;
    if (auto x = s.take("peer")) {
        sync_peer_at = d.at(x->at);
        if (auto v = read_address(d, *x))
            y.peer = *v;
        else
            ok = false;
    } else {
        s.missing("peer", "give the other balancer's address for connection sync");
        ok = false;
    }
    if (auto x = s.take("local")) {
        if (auto v = read_address(d, *x)) {
            if (y.peer.family != Family::none && v->family != y.peer.family)
                d.error(x->at, x->path + ": " + v->str() + " and the peer " + y.peer.str() +
                                   " are of different address families; use one family");
            y.local = *v;
        } else {
            ok = false;  // no second error about a missing local address
        }
    }
    if (auto x = s.take("port"))
        if (auto v = read_uint(d, *x, 1, 65535)) y.port = static_cast<uint16_t>(*v);
    if (auto x = s.take("key_file"))
        if (auto v = read_string(d, *x)) {
            if (v->empty() || v->front() != '/')
                d.error(x->at, x->path + ": '" + printable(*v) +
                                   "' is not an absolute path; give the file holding the key");
            else
                y.key_file = *v;
        }
    if (auto x = s.take("refresh"))
        if (auto v = read_duration(d, *x)) {
            if (*v < Millis{100} || *v > Millis{3'600'000})
                d.error(x->at, x->path + ": " + format_duration(*v) +
                                   " is outside 100ms to 1h; use e.g. 10s");
            else
                y.refresh = *v;
        }
    if (auto x = s.take("rate"))
        if (auto v = read_uint(d, *x, 1000, 10'000'000, "(records per second)"))
            y.rate = static_cast<uint32_t>(*v);
    y.enabled = ok;
}

// ---- xdp ----------------------------------------------------------------------------------

constexpr std::array<Choice<bool>, 2> kAclDefaults{{{"allow", true}, {"deny", false}}};

// A source prefix of the XDP front's ACL, IPv4 or IPv6, host bits zero.
std::optional<IpPrefix> read_acl_prefix(Diag& d, const Field& f) {
    if (f.value.IsScalar()) {
        const std::string& s = f.value.Scalar();
        const size_t slash = s.find('/');
        const auto addr = IpAddr::parse(std::string_view(s).substr(0, slash));
        if (addr && slash != std::string::npos && std::string_view(s).substr(slash + 1) == "0") {
            d.error(f.at, f.path + ": '" + printable(s) +
                              "' matches every source; set xdp.acl.default instead");
            return std::nullopt;
        }
        if (addr) return read_prefix(d, f, addr->family);
    }
    return read_prefix(d, f, Family::v4);  // says what is wrong with it
}

void Parser::xdp(const Field& f) {
    const Section s(d, f, {"interface", "acl", "syn_limit"});
    if (!s.ok()) return;
    XdpConfig& x = cfg.xdp;
    x.enabled = true;
    x.where = d.at(f.at);
    if (auto y = s.take("interface")) {
        if (auto v = read_string(d, *y)) {
            if (!valid_ifname(*v))
                d.error(y->at, y->path + ": '" + printable(*v) +
                                   "' is not an interface name (1 to 15 characters, no '/', ':' "
                                   "or spaces); give the kernel interface of the dataplane's "
                                   "net_af_xdp port (its iface=), e.g. eth1");
            else
                x.interface = *v;
        }
    } else {
        s.missing("interface", "give the kernel interface of the dataplane's net_af_xdp port "
                               "(its iface=), e.g. 'interface: eth1'");
    }
    if (auto y = s.take("acl")) acl(*y);
    if (auto y = s.take("syn_limit")) syn_limit(*y);
}

void Parser::acl(const Field& f) {
    const Section s(d, f, {"default", "allow", "deny"});
    if (!s.ok()) return;
    XdpConfig& x = cfg.xdp;
    if (auto y = s.take("default"))
        if (auto v = read_enum(d, *y, kAclDefaults, "ACL default")) x.default_allow = *v;
    // Every prefix once, in one of the two lists: the front's trie holds one action per prefix.
    std::map<std::pair<IpAddr, uint8_t>, std::pair<bool, Location>> seen;
    size_t per_family[2] = {0, 0};
    for (const bool allow : {true, false}) {
        const auto y = s.take(allow ? "allow" : "deny");
        if (!y) continue;
        if (!y->value.IsSequence()) {
            d.error(y->at, y->path + ": expected a list of source prefixes such as "
                                     "[198.18.0.0/15, 2001:db8::/32], got " + describe(y->value));
            continue;
        }
        std::vector<IpPrefix>& out = allow ? x.allow : x.deny;
        for (size_t i = 0; i < y->value.size(); ++i) {
            const Field pf = list_item(d, *y, y->value[i], i);
            const auto p = read_acl_prefix(d, pf);
            if (!p) continue;
            const auto [it, fresh] = seen.emplace(std::pair{p->addr, p->length},
                                                  std::pair{allow, d.at(pf.at)});
            if (!fresh) {
                const bool same_list = it->second.first == allow;
                if (same_list)
                    d.error(pf.at, pf.path + ": " + p->str() + " is listed twice (first at " +
                                       it->second.second.str() + "); keep one");
                else
                    d.error(pf.at, pf.path + ": " + p->str() + " is also in xdp.acl." +
                                       (allow ? "deny" : "allow") + " (at " +
                                       it->second.second.str() +
                                       "); a prefix is either allowed or denied: remove one");
                continue;
            }
            ++per_family[p->addr.is_v4() ? 0 : 1];
            out.push_back(*p);
        }
    }
    for (int fam = 0; fam < 2; ++fam)
        if (per_family[fam] > kMaxXdpAclPerFamily)
            d.error(f.at, f.path + ": " + std::to_string(per_family[fam]) + (fam ? " IPv6" : " IPv4") +
                              " prefixes in allow and deny together; the XDP front holds at most " +
                              std::to_string(kMaxXdpAclPerFamily) +
                              " per address family: merge adjacent prefixes");
}

void Parser::syn_limit(const Field& f) {
    const Section s(d, f, {"rate", "burst", "ipv6_prefix"});
    if (!s.ok()) return;
    XdpConfig& x = cfg.xdp;
    if (auto y = s.take("rate"))
        if (auto v = read_uint(d, *y, 0, 1'000'000'000, "(SYNs per second per source; 0: no limit)"))
            x.syn_rate = *v;
    const auto burst = s.take("burst");
    if (burst) {
        if (auto v = read_uint(d, *burst, 1, 1'000'000'000,
                               "(SYNs a source may send at once, at least 1)"))
            x.syn_burst = *v;
    } else {
        x.syn_burst = x.syn_rate;  // one second's worth at once
    }
    if (auto y = s.take("ipv6_prefix"))
        if (auto v = read_uint(d, *y, 1, 128,
                               "(IPv6 sources are counted per prefix of this length; 64 is one "
                               "customer subnet)"))
            x.syn_ipv6_prefix = static_cast<uint32_t>(*v);
}

// Checks between xdp: and the services: the front's VIP maps have a fixed size.
void Parser::xdp_checks() {
    std::set<IpAddr> vips;
    for (const auto& svc : cfg.services) vips.insert(svc.vip);
    size_t v4 = 0, v6 = 0;
    for (const auto& a : vips) (a.is_v4() ? v4 : v6) += 1;
    for (const auto& [n, fam] : {std::pair{v4, "IPv4"}, std::pair{v6, "IPv6"}})
        if (n > kMaxXdpVipsPerFamily)
            d.error(cfg.xdp.where, std::string("xdp: the services have ") + std::to_string(n) + " " +
                                       fam + " VIPs; the XDP front holds at most " +
                                       std::to_string(kMaxXdpVipsPerFamily) + " per address family");
}

// Checks between ha: and the rest, once the services are known.
void Parser::ha_checks(const Field&) {
    const HaConfig& h = cfg.ha;
    for (size_t i = 0; i < h.track_services.size(); ++i) {
        const std::string& name = h.track_services[i];
        const bool known = std::any_of(cfg.services.begin(), cfg.services.end(),
                                       [&](const ServiceConfig& s) { return s.name == name; });
        if (!known) {
            std::vector<std::string_view> names;
            for (const auto& s : cfg.services) names.push_back(s.name);
            d.error(track_at[i], "ha.track_services[" + std::to_string(i) + "]: no service is named '" + printable(name) + "'" +
                            did_you_mean(name, names) + "; list names from 'services'");
        }
    }
    for (size_t i = 0; i < h.unicast_peers.size(); ++i)
        for (const auto& a : cfg.interface.addresses)
            if (a.addr == h.unicast_peers[i])
                d.error(peer_at[i], "ha.unicast_peers[" + std::to_string(i) + "]: " + h.unicast_peers[i].str() +
                                " is this balancer's own interface address; list the other "
                                "balancer's address");
    if (h.sync.enabled)
        for (const auto& a : cfg.interface.addresses)
            if (a.addr == h.sync.peer)
                d.error(sync_peer_at, "ha.sync.peer: " + h.sync.peer.str() +
                                          " is this balancer's own interface address; give the "
                                          "other balancer's address");
    // Without ha.sync.local the sync socket binds the first interface address of the peer's
    // family (the daemon): refused here rather than at start.
    if (h.sync.enabled && h.sync.local.family == Family::none &&
        std::none_of(cfg.interface.addresses.begin(), cfg.interface.addresses.end(),
                     [&](const auto& a) { return a.addr.family == h.sync.peer.family; }))
        d.error(sync_peer_at, "ha.sync.peer: " + h.sync.peer.str() + " is an IPv" +
                                  (h.sync.peer.is_v4() ? "4" : "6") +
                                  " address, and this balancer has no address of that family to send "
                                  "from: set ha.sync.local, or list one under interface.addresses");
    if (h.effective_lease() < h.advert_interval())
        d.error(lease_at, "ha.lease: " + format_duration(h.effective_lease()) +
                        " is shorter than the advert interval " +
                        format_duration(h.advert_interval()) +
                        "; fulcrumd renews the lease with every advert, so give it at least one "
                        "interval (the default is 3)");
}

void Parser::services(const Field& f, const MergedHealth& defaults) {
    if (f.value.IsNull()) {
        // "services:" with nothing after it is what a truncated file looks like; loading it
        // would drop every service. An empty balancer is written out explicitly.
        d.error(f.at, f.path + ": no services listed (is the file cut short?); list them, or write "
                               "'services: []' for a balancer with no services yet");
        return;
    }
    if (!f.value.IsSequence()) {
        d.error(f.at, f.path + ": expected a list of services (lines starting with '- '), got " +
                          describe(f.value));
        return;
    }
    std::vector<ServiceMeta> metas;
    size_t i = 0;
    for (const auto& n : f.value) {
        const Field sf = list_item(d, f, n, i);
        if (i == FL_MAX_SERVICES)
            d.error(sf.at, sf.path + ": too many services: " + std::to_string(f.value.size()) +
                               " are configured and at most " + std::to_string(FL_MAX_SERVICES) +
                               " are supported (this is the first one over the limit); split "
                               "the services across more balancers");
        ++i;
        ServiceMeta meta;
        if (auto svc = service(sf, defaults, meta)) {
            cfg.services.push_back(std::move(*svc));
            metas.push_back(std::move(meta));
        }
    }
    cross_checks(metas);
}

// Within the snapshot byte limit, the Maglev tables are within FL_MAX_TABLE_ENTRIES: the
// size check below is the only one the tables need.
static_assert(kMaxSnapshotBytes / sizeof(uint32_t) <= FL_MAX_TABLE_ENTRIES);

std::string mib_text(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return buf;
}

// Checks across services: unique names and VIPs, and the snapshot's limits.
void Parser::cross_checks(const std::vector<ServiceMeta>& metas) {
    std::map<std::string, size_t> names;
    std::map<std::tuple<IpAddr, uint16_t, uint8_t>, size_t> vips;
    size_t n_servers = 0;
    size_t n_members = 0;
    uint64_t n_entries = 0;
    bool servers_reported = false, size_reported = false;
    for (size_t i = 0; i < cfg.services.size(); ++i) {
        const ServiceConfig& s = cfg.services[i];
        const ServiceMeta& m = metas[i];
        const std::string& svc_path = m.path;
        if (m.name_ok) {
            const auto [it, fresh] = names.emplace(s.name, i);
            if (!fresh)
                d.error(m.name_at, svc_path + ".name: duplicate service name '" + s.name +
                                       "' (also used by the service at " +
                                       metas[it->second].name_at.str() +
                                       "); service names must be unique");
        }
        if (m.vip_ok && m.port_ok && m.proto_ok) {
            const auto [it, fresh] = vips.emplace(std::make_tuple(s.vip, s.port, s.proto), i);
            if (!fresh) {
                const ServiceConfig& o = cfg.services[it->second];
                const ServiceMeta& om = metas[it->second];
                std::string msg = svc_path + ".vip: conflicting VIP: ";
                msg += endpoint(s.vip, s.port) + "/" + proto_name(s.proto);
                msg += " is also used by service " + label(o, om) + " at " + om.vip_at.str();
                msg += "; give each service its own VIP, port or protocol";
                d.error(m.vip_at, msg);
            }
        }
        for (size_t j = 0; j < m.server_items.size(); ++j) {
            if (++n_servers > kMaxConfiguredServers && !servers_reported) {
                d.error(m.server_items[j],
                        item(svc_path + ".servers", j) +
                            ": too many servers: the services list more than " +
                            std::to_string(kMaxConfiguredServers) +
                            " servers in all (this is the first one over the limit); "
                            "split the services across more balancers");
                servers_reported = true;
            }
        }
        // The snapshot fulcrumd would publish, sized by the builder's own layout: every
        // configured server may be in rotation, and the server array is counted at its full
        // FL_MAX_SERVERS slots, because slots of servers removed by reloads stay in use (and
        // are reused last). A configuration within the limit can always be published.
        if (m.table_ok) n_entries += s.table_size;
        n_members += s.servers.size();
        const size_t bytes = snapshot_layout(i + 1, FL_MAX_SERVERS, n_members, n_entries).total;
        if (bytes > kMaxSnapshotBytes && !size_reported) {
            d.error(m.table_at,
                    svc_path + (m.table_explicit ? ".table_size" : "") + ": with service " +
                        label(s, m) + " (table_size " + std::to_string(s.table_size) +
                        ") the forwarding snapshot would be " + std::to_string(bytes) +
                        " bytes (" + mib_text(bytes) + "), above the limit of " +
                        std::to_string(kMaxSnapshotBytes) +
                        " bytes (the largest snapshot a control-protocol frame carries to the "
                        "dataplane); use smaller table_size values (a prime about "
                        "100 times the number of servers is enough, e.g. 1021 or 4093)");
            size_reported = true;
        }
    }
}

// Thrown by Shape to stop yaml-cpp's parser as soon as a limit is passed.
struct ShapeLimit {
    YAML::Mark mark;
    std::string message;
};

// The size and depth of the first document, from yaml-cpp's parser events, before any node
// is built. Nodes are counted with every alias as the nodes it stands for: yaml-cpp's node
// builder makes an alias share its anchor's node, but the loader reads (and copies into
// Config) every reference separately, so a few lines of nested aliases ("billion laughs")
// would cost minutes and gigabytes there. Counting stops at the first node over a limit.
class Shape final : public YAML::EventHandler {
  public:
    std::optional<YAML::Mark> start;
    size_t nodes = 0;    // aliases expanded
    size_t aliases = 0;  // alias references

    void OnDocumentStart(const YAML::Mark& m) override { start = m; }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark& m, YAML::anchor_t a) override { leaf(m, a); }
    void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t a,
                  const std::string&) override {
        leaf(m, a);
    }
    void OnAnchor(const YAML::Mark&, const std::string& name) override { pending_name_ = name; }
    void OnAlias(const YAML::Mark& m, YAML::anchor_t a) override {
        ++aliases;
        const std::string name = a < names_.size() ? names_[a] : std::string();
        const size_t n = a < sizes_.size() ? sizes_[a] : 0;
        if (n == kOpen)
            throw ShapeLimit{m, "alias '*" + printable(name) +
                                    "' refers to a list or mapping that contains it, which "
                                    "would make the configuration infinitely large; remove "
                                    "the alias"};
        count(m, n, name);
    }
    void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t a,
                         YAML::EmitterStyle::value) override {
        open(m, a);
    }
    void OnSequenceEnd() override { close(); }
    void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t a,
                    YAML::EmitterStyle::value) override {
        open(m, a);
    }
    void OnMapEnd() override { close(); }

  private:
    static constexpr size_t kOpen = std::numeric_limits<size_t>::max();

    // `n` more nodes at `m`, by an alias to `alias` when it is set.
    void count(const YAML::Mark& m, size_t n, const std::optional<std::string>& alias = {}) {
        nodes += n;  // n <= kMaxConfigNodes (a counted subtree), so no overflow
        if (!stack_.empty()) stack_.back() += n;
        if (nodes <= kMaxConfigNodes) return;
        const std::string limit = std::to_string(kMaxConfigNodes);
        if (alias)
            throw ShapeLimit{
                m, "alias '*" + printable(*alias) + "' here stands for " + std::to_string(n) +
                       " nodes and takes the configuration over the limit of " + limit +
                       " YAML nodes with aliases expanded (" + std::to_string(aliases) +
                       " aliases so far; fulcrumd reads each alias as a full copy); refer to "
                       "shared parts fewer times, or write them out"};
        if (aliases)
            throw ShapeLimit{m, "the configuration has more than " + limit +
                                    " YAML nodes (values, lists and mappings, with its " +
                                    std::to_string(aliases) +
                                    " aliases expanded); this is where the limit is passed: "
                                    "use fewer aliases, or split the services across more "
                                    "balancers"};
        throw ShapeLimit{m, "the configuration has more than " + limit +
                                " YAML nodes (values, lists and mappings); this is where the "
                                "limit is passed: split the services across more balancers"};
    }
    void name_anchor(YAML::anchor_t a, size_t size) {
        if (a == YAML::NullAnchor) return;
        if (sizes_.size() <= a) {
            sizes_.resize(a + 1, 0);
            names_.resize(a + 1);
        }
        sizes_[a] = size;
        names_[a] = std::move(pending_name_);
        pending_name_.clear();
    }
    void leaf(const YAML::Mark& m, YAML::anchor_t a) {
        name_anchor(a, 1);
        count(m, 1);
    }
    void open(const YAML::Mark& m, YAML::anchor_t a) {
        if (stack_.size() >= kMaxConfigDepth)
            throw ShapeLimit{m, "lists and mappings are nested more than " +
                                    std::to_string(kMaxConfigDepth) +
                                    " levels deep here (a configuration needs 8 at most); check "
                                    "the indentation and the brackets"};
        name_anchor(a, kOpen);
        count(m, 1);
        stack_.push_back(1);
        anchors_.push_back(a);
    }
    void close() {
        const size_t n = stack_.back();
        const YAML::anchor_t a = anchors_.back();
        stack_.pop_back();
        anchors_.pop_back();
        if (a != YAML::NullAnchor) sizes_[a] = n;
        // The container itself was counted into its parent when it opened.
        if (!stack_.empty()) stack_.back() += n - 1;
    }

    std::vector<size_t> stack_;  // nodes so far in each open list or mapping, itself included
    std::vector<YAML::anchor_t> anchors_;
    std::vector<size_t> sizes_;  // by anchor: nodes it stands for, kOpen while being read
    std::vector<std::string> names_;
    std::string pending_name_;
};

// Records where a document starts; ignores its contents.
class DocumentStart final : public YAML::EventHandler {
  public:
    std::optional<YAML::Mark> mark;

    void OnDocumentStart(const YAML::Mark& m) override { mark = m; }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

// What to suggest for a YAML syntax error at `m`.
std::string syntax_advice(std::string_view text, const YAML::Mark& m) {
    // The error is often reported on the line after the mistake: look at both.
    size_t line = 0, begin = 0;
    const auto target = static_cast<size_t>(std::max(m.line, 0));
    std::vector<std::string_view> lines;
    for (size_t i = 0; i <= text.size(); ++i) {
        if (i == text.size() || text[i] == '\n') {
            if (line + 1 >= target && line <= target)
                lines.push_back(text.substr(begin, i - begin));
            ++line;
            begin = i + 1;
        }
    }
    for (const auto l : lines) {
        const size_t indent_end = l.find_first_not_of(" \t");
        if (l.substr(0, indent_end).find('\t') != std::string_view::npos)
            return " (YAML indentation must use spaces, not tabs)";
    }
    return " (check the indentation, quotes and brackets here and on the lines just above)";
}

std::string size_text(size_t bytes) {
    return std::to_string(bytes) + " bytes, more than the limit of " +
           std::to_string(kMaxConfigBytes >> 20) +
           " MiB; a configuration this large is not supported (the largest useful one, 65535 "
           "servers each with its own health check, is well below it): check that this is the "
           "right file";
}

Config parse(std::string_view yaml_text, const std::string& filename) {
    Diag d(filename, yaml_text);
    if (yaml_text.size() > kMaxConfigBytes) {
        d.error(Location{filename, 0, 0}, "the configuration is " + size_text(yaml_text.size()));
        throw ConfigError(d.messages());
    }
    YAML::Node doc;
    try {
        // First the event parser, which builds nothing: it bounds the size and depth of the
        // document (with aliases expanded) before yaml-cpp builds nodes and the loader walks
        // them. Then one document only: yaml-cpp's LoadAll never returns on some invalid
        // input, so the documents are counted with the event parser, looking no further than
        // the second.
        std::istringstream in{std::string(yaml_text)};
        YAML::Parser parser(in);
        Shape first;
        DocumentStart second;
        try {
            parser.HandleNextDocument(first);
        } catch (const ShapeLimit& e) {
            d.error(e.mark, e.message);
            throw ConfigError(d.messages());
        }
        if (first.start && parser.HandleNextDocument(second) && second.mark) {
            if (first.start->pos == second.mark->pos) {
                // The parser is stuck on a token it cannot place (a stray ',' for example).
                const auto pos = static_cast<size_t>(std::max(second.mark->pos, 0));
                const std::string what =
                    pos < yaml_text.size()
                        ? "unexpected '" + printable(yaml_text.substr(pos, 1)) + "'"
                        : std::string("unexpected end of input");
                d.error(*second.mark,
                        "invalid YAML: " + what + syntax_advice(yaml_text, *second.mark));
                throw ConfigError(d.messages());
            }
            d.error(*second.mark,
                    "a second YAML document starts here; the configuration is a single document "
                    "(remove the '---' line, or check the indentation above)");
        }
        doc = YAML::Load(std::string(yaml_text));
    } catch (const YAML::Exception& e) {
        d.error(e.mark, "invalid YAML: " + e.msg + syntax_advice(yaml_text, e.mark));
        throw ConfigError(d.messages());
    }
    if (doc.IsNull()) {
        d.error(Location{filename, 1, 1},
                "the configuration is empty; it needs at least a 'services' list (write "
                "'services: []' for a balancer with no services yet)");
        throw ConfigError(d.messages());
    }

    Config cfg;
    cfg.path = filename;
    const Field root_f{"", doc, doc.Mark()};
    const Section root(d, root_f,
                       {"dataplane", "admin", "metrics", "limits", "interface", "ha", "xdp",
                        "health_check", "services"});
    if (!root.ok()) throw ConfigError(d.messages());

    Parser p{d, cfg, false, false, {}, {}, {}, {}};
    if (auto f = root.take("dataplane")) p.dataplane(*f);
    if (auto f = root.take("admin")) p.admin(*f);
    if (auto f = root.take("metrics")) p.metrics(*f);
    if (auto f = root.take("limits")) p.limits(*f);
    if (auto f = root.take("interface")) p.interface(*f);
    const auto ha_field = root.take("ha");
    if (ha_field) p.ha(*ha_field);
    if (auto f = root.take("xdp")) p.xdp(*f);
    MergedHealth defaults;
    if (auto f = root.take("health_check"))
        defaults = merge_health(d, defaults, read_health(d, *f));
    if (auto f = root.take("services"))
        p.services(*f, defaults);
    else
        root.missing("services",
                     "add the list of services ('services: []' for a balancer with "
                     "no services yet)");
    if (ha_field && cfg.ha.enabled) p.ha_checks(*ha_field);
    if (cfg.xdp.enabled) p.xdp_checks();

    if (!d.clean()) throw ConfigError(d.messages());
    return cfg;
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------

Config parse_config(std::string_view yaml_text, const std::string& filename) {
    try {
        return parse(yaml_text, filename);
    } catch (const ConfigError&) {
        // The nodes and copies of a large refused configuration are freed by now, but glibc
        // keeps freed memory below its heap top; a refused reload must not leave fulcrumd at
        // its peak size.
        ::malloc_trim(0);
        throw;
    }
}

Config load_config_file(const std::string& path) {
    auto fail = [&](int err) {
        throw ConfigError({"cannot read " + path + ": " +
                           std::error_code(err, std::generic_category()).message()});
    };
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(errno);
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    auto too_large = [&](size_t bytes, std::string_view qualifier) {
        throw ConfigError({path + ": the file is " + std::string(qualifier) + size_text(bytes)});
    };
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<uint64_t>(st.st_size) > kMaxConfigBytes)
        too_large(static_cast<size_t>(st.st_size), "");
    // Reading stops once past the limit: the file may have grown, or not be a regular file.
    std::string text;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail(errno);
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > kMaxConfigBytes) too_large(text.size(), "at least ");
    }
    return parse_config(text, path);
}

std::vector<std::string> config_warnings(const Config& c) {
    std::vector<std::string> out;
    for (size_t i = 0; i < c.services.size(); ++i) {
        const ServiceConfig& svc = c.services[i];
        const std::string at = (svc.where.line ? svc.where.str() : c.path) + ": warning: services[" +
                               std::to_string(i) + "] '" + svc.name + "': ";
        if (svc.servers.empty()) {
            out.push_back(at + "no servers: its traffic is dropped (no_server) until servers are added");
            continue;
        }
        const bool none_in_rotation = std::all_of(svc.servers.begin(), svc.servers.end(), [](const ServerConfig& s) {
            return s.weight == 0 || !s.enabled;
        });
        if (none_in_rotation)
            out.push_back(at + "every server is drained (weight 0) or disabled: its traffic is dropped (no_server); "
                               "give one a weight or enable it");
        const bool unchecked = std::all_of(svc.servers.begin(), svc.servers.end(), [](const ServerConfig& s) {
            return s.health.type == CheckType::none;
        });
        if (unchecked)
            out.push_back(at + "no health check (type none): a server that dies keeps receiving new connections; "
                               "use tcp, http or https");
    }
    return out;
}

}  // namespace fulcrum::control
