#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s offline, with no cluster:
#
#  1. every manifest (each .yaml/.yml but kustomization.yaml) against the
#     API schemas of Kubernetes $K8S_VERSION that kubernetes-validate
#     carries, strictly: an unknown field (a typo) or a wrong type fails,
#     and so does a kind or apiVersion the schemas do not know (which
#     kubernetes-validate itself only warns about);
#  2. kustomization.yaml lists exactly the manifest files of the directory;
#  3. the Services', the PodDisruptionBudget's and the StatefulSet's
#     selectors match the StatefulSet's pod labels, and the StatefulSet's
#     serviceName is a headless Service here (its pods' DNS names);
#  4. with kubectl on the PATH, `kubectl kustomize` renders the directory
#     and the rendered objects pass step 1 too (skipped, and said, without).
#
# Exits non-zero on any failure. Safe to run repeatedly; writes nothing in
# the tree. kubernetes-validate comes from scripts/python-env.sh.
#
#   scripts/check-manifests.sh            check deploy/k8s
#   scripts/check-manifests.sh DIR        check another directory
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/deploy/k8s}"
# The oldest Kubernetes the manifests target (StatefulSet
# persistentVolumeClaimRetentionPolicy is on by default from 1.27). Fixed,
# so a new kubernetes-validate release does not change the verdict.
K8S_VERSION="1.30.0"

PY="$("$ROOT/scripts/python-env.sh")"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

failed=0
fail() {
    echo "FAIL $*" >&2
    failed=1
}

shopt -s nullglob
manifests=()
for f in "$DIR"/*.yaml "$DIR"/*.yml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
shopt -u nullglob
if [ "${#manifests[@]}" -eq 0 ]; then
    echo "FAIL no manifests in $DIR" >&2
    exit 1
fi

# validate LABEL FILE...: strict schema validation; warnings count as
# failures (an unknown kind or apiVersion is only a warning there).
validate() {
    local label="$1" out rc=0
    shift
    out="$("$PY" -m kubernetes_validate --strict --kubernetes-version "$K8S_VERSION" "$@" 2>&1)" || rc=$?
    printf '%s\n' "$out"
    if [ "$rc" -ne 0 ]; then
        fail "$label: kubernetes-validate exited $rc"
    elif grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"; then
        fail "$label: kubernetes-validate warned (unknown kind or apiVersion?)"
    elif ! grep -q '^INFO' <<<"$out"; then
        fail "$label: no resource was validated"
    fi
}

echo "== schemas (Kubernetes $K8S_VERSION, strict)"
validate "deploy/k8s manifests" "${manifests[@]}"

echo "== kustomization and cross-references"
# Structure the schemas cannot see. Prints what it checked; exit 1 on a
# failure.
if ! "$PY" - "$DIR" "${manifests[@]}" <<'EOF'; then
import os
import sys

import yaml

directory, manifests = sys.argv[1], sys.argv[2:]
problems = []
docs = []
for path in manifests:
    name = os.path.basename(path)
    try:
        with open(path) as f:
            found = [d for d in yaml.safe_load_all(f) if d]
    except yaml.YAMLError as e:
        problems.append(f"{name}: not YAML: {e}")
        continue
    if not found:
        problems.append(f"{name}: holds no object")
    docs += [(name, d) for d in found if isinstance(d, dict)]

kustomization = os.path.join(directory, "kustomization.yaml")
if not os.path.exists(kustomization):
    problems.append("kustomization.yaml is missing")
else:
    with open(kustomization) as f:
        k = yaml.safe_load(f) or {}
    listed = k.get("resources") or []
    files = sorted(os.path.basename(p) for p in manifests)
    for name in files:
        if name not in listed:
            problems.append(f"kustomization.yaml does not list {name}")
    for name in listed:
        if name not in files:
            problems.append(f"kustomization.yaml lists {name}, which is not a manifest here")
    dupes = sorted({n for n in listed if listed.count(n) > 1})
    if dupes:
        problems.append(f"kustomization.yaml lists {', '.join(dupes)} more than once")
    print(f"kustomization.yaml lists all {len(files)} manifests: {', '.join(files)}")

def of_kind(kind):
    return [(n, d) for n, d in docs if d.get("kind") == kind]

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

seen = {}
for name, d in docs:
    key = (d.get("kind"), d.get("metadata", {}).get("namespace"), d.get("metadata", {}).get("name"))
    if key in seen:
        problems.append(f"{name}: {key[0]} {key[2]} is also defined in {seen[key]}")
    seen[key] = name

services = {d["metadata"]["name"]: (n, d) for n, d in of_kind("Service")}
for name, sts in of_kind("StatefulSet"):
    spec = sts["spec"]
    sts_name = sts["metadata"]["name"]
    labels = spec["template"]["metadata"].get("labels", {})
    if not matches(spec["selector"].get("matchLabels"), labels):
        problems.append(f"{name}: StatefulSet {sts_name}'s selector does not match its pod labels")
    headless = services.get(spec.get("serviceName"))
    if headless is None:
        problems.append(f"{name}: serviceName {spec.get('serviceName')!r} is no Service here")
    elif headless[1]["spec"].get("clusterIP") != "None":
        problems.append(f"{headless[0]}: Service {spec['serviceName']} must be headless (clusterIP: None)")
    for svc_file, svc in services.values():
        if not matches(svc["spec"].get("selector"), labels):
            problems.append(f"{svc_file}: Service {svc['metadata']['name']} selects no pod of StatefulSet {sts_name}")
    for pdb_file, pdb in of_kind("PodDisruptionBudget"):
        if not matches(pdb["spec"]["selector"].get("matchLabels"), labels):
            problems.append(f"{pdb_file}: PodDisruptionBudget {pdb['metadata']['name']} selects no pod of StatefulSet {sts_name}")
    print(f"StatefulSet {sts_name}: selectors of {len(services)} Services and "
          f"{len(of_kind('PodDisruptionBudget'))} PodDisruptionBudget match its pods; "
          f"serviceName {spec.get('serviceName')} is headless")

for p in problems:
    print(f"FAIL {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
    failed=1
fi

echo "== kustomize build"
if command -v kubectl >/dev/null 2>&1; then
    if kubectl kustomize "$DIR" >"$TMP/rendered.yaml" 2>"$TMP/kustomize.err"; then
        echo "kubectl kustomize: $(grep -c '^kind:' "$TMP/rendered.yaml") objects"
        validate "kubectl kustomize output" "$TMP/rendered.yaml"
    else
        cat "$TMP/kustomize.err" >&2
        fail "kubectl kustomize $DIR"
    fi
else
    echo "kubectl not found: kustomize build skipped"
fi

if [ "$failed" -ne 0 ]; then
    echo "check-manifests: FAILED" >&2
    exit 1
fi
echo "check-manifests: ok (${#manifests[@]} manifests, Kubernetes $K8S_VERSION)"
