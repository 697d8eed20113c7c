"""The chart and the real binary agree: the commands the chart renders run.

    HELM=/path/to/helm SHOAL_BIN=/path/to/shoal python3 charts/shoal/tests/binary_contract.py

Renders the chart, then plays one node's pod life with the real `shoal`
binary on loopback, in a scratch directory standing in for the host:
the init container's `configure`, the main container's `run` with every flag
the chart passes, its probes, the postStart `configure` and the preStop
`cleanup`. Kubernetes' `$(VAR)` expansion is applied to args and env values
only, as the kubelet does (never to hook commands). Host paths are mapped into
the scratch directory; the bootstrap name becomes `localhost`, so nothing is
looked up beyond /etc/hosts and only 127.0.0.1 is dialled.
"""

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import yaml

CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELM = os.environ.get("HELM", "helm")
SHOAL_BIN = os.environ.get("SHOAL_BIN", "")
NODE_IP = "127.0.0.1"
OPERATOR_HOSTS_TOML = 'server = "https://registry-1.docker.io"\n\n[host."https://mirror.internal.example"]\n  capabilities = ["pull"]\n'


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((NODE_IP, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined variables are replaced, $$ escapes."""
    def replace(match):
        if match.group(0).startswith("$$"):
            return match.group(0)[1:]
        name = match.group(1)
        return env.get(name, match.group(0))
    return re.sub(r"\$\$?\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, text)


def container_env(container):
    env = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            self_check = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert self_check == "status.hostIP", self_check
            env[var["name"]] = NODE_IP
        else:
            env[var["name"]] = expand(var["value"], env)
    return env


def snapshot(root):
    """Every file under root, by relative path, with its bytes."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


# What an operator's own Secret (psk.existingSecret) holds: a libp2p swarm key.
OPERATOR_SWARM_KEY = b"/key/swarm/psk/1.0.0/\n/base16/\n" + b"ab" * 32 + b"\n"


class ChartAndBinaryAgree(unittest.TestCase):
    def render_pod(self, *helm_args):
        """Renders the chart on free loopback ports; keeps the pod's containers."""
        if not SHOAL_BIN or not os.access(SHOAL_BIN, os.X_OK):
            raise AssertionError("set SHOAL_BIN to a built shoal binary")
        self.ports = dict(zip(("registry", "router", "metrics"), free_ports(3)))
        out = subprocess.run(
            [HELM, "template", "shoal", CHART, "--namespace", "kube-system", *helm_args,
             "--set", ",".join(f"ports.{k}={v}" for k, v in self.ports.items())],
            check=True, capture_output=True, text=True, timeout=60).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        ds = next(d for d in docs if d["kind"] == "DaemonSet")
        pod = ds["spec"]["template"]["spec"]
        self.init = pod["initContainers"][0]
        self.main = pod["containers"][0]
        self.mounts = {m["name"]: m["mountPath"] for m in self.main["volumeMounts"] + self.init["volumeMounts"]}
        for name, path in self.mounts.items():
            if name != "containerd-config":
                os.makedirs(self.host_path(path), exist_ok=True)
        os.makedirs(self.host_path(self.init_config_path()), exist_ok=True)
        self.write_secret_volumes(pod, docs)

    def write_secret_volumes(self, pod, docs):
        """Writes Secret items where the kubelet would mount them: the rendered
        Secret's data, or for a Secret the chart only names (existingSecret) a
        valid swarm key, as an operator's Secret would hold."""
        secrets = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "Secret"}
        for volume in pod.get("volumes", []):
            source = volume.get("secret")
            if not source or volume["name"] not in self.mounts:
                continue
            data = secrets.get(source["secretName"])
            for item in source.get("items") or [{"key": k, "path": k} for k in (data or {})]:
                content = base64.b64decode(data[item["key"]]) if data else OPERATOR_SWARM_KEY
                target = os.path.join(self.host_path(self.mounts[volume["name"]]), item["path"])
                with open(target, "wb") as f:
                    f.write(content)

    def init_config_path(self):
        return next(m["mountPath"] for m in self.init["volumeMounts"] if m["name"] == "containerd-config")

    def start_node(self):
        """Starts the main container's `shoal run` and waits for its liveness probe."""
        cmd, env = self.command(self.main, self.main["args"], expand_args=True)
        self.log = open(os.path.join(self.host, "shoal.log"), "wb")  # a file: a full pipe would block shoal
        self.process = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        live = self.main["livenessProbe"]["httpGet"]
        self.wait_for(f"http://{NODE_IP}:{self.container_port(live['port'])}{live['path']}", {200})

    def container_port(self, name):
        return next(p["containerPort"] for p in self.main["ports"] if p["name"] == name)

    def setUp(self):
        self.host = tempfile.mkdtemp(prefix="shoal-pod-")
        self.addCleanup(shutil.rmtree, self.host, ignore_errors=True)
        self.process = None

    def tearDown(self):
        if self.process:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            self.log.close()

    def read_log(self):
        with open(os.path.join(self.host, "shoal.log"), encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]

    def host_path(self, path):
        """Where a path of the pod lives in the scratch host."""
        return os.path.join(self.host, path.lstrip("/"))

    def localise(self, arg):
        for path in sorted(set(self.mounts.values()), key=len, reverse=True):
            arg = arg.replace(path, self.host_path(path))
        if arg.startswith("--bootstrap-dns="):
            return "--bootstrap-dns=localhost"
        return arg

    def command(self, container, argv, expand_args):
        env = container_env(container)
        if expand_args:
            argv = [expand(a, env) for a in argv]
        argv = [self.localise(a) for a in argv]
        env = {name: self.localise(value) for name, value in env.items()}
        return [SHOAL_BIN, *argv], {**os.environ, **env}

    def run_to_end(self, container, argv, expand_args):
        cmd, env = self.command(container, argv, expand_args)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 0, f"{cmd} failed: {done.stderr}")

    def hook(self, name):
        command = self.main["lifecycle"][name]["exec"]["command"]
        self.assertEqual(command[0], "/shoal", "hooks run the image's binary")
        return command[1:]

    def wait_for(self, url, statuses, deadline=20):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            status = http_status(url)
            if status in statuses:
                return status
            self.assertIsNone(self.process.poll(), "shoal run exited: " + self.read_log())
            time.sleep(0.1)
        self.fail(f"{url} never answered {statuses}")

    def test_a_pod_life_configures_serves_and_restores_containerd(self):
        self.render_pod()
        certs = self.host_path(self.init_config_path())
        os.makedirs(os.path.join(certs, "docker.io"))
        with open(os.path.join(certs, "docker.io", "hosts.toml"), "w", encoding="utf-8") as f:
            f.write(OPERATOR_HOSTS_TOML)
        mirror = f"http://{NODE_IP}:{self.ports['registry']}"

        # Init container: containerd now tries this node's Shoal first.
        self.run_to_end(self.init, self.init["args"], expand_args=True)
        with open(os.path.join(certs, "docker.io", "hosts.toml"), encoding="utf-8") as f:
            written = f.read()
        self.assertIn(f'[host."{mirror}"]', written)
        self.assertIn('server = "https://registry-1.docker.io"', written)
        self.assertTrue(os.path.isfile(os.path.join(certs, "ghcr.io", "hosts.toml")))

        # Main container, with every flag the chart passes, and its probes.
        self.start_node()
        ready = self.main["readinessProbe"]["httpGet"]
        # No containerd here: never indexed, so not ready, but the endpoint answers.
        self.assertEqual(http_status(f"http://{NODE_IP}:{self.container_port(ready['port'])}{ready['path']}"), 503)
        self.assertEqual(http_status(f"{mirror}/v2/library/busybox/manifests/1.36?ns=docker.io"), 404)
        self.assertEqual(http_status(f"http://{NODE_IP}:{self.container_port('metrics')}/metrics"), 200)

        # postStart configures again: same files, nothing new backed up.
        before = snapshot(certs)
        self.assertIn(os.path.join(".shoal-backup", "docker.io", "hosts.toml"), before)
        self.run_to_end(self.main, self.hook("postStart"), expand_args=False)
        self.assertEqual(snapshot(certs), before)

        # preStop restores the operator's file and removes Shoal's.
        self.run_to_end(self.main, self.hook("preStop"), expand_args=False)
        with open(os.path.join(certs, "docker.io", "hosts.toml"), encoding="utf-8") as f:
            self.assertEqual(f.read(), OPERATOR_HOSTS_TOML)
        self.assertEqual(sorted(os.listdir(certs)), ["docker.io"])

        # SIGTERM: the node drains and exits cleanly.
        self.process.send_signal(signal.SIGTERM)
        self.assertEqual(self.process.wait(timeout=30), 0, self.read_log())

    def test_the_binary_accepts_every_flag_of_the_all_features_values(self):
        self.render_pod(
            "-f", os.path.join(CHART, "tests", "values-all-features.yaml"),
            "--set", "network.nodeIPFamily=IPv4",  # loopback IPv6 may be missing here
            "--set", "bootstrap.peers={/ip4/127.0.0.1/tcp/1}",  # keep dialling on loopback
        )
        self.run_to_end(self.init, self.init["args"], expand_args=True)
        certs = self.host_path(self.init_config_path())
        with open(os.path.join(certs, "_default", "hosts.toml"), encoding="utf-8") as f:
            self.assertIn(f'[host."http://{NODE_IP}:{self.ports["registry"]}"]', f.read())
        self.start_node()
        self.process.send_signal(signal.SIGTERM)
        self.assertEqual(self.process.wait(timeout=30), 0, self.read_log())


if __name__ == "__main__":
    unittest.main()
