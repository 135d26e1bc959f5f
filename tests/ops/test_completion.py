"""fulcrumctl's bash completion (control/dist/completion/fulcrumctl), driven in a real bash with
bash-completion loaded, against fulcrumctl --help and a running fulcrumd.

fulcrumd runs in a network namespace of its own (unshare -n: only a loopback, so its health
checks and neighbour look-ups send nothing anywhere), with its admin socket in the test's
directory and health checks off."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

from test_manpages import help_options, help_subcommands

BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
COMPLETION = "control/dist/completion/fulcrumctl"


def fulcrumctl(build):
    exe = build / "control/fulcrumctl"
    if not exe.exists():
        pytest.fail(f"{exe} is not built: run ninja -C {build} control/fulcrumctl")
    return exe


def fulcrumctl_help(build, *args):
    r = subprocess.run([str(fulcrumctl(build)), *args, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def complete(root, build, words, cwd=None):
    """COMPREPLY of _fulcrumctl for the command line `words`, the cursor at the end of the last
    word (give "" to complete a new word); returns (candidates, stderr)."""
    if not os.path.exists(BASH_COMPLETION):
        pytest.fail(f"{BASH_COMPLETION} is missing: apt-get install bash-completion")
    line = " ".join(words)
    # Readline splits the line at COMP_WORDBREAKS too ('=' and ':' are the ones that occur
    # here: --socket=PATH, ADDRESS:PORT), each run of break characters a word of its own;
    # _init_completion joins them back. Do as it does, so the completion sees what bash gives.
    comp_words = [part for w in words for part in (re.findall(r"[=:]+|[^=:]+", w) or [""])]
    script = "\n".join([
        f"source {shlex.quote(BASH_COMPLETION)}",
        f"source {shlex.quote(str(root / COMPLETION))}",
        # The same function bash would call: complete -p names it.
        'spec=$(complete -p fulcrumctl) || exit 3',
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in comp_words)})",
        f"COMP_CWORD={len(comp_words) - 1}",
        f"COMP_LINE={shlex.quote(line)}",
        f"COMP_POINT={len(line)}",
        'COMP_TYPE=9',
        'fn=${spec#*-F }; fn=${fn%% *}',
        '"$fn" fulcrumctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"',
        'printf "%s\\n" "${COMPREPLY[@]}"',
    ])
    # fulcrumctl from the build answers the completion's queries, as the installed one would.
    env = dict(os.environ, PATH=f"{build / 'control'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=60)
    assert r.returncode == 0, f"bash exited {r.returncode}: {r.stderr}"
    return [c for c in r.stdout.split("\n") if c], r.stderr


def test_completion_file_is_valid_bash(root):
    r = subprocess.run(["bash", "-n", str(root / COMPLETION)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_commands_are_fulcrumctls(root, build):
    helped = help_subcommands(fulcrumctl_help(build))
    assert len(helped) > 10, "fulcrumctl --help's commands were not found"
    offered, err = complete(root, build, ["fulcrumctl", ""])
    assert not err
    assert len(offered) == len(set(offered)), f"commands offered twice: {offered}"
    assert sorted(offered) == sorted(helped), (
        f"only offered: {sorted(set(offered) - set(helped))}; "
        f"only in --help: {sorted(set(helped) - set(offered))}")
    # After global options and their arguments, still the commands.
    offered, _ = complete(root, build, ["fulcrumctl", "--json", "-s", "/x.sock", "dr"])
    assert offered == ["drain"]


def test_global_options_are_fulcrumctls(root, build):
    offered, err = complete(root, build, ["fulcrumctl", "-"])
    assert not err
    assert sorted(offered) == sorted(help_options(fulcrumctl_help(build)))


def test_each_commands_options_are_its_help(root, build):
    problems = []
    for command in help_subcommands(fulcrumctl_help(build)):
        helped = sorted(help_options(fulcrumctl_help(build, command)))
        offered, err = complete(root, build, ["fulcrumctl", command, "-"])
        if err:
            problems.append(f"{command}: stderr {err!r}")
        if sorted(offered) != helped:
            problems.append(f"{command}: completion offers {sorted(offered)}, --help lists {helped}")
    assert not problems, "\n".join(problems)


def test_servers_options_and_ha_actions(root, build):
    offered, _ = complete(root, build, ["fulcrumctl", "servers", "--"])
    assert offered == ["--help"]
    offered, _ = complete(root, build, ["fulcrumctl", "connections", "--li"])
    assert offered == ["--limit"]
    offered, _ = complete(root, build, ["fulcrumctl", "ha", ""])
    assert sorted(offered) == ["release", "resume", "takeover"]
    # ha takes one action only.
    offered, _ = complete(root, build, ["fulcrumctl", "ha", "release", ""])
    assert offered == []


def test_nothing_and_no_noise_without_fulcrumd(root, build, tmp_path):
    missing = str(tmp_path / "no-such.sock")
    for words in (["fulcrumctl", "-s", missing, "drain", ""],
                  ["fulcrumctl", "--socket", missing, "servers", "w"],
                  ["fulcrumctl", f"--socket={missing}", "connections", "--service", ""],
                  ["fulcrumctl", "-s", missing, "drain", "web", ""]):
        offered, err = complete(root, build, words)
        assert offered == [] and err == "", f"{words}: offered {offered}, stderr {err!r}"


CONFIG = """\
dataplane: {{control_socket: {dir}/dataplane.sock}}
admin: {{socket: {dir}/admin.sock, state_file: {dir}/overrides.json}}
metrics: {{enabled: false}}
health_check: {{type: none}}
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    servers:
      - address: 198.18.1.11
      - address: 198.18.1.12
        weight: 2
  - name: db-read
    vip: 2001:db8::20
    port: 5432
    servers:
      - address: 2001:db8::21
"""


@pytest.fixture
def fulcrumd(build, tmp_path):
    """A fulcrumd in its own network namespace; yields its admin socket."""
    exe = build / "control/fulcrumd"
    if not exe.exists():
        pytest.fail(f"{exe} is not built: run ninja -C {build} control/fulcrumd")
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed to give fulcrumd a network namespace")
    cfg = tmp_path / "fulcrum.yaml"
    cfg.write_text(CONFIG.format(dir=tmp_path))
    sock = tmp_path / "admin.sock"
    log = open(tmp_path / "fulcrumd.log", "wb")
    proc = subprocess.Popen(["unshare", "-n", str(exe), "--config", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"fulcrumd exited {proc.returncode}:\n{(tmp_path / 'fulcrumd.log').read_text()}")
            if sock.exists():
                r = subprocess.run([str(fulcrumctl(build)), "-s", str(sock), "--json", "services"],
                                   capture_output=True, text=True, timeout=10)
                if r.returncode == 0 and len(json.loads(r.stdout)["services"]) == 2:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"fulcrumd did not answer on {sock} within 15 s:\n"
                            f"{(tmp_path / 'fulcrumd.log').read_text()}")
            time.sleep(0.05)  # polling interval of the bounded wait above
        yield str(sock)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_service_and_server_names_from_fulcrumd(root, build, fulcrumd, tmp_path):
    # [2001:db8::21]:5432 is also a glob pattern, which this file in the working directory
    # matches: the candidates must not be pathname-expanded.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "2:5432").touch()

    def names(*words):
        offered, err = complete(root, build, ["fulcrumctl", *words], cwd=cwd)
        assert not err, f"{words}: stderr {err!r}"
        return sorted(offered)

    assert names("-s", fulcrumd, "servers", "") == ["db-read", "web"]
    assert names("--socket", fulcrumd, "--json", "drain", "w") == ["web"]
    assert names(f"--socket={fulcrumd}", "set-weight", "") == ["db-read", "web"]
    assert names("-s", fulcrumd, "connections", "--service", "") == ["db-read", "web"]
    assert names("-s", fulcrumd, "counters", "--reset", "--service", "d") == ["db-read"]
    # drain's second argument: the service's servers, as drain takes them.
    assert names("-s", fulcrumd, "drain", "web", "") == ["198.18.1.11:80", "198.18.1.12:80"]
    assert names("-s", fulcrumd, "disable", "db-read", "") == ["[2001:db8::21]:5432"]
    assert names("-s", fulcrumd, "disable", "db-read", "[") == ["[2001:db8::21]:5432"]
    assert names("-s", fulcrumd, "enable", "web", "198.18.1.12") == ["198.18.1.12:80"]
    # After the colon, bash replaces only what follows it (a word break): the port.
    assert names("-s", fulcrumd, "enable", "web", "198.18.1.12:") == ["80"]
    assert names("-s", fulcrumd, "drain", "db-read", "[2001:db8::") == ["21]:5432"]
    # Nothing after the server, and nothing for a service fulcrumd does not know.
    assert names("-s", fulcrumd, "drain", "web", "198.18.1.11:80", "") == []
    assert names("-s", fulcrumd, "drain", "nosuch", "") == []
    # Without -s the default socket (not this test's fulcrumd) is asked: none of its names.
    assert "db-read" not in names("servers", "")


def test_installed_where_bash_completion_looks(build):
    r = subprocess.run(["meson", "introspect", "--installed", str(build)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    installed = json.loads(r.stdout)  # {source: destination}
    dests = [dst for src, dst in installed.items() if src.endswith("control/dist/completion/fulcrumctl")]
    assert len(dests) == 1, f"the completion is not installed: {installed}"
    assert dests[0].endswith("/share/bash-completion/completions/fulcrumctl"), dests[0]
