"""Two test "hosts" on one machine: network namespaces joined by a veth pair.

Each namespace gets one end of the link with a private address (10.213.0.1 and
10.213.0.2, /24) and its own loopback, and no route anywhere else: what runs inside can
reach the other namespace and itself, nothing more. Needs root and iproute2's ``ip``.

    hosts = Hosts.create()          # raises HostsUnavailable with the reason
    try:
        cmd = hosts.wrap(0, ["python", "worker.py"])   # ip netns exec <ns0> python worker.py
    finally:
        hosts.destroy()
"""

from __future__ import annotations

import os
import shutil
import subprocess

SUBNET = "10.213.0"
ADDRESSES = (f"{SUBNET}.1", f"{SUBNET}.2")
COMMAND_TIMEOUT = 20  # seconds for any one `ip` command


class HostsUnavailable(RuntimeError):
    """This machine cannot create the namespaces (not root, no ``ip``, or the kernel refused)."""


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, ["ip", *args], done.stdout, done.stderr)
    return done.stdout


class Hosts:
    """Two network namespaces ``bk<pid>h0``/``bk<pid>h1`` linked by a veth pair."""

    def __init__(self, tag: str | None = None):
        tag = tag or f"bk{os.getpid() % 1_000_000}"
        self.namespaces = (f"{tag}h0", f"{tag}h1")
        self.links = (f"{tag}v0", f"{tag}v1")  # interface names stay under 15 characters
        self.addresses = ADDRESSES

    @classmethod
    def create(cls, tag: str | None = None) -> Hosts:
        """Make the namespaces and the link; on failure remove what was made and raise."""
        if os.geteuid() != 0:
            raise HostsUnavailable(f"network namespaces need root (`ip netns add`); running as uid {os.geteuid()}")
        if shutil.which("ip") is None:
            raise HostsUnavailable("iproute2's `ip` is not installed (apt-get install iproute2)")
        hosts = cls(tag)
        try:
            hosts._setup()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            hosts.destroy()
            detail = getattr(err, "stderr", "") or ""
            raise HostsUnavailable(f"`{' '.join(err.cmd)}` failed: {detail.strip() or err}") from err
        return hosts

    def _setup(self) -> None:
        self.destroy()  # leftovers of a killed earlier run with the same pid
        for ns in self.namespaces:
            _ip("netns", "add", ns)
        _ip("link", "add", self.links[0], "type", "veth", "peer", "name", self.links[1])
        for ns, link, address in zip(self.namespaces, self.links, self.addresses):
            _ip("link", "set", link, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", link)
            _ip("-n", ns, "link", "set", link, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def routes(self, index: int) -> str:
        """The routing table inside namespace ``index`` (only the link's subnet)."""
        return _ip("-n", self.namespaces[index], "route", "show")

    def wrap(self, index: int, cmd: list[str]) -> list[str]:
        """``cmd`` run inside namespace ``index`` (``ip netns exec`` replaces itself with it)."""
        return ["ip", "netns", "exec", self.namespaces[index], *cmd]

    def destroy(self) -> None:
        """Delete both namespaces (which deletes the veth pair); safe to call twice."""
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=COMMAND_TIMEOUT)
        # A link that never moved into a namespace is still in the root one.
        subprocess.run(["ip", "link", "del", self.links[0]], capture_output=True, timeout=COMMAND_TIMEOUT)
