"""Nodes of a test cluster on one machine: each a network namespace with its own Docker engine.

A node is a network namespace joined to a bridge in the root namespace (one /24 per cluster),
with a ``dockerd`` of its own -- own socket, data root, exec root, pid file and an empty config
file (the machine's /etc/docker/daemon.json names the shared data root) -- started with
``nsenter --net`` (``ip netns exec`` would remount /sys and hide the cgroup mounts dockerd
needs). Containers a node's engine publishes on its address are reached from the root namespace
and from the other nodes through the bridge, like boxes on one switch. Images come from the
machine's own engine (``docker save | docker load``).

Everything is named after a short unique tag and removed by :meth:`Cluster.close`, which the
fixtures always call; a test's leftovers (after a crash) carry the tag ``aptN`` prefix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 60.0


def _run(*argv: str, check: bool = True, timeout_s: float = 60.0, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=timeout_s, **kw)


def available() -> str | None:
    """Why this machine cannot host netns nodes (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and dockerd)"
    for tool in ("ip", "nsenter", "dockerd", "docker", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def require() -> None:
    """Skip a test that needs netns nodes where this machine cannot host them -- except under CI,
    where that fails (as the browser tests do): CI machines are root with ip, nsenter and dockerd."""
    import pytest

    why = available()
    if why:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"a netns cluster {why}")


@dataclass
class Node:
    name: str
    netns: str
    address: str
    root: Path
    proc: subprocess.Popen | None = None
    veth: str = ""

    @property
    def socket(self) -> str:
        return f"unix://{self.root}/docker.sock"

    @property
    def data_dir(self) -> Path:
        return self.root / "appliance"

    def docker(self, *args: str, timeout_s: float = 120.0, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return _run("docker", *args, env={**os.environ, "DOCKER_HOST": self.socket}, timeout_s=timeout_s,
                    check=check, **kw)

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this node's network namespace."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]


@dataclass
class Cluster:
    tag: str
    subnet: str
    bridge: str
    base: Path
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def create(cls, base: Path, count: int) -> "Cluster":
        tag = "apt" + uuid.uuid4().hex[:5]
        octet = 100 + int(tag[3:], 16) % 100
        c = cls(tag=tag, subnet=f"10.{octet}.0", bridge=f"br-{tag}", base=base)
        try:
            _run("ip", "link", "add", c.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{c.subnet}.1/24", "dev", c.bridge)
            _run("ip", "link", "set", c.bridge, "up")
            # the machine's own Docker sets FORWARD to DROP, and bridged frames pass iptables: let
            # the nodes talk to each other across their bridge (removed again by close)
            _run("iptables", *c._forward_rule("-I"))
            for i in range(count):
                c.nodes.append(c._node(i))
            for n in c.nodes:
                c._wait_engine(n)
        except Exception:
            c.close()
            raise
        return c

    def _node(self, i: int) -> Node:
        ns = f"{self.tag}n{i}"
        node = Node(name=f"node{i}", netns=ns, address=f"{self.subnet}.{11 + i}", root=self.base / f"node{i}",
                    veth=f"v{self.tag}{i}")
        for d in ("data", "exec", "appliance"):
            (node.root / d).mkdir(parents=True, exist_ok=True)
        (node.root / "daemon.json").write_text("{}\n")
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", node.veth, "type", "veth", "peer", "name", f"e{self.tag}{i}")
        _run("ip", "link", "set", f"e{self.tag}{i}", "netns", ns)
        _run("ip", "link", "set", node.veth, "master", self.bridge)
        _run("ip", "link", "set", node.veth, "up")
        inside = ["ip", "netns", "exec", ns]
        _run(*inside, "ip", "link", "set", f"e{self.tag}{i}", "name", "eth0")
        _run(*inside, "ip", "addr", "add", f"{node.address}/24", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "route", "add", "default", "via", f"{self.subnet}.1")
        log = open(node.root / "dockerd.log", "wb")
        # each engine's bridge in its own namespace; a distinct range keeps logs readable
        node.proc = subprocess.Popen(
            node.command("dockerd", "--config-file", str(node.root / "daemon.json"), "--host", node.socket,
                         "--data-root", str(node.root / "data"), "--exec-root", str(node.root / "exec"),
                         "--pidfile", str(node.root / "docker.pid"), "--bip", f"172.30.{10 + i}.1/24",
                         "--storage-driver", _storage_driver(), "--log-level", "warn"),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return node

    def _wait_engine(self, node: Node) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"dockerd of {node.name} exited: {(node.root / 'dockerd.log').read_text()[-2000:]}")
            if node.docker("version", "--format", "{{.Server.Version}}", check=False, timeout_s=10).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"dockerd of {node.name} did not answer within {START_TIMEOUT_S:.0f} s")

    def load_images(self, refs: list[str]) -> None:
        """The machine engine's images into every node's engine."""
        for node in self.nodes:
            save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE)
            load = subprocess.run(["docker", "load"], stdin=save.stdout, capture_output=True, text=True,
                                  env={**os.environ, "DOCKER_HOST": node.socket}, timeout=600)
            save.stdout.close()
            save.wait(60)
            if load.returncode != 0:
                raise RuntimeError(f"docker load into {node.name}: {load.stderr[-500:]}")

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                ids = node.docker("ps", "-aq", check=False, timeout_s=30).stdout.split()
                if ids:
                    node.docker("rm", "-f", *ids, check=False, timeout_s=120)
                node.proc.terminate()
                try:
                    node.proc.wait(30)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(10)
            _run("ip", "netns", "del", node.netns, check=False)
            _run("ip", "link", "del", node.veth, check=False)
            _unmount_under(node.root)
        _run("iptables", *self._forward_rule("-D"), check=False)
        _run("ip", "link", "del", self.bridge, check=False)

    def _forward_rule(self, op: str) -> list[str]:
        return [op, "FORWARD", *(["1"] if op == "-I" else []), "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]


def _storage_driver() -> str:
    """The machine engine's storage driver (fuse-overlayfs where overlay cannot nest)."""
    res = _run("docker", "info", "--format", "{{json .Driver}}", check=False, timeout_s=30)
    try:
        return json.loads(res.stdout) or "overlay2"
    except ValueError:
        return "overlay2"


def _unmount_under(path: Path) -> None:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    targets = sorted((line.split()[1] for line in mounts if line.split()[1].startswith(str(path))), reverse=True)
    for target in targets:
        _run("umount", "-l", target, check=False)


def sweep() -> list[str]:
    """Remove what a crashed run left (every ``apt*`` namespace, link, FORWARD rule and its
    dockerd). For a person after a crash (``python3 -c 'from tests.cluster import netns;
    netns.sweep()'``); the fixtures never call it, so a concurrent run's nodes are safe."""
    done = []
    ps = _run("pgrep", "-f", "nsenter --net=/run/netns/apt", check=False).stdout.split()
    for pid in ps:
        _run("kill", pid, check=False)
        done.append(f"pid {pid}")
    time.sleep(3 if ps else 0)
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith("apt"):
            _run("ip", "netns", "del", ns, check=False)
            done.append(ns)
    for line in _run("ip", "-o", "link", check=False).stdout.splitlines():
        name = line.split(": ")[1].split("@")[0] if ": " in line else ""
        if "apt" in name:
            _run("ip", "link", "del", name, check=False)
            done.append(name)
    for rule in _run("iptables", "-S", "FORWARD", check=False).stdout.splitlines():
        if "br-apt" in rule and rule.startswith("-A "):
            _run("iptables", "-D", *rule.split()[1:], check=False)
            done.append(rule)
    return done
