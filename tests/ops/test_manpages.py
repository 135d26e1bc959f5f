"""The man pages (control/dist/man/*.scd) against the programs they describe.

Every option a program's --help prints is documented in its page's OPTIONS (for fulcrumctl:
every command, and each command's options, in COMMANDS), every option the page documents
exists in --help, and the defaults --help prints are the page's. fulcrum.yaml(5) documents
every key config.cpp accepts, and no other. The pages are built (ninja -C build) and render
without warnings.

The checker is tested too: pages with an option removed, added or with another default must
fail it."""
import json
import os
import re
import shutil
import subprocess

import pytest

MAN_DIR = "control/dist/man"

# page -> (program in the build, section)
PROGRAMS = {
    "fulcrumd": ("control/fulcrumd", "8"),
    "fulcrumctl": ("control/fulcrumctl", "8"),
    "fulcrum-dataplane": ("dataplane/app/fulcrum-dataplane", "8"),
    "fulcrum-decap": ("ebpf/tools/fulcrum-decap", "8"),
    "fulcrum-snapshot": ("dataplane/fulcrum-snapshot", "1"),
}
ALL_PAGES = [(name, sect) for name, (_, sect) in PROGRAMS.items()] + [("fulcrum.yaml", "5")]

# The sections every page has; the programs' pages have OPTIONS too.
REQUIRED_SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "EXAMPLES", "SEE ALSO"]
EXTRA_SECTIONS = {
    "fulcrumd": ["OPTIONS", "FILES", "SIGNALS"],
    "fulcrumctl": ["OPTIONS", "COMMANDS", "FILES"],
    "fulcrum-dataplane": ["OPTIONS", "FILES", "SIGNALS"],
    "fulcrum-decap": ["OPTIONS"],
    "fulcrum-snapshot": ["OPTIONS", "COMMANDS"],
    "fulcrum.yaml": ["FILES"],
}
# fulcrum.yaml(5) has no EXIT STATUS.
NOT_REQUIRED = {"fulcrum.yaml": ["EXIT STATUS"]}


# ---- --help (CLI11's layout) --------------------------------------------------------------

OPTION_LINE = re.compile(r"^  ((?:--?[A-Za-z0-9][\w-]*,)*--?[A-Za-z0-9][\w-]*)(.*)$")


def help_blocks(text):
    """{'Options': [lines], 'Subcommands': [...], 'Positionals': [...]} of a CLI11 help text."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^([A-Z][a-z]+):$", line)
        if m:
            current = m.group(1)
            blocks[current] = []
        elif current and line.strip():
            blocks[current].append(line)
        elif not line.strip():
            current = None
    return blocks


def help_options(text):
    """{option name: default or None} of every option in the Options block (short names too)."""
    out = {}
    for line in help_blocks(text).get("Options", []):
        m = OPTION_LINE.match(line)
        if not m:
            continue  # the continuation of a description
        rest = m.group(2).strip()
        # The type and default come first, as TYPE[:CHECK]=DEFAULT, before the description
        # (which starts after a run of spaces, or on the next line).
        spec = re.split(r"\s{2,}", rest)[0] if rest else ""
        d = re.search(r"(?:^|[A-Z\]}])=(\S+)", spec)
        for name in m.group(1).split(","):
            out[name] = d.group(1) if d else None
    return out


def help_subcommands(text):
    return [line.split()[0] for line in help_blocks(text).get("Subcommands", [])]


def run_help(build, program, *args):
    exe = build / PROGRAMS[program][0]
    if not exe.exists():
        if f"build {PROGRAMS[program][0]}:" not in (build / "build.ninja").read_text():
            pytest.skip(f"{program} is not part of this build configuration")
        pytest.fail(f"{exe} is not built: run ninja -C {build} {PROGRAMS[program][0]}")
    r = subprocess.run([str(exe), *args, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{exe} {' '.join(args)} --help exited {r.returncode}: {r.stderr}"
    return r.stdout


# ---- scdoc pages --------------------------------------------------------------------------

def scd_sections(text):
    """{'OPTIONS': [lines], ...} by '# ' heading; '## ' subsections stay in their section."""
    out, current = {}, None
    for line in text.splitlines():
        if line.startswith("# "):
            current = line[2:].strip()
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def scd_subsections(lines):
    """{'status': [lines], ...} by '## ' heading (the first word of the heading)."""
    out, current = {}, None
    for line in lines:
        if line.startswith("## "):
            current = line[3:].split()[0]
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def indent(line):
    return len(line) - len(line.lstrip("\t"))


def scd_terms(lines, first=re.compile(r"\*")):
    """[(term line, entry text)] of the definition entries in `lines`: a line starting (after its
    tabs) with a '*' term and the more deeply indented lines after it, whitespace collapsed."""
    out = []
    for i, line in enumerate(lines):
        if not line.strip() or not first.match(line.lstrip("\t")):
            continue
        body = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and indent(nxt) <= indent(line):
                break
            body.append(nxt.strip())
        out.append((line, " ".join(" ".join(body).split())))
    return out


def scd_options(lines):
    """{option name: entry text} of the option entries ('*-x*, *--long* _ARG_') in `lines`."""
    out = {}
    for term, text in scd_terms(lines, first=re.compile(r"\*-")):
        for name in re.findall(r"\*(--?[A-Za-z0-9][\w-]*)\*", term):
            out[name] = text
    return out


def compare_options(where, helped, documented):
    """Problems between --help's options ({name: default}) and the page's ({name: text})."""
    problems = []
    for name in sorted(set(helped) - set(documented)):
        problems.append(f"{where}: {name} is in --help but not documented in the man page")
    for name in sorted(set(documented) - set(helped)):
        problems.append(f"{where}: {name} is documented in the man page but not in --help")
    for name, default in sorted(helped.items()):
        if default is not None and name in documented and f"Default: _{default}_" not in documented[name]:
            problems.append(f"{where}: {name}: --help's default {default} is not the page's "
                            f"(the entry should say 'Default: _{default}_')")
    return problems


def check_program_page(page_text, help_text):
    """Problems of a single-command program's page."""
    return compare_options("OPTIONS", help_options(help_text),
                           scd_options(scd_sections(page_text).get("OPTIONS", [])))


def check_fulcrumctl_page(page_text, help_text, command_help):
    """Problems of fulcrumctl's page; command_help(name) is that command's --help."""
    sections = scd_sections(page_text)
    global_options = scd_options(sections.get("OPTIONS", []))
    problems = compare_options("OPTIONS", help_options(help_text), global_options)
    # Every command takes -h/--help; the global entry documents it for them all ("after a
    # command, that command's arguments and options") rather than each command repeating it.
    help_entry = {n: t for n, t in global_options.items() if n in ("-h", "--help") and "after a command" in t}
    commands = scd_subsections(sections.get("COMMANDS", []))
    helped = help_subcommands(help_text)
    for name in helped:
        if name not in commands:
            problems.append(f"COMMANDS: {name} is in --help but has no '## {name}' in the man page")
    for name in commands:
        if name not in helped:
            problems.append(f"COMMANDS: '## {name}' is in the man page but not in --help")
    for name in helped:
        if name in commands:
            problems += compare_options(f"COMMANDS {name}", help_options(command_help(name)),
                                        {**help_entry, **scd_options(commands[name])})
    return problems


def page_source(root, name, sect):
    return (root / MAN_DIR / f"{name}.{sect}.scd").read_text()


# ---- the pages against the programs -------------------------------------------------------

@pytest.mark.parametrize("program", ["fulcrumd", "fulcrum-dataplane", "fulcrum-decap"])
def test_program_options_match_help(root, build, program):
    page = page_source(root, program, PROGRAMS[program][1])
    problems = check_program_page(page, run_help(build, program))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("program", ["fulcrumctl", "fulcrum-snapshot"])
def test_commands_and_options_match_help(root, build, program):
    page = page_source(root, program, PROGRAMS[program][1])
    problems = check_fulcrumctl_page(page, run_help(build, program),
                                     lambda c: run_help(build, program, c))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name,sect", ALL_PAGES)
def test_page_has_its_sections(root, name, sect):
    sections = scd_sections(page_source(root, name, sect))
    wanted = [s for s in REQUIRED_SECTIONS if s not in NOT_REQUIRED.get(name, [])]
    missing = [s for s in wanted + EXTRA_SECTIONS[name] if s not in sections]
    assert not missing, f"{name}.{sect}.scd lacks the sections {missing}"
    assert page_source(root, name, sect).startswith(f"{name}({sect}) "), "wrong scdoc preamble"


def test_fulcrumd_signals(root):
    signals = "\n".join(scd_sections(page_source(root, "fulcrumd", "8"))["SIGNALS"])
    for sig in ("SIGHUP", "SIGTERM"):
        assert f"*{sig}*" in signals, f"fulcrumd(8) SIGNALS does not describe {sig}"
    assert "reload" in signals.lower()


# ---- fulcrum.yaml(5) against config.cpp ---------------------------------------------------

KEY_SECTIONS = ["TOP LEVEL", "DATAPLANE", "ADMIN", "METRICS", "LIMITS", "INTERFACE", "HA", "XDP",
                "HEALTH CHECKS", "SERVICES", "SERVERS"]


def config_keys(config_cpp):
    """Every key config.cpp's Section lists accept."""
    keys = set()
    for lst in re.findall(r"Section \w+\(\s*d,\s*[^,]+,\s*\{([^}]*)\}\s*\)", config_cpp):
        keys.update(re.findall(r'"([a-z0-9_]+)"', lst))
    return keys


def documented_keys(page_text):
    """The last dotted part of every key term in the reference sections of fulcrum.yaml(5)."""
    sections = scd_sections(page_text)
    keys = set()
    for s in KEY_SECTIONS:
        for term, _ in scd_terms(sections.get(s, [])):
            m = re.match(r"\*([a-z0-9_.]+)\* \(", term.lstrip("\t"))  # '*key* (type, ...)'
            if m:
                keys.add(m.group(1).split(".")[-1])
    return keys


def check_config_page(page_text, config_cpp):
    accepted, documented = config_keys(config_cpp), documented_keys(page_text)
    return ([f"key '{k}' is accepted by config.cpp but not documented" for k in sorted(accepted - documented)] +
            [f"key '{k}' is documented but config.cpp does not accept it" for k in sorted(documented - accepted)])


def test_config_page_documents_every_key(root):
    config_cpp = (root / "control/src/config.cpp").read_text()
    assert len(config_keys(config_cpp)) > 50, "config.cpp's Section lists were not found: update config_keys()"
    problems = check_config_page(page_source(root, "fulcrum.yaml", "5"), config_cpp)
    assert not problems, "\n".join(problems)


# ---- the built pages ----------------------------------------------------------------------

def render_warnings(path):
    """What man and groff say about a roff page (nothing for a clean one)."""
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat")
    out = []
    r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                       env=env, timeout=60)
    out += [f"man: {line}" for line in r.stderr.splitlines() if line.strip()]
    if r.returncode != 0:
        out.append(f"man exited {r.returncode}")
    r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(path)], capture_output=True,
                       text=True, timeout=60)
    out += [f"groff: {line}" for line in r.stderr.splitlines() if line.strip()]
    if r.returncode != 0:
        out.append(f"groff exited {r.returncode}")
    return out


@pytest.mark.parametrize("name,sect", ALL_PAGES)
def test_built_page_renders_without_warnings(root, build, name, sect):
    if name in PROGRAMS and f"build {PROGRAMS[name][0]}:" not in (build / "build.ninja").read_text():
        pytest.skip(f"{name} is not part of this build configuration")
    for tool in ("man", "groff", "scdoc"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (scripts/install-deps.sh installs it)")
    built = build / MAN_DIR / f"{name}.{sect}"
    source = root / MAN_DIR / f"{name}.{sect}.scd"
    assert built.exists(), f"{built} is missing: run ninja -C {build}"
    assert built.stat().st_mtime >= source.stat().st_mtime, f"{built} is older than its source: run ninja -C {build}"
    assert built.read_text().startswith(".\\\" Generated by scdoc"), f"{built} is not scdoc's output"
    assert f'.TH "{name}" "{sect}"' in built.read_text()
    warnings = render_warnings(built)
    assert not warnings, "\n".join(warnings)


def test_pages_are_installed_in_their_sections(build):
    r = subprocess.run(["meson", "introspect", "--installed", str(build)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    installed = json.loads(r.stdout)  # {source: destination}
    build_text = (build / "build.ninja").read_text()
    for name, sect in ALL_PAGES:
        if name in PROGRAMS and f"build {PROGRAMS[name][0]}:" not in build_text:
            continue
        dests = [d for s, d in installed.items() if s.endswith(f"{MAN_DIR}/{name}.{sect}")]
        assert len(dests) == 1, f"{name}.{sect} is not installed: {sorted(installed.values())}"
        assert dests[0].endswith(f"/man/man{sect}/{name}.{sect}"), dests[0]


# ---- the checker itself -------------------------------------------------------------------

def drop_entry(page, option):
    """The page without the definition entry whose term names `option`."""
    lines, out, skipping = page.splitlines(), [], None
    for line in lines:
        if skipping is not None:
            if not line.strip() or indent(line) > skipping:
                continue
            skipping = None
        if line.lstrip("\t").startswith("*-") and f"*{option}*" in line:
            skipping = indent(line)
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def test_checker_finds_an_undocumented_option(root, build):
    page = page_source(root, "fulcrumd", "8")
    helped = run_help(build, "fulcrumd")
    assert not check_program_page(page, helped)
    broken = drop_entry(page, "--check")
    assert "*--check*" not in scd_sections(broken)["OPTIONS"]
    assert check_program_page(broken, helped) == [
        "OPTIONS: --check is in --help but not documented in the man page"]


def test_checker_finds_an_option_the_program_lacks(root, build):
    page = page_source(root, "fulcrum-dataplane", "8")
    helped = run_help(build, "fulcrum-dataplane")
    broken = page.replace("*--promiscuous*\n", "*--promiscuous*\n\tPromiscuous.\n\n*--turbo*\n", 1)
    assert check_program_page(broken, helped) == [
        "OPTIONS: --turbo is documented in the man page but not in --help"]


def test_checker_finds_a_wrong_default(root, build):
    page = page_source(root, "fulcrum-dataplane", "8")
    helped = run_help(build, "fulcrum-dataplane")
    broken = page.replace("Default: _1048576_", "Default: _65536_", 1)
    assert broken != page
    assert check_program_page(broken, helped) == [
        "OPTIONS: --conn-capacity: --help's default 1048576 is not the page's "
        "(the entry should say 'Default: _1048576_')"]


def test_checker_finds_a_missing_command_and_command_option(root, build):
    page = page_source(root, "fulcrumctl", "8")
    helped = run_help(build, "fulcrumctl")
    command_help = lambda c: run_help(build, "fulcrumctl", c)  # noqa: E731
    # Without the lookup command's subsection and without connections' --cursor.
    sections = page.split("\n## ")
    broken = "\n## ".join(s for s in sections if not s.startswith("lookup\n"))
    broken = drop_entry(broken, "--cursor")
    problems = check_fulcrumctl_page(broken, helped, command_help)
    assert "COMMANDS: lookup is in --help but has no '## lookup' in the man page" in problems
    assert "COMMANDS connections: --cursor is in --help but not documented in the man page" in problems
    # A global option the program lacks.
    broken = page.replace("*--json*\n", "*--json*\n\tJSON.\n\n*--yaml*\n", 1)
    assert "OPTIONS: --yaml is documented in the man page but not in --help" in \
        check_fulcrumctl_page(broken, helped, command_help)


def test_checker_finds_an_undocumented_config_key(root):
    page = page_source(root, "fulcrum.yaml", "5")
    config_cpp = (root / "control/src/config.cpp").read_text()
    broken = re.sub(r"\n\*ha\.preempt_delay\*.*?\n\n", "\n", page, count=1, flags=re.S)
    assert broken != page
    assert check_config_page(broken, config_cpp) == [
        "key 'preempt_delay' is accepted by config.cpp but not documented"]
    added = config_cpp.replace('"vrid", "priority",', '"vrid", "priority", "weight_ratio",', 1)
    assert added != config_cpp
    assert check_config_page(page, added) == [
        "key 'weight_ratio' is accepted by config.cpp but not documented"]


def test_help_parser_reads_cli11_layout():
    text = ("Usage: x [OPTIONS]\n\nOptions:\n"
            "  -h,--help                   Print this help message and exit\n"
            "  -c,--config TEXT=/etc/x.yaml\n"
            "                              configuration file\n"
            "  --level TEXT:{a,b}=b        level\n"
            "  --size UINT:INT in [1 - 9]=4\n"
            "                              size (default 4; --other is not an option here)\n"
            "  --flag                      a flag\n"
            "  --state-file TEXT Excludes: --no-state-file\n"
            "                              file\n\n"
            "Subcommands:\n  run                         run it\n  stop-all                    stop\n")
    assert help_options(text) == {"-h": None, "--help": None, "-c": "/etc/x.yaml",
                                  "--config": "/etc/x.yaml", "--level": "b", "--size": "4",
                                  "--flag": None, "--state-file": None}
    assert help_subcommands(text) == ["run", "stop-all"]


def test_render_check_sees_a_broken_page(tmp_path):
    bad = tmp_path / "bad.8"
    bad.write_text('.TH "bad" "8" "2026-01-01"\n.SH NAME\nbad \\- broken\n.XQ unknown macro\n'
                   "\\f[Q]bad font escape\\fR\n")
    assert render_warnings(bad), "a page with an unknown macro and font rendered without warnings"
