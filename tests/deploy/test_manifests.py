"""deploy/kubernetes: the manifests parse and have the parts a deployment
relies on (test `manifests`). Sidecar: gristd as a native sidecar with a
startup probe, the socket in an emptyDir both containers mount, one user.
Sharded service: a StatefulSet behind a headless Service that selects it,
--shard over exactly its replicas with --shard-peers naming them by their
stable names, a volume claim at --state-dir, readiness and liveness probes
on grpc.health.v1 (gristctl health), a PodDisruptionBudget over its pods,
resource requests, the Prometheus annotations, TLS and tokens from Secrets
at the paths the arguments name. With kubectl present, `kubectl kustomize`
must render every kustomization.

    /usr/bin/python3 tests/deploy/test_manifests.py
"""
import glob
import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
KDIR = os.path.join(ROOT, "deploy", "kubernetes")


def load():
    docs = []
    for path in sorted(glob.glob(os.path.join(KDIR, "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    docs.append((os.path.relpath(path, KDIR), d))
    return docs


def arg(args, flag):
    assert flag in args, (flag, args)
    return args[args.index(flag) + 1]


def mount_of(container, volume):
    for m in container.get("volumeMounts", []):
        if m["name"] == volume:
            return m["mountPath"]
    raise AssertionError(f"{container['name']} does not mount {volume}")


def health_probe(probe, addr_prefix):
    cmd = probe["exec"]["command"]
    assert cmd[0].endswith("gristctl") and cmd[-1] == "health", cmd
    assert arg(cmd, "--address").startswith(addr_prefix), cmd
    return cmd


def check_kustomizations():
    for k in glob.glob(os.path.join(KDIR, "**", "kustomization.yaml"), recursive=True):
        base = os.path.dirname(k)
        for r in yaml.safe_load(open(k))["resources"]:
            assert os.path.exists(os.path.join(base, r)), (k, r)
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("manifests: kubectl not installed, kustomize rendering not checked")
        return
    for d in (KDIR, os.path.join(KDIR, "sidecar"), os.path.join(KDIR, "service")):
        p = subprocess.run([kubectl, "kustomize", d], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (d, p.stderr)
        kinds = sorted(x["kind"] for x in yaml.safe_load_all(p.stdout) if x)
        print(f"manifests: kubectl kustomize {os.path.relpath(d, ROOT)}: {', '.join(kinds)}")


def check_sidecar(docs):
    pod = next(d for p, d in docs if p.startswith("sidecar") and d["kind"] == "Pod")
    spec = pod["spec"]
    side = next(c for c in spec["initContainers"] if c["name"] == "gristd")
    assert side["restartPolicy"] == "Always", "gristd must be a native sidecar"
    sock = arg(side["args"], "--listen")
    assert sock.startswith("unix:"), sock
    vol = next(v for v in spec["volumes"] if "emptyDir" in v)
    sdir = mount_of(side, vol["name"])
    assert os.path.dirname(sock[5:]) == sdir, (sock, sdir)
    health_probe(side["startupProbe"], "unix:" + sdir)  # the trainer starts after it passes
    health_probe(side["livenessProbe"], "unix:" + sdir)
    trainer = spec["containers"][0]
    assert mount_of(trainer, vol["name"]) == sdir
    env = {e["name"]: e.get("value") for e in trainer.get("env", [])}
    assert env["GRIST_ADDRESS"] == sock, env
    # the socket is mode 0600: one user for both
    assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["runAsNonRoot"]
    assert side["resources"]["requests"]["cpu"] and side["resources"]["requests"]["memory"]
    print(f"manifests: sidecar: gristd native sidecar on {sock} (emptyDir {vol['name']}), "
          "startup and liveness probes, trainer waits for it, one user")


def check_service(docs):
    svc = [d for p, d in docs if p.startswith("service")]
    sts = next(d for d in svc if d["kind"] == "StatefulSet")
    hl = next(d for d in svc if d["kind"] == "Service" and d["metadata"]["name"] ==
              sts["spec"]["serviceName"])
    assert hl["spec"]["clusterIP"] == "None", "the StatefulSet's Service must be headless"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in hl["spec"]["selector"].items())
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = sts["spec"]["template"]
    c = next(c for c in pod["spec"]["containers"] if c["name"] == "gristd")
    args = c["args"]
    n = sts["spec"]["replicas"]
    assert arg(args, "--shard") == f"$(POD_INDEX)/{n}", args
    env = {e["name"]: e for e in c["env"]}
    assert "pod-index" in env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    peers = arg(args, "--shard-peers").split(",")
    name, svcname = sts["metadata"]["name"], hl["metadata"]["name"]
    grpc_port = int(arg(args, "--listen").rsplit(":", 1)[1])
    assert peers == [f"{name}-{i}.{svcname}:{grpc_port}" for i in range(n)], peers
    assert any(p["port"] == grpc_port for p in hl["spec"]["ports"])
    # state on a claim, at --state-dir
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert mount_of(c, claim) == arg(args, "--state-dir")
    # TLS and tokens from Secrets at the paths the arguments name
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    for flag in ("--tls-cert", "--tls-key", "--tokens"):
        path = arg(args, flag)
        hit = [v for v in vols if "secret" in vols[v] and path.startswith(mount_of(c, v) + "/")]
        assert hit, (flag, path)
    cmd = health_probe(c["readinessProbe"], "localhost:")
    assert arg(cmd, "--tls-ca").startswith("/etc/grist/tls/"), cmd  # the listener is TLS
    health_probe(c["livenessProbe"], "localhost:")
    req = c["resources"]["requests"]
    assert req["cpu"] and req["memory"] and c["resources"]["limits"]["memory"], req
    ann = pod["metadata"]["annotations"]
    http_port = arg(args, "--http").rsplit(":", 1)[1]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == http_port, ann
    assert ann["prometheus.io/scheme"] == "https"
    pdb = next(d for d in svc if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == n - 1
    assert pod["spec"]["securityContext"]["runAsNonRoot"]
    job = next(d for d in svc if d["kind"] == "Job")
    tenv = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert tenv["GRIST_ADDRESS"]["value"].split(",") == peers, "clients and replicas disagree"
    assert "secretKeyRef" in tenv["GRIST_TOKEN"]["valueFrom"]
    print(f"manifests: service: StatefulSet of {n} behind headless {svcname}, --shard over "
          f"{n} with peers {','.join(peers)}, state claim at {arg(args, '--state-dir')}, TLS and "
          "tokens from Secrets, health probes, PDB, requests, Prometheus annotations; the "
          "trainer Job's replica list matches")


def main():
    docs = load()
    assert docs, "no manifests"
    check_sidecar(docs)
    check_service(docs)
    check_kustomizations()
    print("manifests: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
