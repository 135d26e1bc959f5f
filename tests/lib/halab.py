"""Two-balancer (active-passive) lab for Fulcrum's failover tests and benchmark.

    client (198.18.0.1) --+
    balancer a (198.18.0.2: fulcrum-dataplane + fulcrumd, or + keepalived) --+-- bridge
    balancer b (198.18.0.3: the same) --+
    s1, s2, s3 (198.18.0.11-13, DSR: the VIP on lo, arp_ignore / arp_announce) --+

PairLab(..., ipv6=True) makes the lab dual-stack: the client also has 2001:db8::1/64, the
balancers' fl0 has IPv6 (2001:db8::2/64, ::3 in `interface.addresses`, a link-local address
usable at once), the servers have 2001:db8::11-13/64 and the IPv6 VIP 2001:db8::100 on lo too,
and a second service ("web6") runs on the IPv6 VIP with the IPv6 servers. fulcrumd then runs
one VRRP router per family; the IPv6 one speaks from fl0's link-local address.

Each balancer runs fulcrum-dataplane on a net_af_packet uplink (eth0, hidden from its kernel
by an nftables ingress drop, as fulcrumlab.Lab does) with the TAP exception interface fl0,
which carries the uplink's MAC. Whoever holds a VIP on fl0 answers ARP for it through the
dataplane, so the MAC answering ARP for the VIP is the balancer owning it.

A balancer runs in one of two modes:
  * "fulcrum": fulcrumd with `ha:` (VRRPv3 over fl0, VIPs on fl0 only while master) and the
    dataplane with --ha-managed (inactive until fulcrumd grants the lease).
  * "keepalived": keepalived 2.2.7 (vrrp_version 3) on fl0 holds the VIPs; the dataplane runs
    standalone and fulcrumd without `ha:` only publishes the services.

Everything this module starts is stopped by PID (or by its own process group, which only it
created) and every namespace it makes is deleted in close(), also on failure. Run as root
with /usr/bin/python3.

The module is also a command-line tool run inside the client namespace:
  halab.py load ...     connection-holding load (held connections + a stream of new ones)
  halab.py capture ...  records ARP and VRRP frames with kernel timestamps (JSON lines)
"""
import argparse
import contextlib
import errno
import json
import os
import pathlib
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import fulcrumlab  # noqa: E402
from fulcrumlab import Dataplane, Process, Topology, run, sh, unique, wait_for  # noqa: E402

HALAB = pathlib.Path(__file__).resolve()
KEEPALIVED = "/usr/sbin/keepalived"

CLIENT = "198.18.0.1"
NODE_ADDR = {"a": "198.18.0.2", "b": "198.18.0.3"}
NODE_PRIORITY = {"a": 150, "b": 100}
SERVERS3 = {"s1": "198.18.0.11", "s2": "198.18.0.12", "s3": "198.18.0.13"}
VIP = "198.18.0.100"
VRID = 51
# The ARP probe of owner_of() speaks from an address and MAC nobody else uses, so its answers
# never touch the client kernel's neighbour entry for the VIP (that one must follow the
# gratuitous ARP of the new master alone).
PROBE_IP = "198.18.0.9"
PROBE_MAC = "02:00:00:00:00:99"

# The IPv6 side of a dual-stack lab (PairLab(..., ipv6=True)).
CLIENT6 = "2001:db8::1"
NODE_ADDR6 = {"a": "2001:db8::2", "b": "2001:db8::3"}
SERVERS3_6 = {"s1": "2001:db8::11", "s2": "2001:db8::12", "s3": "2001:db8::13"}
VIP6 = "2001:db8::100"
PROBE_IP6 = "2001:db8::9"
ETH_P_IPV6 = 0x86DD
ICMPV6 = 58


def web_service(servers=SERVERS3, vip=VIP, name="web", port=80):
    """A Maglev TCP service over `servers`: both balancers build the same table (same servers,
    same hash seed), so either one sends a flow to the same server, with or without sync."""
    return {"name": name, "vip": vip, "port": port, "protocol": "tcp", "scheduler": "maglev",
            "table_size": 65537, "servers": [{"address": a, "weight": 1} for a in servers.values()]}


def ha_config(node, **overrides):
    """fulcrumd's `ha:` section for balancer `node` ("a": priority 150, "b": 100)."""
    ha = {"vrid": VRID, "priority": NODE_PRIORITY[node], "advert_interval": "100ms", "preempt": True,
          "preempt_delay": "0s", "unicast_peers": [], "checksum": "pseudo_header",
          "garp": {"count": 3, "repeat_delay": "2s"}, "lease": "300ms", "track_services": []}
    ha.update(overrides)
    return ha


def is_v6(addr):
    return ":" in addr


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(b):
    return ":".join(f"{x:02x}" for x in b)


def icmpv6_checksum(src, dst, msg):
    """The ICMPv6 checksum of `msg` (its checksum field zero) between the packed addresses."""
    data = src + dst + struct.pack("!IxxxB", len(msg), ICMPV6) + msg
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def neighbour_solicitation(target, src_ip=PROBE_IP6, src_mac=PROBE_MAC):
    """An Ethernet frame: a neighbour solicitation for `target` from `src_ip` / `src_mac`
    (with its source link-layer option, so the answer comes back to `src_mac`), sent to the
    target's solicited-node multicast group as a host resolving it would."""
    t = socket.inet_pton(socket.AF_INET6, target)
    group = bytes.fromhex("ff0200000000000000000001ff") + t[13:]
    src = socket.inet_pton(socket.AF_INET6, src_ip)
    msg = struct.pack("!BBHI", 135, 0, 0, 0) + t + bytes([1, 1]) + mac_bytes(src_mac)
    msg = msg[:2] + struct.pack("!H", icmpv6_checksum(src, group, msg)) + msg[4:]
    ip = struct.pack("!IHBB", 0x60000000, len(msg), ICMPV6, 255) + src + group
    return b"\x33\x33" + group[12:] + mac_bytes(src_mac) + struct.pack("!H", ETH_P_IPV6) + ip + msg


def neighbour_advert_of(frame, target, dst_ip=PROBE_IP6):
    """The MAC that `frame` advertises for `target` (its target link-layer option, else its
    Ethernet source) when it is a neighbour advertisement for `target` sent to `dst_ip`;
    None for any other frame."""
    if len(frame) < 14 + 40 + 24 or frame[12:14] != struct.pack("!H", ETH_P_IPV6):
        return None
    ip = frame[14:]
    if ip[6] != ICMPV6 or ip[24:40] != socket.inet_pton(socket.AF_INET6, dst_ip):
        return None
    icmp = ip[40:40 + struct.unpack("!H", ip[4:6])[0]]
    if len(icmp) < 24 or icmp[0] != 136 or icmp[8:24] != socket.inet_pton(socket.AF_INET6, target):
        return None
    opts = icmp[24:]
    while len(opts) >= 8 and opts[1]:
        if opts[0] == 2:  # target link-layer address
            return mac_str(opts[2:8])
        opts = opts[opts[1] * 8:]
    return mac_str(frame[6:12])


def kill9(proc):
    """SIGKILL to a process this module started, then reaps it (bounded)."""
    if proc is None:
        return None
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.proc.wait(10)
    if proc in fulcrumlab._live_processes:
        fulcrumlab._live_processes.remove(proc)
    return proc.proc.returncode


def group_members_alive(pgid):
    """PIDs of process group `pgid` that still run (zombies excluded)."""
    alive = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(d))
    return alive


class Node:
    """One balancer: its namespace, dataplane, fulcrumd and (in keepalived mode) keepalived."""

    def __init__(self, lab, name):
        self.lab, self.name = lab, name
        self.addr = NODE_ADDR[name]
        self.workdir = lab.workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ns = lab.topo.add_host(f"lb{name}", [], ipv6=False)
        fulcrumlab.prepare_dataplane_uplink(self.ns, "eth0")
        if lab.ipv6:
            # Interfaces made from now on (fl0, by every dataplane start) skip duplicate address
            # detection, so fl0's link-local address, the source of the IPv6 adverts, is usable
            # as soon as the interface is.
            sh("echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad", netns=self.ns)
        self.mac = lab.topo.mac(f"lb{name}")
        self.dp_socket = self.workdir / "dataplane.sock"
        self.admin_socket = self.workdir / "admin.sock"
        self.state_file = self.workdir / "overrides.json"  # operator overrides: never outside the lab
        self.metrics_port = 9300 + (os.getpid() + (1 if name == "b" else 0)) % 500
        self.mode = None
        self.dataplane = None
        self.fulcrumd = None
        self.keepalived = None
        self.ha_overrides = {}
        self.config_path = None

    # ---- dataplane ----
    def start_dataplane(self, ha_managed=None):
        """Starts fulcrum-dataplane; --ha-managed in fulcrum mode unless told otherwise."""
        if ha_managed is None:
            ha_managed = self.mode == "fulcrum"
        extra = ["--no-state-file"] + (["--ha-managed"] if ha_managed else [])
        self.dataplane = Dataplane(self.workdir, ["net_af_packet0,iface=eth0,qpairs=1"], "net_af_packet0",
                                   netns=self.ns, exception="fl0", extra=extra)
        if self.dp_socket.exists() or self.dp_socket.is_symlink():
            self.dp_socket.unlink()
        self.dp_socket.symlink_to(self.dataplane.socket)
        if self.lab.ipv6:
            # fl0 is new with every start: set it up again (both are no-ops when the namespace
            # defaults already did it).
            sh("echo 0 > /proc/sys/net/ipv6/conf/fl0/accept_dad; "
               "echo 0 > /proc/sys/net/ipv6/conf/fl0/disable_ipv6", netns=self.ns)
        else:
            sh("echo 1 > /proc/sys/net/ipv6/conf/fl0/disable_ipv6", netns=self.ns)
        if self.mode != "fulcrum":
            # keepalived mode: nobody manages fl0's host address but us (fulcrumd's
            # `interface:` does it in fulcrum mode).
            run("ip", "addr", "replace", f"{self.addr}/24", "dev", "fl0", netns=self.ns)
        return self.dataplane

    def kill_dataplane(self):
        dp, self.dataplane = self.dataplane, None
        if dp:
            kill9(dp)
            fulcrumlab.remove_dpdk_runtime_dir(dp.prefix)

    def stop_dataplane(self):
        dp, self.dataplane = self.dataplane, None
        return dp.stop() if dp else 0

    def dp_health(self):
        with self.dataplane.client() as c:
            return c.health()

    # ---- fulcrumd ----
    def config(self, services=None, ha=True, ha_overrides=None, extra=None):
        cfg = {"dataplane": {"control_socket": str(self.dp_socket), "hash_seed": 7},
               "admin": {"socket": str(self.admin_socket), "state_file": str(self.state_file)},
               "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
               "health_check": {"type": "tcp", "interval": "500ms", "timeout": "300ms", "rise": 2, "fall": 2},
               "services": services or self.lab.services()}
        if ha:
            cfg["interface"] = {"name": "fl0", "addresses": [f"{self.addr}/24"] +
                                ([f"{NODE_ADDR6[self.name]}/64"] if self.lab.ipv6 else [])}
            cfg["ha"] = ha_config(self.name, **(ha_overrides or {}))
        if extra:
            cfg.update(extra)
        return cfg

    def write_config(self, cfg):
        self.config_path = self.workdir / "fulcrum.yaml"
        self.config_path.write_text(json.dumps(cfg, indent=2))
        return self.config_path

    def start_fulcrumd(self, config_path=None, wait_published=True):
        config_path = config_path or self.config_path
        if self.admin_socket.exists():  # left behind by a killed fulcrumd
            self.admin_socket.unlink()
        self.fulcrumd = Process([str(fulcrumlab.FULCRUMD), "--config", str(config_path)], netns=self.ns,
                                log=self.workdir / f"fulcrumd-{unique('')}.log")
        wait_for(lambda: self.admin_socket.exists() or not self.fulcrumd.alive(), 20, what=f"{self.name}: fulcrumd admin socket")
        if not self.fulcrumd.alive():
            raise RuntimeError(f"{self.name}: fulcrumd exited:\n{self.fulcrumd.log()}")
        if wait_published:
            wait_for(lambda: (self.admin({"command": "status"}) or {}).get("published_generation", 0) > 0, 30,
                     what=f"{self.name}: fulcrumd's first publish; log:\n{self.fulcrumd.log()}")
        return self.fulcrumd

    def kill_fulcrumd(self):
        p, self.fulcrumd = self.fulcrumd, None
        return kill9(p)

    def stop_fulcrumd(self):
        p, self.fulcrumd = self.fulcrumd, None
        return p.stop() if p else 0

    def admin(self, request, timeout=5):
        """One admin request; None when fulcrumd does not answer (not running, socket gone)."""
        try:
            return fulcrumlab.admin_request(self.admin_socket, request, timeout)
        except (OSError, ValueError):
            return None

    def ctl(self, *args):
        return run(str(fulcrumlab.FULCRUMCTL), "--socket", str(self.admin_socket), *args, netns=self.ns, check=False)

    # ---- keepalived ----
    def keepalived_config(self, advert_interval=0.1, preempt=True, priority=None, vips=None):
        vips = vips or self.lab.vips
        return "\n".join([
            "global_defs {",
            f"    router_id fulcrum_lab_{self.name}",
            "    vrrp_version 3",
            "    script_user root",
            "    enable_script_security",
            "}",
            f"vrrp_instance VI_{VRID} {{",
            "    state BACKUP",
            "    interface fl0",
            f"    virtual_router_id {VRID}",
            f"    priority {priority or NODE_PRIORITY[self.name]}",
            f"    advert_int {advert_interval:g}",
            *([] if preempt else ["    nopreempt"]),
            "    garp_master_delay 2",
            "    garp_master_repeat 3",
            "    virtual_ipaddress {",
            *[f"        {v}/32 dev fl0" for v in vips],
            "    }",
            "}", ""])

    def start_keepalived(self, **kw):
        conf = self.workdir / "keepalived.conf"
        conf.write_text(self.keepalived_config(**kw))
        d = self.workdir
        self.keepalived = Process([KEEPALIVED, "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
                                   "--vrrp", "--dont-respawn", "--use-file", str(conf),
                                   "--pid", str(d / "keepalived.pid"), "--vrrp_pid", str(d / "keepalived-vrrp.pid"),
                                   "--checkers_pid", str(d / "keepalived-checkers.pid")],
                                  netns=self.ns, log=d / f"keepalived-{unique('')}.log")
        wait_for(lambda: "Entering BACKUP STATE" in self.keepalived.log() or "Entering MASTER STATE" in
                 self.keepalived.log() or not self.keepalived.alive(), 20, what=f"{self.name}: keepalived to start")
        if not self.keepalived.alive():
            raise RuntimeError(f"{self.name}: keepalived exited:\n{self.keepalived.log()}")
        return self.keepalived

    def kill_keepalived(self):
        """SIGKILL to keepalived's whole process group (its parent and VRRP child; only this
        module's processes are in it): the VIPs stay on fl0, as after a crash."""
        p, self.keepalived = self.keepalived, None
        if p is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        rc = kill9(p)
        # The VRRP child is reparented when its parent dies and reaped by someone else: until
        # it is gone (or a zombie) a restarted keepalived finds its pid file and refuses to
        # start ("daemon is already running").
        wait_for(lambda: not group_members_alive(p.pid), 10, what=f"{self.name}: keepalived's children to die")
        for f in ("keepalived.pid", "keepalived-vrrp.pid", "keepalived-checkers.pid"):
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / f).unlink()
        return rc

    def stop_keepalived(self):
        p, self.keepalived = self.keepalived, None
        return p.stop() if p else 0

    def keepalived_state(self):
        """MASTER / BACKUP / FAULT from keepalived's log (its last "Entering ... STATE")."""
        if not self.keepalived:
            return None
        states = [l.split("Entering ")[1].split()[0] for l in self.keepalived.log().splitlines()
                  if "Entering " in l and " STATE" in l]
        return states[-1] if states else None

    # ---- the node as a whole ----
    def start(self, mode="fulcrum", ha_overrides=None, keepalived=None, wait_published=True, services=None):
        """Starts the balancer: dataplane, fulcrumd, and keepalived in keepalived mode
        (`keepalived`: keyword arguments of keepalived_config). `services`: fulcrumd's service
        list (default: the Maglev web service on every VIP)."""
        self.mode = mode
        self.ha_overrides = ha_overrides or {}
        self.start_dataplane()
        self.write_config(self.config(services=services, ha=mode == "fulcrum", ha_overrides=self.ha_overrides))
        self.start_fulcrumd(wait_published=wait_published)
        if mode == "keepalived":
            self.keepalived_kw = keepalived or {}
            self.start_keepalived(**self.keepalived_kw)
        return self

    def restart(self, wait_published=True):
        """Starts again what is not running, in the same mode and configuration."""
        if self.dataplane is None:
            self.start_dataplane()
        if self.fulcrumd is None:
            self.start_fulcrumd(wait_published=wait_published)
        if self.mode == "keepalived" and self.keepalived is None:
            self.start_keepalived(**self.keepalived_kw)

    def kill(self):
        """kill -9 of the whole balancer at once (a host or power failure): the VRRP speaker
        first, then the dataplane (its TAP and with it fl0 vanish)."""
        self.kill_keepalived()
        self.kill_fulcrumd()
        self.kill_dataplane()

    def vrrp_pids(self):
        """PIDs to signal for "the master's VRRP speaker" (fulcrumd, or keepalived's parent)."""
        p = self.keepalived if self.mode == "keepalived" else self.fulcrumd
        return p

    def stop(self):
        self.stop_keepalived()
        self.stop_fulcrumd()
        self.stop_dataplane()

    def ha(self):
        """fulcrumd's `ha` view (None when it does not answer); in keepalived mode a view of
        the same shape built from keepalived's log: {"state": "master" | "backup" | "fault"}."""
        if self.mode == "keepalived":
            st = self.keepalived_state()
            return {"state": st.lower()} if st else None
        return self.admin({"command": "ha"})

    def fl0_addresses(self):
        r = run("ip", "-j", "addr", "show", "dev", "fl0", netns=self.ns, check=False)
        if r.returncode != 0:
            return []
        return [a["local"] for i in json.loads(r.stdout or "[]") for a in i.get("addr_info", []) if "local" in a]

    def link_local(self):
        """fl0's link-local address (the source of its IPv6 adverts), or None."""
        r = run("ip", "-j", "-6", "addr", "show", "dev", "fl0", "scope", "link", netns=self.ns, check=False)
        if r.returncode != 0:
            return None
        for i in json.loads(r.stdout or "[]"):
            for a in i.get("addr_info", []):
                if a.get("local", "").startswith("fe80:") and not a.get("tentative"):
                    return a["local"]
        return None

    def source_for(self, dst):
        """The source address this balancer's kernel picks for its own traffic to `dst`."""
        r = run("ip", "-j", "route", "get", dst, netns=self.ns, check=False)
        return next((e.get("prefsrc") for e in json.loads(r.stdout or "[]")), None) if r.returncode == 0 else None

    def router_state(self, family):
        """The last state fulcrumd's log reports for its `family` (4 or 6) virtual router:
        "master", "backup" (left master, or running and never master), or None (fulcrumd not
        running, or that router not built yet). The admin `ha` view shows one router (a
        master one, else the first), so the other family's state is read here."""
        if self.fulcrumd is None:
            return None
        name = f"IPv{family}"
        state = None
        for line in self.fulcrumd.log().splitlines():
            if f"HA: {name} virtual router {VRID} on " in line:
                state = "backup"
            elif f"HA: {name} VRID {VRID} is master" in line:
                state = "master"
            elif f"HA: {name} VRID {VRID} leaves master" in line:
                state = "backup"
        return state

    def logs(self, tail=60):
        out = []
        for p in (self.fulcrumd, self.keepalived, self.dataplane):
            if p:
                text = p.log().splitlines()[-tail:]
                out.append(f"--- {self.name}: {' '.join(p.argv[4:6])} ({p.log_path})\n" + "\n".join(text))
        return "\n".join(out)


class PairLab:
    """client, two balancers (a: priority 150, b: 100) and three DSR servers on one segment."""

    def __init__(self, workdir, servers=SERVERS3, vips=(VIP,), tag="ha", ipv6=False, servers6=SERVERS3_6,
                 vips6=(VIP6,)):
        """`ipv6`: dual-stack (see the module's doc): `servers6` (by the same names as
        `servers`) and `vips6` as well; `vips` may then be empty (an IPv6-only service set)."""
        self.workdir = pathlib.Path(workdir)
        self.ipv6 = ipv6
        self.servers = dict(servers)
        self.vips = list(vips)
        self.servers6 = dict(servers6) if ipv6 else {}
        self.vips6 = list(vips6) if ipv6 else []
        self.backends = {}
        self.nodes = {}
        self.loads = []
        self.captures = []
        self.topo = Topology(tag)
        try:
            self.client = self.topo.add_host("client", [f"{CLIENT}/24"] + ([f"{CLIENT6}/64"] if ipv6 else []),
                                             ipv6=ipv6)
            self.client_mac = self.topo.mac("client")
            for name in ("a", "b"):
                self.nodes[name] = Node(self, name)
            for name, addr in self.servers.items():
                if ipv6:
                    self.add_dsr_server6(name, addr, self.servers6[name])
                else:
                    fulcrumlab.add_dsr_server(self.topo, name, addr, self.vips)
                self.start_backend(name)
        except BaseException:
            self.close()
            raise

    @property
    def a(self):
        return self.nodes["a"]

    @property
    def b(self):
        return self.nodes["b"]

    def other(self, node):
        return self.b if node is self.a else self.a

    def services(self):
        """fulcrumd's default service list: the Maglev web service on every VIP ("web" on the
        IPv4 ones, "web6" on the IPv6 ones, over the servers of the VIP's family)."""
        return ([web_service(self.servers, v) for v in self.vips] +
                [web_service(self.servers6, v, name="web6") for v in self.vips6])

    def add_dsr_server6(self, name, addr, addr6):
        """fulcrumlab.add_dsr_server, dual-stack: the IPv6 address too, and the IPv6 VIPs on lo
        as /128. Nothing more is needed for neighbour discovery: Linux answers a solicitation
        only for an address of the interface it arrived on, and lo's are not eth0's."""
        ns = self.topo.add_host(name, [f"{addr}/24", f"{addr6}/64"], ipv6=True)
        for vip in self.vips:
            run("ip", "addr", "add", f"{vip}/32", "dev", "lo", netns=ns)
        for vip in self.vips6:
            run("ip", "addr", "add", f"{vip}/128", "dev", "lo", "nodad", netns=ns)
        for k, v in (("arp_ignore", 1), ("arp_announce", 2)):
            for dev in ("all", "eth0"):
                sh(f"echo {v} > /proc/sys/net/ipv4/conf/{dev}/{k}", netns=ns)
        return ns

    def start_backend(self, name):
        p = Process(["/usr/bin/python3", str(fulcrumlab.TESTSERVER), name, "--tcp", "80", "--http", "8080"] +
                    (["--ipv6"] if self.ipv6 else []),
                    netns=self.topo.ns(name), log=self.workdir / f"{name}.log")
        wait_for(lambda: "ready" in p.log(), 15, what=f"test server {name}")
        self.backends[name] = p

    # ---- who owns the VIP ----
    def node_of_mac(self, mac):
        for n in self.nodes.values():
            if n.mac == mac:
                return n.name
        return mac

    def owner_of(self, vip=VIP, window=0.4, requests=2):
        """Every balancer answering ARP (IPv6: neighbour solicitations) for `vip`, as the
        client segment sees it: a set of node names ("a", "b"; an unknown MAC as itself).
        Empty: nobody answers; two: split brain. The probe uses its own sender address and MAC
        (PROBE_IP / PROBE_IP6, PROBE_MAC, nobody else's), so the answers go to the probe and
        the client kernel's ARP / neighbour entry for the VIP follows the gratuitous ARP /
        unsolicited advertisements alone."""
        if is_v6(vip):
            ethertype, req = ETH_P_IPV6, neighbour_solicitation(vip)
            answer_of = lambda fr: neighbour_advert_of(fr, vip)  # noqa: E731
        else:
            ethertype = 0x0806
            req = (b"\xff" * 6 + mac_bytes(PROBE_MAC) + b"\x08\x06" +
                   struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_bytes(PROBE_MAC) + socket.inet_aton(PROBE_IP) +
                   b"\0" * 6 + socket.inet_aton(vip))

            def answer_of(fr):
                if len(fr) < 42 or fr[12:14] != b"\x08\x06" or struct.unpack("!H", fr[20:22])[0] != 2:
                    return None
                if fr[28:32] == socket.inet_aton(vip) and fr[38:42] == socket.inet_aton(PROBE_IP):
                    return mac_str(fr[22:28])
                return None
        with fulcrumlab.in_netns(self.client):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        try:
            s.bind(("eth0", ethertype))
            seen = set()
            end = time.monotonic() + window
            next_send, sent = time.monotonic(), 0
            while (now := time.monotonic()) < end:
                if sent < requests and now >= next_send:
                    s.send(req)
                    sent += 1
                    next_send = now + window / (requests + 1)
                s.settimeout(max(0.001, min(end, next_send if sent < requests else end) - now))
                try:
                    fr = s.recv(2048)
                except socket.timeout:
                    continue
                mac = answer_of(fr)
                if mac:
                    seen.add(self.node_of_mac(mac))
            return seen
        finally:
            s.close()

    def arp_answers(self, duration, every=0.01, vip=VIP):
        """Asks for `vip` every `every` seconds for `duration` seconds from the probe address;
        returns every answer as (time.time(), node name), in order."""
        with fulcrumlab.in_netns(self.client):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        try:
            s.bind(("eth0", 0x0806))
            req = (b"\xff" * 6 + mac_bytes(PROBE_MAC) + b"\x08\x06" +
                   struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac_bytes(PROBE_MAC) + socket.inet_aton(PROBE_IP) +
                   b"\0" * 6 + socket.inet_aton(vip))
            out = []
            end = time.monotonic() + duration
            next_send = time.monotonic()
            while (now := time.monotonic()) < end:
                if now >= next_send:
                    s.send(req)
                    next_send = now + every
                s.settimeout(max(0.001, min(end, next_send) - now))
                try:
                    fr = s.recv(2048)
                except socket.timeout:
                    continue
                if len(fr) >= 42 and fr[12:14] == b"\x08\x06" and struct.unpack("!H", fr[20:22])[0] == 2 \
                        and fr[28:32] == socket.inet_aton(vip) and fr[38:42] == socket.inet_aton(PROBE_IP):
                    out.append((time.time(), self.node_of_mac(mac_str(fr[22:28]))))
            return out
        finally:
            s.close()

    def wait_owner(self, expected, vip=VIP, timeout=15):
        """Waits until exactly the balancers `expected` (a set of names) answer for the VIP."""
        last = []

        def check():
            o = self.owner_of(vip)
            last[:] = [o]
            return o == set(expected)
        try:
            wait_for(check, timeout, 0.05, what=f"owner of {vip} to be {sorted(expected)}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen {last}\n{self.logs()}") from None
        return True

    def client_neigh(self, vip=VIP):
        """The MAC the client kernel's ARP / neighbour cache holds for `vip` (as a node
        name), or None."""
        r = run("ip", "-j", "neigh", "show", vip, "dev", "eth0", netns=self.client, check=False)
        for e in json.loads(r.stdout or "[]"):
            if e.get("lladdr"):
                return self.node_of_mac(e["lladdr"])
        return None

    # ---- HA state ----
    def ha_state(self, node):
        node = self.nodes[node] if isinstance(node, str) else node
        h = node.ha()
        return h.get("state") if h else None

    def wait_state(self, node, state, timeout=20):
        node = self.nodes[node] if isinstance(node, str) else node
        last = []

        def check():
            h = node.ha()
            last[:] = [h]
            return h and h.get("state") == state
        try:
            wait_for(check, timeout, 0.05, what=f"{node.name} to be {state}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen {last}\n{self.logs()}") from None

    # ---- helpers run in the client namespace ----
    def start_load(self, conns=300, duration=30.0, interval=0.1, new_rate=20.0, timeout=10.0, port=80, vip=VIP):
        out = self.workdir / f"{unique('load')}.json"
        p = Process(["/usr/bin/python3", str(HALAB), "load", "--vip", vip, "--port", str(port), "--conns", str(conns),
                     "--duration", str(duration), "--interval", str(interval), "--new-rate", str(new_rate),
                     "--timeout", str(timeout), "--out", str(out)],
                    netns=self.client, log=out.with_suffix(".log"))
        p.out = out
        p.deadline = time.monotonic() + duration + 60
        self.loads.append(p)
        wait_for(lambda: "ready" in p.log() or not p.alive(), 60, 0.05, what="the load's connections")
        if "ready" not in p.log():
            raise RuntimeError(f"the load could not start:\n{p.log()}")
        return p

    def load_result(self, p):
        """Waits for the load to end by itself (bounded) and returns its report."""
        try:
            p.proc.wait(max(1, p.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.stop()
            raise AssertionError(f"the load did not stop by itself:\n{p.log()}")
        if p in fulcrumlab._live_processes:
            fulcrumlab._live_processes.remove(p)
        if p.proc.returncode != 0 or not p.out.exists():
            raise AssertionError(f"the load failed ({p.proc.returncode}):\n{p.log()}")
        return json.loads(p.out.read_text())

    def start_capture(self, duration=120.0):
        out = self.workdir / f"{unique('cap')}.jsonl"
        p = Process(["/usr/bin/python3", str(HALAB), "capture", "--iface", "eth0", "--duration", str(duration),
                     "--out", str(out)], netns=self.client, log=out.with_suffix(".log"))
        p.out = out
        self.captures.append(p)
        wait_for(lambda: out.exists() or not p.alive(), 10, 0.02, what="the capture to start")
        if not p.alive():
            raise RuntimeError(f"the capture could not start:\n{p.log()}")
        return p

    @staticmethod
    def captured(p):
        """The frames a capture has recorded so far (list of dicts)."""
        try:
            text = p.out.read_text()
        except OSError:
            return []
        return [json.loads(l) for l in text.splitlines() if l.endswith("}")]

    def logs(self, tail=40):
        return "\n".join(n.logs(tail) for n in self.nodes.values())

    def close(self):
        for p in self.loads + self.captures:
            with contextlib.suppress(Exception):
                p.stop(5)
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                n.stop_keepalived()
            with contextlib.suppress(Exception):
                n.stop_fulcrumd()
            with contextlib.suppress(Exception):
                n.stop_dataplane()
        for name in list(self.backends):
            with contextlib.suppress(Exception):
                self.backends.pop(name).stop()
        self.topo.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- connection-holding load (run in the client namespace) -------------------------------

class _Held:
    __slots__ = ("i", "sock", "buf", "server", "state", "seq", "sent_at", "next_send", "last_ok", "max_gap",
                 "gap_from", "gap_to", "broken", "broken_at", "exchanges")

    def __init__(self, i, sock):
        self.i, self.sock, self.buf = i, sock, b""
        self.server, self.state, self.seq = None, "connecting", 0
        self.sent_at = self.next_send = self.last_ok = 0.0
        self.max_gap, self.gap_from, self.gap_to = 0.0, 0.0, 0.0
        self.broken = self.broken_at = None
        self.exchanges = 0


class _New:
    __slots__ = ("sock", "buf", "state", "start", "server")

    def __init__(self, sock, start):
        self.sock, self.buf, self.state, self.start, self.server = sock, b"", "connecting", start, None


def _nb_connect(addr):
    s = socket.socket(socket.AF_INET6 if is_v6(addr[0]) else socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(err, os.strerror(err))
    return s


def _reason(e):
    if isinstance(e, ConnectionResetError) or getattr(e, "errno", None) == errno.ECONNRESET:
        return "reset"
    if getattr(e, "errno", None) == errno.ECONNREFUSED:
        return "refused"
    if getattr(e, "errno", None) in (errno.ETIMEDOUT, errno.EHOSTUNREACH):
        return "timeout"
    return f"error:{getattr(e, 'errno', None) or type(e).__name__}"


def run_load(a):
    """Holds `conns` connections to the VIP, each sending a numbered line every `interval` and
    checking its echo (one request in flight per connection), and opens `new_rate` new
    connections a second (name line, one echo, close). One thread, one selector. Stops after
    `duration` seconds of exchanges (or on SIGTERM) and writes its report to `out`."""
    addr = (a.vip, a.port)
    sel = selectors.DefaultSelector()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    held = []
    setup_failed = {}

    def fail(h, reason, now):
        if h.broken is None:
            h.broken, h.broken_at = reason, now
            with contextlib.suppress(Exception):
                sel.unregister(h.sock)
            h.sock.close()

    # Phase 1: open the held connections (at most 64 connecting at once) and read the names.
    setup_deadline = time.monotonic() + a.setup_timeout
    pending = list(range(a.conns))
    connecting = 0
    ready = 0
    while (pending or connecting) and time.monotonic() < setup_deadline and not stop:
        while pending and connecting < 64:
            i = pending.pop(0)
            try:
                h = _Held(i, _nb_connect(addr))
            except OSError as e:
                setup_failed[_reason(e)] = setup_failed.get(_reason(e), 0) + 1
                continue
            held.append(h)
            sel.register(h.sock, selectors.EVENT_WRITE, h)
            connecting += 1
        for key, ev in sel.select(0.05):
            h = key.data
            now = time.monotonic()
            if h.state == "connecting":
                err = h.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    connecting -= 1
                    fail(h, "setup:" + _reason(OSError(err, "")), now)
                    continue
                h.state = "hello"
                sel.modify(h.sock, selectors.EVENT_READ, h)
                continue
            try:
                data = h.sock.recv(4096)
            except OSError as e:
                connecting -= 1
                fail(h, "setup:" + _reason(e), now)
                continue
            if not data:
                connecting -= 1
                fail(h, "setup:closed", now)
                continue
            h.buf += data
            if b"\n" in h.buf:
                line, _, h.buf = h.buf.partition(b"\n")
                h.server = line.decode(errors="replace")
                h.state = "idle"
                connecting -= 1
                ready += 1
    for h in held:
        if h.state != "idle" and h.broken is None:
            fail(h, "setup:timeout", time.monotonic())
    for h in held:
        if h.broken is not None:
            r = h.broken
            setup_failed[r] = setup_failed.get(r, 0) + 1
    held = [h for h in held if h.broken is None]
    t0 = time.monotonic()
    print(f"ready {len(held)} held connections ({setup_failed or 'none failed'})", flush=True)
    for k, h in enumerate(held):  # spread the sends over one interval
        h.next_send = t0 + a.interval * k / max(1, len(held))
        h.last_ok = t0

    # Phase 2: exchanges on the held connections plus the stream of new connections.
    end = t0 + a.duration
    new_conns, new_done = [], []
    next_new = t0
    while not stop:
        now = time.monotonic()
        if now >= end:
            break
        # Due sends and timeouts (a scan of a few hundred entries every few ms is cheap).
        wake = end
        for h in held:
            if h.broken is not None:
                continue
            if h.state == "idle":
                if now >= h.next_send:
                    h.seq += 1
                    try:
                        h.sock.send(f"{h.i}:{h.seq}\n".encode())
                    except OSError as e:
                        fail(h, _reason(e), now)
                        continue
                    h.state, h.sent_at = "wait", now
                    wake = min(wake, now + a.timeout)
                else:
                    wake = min(wake, h.next_send)
            elif h.state == "wait":
                if now - h.sent_at > a.timeout:
                    fail(h, "timeout", now)
                else:
                    wake = min(wake, h.sent_at + a.timeout)
        if a.new_rate > 0:
            while now >= next_new and len(new_conns) < 512:
                next_new += 1.0 / a.new_rate
                try:
                    n = _New(_nb_connect(addr), now)
                except OSError as e:
                    new_done.append((now, now, _reason(e), None))
                    continue
                new_conns.append(n)
                sel.register(n.sock, selectors.EVENT_WRITE, n)
            wake = min(wake, next_new)
            for n in [n for n in new_conns if now - n.start > a.timeout]:
                new_conns.remove(n)
                sel.unregister(n.sock)
                n.sock.close()
                new_done.append((n.start, now, "timeout", None))
        for key, ev in sel.select(max(0.0, min(wake, end) - time.monotonic())):
            obj = key.data
            now = time.monotonic()
            if isinstance(obj, _Held):
                h = obj
                if h.broken is not None:
                    continue
                try:
                    data = h.sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(h, _reason(e), now)
                    continue
                if not data:
                    fail(h, "closed", now)
                    continue
                h.buf += data
                if b"\n" not in h.buf:
                    continue
                line, _, h.buf = h.buf.partition(b"\n")
                if h.state != "wait" or line != f"{h.i}:{h.seq}".encode() or h.buf:
                    fail(h, "mismatch", now)
                    continue
                gap = now - h.last_ok
                if gap > h.max_gap:
                    h.max_gap, h.gap_from, h.gap_to = gap, h.last_ok, now
                h.last_ok = now
                h.exchanges += 1
                h.state = "idle"
                h.next_send = max(h.sent_at + a.interval, now)
            else:
                n = obj
                try:
                    if n.state == "connecting":
                        err = n.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, os.strerror(err))
                        n.state = "hello"
                        sel.modify(n.sock, selectors.EVENT_READ, n)
                        continue
                    data = n.sock.recv(4096)
                    if not data:
                        raise EOFError
                    n.buf += data
                    if b"\n" not in n.buf:
                        continue
                    line, _, n.buf = n.buf.partition(b"\n")
                    if n.state == "hello":
                        n.server = line.decode(errors="replace")
                        n.state = "echo"
                        n.sock.send(b"new\n")
                        continue
                    result = "ok" if line == b"new" else "mismatch"
                except BlockingIOError:
                    continue
                except EOFError:
                    result = "closed"
                except OSError as e:
                    result = _reason(e)
                new_conns.remove(n)
                sel.unregister(n.sock)
                n.sock.close()
                new_done.append((n.start, now, result, n.server))
    t1 = time.monotonic()
    for n in new_conns:
        new_done.append((n.start, t1, "unfinished", n.server))
        n.sock.close()
    for h in held:
        if h.broken is None:
            # A connection still waiting at the end: its gap so far counts too.
            if t1 - h.last_ok > h.max_gap:
                h.max_gap, h.gap_from, h.gap_to = t1 - h.last_ok, h.last_ok, t1
            h.sock.close()

    # Report.
    ok_times = sorted(e for s, e, r, _ in new_done if r == "ok")
    new_gap, new_gap_at = 0.0, [t0, t0]
    prev = t0
    for t in ok_times + [t1]:
        if t - prev > new_gap:
            new_gap, new_gap_at = t - prev, [prev, t]
        prev = t
    failures = {}
    for s, e, r, _ in new_done:
        if r not in ("ok", "unfinished"):
            failures[r] = failures.get(r, 0) + 1
    worst = sorted(held, key=lambda h: -h.max_gap)
    per_server = {}
    for h in held:
        per_server[h.server] = per_server.get(h.server, 0) + 1
    report = {
        "vip": a.vip, "port": a.port, "interval_s": a.interval, "duration_s": round(t1 - t0, 3), "t0": t0, "t1": t1,
        "held": {"requested": a.conns, "established": len(held), "setup_failed": setup_failed,
                 "per_server": per_server, "exchanges": sum(h.exchanges for h in held),
                 "broken": [{"id": h.i, "server": h.server, "reason": h.broken, "at": h.broken_at}
                            for h in held if h.broken is not None],
                 "max_gap_ms": round(worst[0].max_gap * 1000, 1) if worst else None,
                 # The earliest last answered exchange of a connection that did not break: after
                 # an event at time T, last_ok_min > T says every survivor exchanged data since.
                 "last_ok_min": min((h.last_ok for h in held if h.broken is None), default=None),
                 "worst": [{"id": h.i, "server": h.server, "gap_ms": round(h.max_gap * 1000, 1),
                            "from": h.gap_from, "to": h.gap_to} for h in worst[:5]]},
        "new": {"attempted": len(new_done), "ok": len(ok_times), "failed": failures,
                "max_gap_ms": round(new_gap * 1000, 1), "max_gap_at": new_gap_at,
                "connections": [[round(s, 4), round(e, 4), r, srv] for s, e, r, srv in new_done]},
    }
    pathlib.Path(a.out).write_text(json.dumps(report))
    print(f"done: {len(held)} held, {len(report['held']['broken'])} broken, max gap {report['held']['max_gap_ms']} ms; "
          f"new {len(ok_times)}/{len(new_done)} ok", flush=True)


# ---- capture of ARP and VRRP (run in the client namespace) -------------------------------

SO_TIMESTAMPNS = 35
ETH_P_ALL = 0x0003


def run_capture(a):
    """Writes one JSON line per ARP frame and VRRP advert seen on `iface`, with the kernel's
    receive time (CLOCK_REALTIME, SO_TIMESTAMPNS) as "t". IPv6: VRRP adverts as kind "vrrp6"
    ("ttl" is the hop limit) and neighbour advertisements as kind "na"."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.iface, ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    end = time.monotonic() + a.duration
    with open(a.out, "w") as out:
        out.flush()
        while not stop and time.monotonic() < end:
            s.settimeout(max(0.01, min(0.5, end - time.monotonic())))
            try:
                fr, anc, _, _ = s.recvmsg(2048, 64)
            except socket.timeout:
                continue
            except InterruptedError:
                continue
            t = time.time()
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack("qq", data[:16])
                    t = sec + nsec / 1e9
            if len(fr) < 14:
                continue
            etype = fr[12:14]
            rec = None
            if etype == b"\x08\x06" and len(fr) >= 42:
                rec = {"t": t, "kind": "arp", "src_mac": mac_str(fr[6:12]), "dst_mac": mac_str(fr[0:6]),
                       "op": struct.unpack("!H", fr[20:22])[0], "hwsrc": mac_str(fr[22:28]),
                       "psrc": socket.inet_ntoa(fr[28:32]), "pdst": socket.inet_ntoa(fr[38:42])}
                rec["gratuitous"] = rec["psrc"] == rec["pdst"]
            elif etype == b"\x08\x00" and len(fr) >= 34 and fr[23] == 112:
                ihl = (fr[14] & 0x0F) * 4
                v = fr[14 + ihl:]
                if len(v) >= 8:
                    rec = {"t": t, "kind": "vrrp", "src_mac": mac_str(fr[6:12]), "src": socket.inet_ntoa(fr[26:30]),
                           "dst": socket.inet_ntoa(fr[30:34]), "ttl": fr[22], "version": v[0] >> 4, "vrid": v[1],
                           "priority": v[2], "count": v[3], "interval_cs": struct.unpack("!H", v[4:6])[0] & 0x0FFF}
            elif etype == struct.pack("!H", ETH_P_IPV6) and len(fr) >= 14 + 40 + 8:
                ip = fr[14:]
                src, dst = socket.inet_ntop(socket.AF_INET6, ip[8:24]), socket.inet_ntop(socket.AF_INET6, ip[24:40])
                v = ip[40:40 + struct.unpack("!H", ip[4:6])[0]]
                if ip[6] == 112 and len(v) >= 8:
                    rec = {"t": t, "kind": "vrrp6", "src_mac": mac_str(fr[6:12]), "src": src, "dst": dst,
                           "ttl": ip[7], "version": v[0] >> 4, "vrid": v[1], "priority": v[2], "count": v[3],
                           "interval_cs": struct.unpack("!H", v[4:6])[0] & 0x0FFF}
                elif ip[6] == ICMPV6 and len(v) >= 24 and v[0] == 136:
                    rec = {"t": t, "kind": "na", "src_mac": mac_str(fr[6:12]), "src": src, "dst": dst,
                           "hop_limit": ip[7], "target": socket.inet_ntop(socket.AF_INET6, v[8:24]),
                           "solicited": bool(v[4] & 0x40), "override": bool(v[4] & 0x20),
                           "tlla": mac_str(v[26:32]) if len(v) >= 32 and v[24] == 2 else None}
            if rec:
                out.write(json.dumps(rec) + "\n")
                out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load", help="connection-holding load (run in the client namespace)")
    lp.add_argument("--vip", default=VIP)
    lp.add_argument("--port", type=int, default=80)
    lp.add_argument("--conns", type=int, default=300)
    lp.add_argument("--duration", type=float, default=30.0, help="seconds of exchanges after set-up")
    lp.add_argument("--interval", type=float, default=0.1, help="seconds between exchanges per connection")
    lp.add_argument("--new-rate", type=float, default=20.0, help="new connections per second (0: none)")
    lp.add_argument("--timeout", type=float, default=10.0, help="an exchange unanswered this long breaks it")
    lp.add_argument("--setup-timeout", type=float, default=30.0)
    lp.add_argument("--out", required=True)
    cp = sub.add_parser("capture", help="ARP and VRRP capture (run in the client namespace)")
    cp.add_argument("--iface", default="eth0")
    cp.add_argument("--duration", type=float, default=120.0)
    cp.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.duration <= 0 or a.duration > 3600:
        ap.error("--duration must be in (0, 3600] seconds")
    {"load": run_load, "capture": run_capture}[a.cmd](a)


if __name__ == "__main__":
    main()
