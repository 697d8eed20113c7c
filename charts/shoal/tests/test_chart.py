"""Tests of the Shoal chart's rendered manifests, run with the real `helm`.

    HELM=/path/to/helm python3 -m unittest discover -s charts/shoal/tests -v

They check what a template mistake would break on a real node: the address
containerd is given matches the address Shoal binds, the node IP comes from the
downward API, the privileges are the documented ones, the monitoring objects
carry the exact rule and dashboard files, and the schema rejects bad values.
"""

import base64
import json
import os
import re
import subprocess
import unittest

import yaml

CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELM = os.environ.get("HELM", "helm")
RELEASE = "shoal"
NAMESPACE = "kube-system"


def helm_template(*args):
    """Renders the chart; returns (returncode, stdout, stderr)."""
    cmd = [HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def render(*args):
    code, out, err = helm_template(*args)
    if code != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed: {err}")
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs, kind):
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def flag(args, name):
    """The value of `--name=value` in an argument list, or None."""
    prefix = f"--{name}="
    values = [arg[len(prefix):] for arg in args if arg.startswith(prefix)]
    assert len(values) <= 1, f"--{name} given {len(values)} times"
    return values[0] if values else None


def env(container):
    """A container's literal env values by name."""
    return {var["name"]: var.get("value") for var in container.get("env", [])}


def containers(docs):
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    return pod, init, main


def read(path):
    with open(os.path.join(CHART, path), encoding="utf-8") as f:
        return f.read()


class DefaultValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render()
        cls.pod, cls.init, cls.main = containers(cls.docs)

    def test_renders_the_core_objects_and_no_operator_objects(self):
        kinds = sorted(doc["kind"] for doc in self.docs)
        self.assertEqual(kinds, ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"])
        for doc in self.docs:
            self.assertEqual(doc["metadata"]["namespace"], NAMESPACE)

    def test_runs_on_every_node_and_is_node_critical(self):
        ds = one(self.docs, "DaemonSet")
        self.assertEqual(self.pod["tolerations"], [{"operator": "Exists"}])
        self.assertEqual(self.pod["priorityClassName"], "system-node-critical")
        strategy = ds["spec"]["updateStrategy"]
        self.assertEqual(strategy["type"], "RollingUpdate")
        self.assertEqual(strategy["rollingUpdate"], {"maxUnavailable": 1, "maxSurge": 0})
        self.assertEqual(ds["spec"]["selector"]["matchLabels"].items() - ds["spec"]["template"]["metadata"]["labels"].items(), set())

    def test_host_network_binds_the_node_ip_from_the_downward_api(self):
        self.assertIs(self.pod["hostNetwork"], True)
        self.assertEqual(self.pod["dnsPolicy"], "ClusterFirstWithHostNet")
        node_ip = {"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
        for container in (self.init, self.main):
            # First: Kubernetes expands $(NODE_IP) only from variables defined before.
            self.assertEqual(container["env"][0], node_ip)
        args = self.main["args"]
        self.assertEqual(args[0], "run")
        self.assertEqual(flag(args, "registry-addr"), "$(NODE_IP):5000")
        self.assertEqual(flag(args, "router-addr"), "$(NODE_IP):5001")
        self.assertEqual(flag(args, "metrics-addr"), "$(NODE_IP):9090")

    def test_containerd_is_pointed_at_the_address_shoal_binds(self):
        self.assertEqual(self.init["args"][0], "configure")
        for container in (self.init, self.main):
            target = env(container)["SHOAL_MIRROR_TARGETS"]
            self.assertEqual(target, "http://" + flag(self.main["args"], "registry-addr"))
        self.assertIsNone(flag(self.init["args"], "mirror-targets"), "the target comes from the env only")
        self.assertEqual(
            flag(self.init["args"], "mirrored-registries"), flag(self.main["args"], "mirrored-registries")
        )
        self.assertIn("https://docker.io", flag(self.init["args"], "mirrored-registries").split(","))
        self.assertEqual(flag(self.init["args"], "containerd-config-path"), "/etc/containerd/certs.d")
        self.assertNotIn("--prepend-existing", self.init["args"])

    def test_ports_and_probes_use_the_bound_ports(self):
        ports = {p["name"]: p["containerPort"] for p in self.main["ports"]}
        self.assertEqual(ports, {"registry": 5000, "router": 5001, "metrics": 9090})
        self.assertEqual(self.main["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "registry"})
        self.assertEqual(self.main["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "registry"})

    def test_bootstraps_from_the_headless_service(self):
        svc = one(self.docs, "Service")
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertIs(svc["spec"]["publishNotReadyAddresses"], True)
        pod_labels = one(self.docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
        self.assertEqual(svc["spec"]["selector"].items() - pod_labels.items(), set())
        name = svc["metadata"]["name"]
        self.assertEqual(flag(self.main["args"], "bootstrap-dns"), f"{name}.{NAMESPACE}.svc.cluster.local.")
        self.assertEqual({p["name"]: p["port"] for p in svc["spec"]["ports"]}, {"registry": 5000, "router": 5001, "metrics": 9090})

    def test_mounts_containerd_read_only_and_the_data_dir(self):
        mounts = {m["name"]: m for m in self.main["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        self.assertEqual(mounts["containerd-socket"]["mountPath"], "/run/containerd")
        self.assertIs(mounts["containerd-socket"]["readOnly"], True)
        self.assertEqual(volumes["containerd-socket"]["hostPath"]["path"], "/run/containerd")
        self.assertEqual(flag(self.main["args"], "containerd-sock"), "/run/containerd/containerd.sock")
        content = "/var/lib/containerd/io.containerd.content.v1.content"
        self.assertIs(mounts["containerd-content"]["readOnly"], True)
        self.assertEqual(volumes["containerd-content"]["hostPath"]["path"], content)
        self.assertEqual(flag(self.main["args"], "containerd-content-path"), content)
        self.assertEqual(volumes["data"]["hostPath"], {"path": "/var/lib/shoal", "type": "DirectoryOrCreate"})
        self.assertEqual(flag(self.main["args"], "data-dir"), mounts["data"]["mountPath"])
        init_mounts = {m["name"]: m for m in self.init["volumeMounts"]}
        self.assertEqual(init_mounts["containerd-config"]["mountPath"], "/etc/containerd/certs.d")
        self.assertNotIn("readOnly", init_mounts["containerd-config"])

    def test_cleanup_runs_before_the_pod_stops_and_configure_after_every_start(self):
        command = self.main["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(command, ["/shoal", "cleanup", "--containerd-config-path=/etc/containerd/certs.d"])
        # A liveness restart runs preStop but not the init container again.
        post_start = self.main["lifecycle"]["postStart"]["exec"]["command"]
        self.assertEqual(post_start, ["/shoal", *self.init["args"]])
        self.assertNotIn("$(", " ".join(post_start), "hook commands are not expanded by Kubernetes")
        mounts = {m["name"]: m["mountPath"] for m in self.main["volumeMounts"]}
        self.assertEqual(mounts["containerd-config"], "/etc/containerd/certs.d")

    def test_security_context_is_restrictive(self):
        self.assertIs(self.pod["automountServiceAccountToken"], False)
        self.assertEqual(self.pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
        for container in (self.init, self.main):
            ctx = container["securityContext"]
            self.assertIs(ctx["readOnlyRootFilesystem"], True)
            self.assertIs(ctx["allowPrivilegeEscalation"], False)
            self.assertIs(ctx["privileged"], False)
            self.assertEqual(ctx["capabilities"], {"drop": ["ALL"]})
            self.assertNotIn("add", ctx["capabilities"])
            self.assertEqual(ctx["seccompProfile"], {"type": "RuntimeDefault"})

    def test_memory_is_limited(self):
        self.assertEqual(self.main["resources"]["limits"]["memory"], "256Mi")
        self.assertEqual(self.init["resources"]["limits"]["memory"], "64Mi")

    def test_dashboard_config_map_carries_the_dashboard_file(self):
        cm = one(self.docs, "ConfigMap")
        self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
        self.assertEqual(json.loads(cm["data"]["shoal.json"]), json.loads(read("dashboards/shoal.json")))


class NonDefaultValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render(
            "--set", "ports.registry=5100,ports.router=5101,ports.metrics=9191",
            "--set", "network.nodeIPFamily=IPv6,network.clusterDomain=example.internal",
            "--set", "dataDir.type=emptyDir,dataDir.sizeLimit=2Gi",
            "--set", "containerd.contentPath=,containerd.keepExistingHosts=true",
            "--set", "containerd.socket=/run/k3s/containerd/containerd.sock",
            "--set", "containerd.configPath=/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
            "--set", "mirroredRegistries=null",
            "--set", "cleanup.onPodStop=false",
            "--set", "bootstrap.dns=false",
            "--set", "bootstrap.peers={/ip4/192.0.2.10/tcp/5101,/dns4/seed.example.internal/tcp/5101}",
            "--set", "config.advertiseConcurrency=16,config.logFormat=text",
            "--set", "updateStrategy.maxUnavailable=10%",
            "--set", "priorityClassName=",
            "--set", "serviceMonitor.enabled=true,serviceMonitor.labels.release=prom",
            "--set", "prometheusRule.enabled=true,prometheusRule.labels.release=prom",
            "--set", "grafanaDashboard.namespace=monitoring,grafanaDashboard.annotations.grafana_folder=Shoal",
            "--set", "image.digest=sha256:" + "ab" * 32,
            "--set", "extraArgs={--bootstrap-dns=seeds.example.internal}",
            "--set", "config.logLevel=info\\,shoal=debug",
        )
        cls.pod, cls.init, cls.main = containers(cls.docs)

    def test_ports_propagate_everywhere(self):
        args = self.main["args"]
        self.assertEqual(flag(args, "registry-addr"), "[$(NODE_IP)]:5100")
        self.assertEqual(flag(args, "router-addr"), "[$(NODE_IP)]:5101")
        self.assertEqual(flag(args, "metrics-addr"), "[$(NODE_IP)]:9191")
        self.assertEqual(env(self.init)["SHOAL_MIRROR_TARGETS"], "http://[$(NODE_IP)]:5100")
        self.assertEqual(env(self.main)["SHOAL_MIRROR_TARGETS"], "http://[$(NODE_IP)]:5100")
        self.assertEqual({p["name"]: p["containerPort"] for p in self.main["ports"]},
                         {"registry": 5100, "router": 5101, "metrics": 9191})
        svc = one(self.docs, "Service")
        self.assertEqual({p["name"]: p["port"] for p in svc["spec"]["ports"]},
                         {"registry": 5100, "router": 5101, "metrics": 9191})

    def test_optional_flags_follow_the_values(self):
        args = self.main["args"]
        self.assertIsNone(flag(args, "containerd-content-path"))
        self.assertIsNone(flag(args, "mirrored-registries"))
        self.assertIsNone(flag(self.init["args"], "mirrored-registries"))
        self.assertIn("--prepend-existing", self.init["args"])
        self.assertEqual(flag(args, "bootstrap-peers"), "/ip4/192.0.2.10/tcp/5101,/dns4/seed.example.internal/tcp/5101")
        self.assertEqual(flag(args, "advertise-concurrency"), "16")
        self.assertEqual(flag(args, "log-format"), "text")
        # The chart passes no --bootstrap-dns (bootstrap.dns=false): extraArgs may.
        self.assertEqual(args[-1], "--bootstrap-dns=seeds.example.internal")
        self.assertEqual(flag(args, "log-level"), "info,shoal=debug")
        self.assertEqual(flag(self.init["args"], "log-level"), "info,shoal=debug")
        self.assertNotIn("priorityClassName", self.pod)
        self.assertEqual(one(self.docs, "DaemonSet")["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], "10%")
        self.assertEqual(self.main["image"], "registry.example.com/shoal@sha256:" + "ab" * 32)

    def test_other_containerd_layouts_are_mounted_where_the_flags_point(self):
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        self.assertEqual(volumes["containerd-socket"]["hostPath"]["path"], "/run/k3s/containerd")
        self.assertEqual(flag(self.main["args"], "containerd-sock"), "/run/k3s/containerd/containerd.sock")
        self.assertNotIn("containerd-content", volumes)
        config = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
        self.assertEqual(volumes["containerd-config"]["hostPath"]["path"], config)
        self.assertEqual(flag(self.init["args"], "containerd-config-path"), config)
        self.assertEqual(volumes["data"], {"name": "data", "emptyDir": {"sizeLimit": "2Gi"}})

    def test_without_cleanup_the_main_container_cannot_write_containerd_config(self):
        self.assertNotIn("lifecycle", self.main)
        self.assertNotIn("containerd-config", {m["name"] for m in self.main["volumeMounts"]})

    def test_service_monitor_scrapes_metrics_and_labels_the_node(self):
        sm = one(self.docs, "ServiceMonitor")
        self.assertEqual(sm["metadata"]["labels"]["release"], "prom")
        self.assertEqual(sm["spec"]["selector"]["matchLabels"].items()
                         - one(self.docs, "Service")["metadata"]["labels"].items(), set())
        (endpoint,) = sm["spec"]["endpoints"]
        self.assertEqual(endpoint["port"], "metrics")
        self.assertIn({"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"},
                      endpoint["relabelings"])

    def test_prometheus_rule_is_the_rules_file(self):
        rule = one(self.docs, "PrometheusRule")
        self.assertEqual(rule["metadata"]["labels"]["release"], "prom")
        self.assertEqual(rule["spec"], yaml.safe_load(read("rules/shoal.rules.yaml")))
        alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
        self.assertEqual(sorted(alerts), ["ShoalAdvertiseFailures", "ShoalContainerdUnreachable",
                                          "ShoalFallbacksRising", "ShoalLowHitRate", "ShoalNodeWithoutPeers"])

    def test_dashboard_goes_to_the_grafana_namespace(self):
        cm = one(self.docs, "ConfigMap")
        self.assertEqual(cm["metadata"]["namespace"], "monitoring")
        self.assertEqual(cm["metadata"]["annotations"], {"grafana_folder": "Shoal"})


def volume(pod, name):
    (found,) = [v for v in pod["volumes"] if v["name"] == name]
    return found


class PrivateNetwork(unittest.TestCase):
    KEY_FILE = re.compile(r"/key/swarm/psk/1\.0\.0/\n/base16/\n[0-9a-f]{64}\n")

    def test_off_by_default(self):
        docs = render()
        _, _, main = containers(docs)
        self.assertEqual(by_kind(docs, "Secret"), [])
        self.assertNotIn("SHOAL_P2P_PSK_FILE", env(main))
        self.assertNotIn("psk", {m["name"] for m in main["volumeMounts"]})
        self.assertIsNone(flag(main["args"], "private-registries"))

    def test_a_generated_key_is_a_swarm_key_mounted_where_the_env_points(self):
        docs = render("--set", "psk.enabled=true")
        pod, init, main = containers(docs)
        secret = one(docs, "Secret")
        self.assertEqual(secret["metadata"]["namespace"], NAMESPACE)
        key_file = base64.b64decode(secret["data"]["swarm.key"]).decode()
        self.assertRegex(key_file, self.KEY_FILE)
        self.assertNotEqual(key_file, base64.b64decode(
            one(render("--set", "psk.enabled=true"), "Secret")["data"]["swarm.key"]).decode(),
            "each install draws its own key")
        psk = volume(pod, "psk")["secret"]
        self.assertEqual(psk["secretName"], secret["metadata"]["name"])
        (mount,) = [m for m in main["volumeMounts"] if m["name"] == "psk"]
        self.assertTrue(mount["readOnly"])
        self.assertEqual(env(main)["SHOAL_P2P_PSK_FILE"], f"{mount['mountPath']}/{psk['items'][0]['path']}")
        self.assertNotIn("SHOAL_P2P_PSK_FILE", env(init), "configure needs no key")

    def test_an_existing_secret_is_used_and_none_is_created(self):
        docs = render("--set", "psk.enabled=true,psk.existingSecret=corp-swarm,psk.secretKey=key")
        pod, _, main = containers(docs)
        self.assertEqual(by_kind(docs, "Secret"), [])
        self.assertEqual(volume(pod, "psk")["secret"]["secretName"], "corp-swarm")
        self.assertEqual(volume(pod, "psk")["secret"]["items"], [{"key": "key", "path": "key"}])
        self.assertTrue(env(main)["SHOAL_P2P_PSK_FILE"].endswith("/key"))

    def test_private_registries_are_passed(self):
        _, _, main = containers(render("--set", "privateRegistries={registry.corp.example,127.0.0.200:5000}"))
        self.assertEqual(flag(main["args"], "private-registries"), "registry.corp.example,127.0.0.200:5000")


class SchemaRejectsBadValues(unittest.TestCase):
    def assert_rejected(self, set_arg, path_fragment):
        code, _, err = helm_template("--set", set_arg)
        self.assertNotEqual(code, 0, f"--set {set_arg} was accepted")
        self.assertIn("values don't meet the specifications of the schema", err)
        self.assertIn(path_fragment, err)

    def test_unknown_keys(self):
        self.assert_rejected("registryPort=5000", "registryPort")
        self.assert_rejected("containerd.sockett=/run/x.sock", "sockett")

    def test_bad_types_and_ranges(self):
        self.assert_rejected("ports.registry=abc", "/ports/registry")
        self.assert_rejected("ports.metrics=70000", "/ports/metrics")
        self.assert_rejected("updateStrategy.maxUnavailable=0", "/updateStrategy/maxUnavailable")
        self.assert_rejected("config.maxPeerAttempts=0", "/config/maxPeerAttempts")

    def test_bad_strings(self):
        self.assert_rejected("config.resolveTimeout=soon", "/config/resolveTimeout")
        self.assert_rejected("dataDir.type=hostpath", "/dataDir/type")
        self.assert_rejected("containerd.socket=containerd.sock", "/containerd/socket")
        self.assert_rejected("mirroredRegistries={docker.io/library}", "/mirroredRegistries/0")
        self.assert_rejected("bootstrap.peers={192.0.2.10:5001}", "/bootstrap/peers/0")
        self.assert_rejected("privateRegistries={https://registry.corp.example/team}", "/privateRegistries/0")
        self.assert_rejected("psk.existingSecret=Not_A_Name", "/psk/existingSecret")
        self.assert_rejected("psk.enabled=yes", "/psk/enabled")

    def test_extra_args_cannot_repeat_a_flag_the_chart_passes(self):
        # clap rejects a flag given twice: the pod would crash-loop.
        code, _, err = helm_template("--set", "extraArgs={--max-peer-attempts=2}")
        self.assertNotEqual(code, 0)
        self.assertIn("extraArgs: --max-peer-attempts is already passed by the chart", err)

    def test_memory_limit_is_required(self):
        self.assert_rejected("resources.limits.memory=null", "/resources/limits")


class Documentation(unittest.TestCase):
    def test_readme_documents_every_value(self):
        # A value is documented as a whole where the schema does not look
        # inside it (Kubernetes objects such as securityContext).
        def leaves(node, sch, prefix=""):
            if isinstance(node, dict) and "properties" in sch:
                for key, value in node.items():
                    yield from leaves(value, sch["properties"][key], f"{prefix}{key}.")
            else:
                yield prefix[:-1]

        table = read("README.md").split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))
        schema = json.loads(read("values.schema.json"))
        values = set(leaves(yaml.safe_load(read("values.yaml")), schema))
        self.assertEqual(values - documented, set(), "values missing from README.md")
        self.assertEqual(documented - values, set(), "README.md documents values that do not exist")

    def test_schema_covers_every_value(self):
        schema = json.loads(read("values.schema.json"))

        def walk(node, sch, path):
            self.assertTrue("type" in sch or "oneOf" in sch, f"{path}: no type in the schema")
            if isinstance(node, dict) and sch.get("additionalProperties") is False:
                for key, value in node.items():
                    self.assertIn(key, sch["properties"], f"{path}.{key} not in the schema")
                    walk(value, sch["properties"][key], f"{path}.{key}")

        walk(yaml.safe_load(read("values.yaml")), schema, "")


class Dashboard(unittest.TestCase):
    def test_panels_are_well_formed(self):
        dash = json.loads(read("dashboards/shoal.json"))
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        for panel in dash["panels"]:
            if panel["type"] == "row":
                continue
            self.assertEqual(panel["datasource"], {"type": "prometheus", "uid": "${datasource}"}, panel["title"])
            self.assertTrue(panel["targets"], panel["title"])
            for target in panel["targets"]:
                self.assertTrue(target["expr"].strip(), panel["title"])
            grid = panel["gridPos"]
            self.assertLessEqual(grid["x"] + grid["w"], 24, panel["title"])


if __name__ == "__main__":
    unittest.main()
